"""The most effective features: which channels of a layer carry a class or a detection, and how far.

    from jaxvis import features as ft, saliency as sal
    c = ft.contributions(model, images, sal.class_score(labels[:, None]), "conv5_2")  # (N, K, C): sum_xy A dS/dA
    a = ft.ablation(model, images, sal.class_score(labels[:, None], sal.prob), "conv5_2")  # (N, K, C): S - S without k
    s = ft.ablate(model, images, targets, "conv5_2", [[3, 17], [5]])            # (N, K, 2): S with each set zeroed
    data = ft.shapes_dataset(model, n=200, seed=7)                              # images, labels, boxes, masks
    imp = ft.importance(model, data, "conv5_2")                                 # per class, over its targets
    imp.ranking()                                     # {"circle": [12, 40, ...], ...}: channels, most important first
    ft.faithfulness(model, held_out, "conv5_2", imp.ranking())    # top-8 ablation against random sets of 8

**Contribution** of channel k of activation A (any activation the model returns, ``saliency.activation_shapes``)
to a target S: sum over positions of A_k dS/dA_k, with dS/dA the total derivative through every layer that
reads A (``jaxvis.models.taps``); the first-order estimate of what S loses when A_k is removed. Summed over
channels it is ODAM's map summed over the image. **Ablation**: S re-measured with A_k's output set to zero (a
tap of -A_k where A is made, so every layer that reads A sees the zero): ``ablation`` returns the drop, S minus
the ablated S, per channel alone; ``ablate`` the ablated S for sets of channels. A detection's target keeps its
default box: the ablated score is that box's score for the class.

**Datasets** (``Dataset``): images in [0, 1] at the model's input size, their labels (a classifier's class per
image; a detector's boxes, labels and validity per image), optionally the objects' masks as one label map per
image (-1 where no labelled object is). ``targets_of`` turns them into targets: a classifier's images each
explain their own class; a detector's true-positive detections (score at least ``min_score``, IoU at least 0.5
with an unmatched ground-truth box of the same class) each explain their own score. ``importance`` averages
over the targets of each class; ``faithfulness`` checks a ranking by zeroing a class's top channels together
against random sets of as many channels.

**Dissection** (Bau et al. 2017, Net Dissection): the channel's map up-sampled to the masks' pixels (each cell
on the centre of the image region it stands for, ``saliency.cell_scale``) and cut at T_k, the value the top
``top`` share (0.5 %) of its up-sampled pixels over the dataset exceed; per class, the IoU of that region
with the class's masks, intersections and unions summed over the dataset. A channel's label is its best class
when that IoU reaches ``min_iou`` (Net Dissection's 0.04 by default). Net Dissection's paper takes T_k over the
activation map's own cells (``threshold_on="cells"``): the up-sampled region above it is then far smaller than
``top`` of the pixels (only the pixels nearest a cell above T_k pass), and on maps of 4 x 4 to 16 x 16 cells
against objects of a few percent of the image no channel of the shipped models reaches an IoU of 0.04 (at most
0.038 on the detector's conv5_3); cut at the top share of the pixels, 23 of its 64 channels are labelled.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import boxes as bx, saliency as sal
from jaxvis.model import cached_on_model


class FeatureError(ValueError):
    """Bad input to a channel analysis: the message says what was expected."""


def _check_layer(model, layer: str) -> tuple[int, ...]:
    shapes = sal.activation_shapes(model)
    if not isinstance(layer, str) or layer not in shapes:
        raise FeatureError(f"{model.spec.arch} has no activation {layer!r}; it has {', '.join(shapes)}")
    return shapes[layer]


def _prepare(model, images, targets, layer, preprocess):
    if not isinstance(targets, sal.Target):
        raise FeatureError("targets must be a saliency.Target: class_score(...), detection(...), detections(det, "
                           "index) or target(fn, ...)")
    _check_layer(model, layer)
    z = sal._images(images, preprocess)
    sal._check(model, z, targets)
    return z


# ----------------------------------------------------------------------------------------------- programs


@cached_on_model
def _contribution_program(model, kind, score, layer: str, preprocess: bool, tchunk: int):
    forward = sal._forward(model, preprocess)

    def per_image(params, z, targets):
        shape = jax.eval_shape(lambda: forward(params, z)[1][layer])
        zero = jnp.zeros(shape.shape, shape.dtype)
        outputs, vjp, a = jax.vjp(lambda d: (lambda o: (o[0], o[1][layer]))(forward(params, z, {layer: d})), zero,
                                  has_aux=True)

        def one(t):
            value, g_out = jax.value_and_grad(lambda o: sal.target_value(model, o, t, kind, score))(outputs)
            g = vjp(g_out)[0]
            axes = tuple(range(a.ndim - 1))
            return value, jnp.sum(g * a, axis=axes)

        return sal._map(one, targets, tchunk)

    @jax.jit
    def run(params, z, targets):
        return jax.vmap(lambda zi, ti: per_image(params, zi, ti))(z, targets)

    return run


@cached_on_model
def _ablation_program(model, kind, score, layer: str, preprocess: bool):
    """``run(params, z, targets, keep)``: the targets' values as they are and with each row of ``keep`` (B, C)
    applied to the channels of ``layer``; one program per block size B, whatever the number of sets."""
    forward = sal._forward(model, preprocess)

    def values(outputs, targets):
        return jax.vmap(lambda t: sal.target_value(model, outputs, t, kind, score))(targets)

    def per_image(params, z, targets, keep):
        outputs, acts = forward(params, z)
        a = acts[layer]

        def one(k):
            ablated, _ = forward(params, z, {layer: -a * (1 - k.astype(a.dtype))})
            return values(ablated, targets)

        return values(outputs, targets), jax.vmap(one)(keep).T

    @jax.jit
    def run(params, z, targets, keep):
        return jax.vmap(lambda zi, ti: per_image(params, zi, ti, keep))(z, targets)

    return run


# ----------------------------------------------------------------------------------------------- per image


@dataclasses.dataclass
class Channels:
    """``values`` (N, K, C) per image, target and channel; ``scores`` (N, K), the targets' values as they are."""

    layer: str
    values: np.ndarray
    scores: np.ndarray


