"""The shipped shapes models: training works, the shipped figures hold on fresh data, class models are
recognised by an independent judge, and saliency points at the object."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvis
import jaxvis.evaluate
from jaxvis import assets, engine, objectives as obj, params as params_io, train
from jaxvis import localize as loc
from jaxvis import metrics as met
from jaxvis import saliency as sal
from jaxvis.data import shapes

FRESH_SEED = 424_242  # neither a training key nor the held-out set recorded in the metadata


def metadata(name):
    return params_io.read_header(assets.path(name))[1]


@pytest.fixture(scope="module")
def classifier():
    return jaxvis.load(assets.path("classifier"))


@pytest.fixture(scope="module")
def judge():
    return jaxvis.load(assets.path("judge"))


def test_assets_fit_the_budget():
    folder = os.path.dirname(assets.path("classifier"))
    total = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    assert total <= 20 * 2**20


@pytest.mark.slow  # 200 training steps of each model
@pytest.mark.parametrize("kind", ["classifier", "detector"])
def test_training_loss_falls_on_a_short_budget(kind):
    if kind == "classifier":
        # the classifier sits at chance (ln 6) for its first ~100 steps, then learns
        _, log = train.train_classifier(train.classifier_spec(), seed=5, steps=200, batch=32, log_every=20,
                                        log=lambda *_: None)
        assert log.losses[-1] < 0.85 * np.log(6), log.losses
    else:
        _, log = train.train_detector(train.detector_spec(), seed=5, steps=60, batch=8, log_every=20,
                                      log=lambda *_: None)
    assert log.losses[-1] < 0.8 * log.losses[0], log.losses


def test_adversarial_images_are_one_signed_step_from_a_random_start_within_the_ball():
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((2, 8, 8, 3)).astype(np.float32))
    loss = lambda im: jnp.sum(w * im ** 2)  # noqa: E731
    key, eps = jax.random.key(4), 0.05
    got = np.asarray(train.adversarial_images(loss, images, key, eps))
    start = np.asarray(jax.random.uniform(key, images.shape, images.dtype, -eps, eps))
    g = np.asarray(jax.grad(loss)(jnp.clip(images + start, 0, 1))) * ((np.asarray(images) + start > 0)
                                                                      & (np.asarray(images) + start < 1))
    want = np.clip(np.asarray(images) + np.clip(start + 1.25 * eps * np.sign(g), -eps, eps), 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.all(np.abs(got - np.asarray(images)) <= eps + 1e-6) and got.min() >= 0 and got.max() <= 1
    assert float(loss(jnp.asarray(got))) > float(loss(images))  # the step climbs the loss
    # inside a training loss: a function of the parameters' gradient only through the moved images
    params = jnp.float32(2.0)
    def train_loss(p):
        moved = train.adversarial_images(lambda im: jnp.sum(jax.lax.stop_gradient(p) * w * im ** 2), images, key, eps)
        return jnp.sum(p * w * moved ** 2)
    np.testing.assert_allclose(jax.grad(train_loss)(params), float(jnp.sum(w * jnp.asarray(got) ** 2)), rtol=1e-5)


@pytest.mark.slow  # a property of the shipped models
def test_shipped_classifiers_hold_their_accuracy_on_fresh_images(classifier, judge):
    for name, model in (("classifier", classifier), ("judge", judge)):
        recorded = json.loads(metadata(name)["metrics"])["top1"]
        assert recorded >= 0.97
        fresh = train.classifier_accuracy(model, seed=FRESH_SEED, n=2000)
        assert abs(fresh - recorded) <= 0.02, (name, fresh, recorded)


@pytest.mark.slow  # the mAP of both shipped detectors on 200 fresh scenes
@pytest.mark.parametrize("name", ["detector", "detector_robust"])
def test_shipped_detector_map(name):
    recorded = json.loads(metadata(name)["metrics"])
    assert recorded["map50"] >= 0.8
    fresh = train.detection_map(jaxvis.load(assets.path(name)), seed=FRESH_SEED, n=200)
    assert fresh["map50"] >= 0.8, fresh


@pytest.mark.slow  # an attack on both shipped detectors
def test_robust_detector_is_the_shipped_one_fine_tuned_and_withstands_adversarial_scenes():
    from jaxvis import fileio, multibox

    training = json.loads(metadata("detector_robust")["training"])
    assert training["init_sha256"] == fileio.sha256(assets.path("detector"))
    assert training["adversarial_linf"] == [0.00784, 0.01569]
    images, boxes, labels, valid = shapes.detection_set(FRESH_SEED, 24, free_share=0.5)
    losses = {}
    for name in ("detector", "detector_robust"):
        model = jaxvis.load(assets.path(name))

        def loss(im, model=model):
            out, _ = model.apply(model.params, model.preprocess(im))
            return multibox.multibox_loss(out["cls_logits"], out["bbox_regression"], jnp.asarray(model.anchors),
                                          boxes, labels, valid, model.loss_config)["total"]
        attacked = train.adversarial_images(loss, jnp.asarray(images), jax.random.key(1), 4 / 255)
        losses[name] = (float(loss(jnp.asarray(images))), float(loss(attacked)))
    print("multibox loss clean, attacked at 4/255:", losses)
    # the same attack raises the standard detector's loss far more than the robust one's
    assert losses["detector_robust"][1] < 0.5 * losses["detector"][1], losses
    assert losses["detector_robust"][0] < 2 * losses["detector"][0] + 0.5, losses


@pytest.mark.slow  # training-scene options, drawn eagerly
def test_free_scenes_hold_one_shape_anywhere_and_leave_quadrant_scenes_alone():
    quadrant = shapes.detection_set(FRESH_SEED, 64)
    mixed = shapes.detection_set(FRESH_SEED, 64, free_share=0.5)
    free = np.abs(np.asarray(mixed[0]) - np.asarray(quadrant[0])).max(axis=(1, 2, 3)) > 0.01
    assert 16 <= free.sum() <= 48, free.sum()
    for a, b in zip(quadrant, mixed):  # a quadrant scene is the same scene whatever the share
        np.testing.assert_allclose(np.asarray(a)[~free], np.asarray(b)[~free], atol=1e-5)
    boxes, valid = np.asarray(mixed[1])[free], np.asarray(mixed[3])[free]
    assert np.all(valid[:, 0]) and not np.any(valid[:, 1:])
    sides = np.maximum(boxes[:, 0, 2] - boxes[:, 0, 0], boxes[:, 0, 3] - boxes[:, 0, 1])
    assert sides.max() > 56 and sides.min() >= 20, sides  # larger than the quadrants' shapes can be
    centres = (boxes[:, 0, :2] + boxes[:, 0, 2:]) / 2
    # some shapes straddle the quadrants' borders (no quadrant scene's shape can)
    assert np.any(np.all(np.abs(centres - 64) < 16, axis=1)), centres
    with pytest.raises(ValueError, match="free_share is a probability"):
        shapes.detection_image(jax.random.key(0), free_share=1.5)


@pytest.mark.slow  # training-scene options, drawn eagerly
def test_decoys_change_the_background_only_and_leave_the_shapes_and_labels_alone():
    plain = shapes.detection_set(FRESH_SEED, 32, free_share=0.5)
    decoyed = shapes.detection_set(FRESH_SEED, 32, free_share=0.5, decoy_share=0.5)
    for a, b in zip(plain[1:], decoyed[1:]):  # boxes, labels and validity do not depend on decoys
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    changed = np.abs(np.asarray(decoyed[0]) - np.asarray(plain[0])).max(axis=-1) > 0.01
    with_decoy = changed.any(axis=(1, 2))
    assert 6 <= with_decoy.sum() <= 26, with_decoy.sum()
    np.testing.assert_array_equal(np.asarray(decoyed[0])[~with_decoy], np.asarray(plain[0])[~with_decoy])
    # a decoy is drawn under the shapes: no pixel inside a shape changes
    images, boxes, labels, valid = plain
    for i in np.flatnonzero(with_decoy):
        shape_pixels = np.zeros((128, 128), bool)
        for box, ok in zip(boxes[i], valid[i]):
            if ok:  # the middle of each shape's box, which the shape covers whatever its kind and angle
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                shape_pixels[int(cy) - 1:int(cy) + 2, int(cx) - 1:int(cx) + 2] = True
        rings = labels[i] == shapes.CLASSES.index("ring") + 1
        if not np.any(rings & valid[i]):  # a ring's middle is a hole where the background, decoy included, shows
            assert not np.any(changed[i] & shape_pixels)
    with pytest.raises(ValueError, match="decoy_share is a probability"):
        shapes.detection_image(jax.random.key(0), decoy_share=-0.1)


@pytest.mark.slow  # training-scene options, drawn eagerly
def test_flat_backgrounds_are_one_colour_with_the_pixel_noise_and_leave_the_shapes_alone():
    patterned = shapes.detection_set(FRESH_SEED, 48, free_share=0.5)
    flat = shapes.detection_set(FRESH_SEED, 48, free_share=0.5, flat_share=0.5)
    for a, b in zip(patterned[1:], flat[1:]):  # boxes, labels and validity do not depend on the background
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    images, boxes, _, valid = (np.asarray(a) for a in flat)
    spread = []
    for i in range(len(images)):
        outside = np.ones((128, 128), bool)
        for box, ok in zip(boxes[i], valid[i]):
            if ok:
                x1, y1 = max(int(box[0]) - 1, 0), max(int(box[1]) - 1, 0)
                outside[y1:int(np.ceil(box[3])) + 1, x1:int(np.ceil(box[2])) + 1] = False
        pixels = images[i][outside]
        # a flat background's pixels spread by the pixel noise alone (0.04, less where [0, 1] clips it)
        spread.append(np.max(pixels.std(axis=0)))
    spread = np.asarray(spread)
    changed = np.abs(images - np.asarray(patterned[0])).max(axis=(1, 2, 3)) > 0
    assert 12 <= changed.sum() <= 36, changed.sum()
    assert np.all(spread[changed] < 0.045), spread[changed]
    assert np.all(spread[~changed] > 0.045), spread[~changed]  # every pattern varies by more than the noise
    with pytest.raises(ValueError, match="flat_share is a probability"):
        shapes.detection_image(jax.random.key(0), flat_share=2.0)


@pytest.mark.slow  # training-scene options, drawn eagerly
def test_even_noise_lies_over_the_shapes_as_over_the_background():
    """Scenes carry pixel noise on the background and none on the shapes, a cue a detector learns; with
    ``even_noise`` a shape's pixels are as noisy as its flat background's, at a level drawn per scene."""
    plain = shapes.detection_set(FRESH_SEED, 32, flat_share=1.0)
    even = shapes.detection_set(FRESH_SEED, 32, flat_share=1.0, even_noise=True)
    for a, b in zip(plain[1:], even[1:]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    levels = {"plain": [], "even": []}
    ring = shapes.CLASSES.index("ring") + 1
    for name, (images, boxes, labels, valid) in (("plain", plain), ("even", even)):
        images = np.asarray(images)
        for i in range(len(images)):
            filled = np.flatnonzero(np.asarray(valid[i]) & (np.asarray(labels[i]) != ring))  # a ring's middle is a hole
            if not len(filled):
                continue
            box = np.asarray(boxes[i][filled[0]])
            cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
            inside = images[i, cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3)  # the middle of the box: the shape
            corner = images[i, :6, :6].reshape(-1, 3)  # the top-left corner: background (no quadrant shape
            levels[name].append((inside.std(0).max(), corner.std(0).max()))  # reaches the image's edge)
    plain_levels, even_levels = np.asarray(levels["plain"]), np.asarray(levels["even"])
    assert np.all(plain_levels[:, 0] < 0.005) and np.median(plain_levels[:, 1]) > 0.03  # noise only around
    assert np.median(even_levels[:, 0]) > 0.01
    # the shape and its background share one level: their spreads agree within the estimate's noise
    assert np.median(np.abs(even_levels[:, 0] - even_levels[:, 1])) < 0.006, even_levels
    assert even_levels[:, 1].min() < 0.01 and even_levels[:, 1].max() > 0.03  # from almost none to full


def _centred_shapes(detector, radii, over_grey=False):
    """Real shapes of every class drawn at the image's centre (4 of each per radius) over the scenes'
    backgrounds, or over flat mid grey: (detector's probability at each shape's tight box, top detection right)."""
    key = jax.random.key(FRESH_SEED)
    images, boxes, labels = [], [], []
    for radius in radii:
        for kind in range(shapes.NUM_CLASSES):
            for j in range(4):
                k = jax.random.split(jax.random.fold_in(key, int(radius) * 100 + kind * 10 + j), 2)
                image, yy, xx, mean = shapes._background(k[0], 128)
                if over_grey:
                    image, mean = jnp.full_like(image, 0.5), jnp.full((3,), 0.5)
                image, cover = shapes._draw(image, k[1], kind, 64.0, 64.0, radius, yy, xx, mean)
                images.append(jnp.clip(image, 0, 1))
                boxes.append(np.asarray(shapes._tight_box(cover, 128)))
                labels.append(kind + 1)
    images = jnp.stack(images)
    outputs, _ = detector.apply(detector.params, detector.preprocess(images))
    found = jax.device_get(detector.detect(detector.params, images))
    hits, probs = [], []
    for i, (box, label) in enumerate(zip(boxes, labels)):
        probs.append(jaxvis.evaluate.box_probability(detector, jax.tree.map(lambda a: a[i:i + 1], outputs), label, box))
        top = int(np.argmax(np.where(found["valid"][i], found["scores"][i], -1)))
        iou = float(jaxvis.boxes.iou(np.asarray([box]), found["boxes"][i, top:top + 1])[0, 0])
        hits.append(iou >= 0.5 and int(found["labels"][i, top]) == label)
    return np.asarray(probs), np.asarray(hits)


@pytest.mark.parametrize("name", ["detector", "detector_robust"])
@pytest.mark.slow  # a property of the shipped detectors, 48 scenes drawn eagerly
def test_shipped_detector_finds_shapes_at_the_centre(name):
    """Default boxes sit at the centre (3 x 3 and 1 x 1 maps): a shape drawn there at the trained size or at
    the lab's centred quarter is found, with its class, by the default box on the target."""
    probs, hits = _centred_shapes(jaxvis.load(assets.path(name)), (20.0, 31.0))
    print(f"centred shapes: top detection right {np.mean(hits):.3f}, median p {np.median(probs):.3f}")
    assert np.mean(hits) >= 0.8
    assert np.median(probs) >= 0.8


