"""How saliency maps are judged: deletion and insertion AUC, the pointing game, and the
model-randomisation sanity check.

- Deletion (Petsiuk et al. 2018): pixels are removed in order of decreasing saliency (set to the mean
  image, i.e. zero in the network's input space), a fixed share per step, and the target's probability is
  recorded; a faithful map makes it fall fast (low AUC). Insertion starts from a blurred copy and puts
  the original pixels back in the same order (high AUC is good). Every step of one image is one batched
  forward pass.
- Pointing game (Zhang et al. 2016): a hit when the map's maximum falls inside the object's box.
- Sanity check (Adebayo et al. 2018): the model's layers are randomised one after another from the top;
  a map that explains the model must change, so its Spearman rank correlation with the original falls.

For detections:

- Energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the map's positive mass that
  lies inside the ground-truth box.
- Instance specificity: the map's mass inside the explained detection's own box against its mass inside
  each other detected object's box; a hit when the own box holds more than any other one.
- Deletion and insertion for a detection: the score of each perturbed image is the D-RISE similarity of
  its best pre-NMS proposal to the explained detection (IoU x cosine of class probabilities x
  objectness, ``jaxvis.saliency.drise_similarity``), so the box may move as pixels go.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import saliency as sal
from jaxvis.model import cached_on_model


@dataclasses.dataclass
class Curve:
    fractions: np.ndarray   # (steps + 1,) share of pixels removed (deletion) or revealed (insertion)
    scores: np.ndarray      # (steps + 1,) the target's score at each step
    auc: float


def _blur(x: jax.Array, sigma: float) -> jax.Array:
    radius = max(1, int(3 * sigma))
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    pad = jnp.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    rows = jax.vmap(lambda c: jax.vmap(lambda r: jnp.convolve(r, k, mode="valid"))(c), in_axes=2, out_axes=2)(pad)
    return jax.vmap(lambda c: jax.vmap(lambda r: jnp.convolve(r, k, mode="valid"), in_axes=1, out_axes=1)(c),
                    in_axes=2, out_axes=2)(rows)


def _perturbation(x, saliency_map, mode: str, steps: int, sigma: float):
    """(shares, image): ``image(k)`` is ``x`` with its ``k``-th of ``steps`` shares of pixels, most salient
    first, deleted (to zero, the mean image in input space) or inserted (into a blurred copy)."""
    h, w = saliency_map.shape
    order = jnp.argsort(-saliency_map.ravel(), stable=True)
    rank = jnp.zeros(h * w, jnp.int32).at[order].set(jnp.arange(h * w, dtype=jnp.int32)).reshape(h, w)
    counts = jnp.round(jnp.arange(steps + 1) * (h * w) / steps).astype(jnp.int32)
    substrate = jnp.zeros_like(x) if mode == "deletion" else _blur(x, sigma)
    start, end = (x, substrate) if mode == "deletion" else (substrate, x)

    def image(k):
        return jnp.where((rank < counts[k])[..., None], end, start)

    return counts / (h * w), image


@cached_on_model
def _perturbation_fn(model, kind, score, mode: str, steps: int, sigma: float, batch: int):
    @jax.jit
    def run(params, x, saliency_map, target):
        shares, image = _perturbation(x, saliency_map, mode, steps, sigma)

        def scores(ks):
            imgs = jax.vmap(image)(ks)
            out, _ = model.apply(params, imgs)
            outs = jax.tree.map(lambda a: a[:, None], out)  # per-image outputs with a batch axis of 1
            return jax.vmap(lambda o: sal.target_value(model, o, target, kind, score))(outs)

        ks = jnp.arange(steps + 1)
        pad = (-len(ks)) % batch
        ks = jnp.concatenate([ks, jnp.full(pad, steps)]).reshape(-1, batch)
        values = jax.lax.map(scores, ks).reshape(-1)[: steps + 1]
        return shares, values

    return run


def _one(target, what: str) -> dict:
    """The fields of a ``jaxvis.saliency.Target`` holding one image's one target, without the leading axes."""
    if not isinstance(target, sal.Target):
        raise ValueError(f"{what} takes the target as a jaxvis.saliency Target of one image and one target "
                         f"(class_score([[c]]), detections(det, [[i]]), t[n:n + 1], ...); got {type(target).__name__}")
    if target.shape != (1, 1):
        raise ValueError(f"{what} measures one target of one image; the Target has shape {target.shape}: take one "
                         "with t[n:n + 1] (and one target per image)")
    return {k: jnp.asarray(v)[0, 0] for k, v in target.fields.items()}


