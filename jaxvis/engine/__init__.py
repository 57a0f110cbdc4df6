"""The sweep engine: class-model visualisation for a whole grid as one compiled program per chunk.

A sweep is the product of axes: targets (categories, or channels for activation terms), learning rates,
loss variants (weighted sums of terms), factors on the weight of any term, initialisations (0 = zeros as
in the paper, s > 0 = Gaussian noise of std s), seeds and target-box sets. One pure step, objective
value and gradient with respect to the image followed by the optax update, is written for one grid point
and vmapped over the points of a chunk; the model parameters are broadcast. On accelerators ``lax.scan``
runs the steps inside the same compiled call, and on CPUs too where every convolution is one of oneDNN's
kernels; with XLA's own convolutions, which XLA's CPU backend runs slowly inside a loop body, the host
loops over the compiled step without moving data (``Engine(loop=...)``). Snapshots (image after k steps) and
per-step curves are collected on the device. Each chunk is sharded over the devices along the points axis.

By default the optimised variable is the zero-centred image in the network's input space (the
normalised input), started from zeros unless an initialisation scale is given; ``model.to_image`` adds
the mean back. ``parameterization`` (``jaxvis.parameterizations``: Fourier, decorrelated colour, MACO,
sigmoid or clip) makes the image a function of the variable instead; whatever it is, the images
reported (final and snapshots) are network-input images. ``transforms`` (``jaxvis.transforms``) are
random transformations of the image before each forward pass, keyed per point by its seed, the step
and the transform's index, so a point alone equals the point inside a sweep.

Two robustness options, static per engine: ``jitter`` shifts the image by a random offset of up to that
many pixels (cyclically) before each forward pass, so the visualisation cannot rely on exact pixel
positions; ``clip`` projects the image after every step onto the values a real image can take (black to
white in every channel), so what is shown is what the network saw. ``compute_dtype="bfloat16"`` runs the
network in bfloat16 on GPUs and TPUs while the image and optimiser stay float32.

A grid point whose loss, gradient or image turns non-finite, or whose image grows past a million times
the valid range (``core.DIVERGENCE_FACTOR``: learning rates far too large), is frozen at its last image
before that and reported with the step at which it diverged; points never interact, so the others are
unaffected.

The parts: ``grid`` (Sweep: the axes, their terms and the per-point arrays; Optimizer), ``core`` (the
numeric core: one point's loss, the step, the initial state and the final evaluation as pure functions
of a frozen EngineConfig; Result, a pytree) and ``runner`` (Engine: chunks, devices, the steps loop,
progress events).
"""

from jaxvis.engine.core import EngineConfig, Result
from jaxvis.engine.grid import Optimizer, Sweep, SweepError
from jaxvis.engine.runner import Engine, ProgressEvent, available_memory, bytes_per_point, env_devices

__all__ = ["Engine", "EngineConfig", "Optimizer", "ProgressEvent", "Result", "Sweep", "SweepError",
           "available_memory", "bytes_per_point", "env_devices"]
