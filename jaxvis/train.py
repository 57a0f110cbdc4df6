"""Training the small shapes models with the same model code as VGG and SSD300, and measuring them.

The classifier and the judge are VGG-style networks (``jaxvis.models.vgg.VGG`` with small widths), the
detector an SSD (``jaxvis.models.ssd.SSD`` with small widths, a 128x128 input and four feature maps).
Batches are drawn inside the jitted training step from ``jaxvis.data.shapes``; held-out sets come from
seeds that training never uses. Detection mAP@0.5 is computed with pycocotools.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvis import assets, models, multibox
from jaxvis.data import shapes
from jaxvis.model import Detector, Model, from_spec
from jaxvis.spec import ModelSpec

EVAL_SEED = 1_000_003  # held-out sets; training keys are fold_in(key(train seed), step)

SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.25, 0.25, 0.25)


def classifier_spec(arch: str = "shapes_vgg", blocks=((16,), (32,), (64, 64), (64, 64), (64, 64)),
                    fc_width: int = 128, size: int = 64) -> ModelSpec:
    return ModelSpec(
        arch=arch, family="vgg",
        config={"blocks": [list(b) for b in blocks], "batch_norm": False, "num_classes": shapes.NUM_CLASSES,
                "fc_width": fc_width, "pool_size": [2, 2]},
        input_size=(size, size), resize="squash", resize_size=None, antialias=True,
        mean=SHAPES_MEAN, std=SHAPES_STD, labels=shapes.CLASSES, source="experiments/train_shapes.py",
        image_stats=assets.SHIPPED_STATS)


def judge_spec() -> ModelSpec:
    """The independent judge: other widths and depth, trained from another seed."""
    return classifier_spec(arch="shapes_judge", blocks=((16,), (32, 32), (48,), (96,), (96,)), fc_width=96)


# share of training scenes that hold one larger shape anywhere (jaxvis.data.shapes.detection_image)
DETECTOR_FREE_SHARE = 0.5


def detector_spec(size: int = 128) -> ModelSpec:
    """The shipped detector: source maps of 16, 8, 3 and 1 cells at 128 px (SSD300's last two maps are odd
    too), so that default boxes sit at the image's centre: the 3 x 3 map's middle boxes measure 41 and 51 px,
    the 1 x 1 map's 64 and 78 px (the lab's centred quarter is 64 px). The two extra layers are valid 3 x 3
    convolutions, stride 2 then 1; the default boxes' centres are at half cells (no steps)."""
    aspect_ratios = [[2], [2, 3], [2, 3], [2]]
    return ModelSpec(
        arch="shapes_ssd", family="ssd",
        config={"num_classes": shapes.NUM_CLASSES + 1,
                "blocks": [[8, 8], [16, 16], [32, 32, 32], [64, 64, 64], [64, 64, 64]],
                "fc_width": 128, "fc_dilation": 2, "extras": [[32, 64, 2, 0], [32, 64, 1, 0]],
                "anchors_per_location": [4, 6, 6, 4], "l2norm": "max", "l2norm_init": 20.0},
        input_size=(size, size), resize="squash", resize_size=None, antialias=False,
        mean=SHAPES_MEAN, std=SHAPES_STD, labels=("__background__",) + shapes.CLASSES,
        source="experiments/train_shapes.py",
        detection={"anchors": {"aspect_ratios": aspect_ratios, "scales": [0.08, 0.16, 0.32, 0.5, 0.75],
                               "clip": True, "clip_centres": False},
                   "postprocess": {"topk_candidates": 100, "detections_per_img": 50}, "loss": {}},
        image_stats=assets.SHIPPED_STATS)


def init_variables(spec: ModelSpec, seed: int) -> dict:
    """He-normal kernels, zero biases (the L2Norm scale at its initial value)."""
    module = models.build(spec)
    h, w = spec.input_size
    shapes_ = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']"):
            fan_in = int(np.prod(leaf.shape[:-1]))
            return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        if "conv4_3_scale" in name:
            return np.full(leaf.shape, spec.config.get("l2norm_init", 20.0), np.float32)
        return np.zeros(leaf.shape, np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes_)


