"""Backward rules: rectifiers whose forward pass is ReLU's and whose backward pass is another rule's.

The models take their rectifier as a value (``VGG.relu``, ``SSD.relu``; ``nn.relu`` by default), so a rule is
a model with another ``relu``: ``saliency.guided_backprop()`` and ``saliency.deconvnet()`` swap it in.

- ``guided_relu`` (Guided Backprop, Springenberg et al. 2015): the signal coming back passes where the forward
  input was positive and the signal itself is positive: g * [x > 0] * [g > 0].
- ``deconv_relu`` (DeconvNet, Zeiler & Fergus 2014): the positive part of the signal coming back, whatever the
  forward input: max(g, 0). Simonyan et al. 2013 (section 4) show that, on a network whose rectifiers are
  followed by convolutions or max-pooling, the DeconvNet reconstruction is the gradient except at the
  rectifiers, where the gradient masks by the forward input (g * [x > 0]) instead.

Max-pooling keeps its gradient (the switches of the forward pass) under every rule, as in both papers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def guided_relu(x):
    """max(x, 0); backward: g where x > 0 and g > 0, else 0."""
    return jnp.maximum(x, 0)


def _guided_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_bwd(x, g):
    return (jnp.where(x > 0, jnp.maximum(g, 0), jnp.zeros_like(g)),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)


@jax.custom_vjp
def deconv_relu(x):
    """max(x, 0); backward: max(g, 0), whatever x."""
    return jnp.maximum(x, 0)


def _deconv_fwd(x):
    return jnp.maximum(x, 0), None


def _deconv_bwd(_, g):
    return (jnp.maximum(g, 0),)


deconv_relu.defvjp(_deconv_fwd, _deconv_bwd)
