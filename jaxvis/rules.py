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