def contributions(model, images, targets, layer: str, *, params=None, preprocess: bool = True,
                  chunk: int | None = None) -> Channels:
    """sum over positions of A_k dS/dA_k for every channel k of activation ``layer`` and every target S
    (``targets``, a ``saliency.Target``) of a batch of images (N, H, W, 3), RGB in [0, 1] unless
    ``preprocess=False`` (network inputs). One compiled program for the batch: one forward pass per image, one
    backward pass per target.

    Example:

    ```python
    import jaxvis
    from jaxvis import assets, features as ft, saliency as sal
    from jaxvis.data import shapes

    model = jaxvis.load(assets.path("classifier"))
    images, labels, _ = shapes.classification_set(0, 4)
    c = ft.contributions(model, images, sal.class_score(labels[:, None]), "conv5_2")
    print(c.values.shape, c.values[0, 0].argsort()[::-1][:3])   # (4, 1, 64): image 0's three strongest channels
    ```
    """
    z = _prepare(model, images, targets, layer, preprocess)
    _, tchunk = sal.chunk_sizes(model, 1, targets.shape[1], tuple(z.shape[1:3]))
    fn = _contribution_program(model, targets.kind, targets.score, layer, bool(preprocess), int(chunk or tchunk))
    scores, values = fn(model.params if params is None else params, z, sal._fields(targets))
    return Channels(layer, np.asarray(values), np.asarray(scores))


def _keep_masks(sets, n_channels: int) -> np.ndarray:
    """(S, C) float: 0 for the channels each set zeroes, 1 for the others; ``sets`` lists channel indices."""
    keep = np.ones((len(sets), n_channels), np.float32)
    for i, s in enumerate(sets):
        idx = np.asarray(list(s), dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= n_channels):
            raise FeatureError(f"channel set {i} names channels {sorted(set(idx.tolist()))}; the layer has channels "
                               f"0 to {n_channels - 1}")
        keep[i, idx] = 0.0
    return keep


