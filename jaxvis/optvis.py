"""Feature visualisation in one namespace: what a class-model sweep is made of, as values.

    from jaxvis import optvis as ov

    objective = ov.score() + 0.1 * ov.sq() + 0.5 * ov.Term("mine", my_fn)      # objectives.py
    image = ov.fourier(1.5) + ov.decorrelated(ov.stats_of(model)["colour_sqrt"]) + ov.sigmoid() + MyStage()
    views = (ov.jitter(8), ov.rotate(180, wrap=True))                         # transforms.py
    sweep = ov.Sweep(targets=range(6), lrs=[0.05], losses=[objective])
    engine = ov.Engine(model, sweep, optimizer=ov.Optimizer(optax.adam), parameterization=image,
                       transforms=views, steps=256)
    result = engine.run(sweep)                      # or ov.write_run(engine, sweep, "runs/x"): a run directory

The names are those of ``jaxvis.objectives``, ``jaxvis.parameterizations``, ``jaxvis.transforms``,
``jaxvis.engine`` and ``jaxvis.sweeps`` (``write_run`` is ``sweeps.run_engine``); see each for the details. A
parameterisation is a chain of stages; ``MyStage`` above stands for one of your own (a frozen dataclass
subclass of ``Stage`` with ``__call__(t, draw)``: ``jaxvis.parameterizations`` says what else it may do).
"""

from jaxvis.engine import Engine, Optimizer, Result, Sweep, SweepError
from jaxvis.objectives import (Context, Objective, ObjectiveError, Term, activation, all_boxes, biggest_box, box_loc,
                               channel, direction, head, inv_score, l2, l2_start, l2_to, log_prob, multibox, neuron,
                               opacity, opacity_outside, score, sq, tv)
from jaxvis.parameterizations import (Draw, Parameterization, ParameterizationError, Stage, alpha, box_start, clip,
                                      decorrelated, fourier, image_statistics, load_stats, maco, pixels, sigmoid, solid,
                                      stats_of)
from jaxvis.sweeps import run_engine as write_run
from jaxvis.transforms import (TransformError, blur, compose, crop, jitter, noise, pad, recolour, rotate, scale,
                               turn90)

__all__ = [
    "Context", "Draw", "Engine", "Objective", "ObjectiveError", "Optimizer", "Parameterization", "ParameterizationError",
    "Result", "Stage", "Sweep", "SweepError", "Term", "TransformError", "activation", "all_boxes", "alpha", "biggest_box",
    "blur", "box_loc", "box_start", "channel", "clip", "compose", "crop", "decorrelated", "direction", "fourier",
    "head", "image_statistics", "inv_score", "jitter", "l2", "l2_start", "l2_to", "load_stats", "log_prob", "maco", "multibox", "neuron",
    "noise", "opacity", "opacity_outside", "pad", "pixels", "recolour", "rotate", "scale", "score", "sigmoid",
    "solid", "sq", "stats_of", "turn90", "tv", "write_run",
]