@pytest.mark.slow  # a property of the shipped detector, 48 scenes drawn eagerly
def test_robust_detector_does_not_see_shapes_on_flat_grey():
    """The shapes detectors never saw a flat background: the robust one finds the trained-size shapes of the
    test above over their scenes' backgrounds, and almost none of the same shapes over mid grey. A class
    model with opacity reported over grey can thus understate what its views taught the detector; alpha(C)
    reports it over a backdrop of the views' kind instead."""
    detector = jaxvis.load(assets.path("detector_robust"))
    scene, _ = _centred_shapes(detector, (20.0,))
    grey, _ = _centred_shapes(detector, (20.0,), over_grey=True)
    print(f"centred 40 px shapes, median p: over scene backgrounds {np.median(scene):.3f}, over grey "
          f"{np.median(grey):.3f}")
    assert np.median(scene) >= 0.8 and np.median(grey) <= 0.2


@pytest.mark.slow  # a property of the shipped models; the tutorials show it at every docs build
def test_class_models_convince_the_classifier_and_the_judge(classifier, judge):
    """The robust recipe (jitter, valid pixel range, total variation) gives class models that the
    classifier is sure of and that a network trained separately also reads as the class."""
    sweep = engine.Sweep(targets=list(range(6)), lrs=[0.1], losses=[obj.score() + obj.sq() + 3.0 * obj.tv()],
                         seeds=[0, 1])
    eng = engine.Engine(classifier, sweep, steps=200, jitter=8, clip=True)
    result = eng.run(sweep, progress=False)
    assert np.all(result.final_prob >= 0.9), result.final_prob
    pictures = np.clip(np.asarray(classifier.to_image(result.images)), 0, 1)  # as real images
    logits, _ = judge.apply(judge.params, judge.preprocess(pictures))
    targets = np.array([p["target"] for p in sweep.point_axes()])
    votes = np.asarray(logits).argmax(-1)
    print(f"judge votes {votes} for targets {targets}")
    assert (votes == targets).mean() >= 0.6

