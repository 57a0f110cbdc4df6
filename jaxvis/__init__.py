"""jaxvis: what convolutional networks learned, in JAX.

Class-model visualisation and saliency maps (Simonyan, Vedaldi & Zisserman 2013) for classifiers and
detectors ported from torchvision to Flax.

Two namespaces gather what a researcher composes: ``jaxvis.optvis`` (objectives, parameterisations,
transforms, the optimiser, the sweep and its engine, a run directory from values) and
``jaxvis.attribution`` (attribution methods, targets, and the metrics that rank them).

``Model``, ``load``, ``from_spec`` and ``ModelSpec`` are imported on first use, so that ``import jaxvis``
(and the launchers' first checks) do not wait for JAX to load.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {"Model": "jaxvis.model", "from_spec": "jaxvis.model", "load": "jaxvis.model", "ModelSpec": "jaxvis.spec"}

__all__ = ["Model", "ModelSpec", "from_spec", "load", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name.startswith("__"):
        raise AttributeError(name)
    try:  # submodules, as the eager import of jaxvis.model used to make them attributes
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module 'jaxvis' has no attribute {name!r}") from None


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
