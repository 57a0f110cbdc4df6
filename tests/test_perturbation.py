"""Perturbation methods against Captum on the same weights."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxvis import saliency as sal
from tiny import tiny_vgg


def test_occlusion_equals_captum():
    """Two images, one class each, on the tiny VGG and its torch twin in float64; a window of 12 at stride 8
    on 64 pixels, so that the last windows are cut at the edge (Captum's rule), and a baseline of 0.3."""
    from captum.attr import Occlusion

    from converters.torch_models import torch_vgg

    vgg = tiny_vgg(0)
    x = np.random.default_rng(8).normal(size=(2, 64, 64, 3))
    net = torch_vgg(vgg).double()
    classes = np.array([[4], [2]])
    want = np.zeros((2, 1, 64, 64, 3))
    occlusion = Occlusion(net)
    for n in range(2):
        for k in range(1):
            xt = torch.tensor(np.ascontiguousarray(x[n:n + 1].transpose(0, 3, 1, 2)))
            a = occlusion.attribute(xt, sliding_window_shapes=(3, 12, 12), strides=(3, 8, 8), baselines=0.3,
                                    target=int(classes[n, k]))
            want[n, k] = a[0].numpy().transpose(1, 2, 0)
    with jax.enable_x64(True):
        m64 = dataclasses.replace(vgg, params=jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), vgg.params),
                                  module=vgg.module.clone(dtype=jnp.float64))
        got = sal.occlusion(window=12, stride=8, baseline=0.3, chunk=5).attribute(
            m64, x, sal.class_score(classes), preprocess=False)
    assert np.abs(want).max() > 0
    # Captum builds its window masks in float32 (torch's default), so its float64 maps carry float32 rounding
    np.testing.assert_allclose(got.attributions, want, rtol=0, atol=1e-6 * np.abs(want).max())
    with pytest.raises(sal.SaliencyError, match="stride from 1 to the window"):
        sal.occlusion(window=8, stride=9)
    with pytest.raises(sal.SaliencyError, match="larger than the 64x64 image"):
        sal.occlusion(window=80).attribute(vgg, x[:1].astype(np.float32), sal.class_score([[1]]))


def test_feature_ablation_on_a_grid_equals_captum():
    """A grid of 24-pixel squares on 64 pixels (the last row and column of squares cut to 16), every colour
    channel of a square ablated together, against Captum's FeatureAblation with that grid as its feature mask."""
    from captum.attr import FeatureAblation

    from converters.torch_models import torch_vgg

    vgg = tiny_vgg(1)
    x = np.random.default_rng(10).normal(size=(2, 64, 64, 3))
    net = torch_vgg(vgg).double()
    classes = np.array([[0], [5]])
    cells = np.arange(64) // 24
    mask = torch.tensor((cells[:, None] * 3 + cells[None, :])[None, None])
    want = np.zeros((2, 1, 64, 64, 3))
    for n in range(2):
        xt = torch.tensor(np.ascontiguousarray(x[n:n + 1].transpose(0, 3, 1, 2)))
        a = FeatureAblation(net).attribute(xt, baselines=-0.2, feature_mask=mask, target=int(classes[n, 0]))
        want[n, 0] = a[0].numpy().transpose(1, 2, 0)
    with jax.enable_x64(True):
        m64 = dataclasses.replace(vgg, params=jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), vgg.params),
                                  module=vgg.module.clone(dtype=jnp.float64))
        got = sal.feature_ablation(cell=24, baseline=-0.2).attribute(m64, x, sal.class_score(classes), preprocess=False)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got.attributions, want, rtol=0, atol=1e-6 * np.abs(want).max())


@pytest.mark.slow
def test_occlusion_at_stride_4_on_ssd300_fits_in_bounded_memory():
    """Occlusion of a detection on SSD300 at 300 x 300, a 16-pixel window at stride 4 (72 x 72 = 5,184
    windows): the compiled program's buffers (XLA's own count: arguments, outputs and temporaries) stay under
    4 GiB, the occluded images running in chunks sized to the memory budget."""
    import jaxvis
    from tiny import random_variables

    spec = jaxvis.models.arch_spec("ssd300_vgg16")
    model = jaxvis.from_spec(spec, random_variables(jaxvis.models.build(spec), (1, 300, 300, 3), 0))
    starts = (tuple(range(0, 285, 4)),) * 2
    assert len(starts[0]) == 72
    chunk, _ = sal.chunk_sizes(model, 72 * 72, 1, (300, 300), backward=False)
    assert chunk < 72 * 72
    target = sal.detection([[1000]], [[2]])
    fn = sal._occlusion_program(model, target.kind, target.score, True, (300, 300), 16, starts, chunk)
    compiled = fn.lower(model.params, jnp.zeros((1, 300, 300, 3), jnp.float32), sal._fields(target),
                        jnp.float32(0)).compile()
    stats = compiled.memory_analysis()
    peak = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    assert peak < 4 * 2**30, peak / 2**30