def ablate(model, images, targets, layer: str, sets: Sequence[Sequence[int]], *, params=None,
           preprocess: bool = True, chunk: int | None = None) -> Channels:
    """The targets re-measured with each set of channels of ``layer`` zeroed: ``values`` (N, K, S) for the S
    sets in ``sets`` (lists of channel indices), ``scores`` (N, K) with nothing zeroed. The sets go ``chunk``
    at a time (default: as many as fit the memory, at most the layer's channels)."""
    z = _prepare(model, images, targets, layer, preprocess)
    n_channels = _check_layer(model, layer)[-1]
    if isinstance(sets, (str, bytes)) or not hasattr(sets, "__len__") or len(sets) == 0:
        raise FeatureError(f"sets is a list of channel sets (each a list of channel indices); got {sets!r}")
    keep = _keep_masks(sets, n_channels)
    # the sets go a block at a time through one program: the block depends on the layer and the memory, not
    # on the number of sets, so that a new number of sets compiles nothing
    auto, _ = sal.chunk_sizes(model, n_channels, targets.shape[1], tuple(z.shape[1:3]), backward=False)
    block = max(1, min(int(chunk or auto), n_channels))
    padded = np.ones((-(-len(keep) // block) * block, n_channels), np.float32)
    padded[:len(keep)] = keep
    fn = _ablation_program(model, targets.kind, targets.score, layer, bool(preprocess))
    p, fields = model.params if params is None else params, sal._fields(targets)
    parts = [fn(p, z, fields, jnp.asarray(padded[i:i + block])) for i in range(0, len(padded), block)]
    values = np.concatenate([np.asarray(v) for _, v in parts], axis=-1)[..., :len(keep)]
    return Channels(layer, values, np.asarray(parts[0][0]))


def ablation(model, images, targets, layer: str, **kwargs) -> Channels:
    """Per channel of ``layer`` alone, the drop of each target when that channel's output is zero: ``values``
    (N, K, C) = S - S(channel k zeroed). Keywords as ``ablate``."""
    n_channels = _check_layer(model, layer)[-1]
    out = ablate(model, images, targets, layer, [[k] for k in range(n_channels)], **kwargs)
    return Channels(layer, out.scores[..., None] - out.values, out.scores)


# ----------------------------------------------------------------------------------------------- datasets


@dataclasses.dataclass
class Dataset:
    """Images with what is known of them, at the model's input size.

    ``images`` (N, H, W, 3) float32 RGB in [0, 1]; ``labels``: a classifier's class per image (N,), or a
    detector's (N, M) labels of its (N, M, 4) xyxy pixel ``boxes`` with ``valid`` (N, M), or None for images
    without labels (``targets_of`` says what they explain then); ``masks`` (N, H, W)
    int32, the class of the labelled object at each pixel (-1: none) or None; ``names``, one per image;
    ``classes``, the names of the class indices; ``skipped``, what was left out and why."""

    images: np.ndarray
    labels: np.ndarray | None
    boxes: np.ndarray | None = None
    valid: np.ndarray | None = None
    masks: np.ndarray | None = None
    names: list[str] = dataclasses.field(default_factory=list)
    classes: tuple[str, ...] = ()
    skipped: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> "Dataset":
        index = np.arange(len(self))[index]
        take = lambda a: None if a is None else np.asarray(a)[index]  # noqa: E731
        return dataclasses.replace(self, images=take(self.images), labels=take(self.labels), boxes=take(self.boxes),
                                   valid=take(self.valid), masks=take(self.masks),
                                   names=[self.names[i] for i in index] if self.names else [])


def shapes_dataset(model, n: int, seed: int = 0) -> Dataset:
    """``n`` generated scenes of the shapes data at the model's input size (``jaxvis.data.shapes``): a detector
    gets detection scenes (boxes, labels, masks), a classifier one shape per image (its class and mask)."""
    from jaxvis.data import shapes

    size = int(model.spec.input_size[0])
    if model.spec.is_detector:
        images, boxes, labels, valid, masks = shapes.detection_set(seed, n, size=size, masks=True)
        return Dataset(images, labels, boxes, valid, masks, [f"scene {i}" for i in range(n)], tuple(model.spec.labels))
    images, labels, boxes, masks = shapes.classification_set(seed, n, size=size, masks=True)
    return Dataset(images, labels, boxes[:, None], None, masks, [f"image {i}" for i in range(n)],
                   tuple(model.spec.labels))


def true_positives(model, data: Dataset, min_score: float = 0.3, iou: float = 0.5, params=None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A detector's true-positive detections on ``data``: per image (N, K) default boxes (``anchor``), classes
    and a validity mask, K the most found in one image. A detection is a true positive when it scores at least
    ``min_score`` and overlaps a ground-truth box of its class that no better detection took by ``iou``."""
    det = jax.jit(model.detect)(model.params if params is None else params, jnp.asarray(data.images))
    det = {k: np.asarray(v) for k, v in det.items()}
    found = []
    for i in range(len(data)):
        taken, mine = set(), []
        for r in np.nonzero(det["valid"][i] & (det["scores"][i] >= min_score))[0]:
            same = data.valid[i] & (data.labels[i] == det["labels"][i, r])
            overlap = np.where(same, np.asarray(bx.iou(det["boxes"][i, r][None], data.boxes[i]))[0], 0.0)
            overlap[list(taken)] = 0.0
            g = int(np.argmax(overlap))
            if overlap[g] >= iou:
                taken.add(g)
                mine.append((int(det["anchor"][i, r]), int(det["labels"][i, r])))
        found.append(mine)
    k = max(1, max(len(f) for f in found))
    anchors = np.zeros((len(data), k), np.int32)
    classes = np.zeros((len(data), k), np.int32)
    ok = np.zeros((len(data), k), bool)
    for i, f in enumerate(found):
        for j, (a, c) in enumerate(f):
            anchors[i, j], classes[i, j], ok[i, j] = a, c, True
    return anchors, classes, ok


def _own_detections(model, data: Dataset, min_score: float, params=None):
    """An unlabelled dataset's targets on a detector: its own detections scoring at least ``min_score``."""
    det = jax.jit(model.detect)(model.params if params is None else params, jnp.asarray(data.images))
    det = {k: np.asarray(v) for k, v in det.items()}
    ok = det["valid"] & (det["scores"] >= min_score)
    k = max(1, int(ok.sum(axis=1).max()))
    order = np.argsort(~ok, axis=1, kind="stable")[:, :k]   # the kept detections first, best first
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    return take(det["anchor"]).astype(np.int32), take(det["labels"]).astype(np.int32), take(ok)


def targets_of(model, data: Dataset, score=sal.logit, min_score: float = 0.3, params=None
               ) -> tuple[sal.Target, np.ndarray]:
    """(targets, valid): a classifier's images each with their own class; a detector's true positives
    (``true_positives``), padded to the most of one image, ``valid`` (N, K) marking the real ones. Without
    labels (``data.labels`` None: a folder of images) a classifier's images explain the class it gives them
    and a detector's its own detections scoring at least ``min_score``."""
    if model.spec.is_detector:
        if data.labels is None:
            anchors, classes, ok = _own_detections(model, data, min_score, params)
        elif data.boxes is None or data.valid is None:
            raise FeatureError("a detector's labelled dataset needs boxes, labels and valid (per image, per object)")
        else:
            anchors, classes, ok = true_positives(model, data, min_score, params=params)
        return sal.detection(anchors, classes, score), ok
    if data.labels is None:
        labels = sal.top_k_classes(model, data.images, 1, params)[:, 0]
    else:
        labels = np.asarray(data.labels)
    if labels.ndim != 1:
        raise FeatureError(f"a classifier's dataset has one class per image, labels of shape (N,); got {labels.shape}")
    return sal.class_score(labels[:, None], score), np.ones((len(labels), 1), bool)


# ----------------------------------------------------------------------------------------------- per class


@dataclasses.dataclass
class Importance:
    """Per class (rows: ``classes``) and channel of ``layer``: the mean ``contribution`` to the class's
    targets' logits and the mean ``ablation`` drop of their probabilities (None when not measured), over
    ``counts`` targets each (a class without targets has NaN rows)."""

    layer: str
    classes: tuple[str, ...]
    contribution: np.ndarray
    ablation: np.ndarray | None
    counts: np.ndarray

    def ranking(self, by: str = "ablation") -> dict[str, list[int]]:
        """Per class with targets, its channels from the most important to the least, by ``by``
        (``"ablation"`` or ``"contribution"``)."""
        table = {"ablation": self.ablation, "contribution": self.contribution}.get(by, "?")
        if isinstance(table, str):
            raise FeatureError(f"by is 'ablation' or 'contribution', got {by!r}")
        if table is None:
            raise FeatureError("this importance was measured without ablation; rank by 'contribution'")
        return {name: [int(k) for k in np.argsort(-table[i], kind="stable")]
                for i, name in enumerate(self.classes) if self.counts[i] > 0}


def _class_rows(model) -> tuple[int, ...]:
    """The class indices a dataset's targets can have: a detector's without its background."""
    n = model.spec.num_classes
    return tuple(range(1, n)) if model.spec.is_detector else tuple(range(n))


def _per_class(values, classes, ok, rows):
    out = np.full((len(rows), values.shape[-1]), np.nan)
    counts = np.zeros(len(rows), int)
    for i, c in enumerate(rows):
        sel = ok & (classes == c)
        counts[i] = int(sel.sum())
        if counts[i]:
            out[i] = values[sel].mean(axis=0)
    return out, counts


def importance(model, data: Dataset, layer: str, *, ablate_too: bool = True, min_score: float = 0.3,
               batch: int = 32, params=None) -> Importance:
    """Mean contribution (to the logit) and, with ``ablate_too``, mean ablation drop (of the probability) of
    every channel of ``layer`` for each class, over the class's targets in ``data`` (``targets_of``)."""
    _check_layer(model, layer)
    targets, ok = targets_of(model, data, sal.logit, min_score, params)
    contrib, drop = [], []
    for s in range(0, len(data), batch):
        part = targets[s:s + batch]
        contrib.append(contributions(model, data.images[s:s + batch], part, layer, params=params).values)
        if ablate_too:
            prob_part = sal.Target(part.kind, part.fields, sal.prob)
            drop.append(ablation(model, data.images[s:s + batch], prob_part, layer, params=params).values)
    classes = np.asarray(targets.fields["class"])
    rows = _class_rows(model)
    c, counts = _per_class(np.concatenate(contrib), classes, ok, rows)
    a = _per_class(np.concatenate(drop), classes, ok, rows)[0] if ablate_too else None
    names = tuple(model.spec.labels[r] for r in rows)
    return Importance(layer, names, c, a, counts)


def faithfulness(model, data: Dataset, layer: str, ranking: dict[str, list[int]], k: int = 8, random_sets: int = 20,
                 seed: int = 0, min_score: float = 0.3, batch: int = 32, params=None) -> dict[str, dict[str, Any]]:
    """Per class of ``ranking``: the mean drop of its targets' probabilities (``targets_of``) when its top
    ``k`` channels are zeroed together (``top``), the same for ``random_sets`` random sets of ``k`` channels
    (``random``, their median ``median_random``), ``ratio`` = top / median_random and the ``count`` of targets."""
    n_channels = _check_layer(model, layer)[-1]
    names = [model.spec.labels[r] for r in _class_rows(model)]
    unknown = [c for c in ranking if c not in names]
    if unknown:
        raise FeatureError(f"ranking names classes {unknown} that {model.spec.arch} does not have ({names})")
    rng = np.random.default_rng(seed)
    randoms = [sorted(rng.choice(n_channels, size=k, replace=False).tolist()) for _ in range(random_sets)]
    order = list(ranking)
    sets = [list(ranking[c][:k]) for c in order] + randoms
    targets, ok = targets_of(model, data, sal.prob, min_score, params)
    drops = []
    for s in range(0, len(data), batch):
        out = ablate(model, data.images[s:s + batch], targets[s:s + batch], layer, sets, params=params)
        drops.append(out.scores[..., None] - out.values)
    drops = np.concatenate(drops)
    classes = np.asarray(targets.fields["class"])
    result = {}
    for i, name in enumerate(order):
        sel = ok & (classes == model.spec.labels.index(name))
        if not sel.any():
            result[name] = {"count": 0}
            continue
        top = float(drops[sel][:, i].mean())
        rand = [float(drops[sel][:, len(order) + j].mean()) for j in range(random_sets)]
        med = float(np.median(rand))
        result[name] = {"count": int(sel.sum()), "top": top, "random": rand, "median_random": med,
                        "ratio": top / med if med > 0 else float("inf")}
    return result


# ----------------------------------------------------------------------------------------------- dissection


@cached_on_model
def _activation_program(model, layer: str, preprocess: bool):
    forward = sal._forward(model, preprocess)
    return jax.jit(jax.vmap(lambda p, zi: forward(p, zi)[1][layer][0], in_axes=(None, 0)))


def activations(model, images, layer: str, *, batch: int = 64, params=None, preprocess: bool = True) -> np.ndarray:
    """(N, h, w, C) activation ``layer`` of every image (a dense layer's (N, C))."""
    _check_layer(model, layer)
    z = sal._images(images, preprocess)
    fn = _activation_program(model, layer, bool(preprocess))
    p = model.params if params is None else params
    return np.concatenate([np.asarray(fn(p, z[s:s + batch])) for s in range(0, len(z), batch)])


def thresholds(acts: np.ndarray, top: float = 0.005) -> np.ndarray:
    """(C,) per channel, the value its top ``top`` share of activations (over images and positions) exceed."""
    if not 0.0 < top < 1.0:
        raise FeatureError(f"top is the share of a channel's activations kept, in (0, 1); got {top}")
    flat = np.asarray(acts).reshape(-1, np.shape(acts)[-1])
    return np.quantile(flat, 1.0 - top, axis=0)


@dataclasses.dataclass
class Dissection:
    """``iou`` (C, classes) per channel and class; ``thresholds`` (C,); ``labels``: per channel its best class's
    name, or None when no IoU reaches ``min_iou``."""

    layer: str
    classes: tuple[str, ...]
    iou: np.ndarray
    thresholds: np.ndarray
    min_iou: float

    @property
    def labels(self) -> list[str | None]:
        best = np.argmax(self.iou, axis=1)
        return [self.classes[b] if self.iou[k, b] >= self.min_iou else None for k, b in enumerate(best)]


@jax.jit
def _tally(maps, masks, t, ry, rx, class_ids):
    """Per channel and class, summed over the batch: |map > t| ∩ |mask == class| and their union."""
    up = jnp.einsum("yh,nhwc,xw->nyxc", ry, maps, rx, precision=jax.lax.Precision.HIGHEST)
    on = up > t
    cls = masks[..., None] == class_ids
    inter = jnp.einsum("nyxc,nyxl->cl", on.astype(jnp.float32), cls.astype(jnp.float32))
    area_on = jnp.sum(on, axis=(0, 1, 2)).astype(jnp.float32)
    area_cls = jnp.sum(cls, axis=(0, 1, 2)).astype(jnp.float32)
    return inter, area_on[:, None] + area_cls[None, :] - inter


@jax.jit
def _upsampled(maps, ry, rx):
    return jnp.einsum("yh,nhwc,xw->nyxc", ry, maps, rx, precision=jax.lax.Precision.HIGHEST)


def pixel_thresholds(acts: np.ndarray, ry, rx, top: float = 0.005, budget: int = 2**26) -> np.ndarray:
    """(C,) per channel, the value that the top ``top`` share of its up-sampled map's pixels over the dataset
    exceed; ``ry`` (H, h) and ``rx`` (W, w) up-sample. Channels go a block at a time, at most ``budget``
    values in memory."""
    if not 0.0 < top < 1.0:
        raise FeatureError(f"top is the share of a channel's activations kept, in (0, 1); got {top}")
    n, _, _, c = acts.shape
    per = n * ry.shape[0] * rx.shape[0]
    block = max(1, budget // per)
    out = []
    for k in range(0, c, block):
        up = np.asarray(_upsampled(jnp.asarray(acts[..., k:k + block]), ry, rx)).reshape(per, -1)
        out.append(np.quantile(up, 1.0 - top, axis=0))
    return np.concatenate(out)


def dissect_maps(acts: np.ndarray, masks: np.ndarray, class_ids: Sequence[int], scale=None, top: float = 0.005,
                 batch: int = 64, threshold_on: str = "pixels") -> tuple[np.ndarray, np.ndarray]:
    """(iou (C, L), thresholds (C,)) of (N, h, w, C) activation maps against (N, H, W) label maps for the L
    classes ``class_ids``: each map up-sampled bilinearly to H x W with cell (i, j) on output pixel
    ((i + 0.5) * sy, (j + 0.5) * sx) (``scale`` = (sy, sx); default H / h, W / w) and cut at its channel's
    threshold: the value the top ``top`` share of the up-sampled maps' pixels exceed (``pixel_thresholds``),
    or with ``threshold_on="cells"`` of the maps' own cells (``thresholds``)."""
    acts, masks = np.asarray(acts, np.float32), np.asarray(masks)
    if acts.ndim != 4 or masks.ndim != 3 or len(acts) != len(masks):
        raise FeatureError(f"dissection takes (N, h, w, C) maps and (N, H, W) label maps; got {acts.shape} and "
                           f"{masks.shape}")
    (h, w), (hh, ww) = acts.shape[1:3], masks.shape[1:3]
    sy, sx = (hh / h, ww / w) if scale is None else scale
    ry = jnp.asarray(sal._interpolation(hh, h, sy), jnp.float32)
    rx = jnp.asarray(sal._interpolation(ww, w, sx), jnp.float32)
    if threshold_on not in ("pixels", "cells"):
        raise FeatureError(f"threshold_on is 'pixels' or 'cells', got {threshold_on!r}")
    t = pixel_thresholds(acts, ry, rx, top) if threshold_on == "pixels" else thresholds(acts, top)
    ids = jnp.asarray(np.asarray(class_ids, np.int32))
    inter = np.zeros((acts.shape[-1], len(class_ids)))
    union = np.zeros_like(inter)
    for s in range(0, len(acts), batch):
        i, u = _tally(jnp.asarray(acts[s:s + batch]), jnp.asarray(masks[s:s + batch], jnp.int32),
                      jnp.asarray(t, jnp.float32), ry, rx, ids)
        inter += np.asarray(i, np.float64)
        union += np.asarray(u, np.float64)
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0), t


def dissect(model, data: Dataset, layer: str, top: float = 0.005, min_iou: float = 0.04, params=None,
            threshold_on: str = "pixels", acts=None) -> Dissection:
    """Net Dissection of every channel of ``layer`` against the masks of ``data`` (see the module docstring);
    ``acts``: the layer's activations of ``data`` when already computed (``activations``)."""
    shape = _check_layer(model, layer)
    if len(shape) != 4:
        raise FeatureError(f"dissection needs a convolutional activation (h, w, C); {layer!r} is {shape[1:]}")
    if data.masks is None:
        raise FeatureError("dissection needs the objects' masks: a dataset with masks (shapes, COCO polygons)")
    acts = activations(model, data.images, layer, params=params) if acts is None else acts
    rows = _class_rows(model)
    hw = data.masks.shape[1:3]
    scale = sal.cell_scale(model, layer, acts.shape[1:3], hw)
    iou, t = dissect_maps(acts, data.masks, rows, scale, top, threshold_on=threshold_on)
    return Dissection(layer, tuple(model.spec.labels[r] for r in rows), iou, t, float(min_iou))


# ----------------------------------------------------------------------------------------------- showing a channel


def receptive_field(model, layer: str) -> tuple[int, int]:
    """(height, width) in input pixels of the region one cell of ``layer`` near the input's centre reads: the
    extent of the input pixels with a non-zero gradient of that cell's channels, at several random inputs."""
    shape = _check_layer(model, layer)
    if len(shape) != 4:
        raise FeatureError(f"a receptive field is a convolutional activation's; {layer!r} is {shape[1:]}")
    _, h, w, _ = shape
    forward = sal._forward(model, False)
    size = tuple(model.spec.input_size)

    def cell(params, z):
        return jnp.sum(forward(params, z)[1][layer][0, h // 2, w // 2])

    # one compiled program, not op by op; the weights are its argument, not constants baked into it
    grads = jax.jit(jax.vmap(jax.grad(cell, argnums=1), in_axes=(None, 0)))
    z = jax.random.normal(jax.random.key(0), (4,) + size + (3,))
    g = np.asarray(jnp.abs(grads(model.params, z))).sum(axis=(0, 3))
    ys, xs = np.nonzero(g > 0)
    if not len(ys):
        return size
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


@dataclasses.dataclass
class Patches:
    """Per channel, its ``k`` strongest cells over a dataset: ``images`` (C, k, P, P, 3) the image regions
    around them, ``where`` (C, k, 3) ints (image index, row, column of the cell), ``values`` (C, k) the
    activations; ``side`` P in input pixels."""

    images: np.ndarray
    where: np.ndarray
    values: np.ndarray
    side: int


def top_patches(model, data: Dataset, layer: str, k: int = 6, side: int | None = None, acts=None,
                params=None) -> Patches:
    """The ``k`` strongest activations of every channel of ``layer`` over ``data`` (at most one per image) and
    the image regions around their cells: squares of ``side`` pixels (default: the receptive field's larger
    side, at most half the image) centred on the cell's centre, the image repeated at its border."""
    shape = _check_layer(model, layer)
    if len(shape) != 4:
        raise FeatureError(f"patches need a convolutional activation (h, w, C); {layer!r} is {shape[1:]}")
    acts = activations(model, data.images, layer, params=params) if acts is None else acts
    n, h, w, c = acts.shape
    hh, ww = data.images.shape[1:3]
    if side is None:
        side = min(max(receptive_field(model, layer)), min(hh, ww) // 2)
    k = min(int(k), n)
    flat = acts.reshape(n, h * w, c)
    best_cell = flat.argmax(axis=1)                        # (n, c): each image's strongest cell per channel
    best = flat.max(axis=1)                                # (n, c)
    order = np.argsort(-best, axis=0, kind="stable")[:k]   # (k, c) images
    sy, sx = sal.cell_scale(model, layer, (h, w), (hh, ww))
    pad = side
    padded = np.pad(data.images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = np.zeros((c, k, side, side, 3), np.float32)
    where = np.zeros((c, k, 3), np.int64)
    values = np.zeros((c, k), np.float32)
    for ch in range(c):
        for j in range(k):
            i = int(order[j, ch])
            y, x = divmod(int(best_cell[i, ch]), w)
            cy, cx = (y + 0.5) * sy, (x + 0.5) * sx
            top, left = int(round(cy - side / 2)) + pad, int(round(cx - side / 2)) + pad
            out[ch, j] = padded[i, top:top + side, left:left + side]
            where[ch, j] = (i, y, x)
            values[ch, j] = best[i, ch]
    return Patches(out, where, values, int(side))


def visualise(model, layer: str, channels=None, seeds=(0, 1), steps: int = 256, lr: float = 0.05,
              parameterization=None, transforms=None, views: int = 2, init: float = 0.01, progress=None):
    """Feature visualisations of ``channels`` (default: all) of ``layer`` x ``seeds`` as one sweep: the spatial
    mean of each channel maximised from noise by Adam through a decorrelated 1/f^1.5 Fourier image and a
    sigmoid, each step on ``views`` randomly jittered, scaled and turned copies (the readable recipe of
    ``experiments/configs/feature_vis.py``); ``parameterization`` and ``transforms`` replace its parts.
    ``init``: the standard deviation of the starting noise. Returns (images (C, S, H, W, 3) RGB in [0, 1], each
    final image's mean activation of its channel (C, S))."""
    import optax

    from jaxvis import engine as eng, objectives as O, parameterizations as P, transforms as T

    n_channels = _check_layer(model, layer)[-1]
    channels = list(range(n_channels)) if channels is None else [int(c) for c in channels]
    if not channels or min(channels) < 0 or max(channels) >= n_channels:
        raise FeatureError(f"channels are indices from 0 to {n_channels - 1} of {layer!r}; got {channels}")
    if parameterization is None:
        stats = P.stats_of(model)
        parameterization = P.fourier(1.5) + P.sigmoid()
        if stats is not None and "colour_sqrt" in stats:
            parameterization = P.fourier(1.5) + P.decorrelated(stats["colour_sqrt"]) + P.sigmoid()
    if transforms is None:
        transforms = (T.jitter(8), T.scale(0.65, 1.35, wrap=True), T.rotate(180, wrap=True), T.jitter(4))
    sweep = eng.Sweep(targets=channels, lrs=[lr], losses=[O.channel(layer)], seeds=list(seeds), init_scales=[init])
    engine = eng.Engine(model, sweep, optimizer=eng.Optimizer(optax.adam), parameterization=parameterization,
                        transforms=transforms, views=views, steps=steps)
    result = engine.run(sweep, progress=progress)
    shape = (len(channels), len(seeds))
    acts = activations(model, result.images, layer, preprocess=False)            # the final images as they are
    targets = np.repeat(np.asarray(channels), len(seeds))                        # the grid's order: channel, seed
    reached = acts.mean(axis=(1, 2))[np.arange(len(targets)), targets]
    images = np.clip(np.asarray(model.to_image(result.images)), 0.0, 1.0)
    return images.reshape(shape + images.shape[1:]), reached.reshape(shape)


# ----------------------------------------------------------------------------------------------- the atlas


@dataclasses.dataclass
class Atlas:
    """What the atlas page of one layer shows: ``doc`` (the JSON document ``atlas.json``: per class its channels
    in order of importance under ``classes``, and the numbers behind them), ``pictures`` (C, S, H, W, 3) the
    channels' feature visualisations (None when not made) and ``patches`` (C, k, P, P, 3) their top dataset
    regions."""

    doc: dict
    pictures: np.ndarray | None
    patches: np.ndarray


def _finite(a) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, np.float64).ravel()]


def build_atlas(model, data: Dataset, layer: str, *, held_out: Dataset | None = None, rank_by: str = "ablation",
                k: int = 8, random_sets: int = 20, top: float = 0.005, min_iou: float = 0.04, patches: int = 6,
                seeds=(0, 1), steps: int = 256, min_score: float = 0.3, threshold_on: str = "pixels", progress=None,
                params=None) -> Atlas:
    """Everything the atlas of ``layer`` shows, measured on ``data``: per class the channels ranked by
    ``rank_by`` (``importance``), the ranking's ``faithfulness`` on ``held_out`` (when given; top ``k`` against
    ``random_sets`` random sets), the dissection (when the data have masks), every channel's top ``patches``
    regions and, with ``steps`` > 0, its feature visualisation for each of ``seeds`` (``visualise``).
    ``progress(text)`` is told of each stage."""
    say = progress or (lambda text: None)
    shape = _check_layer(model, layer)
    if len(shape) != 4:
        raise FeatureError(f"an atlas is of a convolutional activation (h, w, C); {layer!r} is {shape[1:]}")
    n_channels = shape[-1]
    say(f"importance of {n_channels} channels over {len(data)} images")
    imp = importance(model, data, layer, ablate_too=rank_by == "ablation", min_score=min_score, params=params)
    ranking = imp.ranking(rank_by)
    doc: dict[str, Any] = {
        "format": 1, "kind": "atlas", "layer": layer, "model": model.spec.arch, "channels": n_channels,
        "classes": ranking, "rank_by": rank_by, "images": len(data), "skipped": list(data.skipped),
        "importance": {name: {"count": int(imp.counts[i]), "contribution": _finite(imp.contribution[i]),
                              "ablation": None if imp.ablation is None else _finite(imp.ablation[i])}
                       for i, name in enumerate(imp.classes)},
    }
    if held_out is not None:
        say(f"faithfulness on {len(held_out)} held-out images")
        doc["faithfulness"] = {"k": int(k), "random_sets": int(random_sets), "images": len(held_out),
                               "classes": faithfulness(model, held_out, layer, ranking, k, random_sets,
                                                       min_score=min_score, params=params)}
    acts = activations(model, data.images, layer, params=params)
    if data.masks is not None:
        say("dissection")
        dis = dissect(model, data, layer, top, min_iou, params, threshold_on, acts)
        iou, t, labels = dis.iou, dis.thresholds, dis.labels
        doc["dissection"] = {"top": top, "min_iou": min_iou, "threshold_on": threshold_on, "classes": list(dis.classes),
                             "labels": labels, "iou": [_finite(row) for row in iou], "thresholds": _finite(t),
                             "labelled": int(sum(lab is not None for lab in labels)),
                             # per class: how many of its top k channels carry its label
                             "agreement": {name: int(sum(labels[ch] == name for ch in order[:k]))
                                           for name, order in ranking.items()}}
    say("top patches")
    found = top_patches(model, data, layer, patches, acts=acts, params=params)
    doc["patches"] = {"side": found.side, "where": found.where.tolist(), "values": [_finite(r) for r in found.values],
                      "names": [[data.names[i] if data.names else str(i) for i in row] for row in found.where[..., 0]]}
    doc["mean_activation"] = _finite(acts.mean(axis=(0, 1, 2)))
    pictures = None
    if steps > 0:
        say(f"feature visualisations: {n_channels} channels x {len(seeds)} seeds, {steps} steps, one sweep")
        pictures, reached = visualise(model, layer, seeds=seeds, steps=steps)
        doc["visualisation"] = {"seeds": [int(s) for s in seeds], "steps": int(steps),
                                "activation": [_finite(r) for r in reached]}
    return Atlas(doc, pictures, found.images)
