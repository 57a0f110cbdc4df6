"""The command line's text read into the library's values: loss and term names, term options, penalties,
the optimiser's name, parameterisations, transforms, target boxes, attribution methods, scores and channel
reductions. The launchers' flags and config fields (``jaxvis.settings``) are text; everything behind them
takes values (``jaxvis.objectives``, ``jaxvis.engine.Optimizer``, ``jaxvis.saliency``), and this module is
where one becomes the other, with an error that says what to write.

The term grammar, the inverse of the names the objectives give their terms
(``jaxvis.objectives.term_name``)::

    kind[:layer][@row,col][[target]][{eps=E}][{reduce=sum}]

``score``, ``score[3]`` (class 3 whatever the point's target), ``channel:conv4_3``,
``channel:conv4_3[7]``, ``neuron:conv4_1@2,3``, ``inv_score{eps=0.5}``, ``all_boxes{reduce=sum}``,
``head:map1[4]``. A loss is terms joined by ``+``, each with an optional weight: ``score+0.1*sq``.
Directions and pulls towards an image hold arrays: they are built as values, never read from text.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

from jaxvis import objectives as O
from jaxvis import parameterizations as P
from jaxvis import transforms as T


class TextError(ValueError):
    """Text that does not read as a value: says what was found and what to write."""


def _target_only(make: Callable[..., O.Objective]) -> Callable[..., O.Objective]:
    return lambda target=None: make(target)


# kind -> (builder from keyword options, the options it takes, the options it needs)
_TERMS: dict[str, tuple[Callable[..., O.Objective], set[str], set[str]]] = {
    "score": (_target_only(O.score), {"target"}, set()),
    "log_prob": (_target_only(O.log_prob), {"target"}, set()),
    "inv_score": (lambda target=None, eps=None: O.inv_score(target, eps), {"target", "eps"}, set()),
    "activation": (lambda layer, position=None: O.activation(layer, position), {"layer", "position"}, {"layer"}),
    "channel": (lambda layer, target=None: O.channel(layer, target), {"layer", "target"}, {"layer"}),
    "neuron": (lambda layer, position, target=None: O.neuron(layer, target, position),
               {"layer", "position", "target"}, {"layer", "position"}),
    "sq": (O.sq, set(), set()),
    "l2": (O.l2, set(), set()),
    "tv": (O.tv, set(), set()),
    "l2_start": (O.l2_start, set(), set()),
    "opacity": (O.opacity, set(), set()),
    "opacity_outside": (O.opacity_outside, set(), set()),
    "biggest_box": (_target_only(O.biggest_box), {"target"}, set()),
    "box_loc": (O.box_loc, set(), set()),
    "all_boxes": (lambda target=None, reduce="mean": O.all_boxes(target, total=_reduce(reduce)),
                  {"target", "reduce"}, set()),
    "multibox": (_target_only(O.multibox), {"target"}, set()),
    "head": (lambda layer, target=None: O.head(_map_index(layer), target), {"layer", "target"}, {"layer"}),
}
TERM_KINDS = tuple(_TERMS)


def _reduce(text: str) -> bool:
    if text not in ("mean", "sum"):
        raise TextError(f"all_boxes reduces by mean or sum, got {text!r}.")
    return text == "sum"


def _map_index(layer: str) -> int:
    if not (layer.startswith("map") and layer[3:].isdigit()):
        raise TextError(f"a head is named by the source map it reads, map0, map1, ...; got {layer!r}.")
    return int(layer[3:])


def term(kind: str, **options) -> O.Objective:
    """The built-in term ``kind`` with keyword ``options`` (from text: layer, position, target, eps,
    reduce), as a one-term objective."""
    if kind not in _TERMS:
        raise TextError(f"unknown objective term {kind!r}; known: {', '.join(TERM_KINDS)}.")
    make, allowed, needed = _TERMS[kind]
    extra = sorted(set(options) - allowed)
    if extra:
        takes = "options " + ", ".join(sorted(allowed)) if allowed else "no options"
        raise TextError(f"term {kind!r} takes {takes}, got {extra}.")
    missing = sorted(needed - set(options))
    if missing:
        raise TextError(f"term {kind!r} needs {', '.join(missing)}.")
    return make(**options)


_NAME = re.compile(r"(?P<kind>[a-z_0-9]+)(?::(?P<layer>[A-Za-z_0-9.]+))?(?:@(?P<row>\d+),(?P<col>\d+))?"
                   r"(?:\[(?P<target>\d+)\])?(?:\{eps=(?P<eps>[0-9.eE+-]+)\})?(?:\{reduce=(?P<reduce>[a-z]+)\})?")


def term_options(name: str) -> tuple[str, dict[str, Any]]:
    """A term's name read into (kind, options): ``neuron:conv4_1@2,3[7]`` -> ("neuron", {"layer":
    "conv4_1", "position": (2, 3), "target": 7})."""
    m = _NAME.fullmatch(name)
    if not m or m.group("kind") not in _TERMS:
        raise TextError(f"unknown objective term {name!r}; known: {', '.join(TERM_KINDS)}, or a term such as "
                        "channel:conv4_3, channel:conv4_3[7], neuron:conv4_1@2,3 or score[3]")
    options: dict[str, Any] = {}
    if m.group("layer"):
        options["layer"] = m.group("layer")
    if m.group("row"):
        options["position"] = (int(m.group("row")), int(m.group("col")))
    if m.group("target"):
        options["target"] = int(m.group("target"))
    if m.group("eps"):
        options["eps"] = float(m.group("eps"))
    if m.group("reduce"):
        options["reduce"] = m.group("reduce")
    return m.group("kind"), options


def term_named(name: str, extra: Mapping[str, Any] | None = None) -> O.Objective:
    """The term a name gives (``channel:conv4_3[7]``), with ``extra`` options (``--term_options``)."""
    kind, options = term_options(name)
    return term(kind, **{**options, **(extra or {})})


_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_PART = re.compile(rf"(?P<sign>[+-])?(?:(?P<weight>{_NUMBER})\*)?(?P<name>{_NAME.pattern})")  # a term's name, as above


def loss(text: str, options: Mapping[str, Mapping[str, Any]] | None = None) -> O.Objective:
    """``score+0.1*sq`` (or an objective's name, ``score-0.5*tv``) as an objective; ``options`` gives static
    options per term name (``{"activation": {"layer": "conv5_3_pre"}}``)."""
    options = options or {}
    compact = text.replace(" ", "")
    total, at = None, 0
    while at < len(compact):
        m = _PART.match(compact, at)
        if not m or (at and not m.group("sign")) or m.end() == at:
            raise TextError(f"cannot read loss {text!r} from {compact[at:]!r}: write terms joined by '+' or '-', "
                            "each with an optional weight, e.g. score+0.1*sq or channel:conv4_3+channel:conv5_1[3]")
        weight = float(m.group("weight")) if m.group("weight") else 1.0
        weight = -weight if m.group("sign") == "-" else weight
        try:
            value = weight * term_named(m.group("name"), options.get(m.group("name")))
        except ValueError as e:
            raise TextError(f"cannot read loss {text!r}: {e}") from None
        total = value if total is None else total + value
        at = m.end()
    if total is None:
        raise TextError("a loss is terms joined by '+', e.g. score+0.1*sq; got nothing.")
    return total


def term_option_entries(entries: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--term_options`` entries (``activation:layer=conv5_3_pre``, ``neuron:position=2,3``) per term."""
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name, _, rest = entry.partition(":")
        key, _, value = rest.partition("=")
        if not (name and key and value):
            raise TextError(f"term option {entry!r} should read term:key=value, e.g. activation:layer=conv5_3_pre")
        if key == "position":
            value = tuple(int(v) for v in re.split(r"[,x]", value))
        elif key == "eps":
            value = float(value)
        elif key == "target":
            value = int(value)
        out.setdefault(name, {})[key] = value
    return out


def optimizer(name: str, momentum: float = 0.9):
    """The launcher's ``--optimizer`` (sgd, momentum, adam) as an ``engine.Optimizer`` with optax's defaults
    (momentum: ``--momentum``), and the record a run directory keeps of it."""
    import optax

    from jaxvis.engine import Optimizer

    made = {"sgd": lambda: Optimizer(optax.sgd),
            "momentum": lambda: Optimizer(optax.sgd, momentum=float(momentum)),
            "adam": lambda: Optimizer(optax.adam, b1=0.9, b2=0.999, eps=1e-8)}
    if name not in made:
        raise TextError(f"optimizer must be sgd, momentum or adam, got {name!r}")
    return made[name]()


def optimizer_record(name: str, momentum: float = 0.9) -> dict[str, Any]:
    """What a run directory's config keeps of ``--optimizer`` and ``--momentum`` (a run's identity)."""
    return {"name": name, "momentum": float(momentum), "b1": 0.9, "b2": 0.999, "eps": 1e-8}


def numbers(values, what: str) -> list[float]:
    """``"0.1,1,10"`` (or a list of numbers) as floats; ``what`` names them in the error."""
    try:
        return [float(v) for v in (values if isinstance(values, (list, tuple)) else str(values).split(","))]
    except ValueError:
        raise TextError(f"{what} must be numbers, got {values!r}") from None


def penalty(entry: str) -> tuple[str, list[float]]:
    """``--penalty``'s ``"sq=0.1,1,10"``: (the term's name, its weights)."""
    name, _, values = entry.partition("=")
    if not values:
        raise TextError(f"--penalty reads name=weight(s), e.g. sq=1 or sq=0.1,1,10; got {entry!r}")
    return name, numbers(values, f"weights of penalty {name}")


def boxes(entries, input_size) -> list[list[list[float]]]:
    """``--boxes``: per entry a set of target boxes (xyxy, input pixels): ``whole`` (the whole input),
    ``centre_quarter`` (its middle half in each direction) or ``"x1,y1,x2,y2"`` boxes joined by ``;``;
    no entry: one empty set."""
    h, w = input_size
    sets = []
    for entry in entries or []:
        if entry in ("whole", "whole_image"):
            sets.append([[0.0, 0.0, float(w), float(h)]])
        elif entry in ("centre_quarter", "center_quarter"):
            sets.append([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]])
        else:
            found = []
            for part in entry.split(";"):
                nums = numbers(part, "box coordinates")
                if len(nums) != 4:
                    raise TextError(f"a box is x1,y1,x2,y2; got {part!r}")
                found.append(nums)
            sets.append(found)
    return sets or [[]]


