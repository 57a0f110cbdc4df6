"""Backward rules: rectifiers whose forward pass is ReLU's and whose backward pass is another rule's.

The models take their rectifier as a value (``VGG.relu``, ``SSD.relu``; ``nn.relu`` by default), so a rule is
a model with another ``relu``: ``saliency.guided_backprop()`` and ``saliency.deconvnet()`` swap it in.

- ``guided_relu`` (Guided Backprop, Springenberg et al. 2015): the signal coming back passes where the forward
  input was positive and the signal itself is positive: g * [x > 0] * [g > 0].
- ``deconv_relu`` (DeconvNet, Zeiler & Fergus 2014): the positive part of the signal coming back, whatever the
  forward input: max(g, 0). Simonyan et al. 2013 (section 4) show that, on a network whose rectifiers are
  followed by convolutions or max-pooling, the DeconvNet reconstruction is the gradient except at the
  rectifiers, where the gradient masks by the forward input (g * [x > 0]) instead.

Max-pooling keeps its gradient (the switches of the forward pass) under both rules, as in both papers.

- ``rescale_relu`` and ``rescale_pool`` (DeepLift's rescale rule, Shrikumar et al. 2017; ``jaxvis.deeplift``): on
  a batch [inputs; references], the difference of the outputs over the difference of the inputs, at the
  rectifiers and the max-pools.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def rectifier(backward):
    """A rectifier whose forward pass is ReLU's, max(x, 0), and whose backward pass is ``backward(x, g)``: the
    signal passed back from the signal ``g`` coming back and the forward input ``x``. A rule of your own is one
    more; ``saliency.with_relu(model, rule)`` puts it in a model (``saliency.with_rules(model, relu=..., pool=...)`` a
    pooling rule as well: a function of each max-pooling function)."""

    @jax.custom_vjp
    def relu(x):
        return jnp.maximum(x, 0)

    relu.defvjp(lambda x: (jnp.maximum(x, 0), x), lambda x, g: (backward(x, g),))
    return relu


# Guided Backprop: g where x > 0 and g > 0, else 0
guided_relu = rectifier(lambda x, g: jnp.where(x > 0, jnp.maximum(g, 0), jnp.zeros_like(g)))
# DeconvNet: max(g, 0), whatever x
deconv_relu = rectifier(lambda x, g: jnp.maximum(g, 0))


# ------------------------------------------------------------------------------------- DeepLift's rescale rule
#
# DeepLift (Shrikumar et al. 2017) explains S(x) - S(x_ref) by multipliers: at a nonlinearity y = f(x), the
# difference of the outputs over the difference of the inputs, (y - y_ref) / (x - x_ref) (the rescale rule),
# in place of the derivative f'(x); linear layers keep their gradient. The rules below see the input and the
# reference at once: the model runs on the batch [inputs; references] (first half the inputs, second half
# their references, pair by pair), each rule splits the saved forward input into its halves and passes the
# same multipliers back through both. Where |x - x_ref| < RESCALE_EPS the derivative is used instead (the
# quotient is rounding there), as Captum's DeepLift does.

RESCALE_EPS = 1e-10


def _halves(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    n = a.shape[0] // 2
    return a[:n], a[n:]


def _twice(a: jax.Array) -> jax.Array:
    return jnp.concatenate([a, a], axis=0)


def _rescale_relu_backward(x, g):
    x_in, x_ref = _halves(x)
    dx = _twice(x_in - x_ref)
    dy = _twice(jnp.maximum(x_in, 0) - jnp.maximum(x_ref, 0))
    near = jnp.abs(dx) < RESCALE_EPS
    gradient = jnp.where(x > 0, g, jnp.zeros_like(g))
    return jnp.where(near, gradient, g * dy / jnp.where(near, jnp.ones_like(dx), dx))


# DeepLift's rectifier on a batch [inputs; references]: g * (relu(x) - relu(x_ref)) / (x - x_ref)
rescale_relu = rectifier(_rescale_relu_backward)


@functools.cache
def rescale_pool(pool):
    """DeepLift's rule for a max-pooling function ``pool`` (a pooling rule: ``saliency.with_rules(model,
    pool=rescale_pool)``), on a batch [inputs; references], as Captum's DeepLift computes it for max-pooling.

    With o = pool(x), o_ref = pool(x_ref), m = max(o, o_ref) and g_in, g_ref the signals coming back to the two
    halves, the change o - o_ref is cut at m into (m - o_ref) + (o - m): the first part goes back through the
    input's switches carrying g_in, the second through the reference's switches carrying g_ref; their sum u,
    divided by x - x_ref, is the multiplier of both halves (the pool's own gradient where |x - x_ref| <
    RESCALE_EPS). With g_in = g_ref, u sums to g (o - o_ref) over each window, which keeps DeepLift's
    summation to the change of the target. Overlapping windows (SSD's 3x3, stride-1 pool5) add their shares
    where they share a switch, as the pool's gradient does."""

    @jax.custom_vjp
    def pooled(x):
        return pool(x)

    def backward(x, g):
        y, unpool = jax.vjp(pool, x)
        y_in, y_ref = _halves(y)
        g_in, g_ref = _halves(g)
        top = jnp.maximum(y_in, y_ref)
        u_in, u_ref = _halves(unpool(jnp.concatenate([g_in * (top - y_ref), g_ref * (y_in - top)], axis=0))[0])
        x_in, x_ref = _halves(x)
        dx = _twice(x_in - x_ref)
        near = jnp.abs(dx) < RESCALE_EPS
        return (jnp.where(near, unpool(g)[0], _twice(u_in + u_ref) / jnp.where(near, jnp.ones_like(dx), dx)),)

    pooled.defvjp(lambda x: (pool(x), x), backward)
    return pooled
