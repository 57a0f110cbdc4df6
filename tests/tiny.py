"""Small randomly initialised models for fast tests of the engine and objectives."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import jaxvis
from jaxvis.spec import ModelSpec

VGG_CONFIG = {"blocks": [[8], [16], [16, 16], [32, 32], [32, 32]], "batch_norm": False, "num_classes": 10,
              "fc_width": 64, "pool_size": [2, 2]}
SSD_CONFIG = {"num_classes": 5, "blocks": [[8, 8], [16, 16], [16, 16, 16], [32, 32, 32], [32, 32, 32]],
              "fc_width": 64, "fc_dilation": 6, "extras": [[16, 32, 2, 1], [16, 32, 2, 1], [16, 32, 1, 0], [16, 32, 1, 0]],
              "anchors_per_location": [4, 6, 6, 6, 4, 4], "l2norm": "max"}


def random_variables(module, input_shape, seed):
    """He-scaled random kernels and random (non-zero) biases, made with numpy: a zero bias would give a
    zero image a zero gradient, and flax's jitted random init costs seconds of compilation."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct(input_shape, jnp.float32))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.standard_normal(leaf.shape).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        if "scale" in name:
            return (1.0 + 0.1 * rng.standard_normal(leaf.shape)).astype(np.float32) * (20.0 if "conv4_3" in name else 1.0)
        if "var" in name:
            return (0.5 + rng.random(leaf.shape)).astype(np.float32)
        return 0.05 * rng.standard_normal(leaf.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def tiny_vgg(seed=0, batch_norm=False):
    config = dict(VGG_CONFIG, batch_norm=batch_norm)
    spec = ModelSpec(arch="tiny_vgg", family="vgg", config=config, input_size=(64, 64), resize="squash",
                     resize_size=None, labels=tuple(f"class{i}" for i in range(10)))
    variables = random_variables(jaxvis.models.build(spec), (1, 64, 64, 3), seed)
    return jaxvis.from_spec(spec, variables)


def tiny_ssd(seed=0):
    base = jaxvis.models.arch_spec("ssd300_vgg16")
    spec = base.replace(arch="tiny_ssd", config=SSD_CONFIG, labels=("__background__", "a", "b", "c", "d"))
    variables = random_variables(jaxvis.models.build(spec), (1, 300, 300, 3), seed)
    return jaxvis.from_spec(spec, variables)


def float64(model):
    """The same model computing in float64 (inside jax.enable_x64)."""
    return dataclasses.replace(model, params=jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params),
                               module=model.module.clone(dtype=jnp.float64))


def twin(vgg):
    """The torch twin of a tiny VGG in float64, its rectifiers not in place (Captum hooks them)."""
    import torch

    from converters.torch_models import torch_vgg

    net = torch_vgg(vgg).double()
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
    return net


def two_detections(model):
    """An input (1, 300, 300, 3) for a tiny SSD and two detection targets on it: a default box of the first
    source map (conv4_3, through the L2 norm) and one of the third (an extra layer), classes 1 and 3."""
    x = np.random.default_rng(7).normal(size=(1, 300, 300, 3))
    per = [h * w * a for (h, w), a in zip(model.feature_sizes, model.spec.config["anchors_per_location"])]
    first = np.concatenate([[0], np.cumsum(per)[:-1]])
    anchors = np.array([[first[0] + 4 * (19 * 38 + 20) + 1, first[2] + 6 * 33 + 2]])
    return x, anchors, np.array([[1, 3]])