def _number(text: str, part: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise P.ParameterizationError(f"{part!r}: the number in the brackets is not a number; write e.g. fourier(1.5) "
                                      "or alpha(0.5).") from None


def parameterization(text: str, model=None, stats: str = "") -> P.Parameterization:
    """``"fourier+decorrelated+sigmoid"``, ``"maco+clip"``, ``"pixels"``: the launcher's form, as a value. The
    decorrelation matrix and MACO spectrum come from the statistics file ``stats`` names, else from those the
    model's spec names (``ModelSpec.image_stats``); without either, decorrelated is Lucid's ImageNet matrix and
    maco is refused."""
    parts = [p for p in text.replace(" ", "").split("+") if p] or ["pixels"]
    size = tuple(model.spec.input_size) if model is not None else None
    loaded: list = []  # the statistics (None: none named), read when a part needs them

    def statistics():
        if not loaded:
            loaded.append(_checked_stats(model, stats))
        return loaded[0]

    out = P.Parameterization()
    for part in parts:
        if part == "pixels":
            piece = P.pixels()
        elif part == "fourier":
            piece = P.fourier()
        elif part.startswith("fourier(") and part.endswith(")"):
            piece = P.fourier(_number(part[8:-1], part))
        elif part == "decorrelated":
            found = statistics()
            piece = P.decorrelated(found["colour_sqrt"] if found is not None else P.IMAGENET_COLOUR_SQRT)
        elif part == "maco":
            if size is None:
                raise P.ParameterizationError("maco needs the model (its input size) to find its spectrum.")
            if statistics() is None:
                raise P.ParameterizationError("maco needs a magnitude spectrum for this model: estimate one from "
                                              "images with jaxvis.parameterizations.image_statistics (python -m "
                                              "experiments.image_statistics) and name it as stats.")
            piece = P.maco(P.spectrum_for(statistics(), size))
        elif part in ("sigmoid", "clip"):
            piece = P.sigmoid() if part == "sigmoid" else P.clip()
        elif part == "alpha":
            piece = P.alpha()
        elif part.startswith("alpha(") and part.endswith(")"):
            piece = P.alpha(_number(part[6:-1], part))
        elif part == "solid":
            piece = P.solid()
        elif part.startswith("boxstart(") and part.endswith(")"):
            piece = P.box_start(_number(part[9:-1], part))
        else:
            raise P.ParameterizationError(f"unknown parameterisation part {part!r}; parts: pixels, fourier, "
                                        "fourier(DECAY), maco, decorrelated, sigmoid, clip, alpha, alpha(BACKDROP), "
                                          "solid, boxstart(OPACITY), joined by '+'.")
        out = out + piece
    return out


def _checked_stats(model, stats: str):
    """``P.stats_of(model, stats)``, or ParameterizationError (one line) when the file is not image statistics:
    unreadable, or without a 3x3 ``colour_sqrt``."""
    import zipfile

    import numpy as np

    name = stats or (model.spec.image_stats if model is not None else "")
    write = "write one with python -m experiments.image_statistics --out FILE.npz"
    try:
        found = P.stats_of(model, stats)
    except P.ParameterizationError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise P.ParameterizationError(f"image statistics {name!r} is not a .npz file of arrays (the form python -m "
                                      f"experiments.image_statistics writes; reading it gave {type(e).__name__}); "
                                      f"{write}.") from None
    if found is not None:
        colour = found.get("colour_sqrt")
        if colour is None or np.shape(colour) != (3, 3) or not np.all(np.isfinite(colour)):
            held = ", ".join(sorted(found)[:6]) or "nothing"
            raise P.ParameterizationError(f"{name!r} is not an image statistics file: it lacks a finite 3x3 "
                                          f"colour_sqrt (it holds {held}); {write}.")
    return found


_TRANSFORMS = {"pad": T.pad, "jitter": T.jitter, "scale": T.scale, "rotate": T.rotate, "turn90": T.turn90, "crop": T.crop,
               "blur": T.blur, "noise": T.noise, "recolour": T.recolour}


def transforms(text: str) -> tuple:
    """``"pad(4),jitter(8),scale(0.9,1.1),rotate(10)"`` -> the transforms, in that order."""
    if not re.fullmatch(r"\s*(?:[a-z][a-z0-9]*\s*\([^)]*\)\s*(?:,\s*|$))*", text):
        raise T.TransformError(f"cannot read transforms {text!r}; write e.g. pad(4),jitter(8),scale(0.9,1.1).")
    out = []
    for m in re.finditer(r"([a-z][a-z0-9]*)\s*\(([^)]*)\)", text):
        name, args = m.group(1), [a for a in m.group(2).replace(" ", "").split(",") if a]
        if name not in _TRANSFORMS:
            raise T.TransformError(f"unknown transform {name!r}; transforms: {', '.join(_TRANSFORMS)}.")
        wrap = "wrap" in args
        if wrap and (name not in ("scale", "rotate") or args[-1] != "wrap" or args.count("wrap") > 1):
            raise T.TransformError(f"cannot read transform {m.group(0)!r}: only scale and rotate take wrap, as their "
                                   "last argument, e.g. rotate(180,wrap).")
        try:
            numbers = [float(a) for a in args if a != "wrap"]
            out.append(_TRANSFORMS[name](*numbers, wrap=True) if wrap else _TRANSFORMS[name](*numbers))
        except T.TransformError:
            raise
        except (TypeError, ValueError) as e:
            raise T.TransformError(f"cannot read transform {m.group(0)!r}: {e}") from None
    return tuple(out)


def channel_reduction(name: str):
    """``--reduce``: max, sum, l2 or signed, the ``jaxvis.saliency`` channel reduction of that name."""
    from jaxvis import saliency as sal

    reductions = {"max": sal.max_abs, "sum": sal.sum_abs, "l2": sal.l2_norm, "signed": sal.signed_sum}
    if name not in reductions:
        raise TextError(f"unknown channel reduction {name!r}; reductions: {', '.join(reductions)}.")
    return reductions[name]


def attribution_score(name: str):
    """``--score``: logit, prob or log_prob, the ``jaxvis.saliency`` score function of that name."""
    from jaxvis import saliency as sal

    scores = {"logit": sal.logit, "prob": sal.prob, "log_prob": sal.log_prob}
    if name not in scores:
        raise TextError(f"unknown score {name!r}; scores: {', '.join(scores)}.")
    return scores[name]


# Every attribution method by its ``--method`` name (attribution_method makes each).
METHOD_NAMES = ("gradient", "grad_x_input", "guided_backprop", "deconvnet", "smoothgrad", "integrated", "gradcam",
                "guided_gradcam", "odam", "drise", "occlusion", "feature_ablation", "deeplift", "deeplift_shap",
                "gradient_shap", "lrp_epsilon", "lrp_alphabeta", "shapley_sampling", "kernel_shap", "lime", "blur_ig",
                "guided_ig", "xrai")

# The numbers each attribution method reads of attribution_method's keyword arguments (the others ignore them).
METHOD_OPTIONS = {"smoothgrad": ("samples", "noise"), "integrated": ("steps",), "gradcam": ("layer",),
                  "odam": ("layer",), "guided_gradcam": ("layer",), "drise": ("masks", "cell", "p"),
                  "occlusion": ("window", "stride"), "feature_ablation": ("cell",), "gradient_shap": ("samples",),
                  "lrp_epsilon": ("epsilon",), "lrp_alphabeta": ("alpha", "beta"),
                  "shapley_sampling": ("samples", "cell"), "kernel_shap": ("samples", "cell"),
                  "lime": ("samples", "cell", "lasso"), "blur_ig": ("steps",), "guided_ig": ("steps",),
                  "xrai": ("steps", "algorithm")}

# The references of the methods that compare the image with references, in the image's pixels (values in
# [0, 1]): DeepLift's black image; DeepLiftShap's and GradientShap's black and white images.
BLACK_AND_WHITE = ((0.0,), (1.0,))


def _one_layer(layer):
    """guided_gradcam's layer: one name (or None: a detector's source maps)."""
    if layer is None or isinstance(layer, str):
        return layer
    if len(layer) > 1:
        raise TextError(f"guided_gradcam takes one layer, got {', '.join(layer)}")
    return layer[0] if layer else None


def attribution_method(name: str, *, samples: int | None = None, noise: float = 0.15, steps: int = 64, layer=None,
                       masks: int = 1000, cell: int = 16, p: float = 0.5, window: int = 16, stride: int = 8,
                       epsilon: float | None = None, alpha: float = 1.0, beta: float = 0.0, lasso: float | None = None,
                       algorithm: str = "full"):
    """``--method`` and its numbers as a method value (``jaxvis.attribution``): gradient, grad_x_input,
    guided_backprop, deconvnet, smoothgrad (samples: 25, noise), integrated (steps), gradcam / odam / guided_gradcam
    (layer), drise (masks, cell, p), occlusion (window, stride), feature_ablation (cell), deeplift (against the
    black image), deeplift_shap and gradient_shap (against the black and the white image; gradient_shap's
    samples: 25), lrp_epsilon (epsilon), lrp_alphabeta (alpha, beta: alpha-beta on the convolutions, epsilon on
    the dense layers), shapley_sampling (samples: orders, 25; cell), kernel_shap and lime (samples: coalitions,
    500; cell; lime's lasso: its L1 penalty, 0 for a least-squares fit), blur_ig, guided_ig and xrai (steps; xrai's
    algorithm: full or fast).
    ``samples``, ``epsilon`` and ``lasso`` None: each method's own default."""
    import numpy as np

    from jaxvis import attribution as at

    refs = np.broadcast_to(np.array(BLACK_AND_WHITE, np.float32)[:, None, None, :], (2, 1, 1, 3))
    eps = {} if epsilon is None else {"epsilon": epsilon}
    some = {} if samples is None else {"samples": samples}
    l1 = {} if lasso is None else {"lasso": lasso}
    made = {"gradient": at.gradient, "grad_x_input": at.grad_x_input, "guided_backprop": at.guided_backprop,
            "deconvnet": at.deconvnet,
            "smoothgrad": lambda: at.smoothgrad(noise=noise, **some),
            "integrated": lambda: at.integrated(steps=steps), "gradcam": lambda: at.gradcam(layer),
            "odam": lambda: at.odam(layer), "drise": lambda: at.drise(masks=masks, cell=cell, p=p),
            "occlusion": lambda: at.occlusion(window=window, stride=stride),
            "guided_gradcam": lambda: at.guided_gradcam(_one_layer(layer)),
            "feature_ablation": lambda: at.feature_ablation(cell=cell),
            "deeplift": at.deeplift, "deeplift_shap": lambda: at.deeplift_shap(refs),
            "gradient_shap": lambda: at.gradient_shap(refs, **some),
            "lrp_epsilon": lambda: at.lrp_epsilon(**eps), "lrp_alphabeta": lambda: at.lrp_alphabeta(alpha, beta),
            "shapley_sampling": lambda: at.shapley_sampling(cell=cell, **some),
            "kernel_shap": lambda: at.kernel_shap(cell=cell, **some), "lime": lambda: at.lime(cell=cell, **some, **l1),
            "blur_ig": lambda: at.blur_ig(steps=steps), "guided_ig": lambda: at.guided_ig(steps=steps),
            "xrai": lambda: at.xrai(steps=steps, algorithm=algorithm)}
    assert set(made) == set(METHOD_NAMES), "METHOD_NAMES lists the methods attribution_method makes"
    if name not in made:
        raise TextError(f"unknown attribution method {name!r}; methods: {', '.join(METHOD_NAMES)}.")
    return made[name]()


DATASET_FORMS = ("shapes, a folder of images, coco:JSON:DIR (instances JSON and its images) or voc:DIR (a Pascal VOC "
                 "folder)")


def _coco_paths(rest: str) -> tuple[str, str]:
    """``JSON:DIR`` split at the colon that leaves an existing file on its left (else at the first colon)."""
    import os

    cuts = [i for i, c in enumerate(rest) if c == ":"]
    for i in cuts:
        if os.path.isfile(rest[:i]):
            return rest[:i], rest[i + 1:]
    return (rest[:cuts[0]], rest[cuts[0] + 1:]) if cuts else (rest, "")


def dataset(text: str, model, n: int = 200, seed: int = 0, limit: int | None = None):
    """``--dataset`` as a ``features.Dataset`` of ``model``.

    Args:
      text: ``shapes`` (generated scenes, ``features.shapes_dataset``), ``coco:JSON:DIR`` (a COCO instances
        file and the folder of its images, ``datasets.coco``), ``voc:DIR`` (a Pascal VOC folder,
        ``datasets.voc``) or the path of a folder of images (unlabelled, ``datasets.folder``).
      model: the loaded model.
      n, seed: how many shapes scenes, and their seed (``shapes`` only).
      limit: at most this many images read from files (None: all).

    Returns:
      The dataset; the readers' ``DatasetError`` (one line) says what could not be read.
    """
    import os

    if text == "shapes":
        from jaxvis.features import shapes_dataset

        return shapes_dataset(model, n, seed)
    if text.startswith("coco:"):
        json_path, image_dir = _coco_paths(text[5:])
        if not json_path or not image_dir:
            raise TextError(f"--dataset {text!r}: write coco:JSON:DIR, the instances JSON and the folder of its "
                            "images, e.g. coco:annotations/instances_val2017.json:val2017")
        from jaxvis import datasets

        return datasets.coco(json_path, image_dir, model, limit)
    if text.startswith("voc:"):
        if not text[4:]:
            raise TextError(f"--dataset {text!r}: write voc:DIR, e.g. voc:VOCdevkit/VOC2012")
        from jaxvis import datasets

        return datasets.voc(text[4:], model, limit)
    if text and os.path.isdir(text):
        from jaxvis import datasets

        return datasets.folder(text, model, limit)
    raise TextError(f"--dataset {text!r} is none of the accepted forms: {DATASET_FORMS}; a folder must exist.")