@dataclasses.dataclass
class TrainLog:
    steps: list[int] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def _fit(spec: ModelSpec, loss_fn: Callable, seed: int, steps: int, lr: float, log_every: int,
         time_budget: float | None, log: Callable[[str], None], init: dict | None = None) -> tuple[Model, TrainLog]:
    model = from_spec(spec, init_variables(spec, seed) if init is None else init)
    # Warm up over 5% of the steps, hold the rate, then decay linearly over the last 30% to 5% of it.
    warm, hold = max(1, steps // 20), int(steps * 0.7)
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warm), optax.constant_schedule(lr),
         optax.linear_schedule(lr, lr * 0.05, max(1, steps - hold))], [warm, hold])
    opt = optax.chain(optax.clip_by_global_norm(5.0), optax.adamw(schedule, weight_decay=1e-4))
    params = model.params["params"]
    state = opt.init(params)
    key = jax.random.key(seed)

    @jax.jit
    def step(params, state, i):
        loss, grads = jax.value_and_grad(loss_fn)(params, jax.random.fold_in(key, i))
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts and floats
            updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    history = TrainLog()
    start = time.time()
    running = []
    for i in range(steps):
        params, state, loss = step(params, state, i)
        running.append(loss)
        over = time_budget is not None and (i + 1) % 10 == 0 and time.time() - start > time_budget
        if (i + 1) % log_every == 0 or i + 1 == steps or over:
            value = float(np.mean(np.asarray(jnp.stack(running))))
            running = []
            history.steps.append(i + 1)
            history.losses.append(value)
            log(f"{spec.arch} step {i + 1}/{steps} loss {value:.4f} ({time.time() - start:.0f} s)")
        if over:
            log(f"{spec.arch}: time budget of {time_budget:.0f} s reached at step {i + 1}")
            break
    history.seconds = time.time() - start
    return from_spec(spec, {"params": params}), history


def train_classifier(spec: ModelSpec, seed: int = 0, steps: int = 2000, batch: int = 64, lr: float = 2e-3,
                     log_every: int = 100, time_budget: float | None = None, log=print) -> tuple[Model, TrainLog]:
    module = models.build(spec)
    size = spec.input_size[0]

    def loss_fn(params, key):
        images, labels, _ = shapes.classification_batch(key, batch, size)
        x = (images - jnp.asarray(spec.mean)) / jnp.asarray(spec.std)
        logits, _ = module.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return _fit(spec, loss_fn, seed, steps, lr, log_every, time_budget, log)


def train_detector(spec: ModelSpec, seed: int = 0, steps: int = 3000, batch: int = 32, lr: float = 2e-3,
                   log_every: int = 100, time_budget: float | None = None, log=print,
                   free_share: float = DETECTOR_FREE_SHARE, init: dict | None = None,
                   adversarial: float = 0.0, decoy_share: float = 0.0, flat_share: float = 0.0,
                   even_noise: bool = False) -> tuple[Model, TrainLog]:
    """SSD training with the MultiBox loss on generated scenes; ``init``: variables to start from (another
    detector's of the same parameter shapes) instead of He-normal ones. ``adversarial`` > 0 trains on
    adversarial scenes instead (``adversarial_images``: an L-infinity budget of that many [0, 1] pixel
    units). ``decoy_share``: the share of scenes whose background holds a decoy (``shapes.detection_image``),
    a shape-shaped hole in clutter that the detector learns to leave as background. ``flat_share``: the
    share of scenes over one flat colour instead of a pattern; ``even_noise``: the pixel noise over the
    whole scene at a level drawn per scene, instead of over the background only (``shapes.detection_image``)."""
    module = models.build(spec)
    size = spec.input_size[0]
    probe = from_spec(spec, init_variables(spec, 0))
    assert isinstance(probe, Detector)
    anchors = jnp.asarray(probe.anchors)
    cfg = probe.loss_config

    def scene_loss(params, images, boxes, labels, valid):
        x = (images - jnp.asarray(spec.mean)) / jnp.asarray(spec.std)
        out, _ = module.apply({"params": params}, x)
        return multibox.multibox_loss(out["cls_logits"], out["bbox_regression"], anchors, boxes, labels, valid,
                                      cfg)["total"]

    def loss_fn(params, key):
        images, boxes, labels, valid = shapes.detection_batch(key, batch, size, free_share=free_share,
                                                               decoy_share=decoy_share, flat_share=flat_share,
                                                               even_noise=even_noise)
        if adversarial > 0:
            images = adversarial_images(lambda im: scene_loss(jax.lax.stop_gradient(params), im, boxes, labels, valid),
                                        images, jax.random.fold_in(key, 0xAD), adversarial)
        return scene_loss(params, images, boxes, labels, valid)

    return _fit(spec, loss_fn, seed, steps, lr, log_every, time_budget, log, init)