def deletion_insertion(model, x, saliency_map, target, *, insert: bool = False, score=sal.prob,
                       steps: int = 50, blur_sigma: float = 5.0, batch: int = 17, params=None) -> Curve:
    """The deletion curve (``insert=True``: the insertion curve) of one image in the network's input space.

    Args:
      x: (H, W, 3) network input; saliency_map: (H, W) on the same grid (saliency with preprocess=False).
      target: a ``jaxvis.saliency.Target`` of shape (1, 1), the target the map explains.
      score: what is measured of a class or detection target, a function of (logits, class): its probability
        (``saliency.prob``, Petsiuk et al.'s), ``saliency.logit``, ...; None: the target's own score. Other
        targets are measured as they are defined.
    """
    mode = "insertion" if insert else "deletion"
    t = _one(target, "deletion_insertion")
    score = target.score if score is None or target.kind not in ("class", "detection") else score
    x = jnp.asarray(x, jnp.float32)
    m = jnp.asarray(saliency_map, jnp.float32)
    if m.shape != x.shape[:2]:
        raise ValueError(f"map {m.shape} and input {x.shape[:2]} differ in size; compute the map with preprocess=False")
    fn = _perturbation_fn(model, target.kind, score, mode, int(steps), float(blur_sigma), int(batch))
    fractions, values = fn(model.params if params is None else params, x, m, t)
    values = np.asarray(values, np.float64)
    auc = float((values.sum() - 0.5 * (values[0] + values[-1])) / steps)
    return Curve(fractions=np.asarray(fractions), scores=values, auc=auc)


def curves(model, x, saliency_map, target, deletion: bool = True, insertion: bool = True,
           **options) -> dict[str, Curve]:
    """The deletion and insertion curves of one map, by name (those asked for): a classifier's target measured
    by ``deletion_insertion``, a detection (or a labelled box) by ``detection_deletion_insertion``; ``options``
    go to that function.

    Example:

    ```python
    import jaxvis
    from jaxvis import assets, metrics, saliency as sal
    from jaxvis.data import shapes

    model = jaxvis.load(assets.path("classifier"))
    images, labels, _ = shapes.classification_set(0, 1)
    x = model.preprocess(images)                            # the curves perturb the network's input
    target = sal.class_score(labels[:, None])
    m = sal.gradient().attribute(model, x, target, preprocess=False).reduce()[0, 0]
    found = metrics.curves(model, x[0], m, target, steps=10)
    print({name: round(c.auc, 3) for name, c in found.items()})
    ```
    """
    measure = detection_deletion_insertion if model.spec.is_detector else deletion_insertion
    wanted = [name for name, want in (("deletion", deletion), ("insertion", insertion)) if want]
    return {name: measure(model, x, saliency_map, target, insert=name == "insertion", **options) for name in wanted}


def pointing_hit(saliency_map, box, tolerance: float = 0.0) -> bool:
    """Whether the map's maximum lies inside ``box`` (x1, y1, x2, y2 pixels) grown by ``tolerance`` pixels."""
    m = np.asarray(saliency_map)
    y, x = np.unravel_index(int(np.argmax(m)), m.shape)
    cx, cy = x + 0.5, y + 0.5
    x1, y1, x2, y2 = box
    return bool(x1 - tolerance <= cx <= x2 + tolerance and y1 - tolerance <= cy <= y2 + tolerance)


