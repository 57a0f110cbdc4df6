"""2x2, stride-2 max-pooling as a reshape, with PyTorch's gradient rule.

XLA's ``reduce_window`` and its transpose ``select_and_scatter`` are slow on CPU; a 2x2 window that
never overlaps is a reshape followed by a max over four values, which XLA fuses with its neighbours.
The gradient goes, as in ``torch.nn.MaxPool2d``, to the first maximum of each window in row-major
order; ties are common in class-model visualisation, whose first image is constant.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _windows(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, H//2, W//2, C, 4), the four values of each window in row-major order."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(n, h // 2, w // 2, c, 4)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """Max over 2x2 windows with stride 2 on NHWC input; an odd last row or column is dropped (floor
    mode, ``padding="VALID"``)."""
    return jnp.max(_windows(x), axis=-1)


def _forward(x):
    windows = _windows(x)
    return jnp.max(windows, axis=-1), (jnp.argmax(windows, axis=-1).astype(jnp.int8), x.shape)


def _backward(residual, g):
    first, shape = residual
    n, h, w, c = shape
    spread = jnp.where(first[..., None] == jnp.arange(4, dtype=jnp.int8), g[..., None], jnp.zeros((), g.dtype))
    spread = spread.reshape(n, h // 2, w // 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n, h // 2 * 2, w // 2 * 2, c)
    return (jnp.pad(spread, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_forward, _backward)