@pytest.mark.slow  # a property of the shipped classifier on 200 scenes; the randomisation test below stays
def test_saliency_points_at_the_shape_and_localises_it(classifier):
    images, labels, boxes = shapes.classification_set(FRESH_SEED, 200)
    maps = sal.saliency(classifier, images, sal.class_score(labels[:, None])).reduce()[:, 0]
    hits = [met.pointing_hit(m, b) for m, b in zip(maps, boxes)]
    ious = []
    for image, m, b in zip(images, maps, boxes):
        found = loc.localize(image, m)
        ious.append(float(jaxvis.boxes.iou(np.asarray([b]), np.asarray([found.box]))[0, 0]) if found.box else 0.0)
    ious = np.asarray(ious)
    print(f"pointing game {np.mean(hits):.3f}, IoU>=0.5 on {np.mean(ious >= 0.5):.3f}, mean IoU {ious.mean():.3f}")
    assert np.mean(hits) >= 0.85
    assert np.mean(ious >= 0.5) >= 0.60


def test_randomising_the_layers_decorrelates_the_maps(classifier):
    images, labels, _ = shapes.classification_set(FRESH_SEED + 1, 8)
    cascade = met.cascading_randomisation(classifier, images, sal.class_score(labels[:, None]), seed=0)
    layers = [layer for layer, _ in cascade]
    assert layers[0] == "fc8" and layers[-1] == "conv1_1"
    rhos = [rho for _, rho in cascade]
    print("rank correlation by randomised layer:", [f"{layer}:{rho:.2f}" for layer, rho in cascade])
    assert rhos[-1] < 0.5


