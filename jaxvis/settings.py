"""Every setting of a class-model sweep, with its default and its help, written once.

``SweepSettings`` is the frozen value the library reads (``jaxvis.sweeps.build`` and ``run``). The
launcher's config (``experiments/configs/default.py``), its flags (``python -m experiments.class_model
--helpfull``) and the study configs all come from the fields below: a new setting is added here and
appears everywhere. Process matters (the run directory, resuming, progress, the cluster) are not
settings: they are arguments of ``sweeps.run`` and the launcher's own flags.

Values are typed: numbers as numbers, lists as tuples. ``SweepSettings.create(**values)`` also reads
the command line's text forms (``lrs="0.1,1,10"``, ``categories="goose,sorrel"``) and says which field
it could not read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class SettingsError(ValueError):
    """A setting that does not exist or cannot be read."""


def _field(default, help: str, kind: str, choices: tuple[str, ...] = ()):
    """A settings field: ``kind`` is how its value reads (str, int, float, bool; floats, ints, strs for
    comma-separated lists; multi for strings repeated on the command line)."""
    return dataclasses.field(default=default, metadata={"help": help, "kind": kind, "choices": choices})


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    model: str = _field("", "Architecture expected in the params file (e.g. vgg16), checked against the file; "
                        "empty: whatever the file holds.", "str")
    params: str = _field("", "jaxvis params file (.safetensors); convert one with python -m "
                         "converters.torchvision.", "str")
    categories: tuple = _field((), "Class names or indices (channel indices for the activation objective): "
                               "a sweep axis.", "strs")
    lrs: tuple = _field((1.0,), "Learning rates: a sweep axis.", "floats")
    steps: int = _field(200, "Gradient steps per point.", "int")
    objective: str = _field("", "Objective term; empty: score for classifiers, multibox for detectors. Terms: "
                            "score, log_prob, inv_score, activation; biggest_box, box_loc, all_boxes, multibox, head:mapK (one "
                            "SSD head's boxes).",
                            "str")
    penalty: tuple = _field((), "Penalty term and weight(s), repeatable: sq=1, or sq=0.1,1,10 (a sweep axis "
                            "over its weight). Penalties: sq, l2, tv.", "multi")
    loss: tuple = _field((), "A loss variant such as score+sq or score+0.1*sq, repeatable: an axis of "
                         "variants (instead of objective and penalty).", "multi")
    term_options: tuple = _field((), "Static term options, repeatable: activation:layer=conv5_3_pre, "
                                 "activation:position=3,4, inv_score:eps=0.5, all_boxes:reduce=sum.", "multi")
    optimizer: str = _field("sgd", "optax optimiser.", "str", ("sgd", "momentum", "adam"))
    momentum: float = _field(0.9, "Momentum of the momentum optimiser.", "float")
    jitter: int = _field(0, "Shift the image by up to this many pixels at random before each step.", "int")
    clip: bool = _field(False, "Keep the image within the values of a real image (black to white).", "bool")
    parameterization: str = _field("pixels", "How the image is made from the optimised variable, parts joined by "
                                   "'+': pixels (alone: the network-input image itself), fourier or fourier(DECAY) "
                                   "(1/f^decay spectrum), maco (Fourier phase only, magnitude of the image "
                                   "statistics), decorrelated (colour), sigmoid or clip (into the valid range), alpha "
                                   "(an opacity channel: the network sees the image over random backgrounds, it is "
                                   "reported over grey; the opacity term penalises it) or alpha(C) (reported over a "
                                   "background of contrast C drawn from the point's seed), solid (with alpha: the "
                                   "colours one colour, their mean: a flat silhouette), boxstart(P) (with alpha: "
                                   "opacity P at the start inside the target boxes); "
                                   "e.g. fourier+decorrelated+sigmoid.", "str")
    decays: tuple = _field((), "Fourier decays of the fourier parameterisation: a sweep axis (empty: the "
                           "parameterisation's own, 1).", "floats")
    image_stats: str = _field("", "Image statistics file (.npz from python -m experiments.image_statistics) for "
                              "decorrelated and maco; empty: those the model's file names (the shipped shapes models: "
                              "the shapes statistics), else ImageNet's colour matrix.", "str")
    transforms: str = _field("", "Random transforms before each step, in order: pad(N), jitter(N), scale(LO,HI), "
                             "rotate(DEG), crop(START,END), blur(SIGMA), noise(STD), recolour(MOST) (towards a "
                             "random flat colour by up to MOST); scale and rotate take a last "
                             "argument wrap (the image repeated instead of grey outside it); e.g. "
                             "pad(4),jitter(4),scale(0.9,1.1),rotate(10). Each point draws its own.", "str")
    views: int = _field(1, "Randomly transformed copies of the image per step, their losses averaged (a less "
                        "noisy gradient over the transforms; the step costs as many forward passes).", "int")
    plain_views: int = _field(0, "How many of the views (the first) see the image untransformed: a pull towards "
                              "an image that works as it is reported, beside views that keep it robust.", "int")
    compute_dtype: str = _field("float32", "Precision of the network's computation (bfloat16 for GPUs and TPUs; "
                                "the image and the optimiser stay float32).", "str", ("float32", "bfloat16"))
    conv_backend: str = _field("auto", "Convolutions: oneDNN's on CPUs where its kernels are built (auto), or "
                               "XLA's (see jaxvis.conv). Not part of a run's identity.", "str",
                               ("auto", "onednn", "xla"))
    loop: str = _field("auto", "Steps loop: one lax.scan on accelerators and with oneDNN's convolutions on CPUs, "
                       "on the host with XLA's on CPUs (auto), or either. Not part of a run's identity.", "str",
                       ("auto", "scan", "host"))
    init: tuple = _field((0.0,), "Initialisations: 0 = zeros (the paper), s > 0 = Gaussian noise of std s: a "
                         "sweep axis.", "floats")
    seeds: tuple = _field((0,), "Noise and jitter seeds: a sweep axis.", "ints")
    start_images: tuple = _field((), "Image files (PNG, JPEG; or folders of them) to start from instead of zeros or "
                                 "noise, resized to the model's input: a sweep axis (feature accentuation; "
                                 "the l2_start term pulls towards each point's own image).", "strs")
    boxes: tuple = _field((), "Target box sets of detector objectives, repeatable: whole, centre_quarter, or "
                          "x1,y1,x2,y2;... in the network input's pixels: a sweep axis.", "multi")
    snapshots: tuple = _field((), "Iterations at which to keep the image (0 is always kept).", "ints")
    chunk_size: int = _field(0, "Grid points per compiled chunk; 0: what fits in memory.", "int")
    display: str = _field("stretch", "How PNGs show the images.", "str", ("stretch", "clip"))
    pngs: bool = _field(True, "Write PNGs (per point, per snapshot, curves, grids); false writes only the "
                        "arrays, results.jsonl and the report, for grids too large to look at point by point.",
                        "bool")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata["choices"]
            if choices and value not in choices:
                raise SettingsError(f"{f.name} must be one of {', '.join(choices)}; got {value!r}.")

    @classmethod
    def create(cls, **values) -> "SweepSettings":
        """Settings from typed values or their text forms; unnamed fields keep their defaults."""
        return cls().replace(**values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "SweepSettings":
        """From a dict or a ConfigDict (a study config's fields)."""
        return cls.create(**dict(values))

    def replace(self, **changes) -> "SweepSettings":
        fields = {f.name: f for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise SettingsError(unknown_message(unknown))
        read = {name: _read(value, fields[name]) for name, value in changes.items()}
        return dataclasses.replace(self, **read)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists)."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


def unknown_message(unknown, given_as: str = "") -> str:
    """The line for settings ``unknown`` that do not exist: every setting's name, then the nearest to
    each unknown one. ``given_as``: how they were written (``--config.``), put before each name."""
    names = [f.name for f in fields()]
    near = nearest(unknown)
    if len(unknown) == 1 and near:
        hint = f"; did you mean {given_as}{next(iter(near.values()))}?"
    elif near:
        hint = "; did you mean " + ", ".join(f"{given_as}{m} (for {given_as}{n})" for n, m in near.items()) + "?"
    else:
        hint = "."
    shown = [f"{given_as}{n}" for n in unknown]
    return f"unknown setting(s) {shown}; the settings are: {', '.join(names)}{hint}"


def nearest(unknown) -> dict[str, str]:
    """Each of the names ``unknown`` that resembles a setting's name -> that name."""
    import difflib

    names = [f.name for f in fields()]
    found = {str(n): difflib.get_close_matches(str(n), names, n=1, cutoff=0.6) for n in unknown}
    return {n: m[0] for n, m in found.items() if m}


def fields() -> tuple[dataclasses.Field, ...]:
    """The settings' fields, in order, each with ``metadata`` help, kind and choices."""
    return dataclasses.fields(SweepSettings)


def _read(value, field: dataclasses.Field):
    """``value`` as the field's type; text forms of lists are split on commas."""
    kind, name = field.metadata["kind"], field.name
    try:
        if kind in ("floats", "ints", "strs"):
            if value is None:
                return ()
            items = value.split(",") if isinstance(value, str) else list(value)
            items = [i.strip() if isinstance(i, str) else i for i in items]
            items = [i for i in items if i != ""]
            if kind == "floats":
                return tuple(float(i) for i in items)
            if kind == "ints":
                return tuple(_int(i) for i in items)
            return tuple(str(i) for i in items)
        if kind == "multi":
            if value is None:
                return ()
            return (value,) if isinstance(value, str) else tuple(str(i) for i in value)
        if kind == "int":
            return 0 if value is None else _int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        return "" if value is None else str(value)
    except (TypeError, ValueError):
        what = {"floats": "numbers", "ints": "whole numbers", "int": "a whole number", "float": "a number",
                "bool": "true or false"}.get(kind, "text")
        raise SettingsError(f"setting {name} must be {what}; got {value!r}.") from None


def _int(value) -> int:
    number = float(value)
    if number != int(number):
        raise ValueError(value)
    return int(number)
