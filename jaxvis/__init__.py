"""jaxvis: what convolutional networks learned, in JAX.

Class-model visualisation and saliency maps (Simonyan, Vedaldi & Zisserman 2013) for classifiers and
detectors ported from torchvision to Flax.
"""

__version__ = "0.1.0"

from jaxvis.model import Model, from_spec, load  # noqa: E402
from jaxvis.spec import ModelSpec  # noqa: E402

__all__ = ["Model", "ModelSpec", "from_spec", "load", "__version__"]