@pytest.mark.slow  # IG on the shipped classifier; test_saliency checks completeness on the tiny one
def test_integrated_gradients_are_complete_on_the_trained_classifier(classifier):
    """Attributions sum to score(x) - score(0) up to the path integral's error: on the shipped
    classifier about 1% (mean) with 64 midpoint steps, falling to about 0.3% with 256."""
    images, labels, _ = shapes.classification_set(FRESH_SEED + 2, 8)
    images = np.asarray(images)
    targets = sal.class_score(np.asarray(labels)[:, None])
    at_zero = sal.saliency(classifier, np.zeros_like(images), targets)
    diff = (sal.saliency(classifier, images, targets).scores - at_zero.scores)[:, 0]
    assert np.all(np.abs(diff) > 1.0)
    errors = {}
    for steps in (64, 256):
        ig = sal.saliency(classifier, images, targets, sal.integrated(steps=steps))
        np.testing.assert_allclose(ig.scores[:, 0] - at_zero.scores[:, 0], diff, rtol=1e-5)
        errors[steps] = np.abs(ig.attributions.reshape(8, -1).sum(-1) - diff) / np.abs(diff)
    print({k: np.round(v, 4) for k, v in errors.items()})
    assert errors[64].mean() <= 0.015 and errors[64].max() <= 0.03, errors
    assert errors[256].mean() <= 0.005 and errors[256].max() <= 0.015, errors


@pytest.mark.slow  # starts the training launcher
def test_robust_detector_command_refuses_bad_input(tmp_path):
    from conftest import run_module

    proc = run_module("experiments.train_shapes", "--which", "detector_robust", "--out", str(tmp_path), check=False)
    assert proc.returncode != 0 and "--robust_init: no params file" in proc.stderr and "--which detector" in proc.stderr
    proc = run_module("experiments.train_shapes", "--which", "detector_robust", "--out", str(tmp_path),
                      "--robust_init", assets.path("classifier"), check=False)
    assert proc.returncode != 0 and "holds other parameter shapes" in proc.stderr
    proc = run_module("experiments.train_shapes", "--which", "detector_robust", "--robust_budgets", "0.01,2",
                      "--robust_init", assets.path("detector"), "--out", str(tmp_path), check=False)
    assert proc.returncode != 0 and "budgets in (0, 1)" in proc.stderr