def adversarial_images(loss, images, key, eps: float):
    """Images moved within an L-infinity ball of radius ``eps`` to raise ``loss`` (a function of the images):
    one signed-gradient step of 1.25 eps from a uniform random start in the ball, kept in the ball and in
    [0, 1] (Wong, Rice & Kolter 2020, "Fast is better than free"). Training on them makes a model whose
    input gradients follow the objects' outlines more than texture (Santurkar et al. 2019), which is what
    class models by gradient ascent draw."""
    delta = jax.random.uniform(key, images.shape, images.dtype, -eps, eps)
    g = jax.grad(lambda d: loss(jnp.clip(images + d, 0.0, 1.0)))(delta)
    delta = jnp.clip(delta + 1.25 * eps * jnp.sign(g), -eps, eps)
    return jax.lax.stop_gradient(jnp.clip(images + delta, 0.0, 1.0))


def classifier_accuracy(model: Model, seed: int = EVAL_SEED, n: int = 2000) -> float:
    """Top-1 accuracy on ``n`` freshly generated images from ``seed``."""
    images, labels, _ = shapes.classification_set(seed, n, model.spec.input_size[0])
    predict = jax.jit(lambda p, im: jnp.argmax(model.apply(p, model.preprocess(im))[0], -1))
    preds = np.concatenate([np.asarray(predict(model.params, images[i:i + 250])) for i in range(0, n, 250)])
    return float(np.mean(preds == labels))


def detection_map(model: Detector, seed: int = EVAL_SEED, n: int = 500, free_share: float = 0.0,
                  flat_share: float = 0.0, even_noise: bool = False) -> dict[str, float]:
    """COCO-style AP of the detector on ``n`` generated scenes, by pycocotools: mAP@0.5 and mAP@[.5:.95].
    ``free_share``: the share of scenes with one shape anywhere (0: quadrant scenes only); ``flat_share``:
    the share over a flat colour; ``even_noise``: the pixel noise over the whole scene."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("detection_map needs pycocotools: pip install 'jaxvis[train]'") from None
    import contextlib
    import io

    size = model.spec.input_size[0]
    images, boxes, labels, valid = shapes.detection_set(seed, n, size, free_share=free_share, flat_share=flat_share,
                                                        even_noise=even_noise)
    detect = jax.jit(model.detect)
    gt = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(shapes.CLASSES)]}
    dets = []
    for start in range(0, n, 100):
        out = jax.device_get(detect(model.params, images[start:start + 100]))
        for j in range(out["boxes"].shape[0]):
            image_id = start + j
            gt["images"].append({"id": image_id, "width": size, "height": size})
            for b, lab, v in zip(boxes[image_id], labels[image_id], valid[image_id]):
                if v:
                    w, h = float(b[2] - b[0]), float(b[3] - b[1])
                    gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                              "category_id": int(lab), "bbox": [float(b[0]), float(b[1]), w, h],
                                              "area": w * h, "iscrowd": 0})
            for b, s, lab, v in zip(out["boxes"][j], out["scores"][j], out["labels"][j], out["valid"][j]):
                if v:
                    dets.append({"image_id": image_id, "category_id": int(lab), "score": float(s),
                                 "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        result = coco.loadRes(dets) if dets else None
        if result is None:
            return {"map50": 0.0, "map": 0.0}
        ev = COCOeval(coco, result, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map50": float(ev.stats[1]), "map": float(ev.stats[0])}


def training_metadata(history: TrainLog, metrics: dict[str, Any], seed: int,
                      extra: dict[str, Any] | None = None) -> dict[str, str]:
    """The params file's record of its training (``extra``: further settings, e.g. the weights it started from)."""
    return {"training": json.dumps({"seed": seed, "steps": history.steps[-1] if history.steps else 0,
                                    "seconds": round(history.seconds, 1), "final_loss": history.losses[-1],
                                    **(extra or {})}),
            "metrics": json.dumps(metrics)}
