"""The slice max-pool: torch's values and torch's gradient, ties and odd sizes included."""

import jax
import numpy as np
import pytest
import torch

from jaxvis.models.pooling import max_pool_2x2, max_pool_2x2_ceil, max_pool_3x3_s1


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (1, 7, 9, 4), (3, 5, 4, 2)])
def test_values_and_gradient_equal_torch_with_ties(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 3, shape).astype(np.float32)  # three values: most windows hold a tie
    g = rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, shape[3])).astype(np.float32)
    out, vjp = jax.vjp(max_pool_2x2, x)
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    want = torch.nn.functional.max_pool2d(xt, 2, 2)
    want.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    np.testing.assert_array_equal(np.asarray(out), want.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(np.asarray(vjp(g)[0]), xt.grad.numpy().transpose(0, 2, 3, 1))


def test_jit_vmap_and_a_constant_image():
    x = np.full((4, 6, 6, 2), 0.5, np.float32)
    grad = jax.jit(jax.vmap(jax.grad(lambda im: max_pool_2x2(im[None]).sum())))(x)
    # one gradient per window, at its top-left pixel
    expected = np.zeros_like(x)
    expected[:, ::2, ::2] = 1
    np.testing.assert_array_equal(np.asarray(grad), expected)


def test_nan_windows_route_like_torch():
    # A NaN makes the window's maximum NaN; PyTorch's kernel sends the gradient to the window's last NaN.
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, (2, 6, 8, 3)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    g = rng.standard_normal((2, 3, 4, 3)).astype(np.float32)
    out, vjp = jax.vjp(max_pool_2x2, x)
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    want = torch.nn.functional.max_pool2d(xt, 2, 2)
    want.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    assert np.isnan(np.asarray(out)).any()
    np.testing.assert_array_equal(np.asarray(out), want.detach().numpy().transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(np.asarray(vjp(g)[0]), xt.grad.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("shape", [(2, 7, 9, 3), (1, 6, 5, 2), (1, 19, 19, 4)])
@pytest.mark.parametrize("nan", [False, True])
def test_ssd_pools_equal_torch_with_ties_odd_sizes_and_nan(shape, nan):
    """SSD's ceil-mode 2x2 pool (pool3) and 3x3 stride-1 pool (pool5): torch's values and gradients."""
    rng = np.random.default_rng(sum(shape) + nan)
    x = rng.integers(0, 3, shape).astype(np.float32)  # three values: most windows hold a tie
    if nan:
        x[rng.random(x.shape) < 0.1] = np.nan
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    for ours, theirs in [(max_pool_2x2_ceil, lambda t: torch.nn.functional.max_pool2d(t, 2, 2, ceil_mode=True)),
                         (max_pool_3x3_s1, lambda t: torch.nn.functional.max_pool2d(t, 3, 1, padding=1))]:
        out, vjp = jax.vjp(ours, x)
        want = theirs(xt)
        np.testing.assert_array_equal(np.asarray(out), want.detach().numpy().transpose(0, 2, 3, 1))
        # Unit gradients count how many windows route to each pixel: integers, so the routing must be
        # torch's exactly; random gradients then agree to float32 rounding (overlapping 3x3 windows add
        # their gradients in another order).
        for g in (np.ones(want.shape, np.float32), rng.standard_normal(want.shape).astype(np.float32)):
            xt.grad = None
            theirs(xt).backward(torch.tensor(g))
            got, ref = np.asarray(vjp(g.transpose(0, 2, 3, 1))[0]), xt.grad.numpy().transpose(0, 2, 3, 1)
            if (g == 1).all():
                np.testing.assert_array_equal(got, ref)
            else:
                np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
