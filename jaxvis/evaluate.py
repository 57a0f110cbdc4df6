"""How class models are judged: does a second network read them as their class, and how sure is the
model itself.

* **Transfer**: the share of class-model images that another classifier (the *judge*: the shipped
  ``shapes_judge`` for the shapes models, any other jaxvis classifier for real ones) reads as the
  target class. A picture that only fools the network it was made for does not transfer; one that
  draws the object does.
* **Own probability**: the model's softmax probability of the target on the same picture. For a
  detector, the probability of the class at the target box: the highest class probability over the
  default boxes that the MultiBox matcher would give that box (IoU >= ``iou``; the best one when none
  reaches it). The judge then reads the target box's crop, resized to its input.

Every image is first made a valid picture (the model's ``to_image``, clipped to [0, 1]) and both
networks see that picture, so the verdicts hold for what a person looks at. The judge is matched to the
target by class name, so it may list its classes in another order (a detector's background class is
not a class here).

An image with NaN or infinite pixels (a diverged point) is not judged: its verdict says so
(``NOT_JUDGED``), it counts among the images but never as read or confident, and the table names it.

``run_verdicts`` reads a run directory (``images.npy`` and ``results.jsonl``, as ``jaxvis.sweeps.run``
writes them, one image per record); ``summary`` counts per class and in all; ``table`` prints it as a Markdown table;
``seed_blocks`` counts the classes sure and read per block of seeds (``experiments.recipe_search``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import boxes as bx


class EvaluationError(ValueError):
    """Inputs that cannot be judged (a judge without the target's class, a bad box, a missing file)."""


# What a verdict's ``judge_says`` holds for an image with NaN or infinite pixels (a diverged point): such
# an image is not a picture, and neither network is asked about it (they would read it as some class).
NOT_JUDGED = "not judged: non-finite pixels"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One class-model image: its target, what the judge read, and both networks' probabilities."""

    index: int
    target: str
    judge_says: str
    judge_prob: float   # the judge's probability of the target class
    own_prob: float     # the model's probability of the target (at the target box for a detector)
    seed: int = 0

    @property
    def agrees(self) -> bool:
        return self.judge_says == self.target

    @property
    def judged(self) -> bool:
        """False for an image with non-finite pixels, which neither network was asked about."""
        return self.judge_says != NOT_JUDGED


def finite_images(images) -> np.ndarray:
    """Per image of (N, H, W, C), whether all its pixels are finite."""
    images = np.asarray(images)
    return np.isfinite(images.reshape(len(images), -1)).all(axis=1)


def _not_judged(index: int, target: str, seed: int) -> Verdict:
    return Verdict(index, target, NOT_JUDGED, float("nan"), float("nan"), int(seed))


def _judge_finite(verdicts_of, images, names, seeds, *per_image):
    """Runs ``verdicts_of(images, seeds, *per_image)`` on the images with finite pixels only and gives the
    others a not-judged verdict; verdict indices are positions in ``images``."""
    ok = finite_images(images)
    seeds = list(seeds) if seeds is not None else [0] * len(names)
    if ok.all():
        return None
    keep = np.flatnonzero(ok)
    judged = iter(verdicts_of(np.asarray(images)[keep], [seeds[i] for i in keep],
                              *[[column[i] for i in keep] for column in per_image]) if len(keep) else [])
    return [dataclasses.replace(next(judged), index=i) if ok[i] else _not_judged(i, names[i], seeds[i])
            for i in range(len(names))]


def pictures(model, images) -> np.ndarray:
    """Network-input images -> valid RGB pictures in [0, 1] (N, H, W, 3)."""
    return np.clip(np.asarray(model.to_image(jnp.asarray(images, jnp.float32))), 0.0, 1.0)


def _judge_index(judge, name: str) -> int:
    if name not in judge.labels:
        raise EvaluationError(f"the judge has no class {name!r}; its classes are {', '.join(judge.labels)}. "
                              "Choose a judge trained on the model's classes.")
    return judge.labels.index(name)


def judge_read(judge, picture_batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The judge's label index and class probabilities for pictures in [0, 1] (resized to its input by
    its ``preprocess``)."""
    logits, _ = judge.apply(judge.params, judge.preprocess(jnp.asarray(picture_batch, jnp.float32)))
    probs = np.asarray(jax.nn.softmax(judge.class_logits(logits), axis=-1))
    return probs.argmax(-1), probs


def crop(picture: np.ndarray, box: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """The xyxy pixel ``box`` of one picture (H, W, 3), resized to ``size`` (bilinear samples at the
    centres of the output pixels; antialiased first when the box is larger than ``size``)."""
    h, w = picture.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise EvaluationError(f"a box must lie inside the {w}x{h} picture with x1 < x2 and y1 < y2; got {box}.")
    # output pixel i of n samples the picture at x1 + (i + 0.5) (x2 - x1) / n - 0.5 (pixel centres at
    # integers), torchvision's roi_align(aligned=True) with one sample per bin
    out_h, out_w = size
    scale = jnp.asarray([out_h / (y2 - y1), out_w / (x2 - x1)], jnp.float32)
    translate = -jnp.asarray([y1, x1], jnp.float32) * scale
    return np.asarray(jax.image.scale_and_translate(jnp.asarray(picture, jnp.float32), (out_h, out_w, 3), (0, 1),
                                                    scale, translate, "linear", antialias=True))


def classifier_verdicts(model, judge, images, targets: Sequence[int], seeds: Sequence[int] | None = None
                        ) -> list[Verdict]:
    """Verdicts on class models of a classifier: ``images`` in its input space, ``targets`` its class
    indices. An image with non-finite pixels gets a verdict that says so (``NOT_JUDGED``)."""
    names = [model.labels[int(t)] for t in targets]
    apart = _judge_finite(lambda im, sd, tg: classifier_verdicts(model, judge, im, tg, sd), images, names, seeds,
                          list(targets))
    if apart is not None:
        return apart
    pics = pictures(model, images)
    logits, _ = model.apply(model.params, model.preprocess(jnp.asarray(pics)))
    own = np.asarray(jax.nn.softmax(model.class_logits(logits), axis=-1))
    names = [model.labels[int(t)] for t in targets]
    votes, probs = judge_read(judge, pics)
    seeds = list(seeds) if seeds is not None else [0] * len(names)
    return [Verdict(i, n, judge.labels[v], float(p[_judge_index(judge, n)]), float(o[int(t)]), int(s))
            for i, (n, v, p, o, t, s) in enumerate(zip(names, votes, probs, own, targets, seeds))]


def box_probability(detector, outputs, target: int, box: Sequence[float], iou: float = 0.5) -> float:
    """The detector's probability of class ``target`` (its label index) at ``box``: the highest over
    the default boxes with IoU >= ``iou`` with it, or at the default box that overlaps it most."""
    overlap = np.asarray(bx.iou(np.asarray([box], np.float32), detector.anchors))[0]
    matched = overlap >= iou
    if not matched.any():
        matched = overlap == overlap.max()
    probs = np.asarray(jax.nn.softmax(detector.class_logits(outputs)[0], axis=-1))[:, target]
    return float(probs[matched].max())


def detector_verdicts(detector, judge, images, targets: Sequence[int], boxes: Sequence[Sequence[float]],
                      seeds: Sequence[int] | None = None, iou: float = 0.5) -> list[Verdict]:
    """Verdicts on class models of a detector: ``targets`` its label indices (background 0), ``boxes``
    one xyxy target box per image (network-input pixels). The judge reads each box's crop. An image with
    non-finite pixels gets a verdict that says so (``NOT_JUDGED``)."""
    names = [detector.labels[int(t)] for t in targets]
    apart = _judge_finite(lambda im, sd, tg, bb: detector_verdicts(detector, judge, im, tg, bb, sd, iou), images,
                          names, seeds, list(targets), list(boxes))
    if apart is not None:
        return apart
    pics = pictures(detector, images)
    size = tuple(judge.input_shape()[1:3])
    crops = np.stack([crop(p, b, size) for p, b in zip(pics, boxes)])
    votes, probs = judge_read(judge, crops)
    seeds = list(seeds) if seeds is not None else [0] * len(pics)
    outputs, _ = detector.apply(detector.params, detector.preprocess(jnp.asarray(pics)))
    out = []
    for i, (t, b, v, p, s) in enumerate(zip(targets, boxes, votes, probs, seeds)):
        name = detector.labels[int(t)]
        own = box_probability(detector, jax.tree.map(lambda a: a[i:i + 1], outputs), int(t), b, iou)
        out.append(Verdict(i, name, judge.labels[v], float(p[_judge_index(judge, name)]), own, int(s)))
    return out


def read_run(run: str) -> tuple[np.ndarray, list[dict]]:
    """A run directory's images (network input space) and its results, in point order; EvaluationError
    (one line, saying what to do) for missing or damaged files and for images and records that disagree."""
    images, records = check_run(run)
    return np.asarray(images), records


def check_run(run: str) -> tuple[np.ndarray, list[dict]]:
    """``read_run`` without reading the images: they come memory-mapped (checking a run costs no memory)."""
    images_path, results_path = os.path.join(run, "images.npy"), os.path.join(run, "results.jsonl")
    for p in (images_path, results_path):
        if not os.path.exists(p):
            raise EvaluationError(f"{p} does not exist; give a finished run directory (python -m "
                                  "experiments.class_model ... --out DIR writes it).")
    records = []
    with open(results_path, encoding="utf-8") as f:
        for k, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise EvaluationError(f"{results_path}: line {k} is not JSON; the file is damaged: run the sweep "
                                      "again (python -m experiments.class_model ... --out DIR).") from None
            if not isinstance(record, dict) or not isinstance(record.get("index"), int) or "target" not in record:
                raise EvaluationError(f"{results_path}: line {k} is not a point's record (with index and target); "
                                      "give a run directory of python -m experiments.class_model.")
            records.append(record)
    try:
        images = np.load(images_path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise EvaluationError(f"{images_path} is not a readable .npy array ({e}); the file is damaged: run the "
                              "sweep again.") from None
    if images.ndim != 4:
        raise EvaluationError(f"{images_path} holds an array of shape {images.shape}; expected images "
                              "(points, height, width, channels).")
    indices = sorted(r["index"] for r in records)
    if len(images) != len(records) or indices != list(range(len(records))):
        raise EvaluationError(
            f"{run}: images.npy holds {len(images)} image(s) but results.jsonl {len(records)} record(s)"
            + ("" if len(images) != len(records) else " whose indices are not 0 to N-1")
            + "; the two files must come from the same finished run: finish it (--resume) or run it again, "
            "and do not copy one file from another run.")
    return images, sorted(records, key=lambda r: r["index"])


def run_verdicts(run: str, model, judge, iou: float = 0.5) -> tuple[list[Verdict], list[dict]]:
    """Verdicts on every image of a run directory of ``model`` (the run's records beside them). A
    detector's image is judged at the first of its target boxes."""
    images, records = read_run(run)
    images = images[[r["index"] for r in records]]
    targets = [int(r["target"]) for r in records]
    seeds = [int(r.get("seed", 0)) for r in records]
    if model.is_detector:
        if any(not r.get("boxes") for r in records):
            raise EvaluationError(f"{run}: a detector run's points need target boxes (--boxes); some have none.")
        verdicts = detector_verdicts(model, judge, images, targets, [r["boxes"][0] for r in records], seeds, iou)
    else:
        verdicts = classifier_verdicts(model, judge, images, targets, seeds)
    return verdicts, records


def _describe(axis: str, record: dict) -> str:
    if axis == "loss":
        return "+".join(k if w == 1 else f"{w:g}*{k}" for k, w in record["loss"].items())
    if axis == "boxes":
        return "box " + ";".join(",".join(f"{v:g}" for v in b) for b in record["boxes"])
    return f"{axis}={record.get(axis)}"


def groups(records: list[dict]) -> list[tuple[str, list[int]]]:
    """A run's points grouped by the values of its axes other than target and seed (one group, labelled
    "", when no other axis varies): (label, positions in ``records``), in the order of first appearance.
    A label names the varying axes' values: the loss as written (``2*sq``), ``box x1,y1,x2,y2``, ``lr=0.1``."""
    order = ("loss", "lr", "init", "decay", "boxes")
    axes = sorted({a for r in records for a in r.get("at", {})} - {"target", "seed"},
                  key=lambda a: (order.index(a) if a in order else len(order), a))
    varying = [a for a in axes if len({r["at"].get(a) for r in records}) > 1]
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(tuple(r["at"].get(a) for a in varying), []).append(i)
    return [(" ".join(_describe(a, records[idx[0]]) for a in varying), idx) for idx in groups.values()]


@dataclasses.dataclass(frozen=True)
class Summary:
    """Counts over verdicts: ``per_class`` maps a class to (judge agrees, images, lowest own
    probability, images with own probability >= ``threshold``)."""

    agree: int
    total: int
    per_class: dict[str, tuple[int, int, float, int]]
    min_own_prob: float
    confident: int
    threshold: float
    not_judged: int = 0  # images with non-finite pixels: counted in ``total``, never as read or confident

    @property
    def classes_read(self) -> int:
        """Classes of which the judge reads at least half the images as the class."""
        return sum(2 * a >= n for a, n, _, _ in self.per_class.values())

    @property
    def classes_confident(self) -> int:
        """Classes whose every image has an own probability >= the threshold."""
        return sum(c == n for _, n, _, c in self.per_class.values())


def summary(verdicts: Sequence[Verdict], threshold: float = 0.9) -> Summary:
    if not verdicts:
        raise EvaluationError("no verdicts to summarise: the run has no images.")
    per_class: dict[str, tuple[int, int, float, int]] = {}
    for v in verdicts:
        a, n, low, conf = per_class.get(v.target, (0, 0, 1.0, 0))
        if v.judged:
            per_class[v.target] = (a + v.agrees, n + 1, min(low, v.own_prob), conf + (v.own_prob >= threshold))
        else:
            per_class[v.target] = (a, n + 1, low, conf)
    judged = [v for v in verdicts if v.judged]
    return Summary(agree=sum(v.agrees for v in judged), total=len(verdicts), per_class=per_class,
                   min_own_prob=min((v.own_prob for v in judged), default=float("nan")),
                   confident=sum(v.own_prob >= threshold for v in judged), threshold=threshold,
                   not_judged=len(verdicts) - len(judged))


def table(rows: dict[str, Summary]) -> str:
    """A Markdown table: one row per recipe, the judge's reads per class and in all, the lowest own
    probability, how many images reach the threshold, and how many classes the judge reads (at least
    half their images) and the model is sure of (every image at the threshold)."""
    classes: list[str] = []
    for s in rows.values():
        classes += [c for c in s.per_class if c not in classes]
    head = ["recipe", "judge reads"] + classes + ["own p min", "own p >= thr", "classes read / sure"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in rows.items():
        if s.not_judged:
            name = f"{name} ({s.not_judged} {NOT_JUDGED})"
        cells = [name, f"{s.agree}/{s.total}"]
        cells += [f"{s.per_class[c][0]}/{s.per_class[c][1]}" if c in s.per_class else "" for c in classes]
        cells += [f"{s.min_own_prob:.3f}", f"{s.confident}/{s.total} (>= {s.threshold:g})",
                  f"{s.classes_read}/{len(s.per_class)} / {s.classes_confident}/{len(s.per_class)}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdicts_of(lines: list[dict]) -> list[Verdict]:
    """Verdict lines (as ``experiments.evaluate`` writes them to verdicts.jsonl) back as verdicts."""
    nan = float("nan")
    return [Verdict(r["index"], r["target"], r["judge_says"], nan if r["judge_prob"] is None else r["judge_prob"],
                    nan if r["own_prob"] is None else r["own_prob"], r["seed"]) for r in lines]


def block_counts(lines: list[dict], threshold: float) -> tuple[int, int]:
    """(classes sure, classes read) among verdict lines: ``Summary.classes_confident`` and
    ``Summary.classes_read``."""
    s = summary(_verdicts_of(lines), threshold)
    return s.classes_confident, s.classes_read


def seed_blocks(verdict_lines: list[dict], block: int, threshold: float, min_sure: int, min_read: int) -> list[str]:
    """One line per group of verdict lines (as ``experiments.evaluate`` writes them to verdicts.jsonl): images
    sure and read, then per block of ``block`` seeds (0-1, 2-3, ... for 2; a last block short of seeds is left
    out) the classes sure / read (``block_counts``), starred where they reach ``min_sure`` and ``min_read``,
    how many blocks are, and per class the images sure / read. A block is what one run of a recipe with that
    many seeds shows."""
    lines = []
    for group in dict.fromkeys(r["group"] for r in verdict_lines):
        rows = [r for r in verdict_lines if r["group"] == group]
        seeds = sorted({r["seed"] for r in rows})
        blocks = [seeds[i:i + block] for i in range(0, len(seeds) - block + 1, block)]
        cells, met = [], 0
        for seeds_of_block in blocks:
            sure, read = block_counts([r for r in rows if r["seed"] in seeds_of_block], threshold)
            ok = sure >= min_sure and read >= min_read
            met += ok
            cells.append(f"{sure}/{read}{'*' if ok else ''}")
        s = summary(_verdicts_of(rows), threshold)
        per_class = " ".join(f"{c}:{conf}/{agree}" for c, (agree, _, _, conf) in s.per_class.items())
        lines.append(f"{group}: p>={threshold:g} {s.confident}/{s.total}, judge {s.agree}/{s.total}; blocks of "
                     f"{block} seeds (sure/read) {' '.join(cells)}: {met}/{len(blocks)} met; per class (sure/read "
                     f"images) {per_class}")
    return lines
