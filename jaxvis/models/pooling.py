"""2x2, stride-2 max-pooling as elementwise maxima, with PyTorch's gradient rule.

XLA's ``reduce_window`` and its transpose ``select_and_scatter`` are slow on CPU; a 2x2 window that
never overlaps is the elementwise max of four strided slices, which XLA fuses with its neighbours.
The gradient goes, as in ``torch.nn.MaxPool2d``, to the first maximum of each window in row-major
order; ties are common in class-model visualisation, whose first image is constant.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _corners(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The four values of each window, in row-major order: top-left, top-right, bottom-left, bottom-right.

    Strided slices keep the channels innermost, so XLA fuses them into elementwise loops. (A reduce over
    a reshaped (N, H/2, 2, W/2, 2, C) is ~9x slower on CPU, and XLA fuses such a reduce into a following
    matrix product as a loop that takes ~20x as long as the product alone.)
    """
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    return x[:, 0:h:2, 0:w:2], x[:, 0:h:2, 1:w:2], x[:, 1:h:2, 0:w:2], x[:, 1:h:2, 1:w:2]


def _max(corners):
    a, b, c, d = corners
    return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """Max over 2x2 windows with stride 2 on NHWC input; an odd last row or column is dropped (floor
    mode, ``padding="VALID"``)."""
    return _max(_corners(x))


def _forward(x):
    corners = _corners(x)
    m = _max(corners)
    a, b, c, d = corners
    # Index of the first maximum in row-major order; in a window holding NaN (the maximum then), the
    # last NaN, as PyTorch's kernel takes every NaN it meets.
    first = jnp.where(a == m, 0, jnp.where(b == m, 1, jnp.where(c == m, 2, 3)))
    last_nan = jnp.where(jnp.isnan(d), 3, jnp.where(jnp.isnan(c), 2, jnp.where(jnp.isnan(b), 1, 0)))
    first = jnp.where(jnp.isnan(m), last_nan, first).astype(jnp.int8)
    return m, (first, x.shape)


def _backward(residual, g):
    first, shape = residual
    n, h, w, c = shape
    zero = jnp.zeros((), g.dtype)
    parts = [jnp.where(first == k, g, zero) for k in range(4)]
    top = jnp.stack(parts[:2], axis=3).reshape(n, h // 2, w // 2 * 2, c)
    bottom = jnp.stack(parts[2:], axis=3).reshape(n, h // 2, w // 2 * 2, c)
    spread = jnp.stack([top, bottom], axis=2).reshape(n, h // 2 * 2, w // 2 * 2, c)
    return (jnp.pad(spread, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))),)


max_pool_2x2.defvjp(_forward, _backward)
