"""The Flax VGG family against torchvision on the same (randomised) weights, converted through the CLI."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxvis
from torch_ref import nchw, nhwc

ALL = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]
# Full-size models: every architecture behind the slow marker (the converter's tests stay in the default suite)
CASES = [pytest.param(a, marks=pytest.mark.slow) for a in ALL]
SIZES = [(224, 224), (193, 257)]


def torch_activations(model, x):
    """Logits and the outputs of each torchvision `features` module, by index."""
    outs = {}
    h = x
    for i, layer in enumerate(model.features):
        h = layer(h)
        outs[i] = h.clone()  # the next ReLU is in place
    logits = model.classifier(torch.flatten(model.avgpool(h), 1))
    return logits, outs


def layer_indices(arch):
    """jaxvis activation name -> torchvision features index of the same tensor."""
    cfg = jaxvis.models.arch_spec(arch).config
    bn = cfg["batch_norm"]
    index, names = 0, {}
    for b, widths in enumerate(cfg["blocks"], 1):
        for i in range(1, len(widths) + 1):
            names[f"conv{b}_{i}_pre"] = index + (1 if bn else 0)
            names[f"conv{b}_{i}"] = index + (2 if bn else 1)
            index += 3 if bn else 2
        names[f"pool{b}"] = index
        index += 1
    return names


@pytest.mark.parametrize("arch", CASES)
def test_logits_activations_and_input_gradient_match_torchvision(arch, converted_vgg):
    tmodel, _, path = converted_vgg(arch)
    model = jaxvis.load(path)
    assert model.spec.arch == arch
    fwd = jax.jit(model.apply)
    rng = np.random.default_rng(1)
    for h, w in SIZES:
        x = rng.standard_normal((2, h, w, 3)).astype(np.float32)
        logits, acts = fwd(model.params, x)
        with torch.no_grad():
            ref, ref_acts = torch_activations(tmodel, nchw(x))
        ref = ref.numpy()
        scale = np.abs(ref).max()
        assert scale > 0.1, "degenerate reference logits"
        np.testing.assert_allclose(np.asarray(logits), ref, rtol=0, atol=1e-4 * scale)
        indices = layer_indices(arch)
        last_conv = max(n for n in indices if n.startswith("conv5_") and not n.endswith("_pre"))
        for name in ("conv1_1_pre", "conv1_1", "pool2", "conv3_1", last_conv, "pool5"):
            got, want = np.asarray(acts[name]), nhwc(ref_acts[indices[name]])
            assert got.shape == want.shape, name
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max(), err_msg=name)
        with torch.no_grad():
            fc7 = tmodel.classifier[:5](torch.flatten(tmodel.avgpool(ref_acts[len(tmodel.features) - 1]), 1))
        np.testing.assert_allclose(np.asarray(acts["fc7"]), fc7.numpy(), rtol=0, atol=1e-4 * fc7.abs().max().item())
        np.testing.assert_array_equal(np.asarray(acts["fc8"]), np.asarray(logits))

    # Gradient of one logit with respect to the input, against torch autograd, at the odd size where the
    # pool bins overlap. Compared in float64: in float32 the backward pass of a max-pool is discontinuous
    # at near-ties (two window elements within rounding of each other), so which element receives the
    # gradient is decided by rounding. torch does not even agree with itself there: the same float32
    # model and input give gradients that differ by ~1e-2 relative between calls with differently
    # aligned input buffers. In float64 the routing is unambiguous and the comparison exact.
    x = rng.standard_normal((1, 193, 257, 3))
    c = 7
    with jax.enable_x64(True):
        module64 = model.module.clone(dtype=jnp.float64)
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params)
        grad = jax.jit(jax.grad(lambda im, p: module64.apply(p, im)[0][0, c]))(jnp.asarray(x), params64)
        grad = np.asarray(grad)
    assert grad.dtype == np.float64
    del params64, model  # one full-size float64 copy of the weights at a time
    t64 = tmodel.double()  # the fixture hands each test its own torch model
    xt = torch.tensor(x.transpose(0, 3, 1, 2), dtype=torch.float64, requires_grad=True)
    t64(xt)[0, c].backward()
    ref = nhwc(xt.grad)
    np.testing.assert_allclose(grad, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