def _box_mask(shape, box) -> np.ndarray:
    """Pixels (row, column) whose centres lie inside ``box`` (x1, y1, x2, y2 pixels)."""
    h, w = shape
    ys, xs = np.arange(h) + 0.5, np.arange(w) + 0.5
    x1, y1, x2, y2 = box
    return ((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]


def box_energy(saliency_map, box) -> float:
    """Sum of the map's positive part over the pixels whose centres lie inside ``box``."""
    m = np.maximum(np.asarray(saliency_map, np.float64), 0.0)
    return float(m[_box_mask(m.shape, box)].sum())


def energy_pointing(saliency_map, box) -> float:
    """Share of the map's positive mass inside ``box`` (0 for a map with no positive mass)."""
    m = np.maximum(np.asarray(saliency_map, np.float64), 0.0)
    total = m.sum()
    return float(m[_box_mask(m.shape, box)].sum() / total) if total > 0 else 0.0


def instance_specificity(saliency_map, own_box, other_boxes) -> dict[str, float]:
    """How much more of the map lies in the explained detection's box than in the other detected objects'
    boxes. ``hit``: the own box holds more positive mass than every other box (1.0 when there is none);
    ``share``: own / (own + the largest other)."""
    own = box_energy(saliency_map, own_box)
    others = [box_energy(saliency_map, b) for b in other_boxes]
    top = max(others, default=0.0)
    return {"hit": float(own > top), "share": own / (own + top) if own + top > 0 else 0.0, "own": own,
            "other_max": top}


@cached_on_model
def _detection_perturbation_fn(model, mode: str, steps: int, sigma: float, batch: int):
    @jax.jit
    def run(params, x, saliency_map, target):
        tb, tv = sal.drise_reference(model, params, x, target)
        shares, image = _perturbation(x, saliency_map, mode, steps, sigma)

        def score(k):
            out, _ = model.apply(params, image(k)[None])
            return sal.drise_similarity(*sal.proposals(model, out), tb, tv)

        values = jax.lax.map(score, jnp.arange(steps + 1), batch_size=batch)
        return shares, values

    return run


def detection_deletion_insertion(model, x, saliency_map, target, *, insert: bool = False, steps: int = 50,
                                 blur_sigma: float = 5.0, batch: int = 17, params=None) -> Curve:
    """The deletion (``insert=True``: insertion) curve of one detection in the network's input space, scored by
    the D-RISE similarity of the perturbed image's best proposal to the detection (found on the unperturbed input).

    Args:
      x: (h, w, 3) network input; saliency_map: (H, W) map, resized bilinearly to (h, w) when it differs
        (a squash-resizing detector's image-space map).
      target: one detection, a ``jaxvis.saliency.Target`` of shape (1, 1): ``detection``/``detections`` (the
        default box behind it and its class) or ``box_label`` (a box in input pixels and a class).
    """
    mode = "insertion" if insert else "deletion"
    if isinstance(target, sal.Target) and target.kind not in ("detection", "box_label"):
        raise ValueError(f"detection_deletion_insertion scores a detection or a labelled box, not a {target.kind} "
                         "target")
    target = {k: v for k, v in _one(target, "detection_deletion_insertion").items() if k in ("anchor", "box", "class")}
    x = jnp.asarray(x, jnp.float32)
    m = jnp.asarray(saliency_map, jnp.float32)
    if m.ndim != 2:
        raise ValueError(f"the map must be (H, W), got shape {m.shape}; reduce the channels first")
    if m.shape != x.shape[:2]:
        m = jax.image.resize(m, x.shape[:2], method="bilinear")
    t = {k: jnp.asarray(v)[None] for k, v in target.items()}
    if "box" in t:
        t["box"] = t["box"].astype(jnp.float32)
    fn = _detection_perturbation_fn(model, mode, int(steps), float(blur_sigma), int(batch))
    fractions, values = fn(model.params if params is None else params, x, m, t)
    values = np.asarray(values, np.float64)[:, 0]
    auc = float((values.sum() - 0.5 * (values[0] + values[-1])) / steps)
    return Curve(fractions=np.asarray(fractions), scores=values, auc=auc)


def spearman(a, b) -> float:
    """Spearman rank correlation of two arrays (ranks by order; ties are broken by position)."""
    ra = np.argsort(np.argsort(np.ravel(a), kind="stable"), kind="stable").astype(np.float64)
    rb = np.argsort(np.argsort(np.ravel(b), kind="stable"), kind="stable").astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def layer_order(params) -> list[str]:
    """The model's parameterised layers from the top (outputs) down."""
    return list(reversed(list(params["params"].keys())))


def randomise_layer(params, layer: str, rng: np.random.Generator):
    """A copy of ``params`` with ``layer``'s parameters replaced by Gaussian noise of the same std."""
    out = jax.tree.map(lambda a: a, params)
    leaves = out["params"][layer]

    def noise(a):
        a = np.asarray(a)
        std = float(a.std()) or 1.0
        return jnp.asarray(rng.standard_normal(a.shape).astype(np.float32) * std)

    out["params"] = dict(out["params"])
    out["params"][layer] = jax.tree.map(noise, leaves)
    return out


def cascading_randomisation(model, images, targets, method=None, *, preprocess: bool = True, seed: int = 0,
                            layers=None, reduce=sal.max_abs) -> list[tuple[str, float]]:
    """Maps after randomising the layers cumulatively from the top; for each step, the layer just
    randomised and the mean Spearman correlation of the maps with the original ones.

    ``targets`` and ``method``: a ``jaxvis.saliency`` Target and method value (default ``gradient()``; any
    method, detectors included: the targets stay the same default boxes and classes)."""
    rng = np.random.default_rng(seed)

    def maps(params):
        return sal.explain(model, images, targets, method, preprocess=preprocess, params=params,
                           seed=seed).reduce(reduce)

    original = maps(None)
    params = model.params
    out = []
    for layer in layers or layer_order(params):
        params = randomise_layer(params, layer, rng)
        randomised = maps(params)
        rhos = [spearman(o, m) for o, m in zip(original.reshape(-1, *original.shape[2:]),
                                               randomised.reshape(-1, *randomised.shape[2:]))]
        out.append((layer, float(np.mean(rhos))))
    return out


def staged_randomisation(model, images, targets, method, stages: dict, seed: int = 0) -> dict[str, float]:
    """The randomisation check in stages: ``stages`` maps a name to the layers randomised by the end of it
    (cumulatively, in ``layer_order``); for each, the mean Spearman correlation of the first target's map of
    each image (``method``, max over channels) with the map on the original weights."""
    original = sal.saliency(model, images, targets, method).reduce()
    order = layer_order(model.params)
    rng = np.random.default_rng(seed)
    params, done, out = model.params, set(), {}
    for stage, layers in stages.items():
        for name in [x for x in order if x in layers and x not in done]:
            params = randomise_layer(params, name, rng)
            done.add(name)
        maps = sal.saliency(model, images, targets, method, params=params).reduce()
        out[stage] = float(np.mean([spearman(a, b) for a, b in zip(original[:, 0], maps[:, 0])]))
    return out


def match_detections(det, gt_boxes, gt_valid, min_score: float, most: int, iou: float = 0.5
                     ) -> list[list[tuple[int, int]]]:
    """Per image, (detection rank, ground-truth index) pairs: each valid detection scoring at least
    ``min_score``, best first, takes the free ground-truth box it overlaps most if that IoU reaches ``iou``;
    at most ``most`` pairs per image. ``det``: ``Detector.detect``'s output (numpy); ``gt_boxes`` (N, M, 4),
    ``gt_valid`` (N, M)."""
    from jaxvis import boxes as bx

    pairs = []
    for i in range(len(gt_boxes)):
        taken, found = set(), []
        for r in np.nonzero(det["valid"][i] & (det["scores"][i] >= min_score))[0]:
            ious = np.asarray(bx.iou(det["boxes"][i, r][None], gt_boxes[i]))[0]
            ious = np.where(gt_valid[i], ious, 0.0)
            ious[list(taken)] = 0.0
            g = int(np.argmax(ious))
            if ious[g] >= iou:
                taken.add(g)
                found.append((int(r), g))
            if len(found) == most:
                break
        pairs.append(found)
    return pairs


def centroid_offset(saliency_map, box) -> tuple[float, float]:
    """(dx, dy): the centre of the map's positive mass minus the xyxy box's centre, in pixels (pixel i's
    centre at i + 0.5); NaN for a map with no positive mass."""
    m = np.maximum(np.asarray(saliency_map, np.float64), 0.0)
    total = m.sum()
    if total <= 0:
        return float("nan"), float("nan")
    ys, xs = np.arange(m.shape[0]) + 0.5, np.arange(m.shape[1]) + 0.5
    x1, y1, x2, y2 = box
    return float((m.sum(0) * xs).sum() / total - (x1 + x2) / 2), float((m.sum(1) * ys).sum() / total - (y1 + y2) / 2)
