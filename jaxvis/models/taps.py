"""Named activations that a caller can take gradients with respect to.

Every activation a model returns passes through ``record``: it is stored under its name and, when the caller
passes a variables collection ``"taps"`` with an entry of that name, that entry is added to it where it is made.
A zero tap changes nothing, and the gradient with respect to the tap is dS/dA for the activation A, the total
derivative through every layer that reads A. Without the collection ``record`` only stores the activation."""

from __future__ import annotations

import flax.linen as nn
import jax

TAPS = "taps"


def record(module: nn.Module, acts: dict[str, jax.Array], name: str, x: jax.Array) -> jax.Array:
    """``acts[name] = x`` (plus the caller's tap of that name, if any); returns what the network reads on."""
    if module.has_variable(TAPS, name):
        x = x + module.get_variable(TAPS, name)
    acts[name] = x
    return x
