"""Max-pooling as elementwise maxima of slices, with PyTorch's gradient rule: the 2x2, stride-2 pool of
VGG (floor mode, and ceil mode as SSD's pool3 runs it) and SSD's 3x3, stride-1 pool5.

XLA's ``reduce_window`` and its transpose ``select_and_scatter`` are slow on CPU; a pooling window is
the elementwise max of strided or shifted slices, which XLA fuses with its neighbours. The gradient
goes, as in ``torch.nn.MaxPool2d``, to the first maximum of each window in row-major order (to the last
NaN of a window holding NaN); ties are common in class-model visualisation, whose first image is
constant.
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


def max_pool_2x2_ceil(x: jax.Array) -> jax.Array:
    """Max over 2x2 windows with stride 2 in ceil mode: an odd last row or column forms windows of its
    own (torch's ``ceil_mode=True``; SSD's pool3). The padding is -inf, which never wins a window."""
    pad = ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0))
    return max_pool_2x2(jnp.pad(x, pad, constant_values=-jnp.inf) if any(p[1] for p in pad) else x)


def _shifts(x: jax.Array) -> list[jax.Array]:
    """The nine values of each 3x3 window of stride 1 over the -inf padded input, in row-major order."""
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    return [xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]


def _max_all(values):
    out = values[0]
    for v in values[1:]:
        out = jnp.maximum(out, v)
    return out


@jax.custom_vjp
def max_pool_3x3_s1(x: jax.Array) -> jax.Array:
    """Max over 3x3 windows with stride 1 and a padding of 1 (SSD's pool5); the output has the input's size."""
    return _max_all(_shifts(x))


def _forward_3x3(x):
    values = _shifts(x)
    m = _max_all(values)
    first = jnp.full(m.shape, 8, jnp.int8)
    for k in range(7, -1, -1):  # the first maximum in row-major order wins
        first = jnp.where(values[k] == m, jnp.int8(k), first)
    last_nan = jnp.zeros(m.shape, jnp.int8)
    for k in range(9):  # the last NaN wins, as PyTorch's kernel takes every NaN it meets
        last_nan = jnp.where(jnp.isnan(values[k]), jnp.int8(k), last_nan)
    return m, (jnp.where(jnp.isnan(m), last_nan, first), x.shape)


def _backward_3x3(residual, g):
    first, (n, h, w, c) = residual
    zero = jnp.zeros((), g.dtype)
    total = jnp.zeros((n, h + 2, w + 2, c), g.dtype)
    for k in range(9):  # each window's gradient back to the pixel it took its maximum from
        i, j = divmod(k, 3)
        total = total + jnp.pad(jnp.where(first == k, g, zero), ((0, 0), (i, 2 - i), (j, 2 - j), (0, 0)))
    return (total[:, 1:h + 1, 1:w + 1],)


max_pool_3x3_s1.defvjp(_forward_3x3, _backward_3x3)


def plain(pool):
    """The pooling rule of a model that keeps every pool's own gradient: ``pool`` itself. A model runs each of
    its max-pools ``p`` as ``self.pool(p)(x)``; a backward rule (``jaxvis.rules``) is another function of the
    pooling function, returning one with the same forward pass and the rule's backward pass."""
    return pool
