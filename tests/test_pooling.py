"""The slice max-pool: torch's values and torch's gradient, ties and odd sizes included."""

import jax
import numpy as np
import pytest
import torch

from jaxvis.models.pooling import max_pool_2x2


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
