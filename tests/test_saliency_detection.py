"""Grad-CAM, ODAM and D-RISE for detections: against torch autograd, determinism, chunking, localisation,
and the method/target values of jaxvis.saliency."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxvis
from jaxvis import assets
from jaxvis import boxes as bx
from jaxvis import metrics as met
from jaxvis import saliency as sal
from jaxvis.data import shapes
from tiny import tiny_ssd, tiny_vgg
from torch_ref import torch_cams, torch_ssd


def float64(model):
    return dataclasses.replace(model, params=jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params),
                               module=model.module.clone(dtype=jnp.float64))


@pytest.mark.slow
def test_gradcam_and_odam_equal_torch_autograd_on_ssd300(converted_ssd):
    """Several detections of one image, in float64: Grad-CAM and ODAM over SSD300's six source maps and ODAM on
    its default layer, conv4_3 (38 x 38, cells every 8 pixels); relative error 1e-4."""
    tmodel, _, path = converted_ssd
    model = jaxvis.load(path)
    image = np.random.default_rng(1).random((300, 300, 3), dtype=np.float32)
    det = jax.device_get(jax.jit(model.detect)(model.params, image[None]))
    assert det["valid"][0].sum() >= 4
    targets = sal.detections(det, np.array([[0, 1, 3]]))
    x = np.asarray(model.preprocess(image))[None].astype(np.float64)
    t64 = tmodel.double()
    steps = model.spec.detection["anchors"]["steps"]
    try:
        with jax.enable_x64(True):
            m64 = float64(model)
            sources = sal.source_maps(m64)
            got = {(m.name, m.layers): sal.saliency(m64, x, targets, m, preprocess=False).attributions
                   for m in (sal.gradcam(), sal.odam(sources), sal.odam())}
        pairs = [(int(a), int(c)) for a, c in zip(targets.fields["anchor"][0], targets.fields["class"][0])]
        wants = {None: torch_cams(t64, x[0], pairs, (300, 300), steps, model.spec.input_size),
                 "conv4_3": torch_cams(t64, x[0], pairs, (300, 300), steps, model.spec.input_size, backbone=True)}
        for (name, layers), maps in got.items():
            assert maps.shape == (1, 3, 300, 300)
            for k in range(3):
                want = wants["conv4_3" if name == "odam" and layers is None else None][k][name, "normalised_sum"]
                assert want.max() > 0
                np.testing.assert_allclose(maps[0, k], want, rtol=0, atol=1e-4 * want.max())
    finally:
        tmodel.float()


@pytest.mark.slow  # five float64 programs at 300 x 300; the rules on detections against torch's hooks stay
def test_gradcam_and_odam_equal_torch_autograd_on_the_tiny_ssd():
    """The tiny SSD of tests/tiny.py (SSD300's layout and default boxes, few channels) against its torch twin in
    float64: targets on four of its six source maps in one call, Grad-CAM with the plain sum and ODAM with the
    normalised sum of the scales, and both on ODAM's default layers, conv4_3 (38 x 38, cells every 8 pixels,
    its gradient through the L2 norm and through the extra layers) and map0: the first target is on map0, where
    ODAM on conv4_3 is rounding error and counts as zero; relative error 1e-4 (of the map's maximum)."""
    model = tiny_ssd(0)
    x = np.random.default_rng(3).normal(size=(1, 300, 300, 3))
    per = [h * w * a for (h, w), a in zip(model.feature_sizes, model.spec.config["anchors_per_location"])]
    first = np.concatenate([[0], np.cumsum(per)[:-1]])
    anchors = np.array([[first[0] + 4 * (19 * 38 + 20) + 1, first[1] + 6 * (9 * 19 + 9), first[2] + 6 * 33 + 2,
                         first[4] + 4 * 4 + 3]])
    targets = sal.detection(anchors, [[1, 2, 3, 4]])
    tmodel = torch_ssd(model).double()
    wants = torch_cams(tmodel, x[0], [(int(a), k + 1) for k, a in enumerate(anchors[0])], (300, 300),
                       model.spec.detection["anchors"]["steps"], model.spec.input_size)
    backbone = torch_cams(tmodel, x[0], [(int(a), k + 1) for k, a in enumerate(anchors[0])], (300, 300),
                          model.spec.detection["anchors"]["steps"], model.spec.input_size, backbone=True)
    with jax.enable_x64(True):
        m64 = float64(model)
        for method, reference in ((sal.gradcam(combine=sal.layer_sum), wants), (sal.odam(sal.source_maps(m64)), wants),
                                  (sal.odam(), backbone), (sal.gradcam(("conv4_3", "map0")), backbone)):
            maps = sal.saliency(m64, x, targets, method, preprocess=False).attributions
            assert maps.shape == (1, 4, 300, 300) and maps.dtype == np.float64
            for k in range(4):
                combined = {sal.layer_sum: "sum", sal.normalised_sum: "normalised_sum"}[method.combine]
                want = reference[k][method.name, combined]
                assert want.max() > 0, (method, k)
                np.testing.assert_allclose(maps[0, k], want, rtol=0, atol=1e-4 * want.max())
        # the L2 norm is scale-invariant: ODAM on conv4_3 of the map0 detection is zero, of the others not
        alone = sal.saliency(m64, x, targets, sal.odam("conv4_3", combine=sal.layer_sum), preprocess=False).attributions
        assert not alone[0, 0].any() and all(alone[0, k].max() > 0 for k in (1, 2, 3))


@pytest.fixture(scope="module")
def shipped():
    model = jaxvis.load(assets.path("detector"))
    images, boxes, labels, valid = shapes.detection_set(11, 3, size=128, max_objects=1)
    det = jax.device_get(jax.jit(model.detect)(model.params, images))
    return model, images, boxes, det


@pytest.mark.slow  # a property of the shipped detector
def test_odam_keeps_more_of_its_mass_in_the_box_than_the_gradient():
    """The shipped detector's best detection on 36 generated scenes of one or two objects: the share of the map's
    mass inside the ground-truth box (energy-based pointing game) is higher for ODAM on its default layers than
    for the gradient, and higher than for ODAM on the heads' source maps (a property of the population: the 200
    scenes of experiments.detection_study give 0.69, 0.62 and 0.51; a dozen scenes can tie)."""
    model = jaxvis.load(assets.path("detector"))
    parts = [shapes.detection_set(seed, 12, size=128, max_objects=2) for seed in (5, 6, 7)]
    images, boxes, _, valid = (np.concatenate(a) for a in zip(*parts))
    n = len(images)
    det = jax.device_get(jax.jit(model.detect)(model.params, images))
    t = sal.detections(det, np.zeros((n, 1), int))
    gt = []
    for i in range(n):
        ious = np.where(valid[i], np.asarray(bx.iou(det["boxes"][i, 0][None], boxes[i]))[0], 0.0)
        gt.append(boxes[i, int(np.argmax(ious))])
    energy = {}
    for name, method in (("odam", sal.odam()), ("sources", sal.odam(sal.source_maps(model))), ("gradient", None)):
        maps = sal.saliency(model, images, t, method or sal.gradient()).reduce()
        energy[name] = np.mean([met.energy_pointing(maps[i, 0], gt[i]) for i in range(n)])
    assert energy["odam"] > max(energy["gradient"], energy["sources"]), energy


@pytest.mark.slow  # D-RISE on the shipped detector at two chunk sizes; test_drise_chunks_are_sized_by_a_forward_pass stays
def test_drise_is_deterministic_and_chunking_does_not_change_it(shipped):
    model, images, _, det = shipped
    t = sal.detections(det, np.zeros((3, 1), int))
    a = sal.saliency(model, images, t, sal.drise(masks=40, cell=16, chunk=40), seed=3).attributions
    b = sal.saliency(model, images, t, sal.drise(masks=40, cell=16, chunk=40), seed=3).attributions
    c = sal.saliency(model, images, t, sal.drise(masks=40, cell=16, chunk=7), seed=3).attributions
    d = sal.saliency(model, images, t, sal.drise(masks=40, cell=16, chunk=40), seed=4).attributions
    assert a.shape == (3, 1, 128, 128) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6 * a.max())
    assert not np.allclose(d, a)


@pytest.mark.slow  # D-RISE on the shipped detector; the D-RISE tests on the tiny SSD stay
def test_drise_map_peaks_inside_the_detection_box():
    """Generated scenes with one object each, the shipped detector's top detection: the D-RISE map is
    denser inside the detection's box than outside on every scene, and its maximum falls inside the box
    (pointing game with a tolerance of half a mask cell, 8 px: the detector reads the object's outline, so
    the map peaks on its edge) on at least five of six scenes."""
    model = jaxvis.load(assets.path("detector"))
    images, _, _, _ = shapes.detection_set(11, 6, size=128, max_objects=1)
    det = jax.device_get(jax.jit(model.detect)(model.params, images))
    t = sal.detections(det, np.zeros((6, 1), int))
    maps = sal.saliency(model, images, t, sal.drise(masks=1000, cell=16)).attributions
    hits = 0
    for i in range(6):
        x1, y1, x2, y2 = np.round(det["boxes"][i, 0]).astype(int)
        inside = np.zeros((128, 128), bool)
        inside[y1:y2, x1:x2] = True
        assert maps[i, 0][inside].mean() > maps[i, 0][~inside].mean()
        hits += met.pointing_hit(maps[i, 0], det["boxes"][i, 0], tolerance=8)
    assert hits >= 5, hits


@pytest.mark.slow  # every CAM layer choice on the shipped detector
def test_cam_target_chunks_and_layers(shipped):
    """Targets in batches of one equal all targets at once; a single named layer with plain sum works; the
    ODAM map of a detection on the shipped detector peaks inside its box."""
    model = shipped[0]
    # three scenes in which the detector finds at least two objects
    images = shapes.detection_set(13, 16, size=128, max_objects=4)[0]
    det = jax.device_get(jax.jit(model.detect)(model.params, images))
    pick = np.flatnonzero(det["valid"].sum(1) >= 2)[:3]
    images, det = images[pick], jax.tree.map(lambda a: a[pick], det)
    t = sal.detections(det, np.array([[0, 1]] * 3))
    for method in (sal.odam, sal.gradcam):
        whole = sal.saliency(model, images, t, method()).attributions
        one = sal.saliency(model, images, t, method(chunk=1)).attributions
        np.testing.assert_allclose(one, whole, rtol=1e-5, atol=1e-6)
    sources = sal.saliency(model, images, t, sal.odam("sources")).attributions
    np.testing.assert_array_equal(sources, sal.saliency(model, images, t, sal.odam(sal.source_maps(model))).attributions)
    single = sal.saliency(model, images, t, sal.odam("map1", combine=sal.layer_sum)).attributions
    assert single.shape == (3, 2, 128, 128) and (single >= 0).all()
    with pytest.raises(sal.SaliencyError, match="has no activation 'nope'"):
        sal.saliency(model, images, t, sal.odam("nope"))
    # own_level: the map of the source feature map whose head predicts each detection
    own = sal.saliency(model, images, t, sal.odam(combine=sal.own_level)).attributions
    level = np.asarray(sal.source_level(model, t.fields["anchor"]))
    assert len(set(level.ravel().tolist())) > 1, level  # detections on more than one map
    for lvl in set(level.ravel().tolist()):
        alone = sal.saliency(model, images, t, sal.odam(f"map{lvl}", combine=sal.layer_sum)).attributions
        np.testing.assert_allclose(own[level == lvl], alone[level == lvl], rtol=1e-5, atol=1e-6 * alone.max())
    with pytest.raises(sal.SaliencyError, match="own_level keeps the map"):
        sal.saliency(model, images, sal.box_label([[[10, 10, 60, 60]]] * 3, [[1]] * 3), sal.odam(combine=sal.own_level))
    with pytest.raises(sal.SaliencyError, match="combine is a function"):
        sal.odam(combine="own")


def test_methods_and_targets_as_values():
    vgg = tiny_vgg(0)
    images = np.random.default_rng(2).random((2, 64, 64, 3), dtype=np.float32)
    e = sal.saliency(vgg, images, sal.class_score([[1], [2]]), sal.integrated(steps=8))
    same = sal.integrated(steps=8).attribute(vgg, images, sal.class_score([[1], [2]]))  # the method's own call
    np.testing.assert_array_equal(e.attributions, same.attributions)
    chunked = sal.saliency(vgg, images, sal.class_score([[1], [2]]), sal.integrated(steps=8, chunk=3))
    np.testing.assert_allclose(chunked.attributions, e.attributions, rtol=1e-5, atol=1e-7 * np.abs(e.attributions).max())
    # SmoothGrad around any gradient method, its noise as data: test_saliency.test_smoothgrad_with_zero_noise_...
    # a score is a function of (logits, class): one of the user's equals the built-in of the same formula
    mine = sal.saliency(vgg, images, sal.class_score([[1], [2]], lambda z, c: z[c] - jax.nn.logsumexp(z)))
    built_in = sal.saliency(vgg, images, sal.class_score([[1], [2]], sal.log_prob))
    np.testing.assert_allclose(mine.attributions, built_in.attributions, rtol=1e-4,
                               atol=1e-6 * np.abs(built_in.attributions).max())
    np.testing.assert_allclose(mine.scores, built_in.scores, rtol=1e-5)
    with pytest.raises(sal.SaliencyError, match=r"score is a function \(logits, class\)"):
        sal.class_score([[1]], "prob")
    cam = sal.saliency(vgg, images, sal.class_score([[1], [2]]), sal.gradcam("conv4_1"))
    assert cam.attributions.shape == (2, 1, 64, 64)
    with pytest.raises(sal.SaliencyError, match=r"saliency\(model, images, class_score\(c\), smoothgrad"):
        sal.saliency(vgg, images, sal.class_score([[1], [2]]), sal.gradient(), reduce="max")
    with pytest.raises(sal.SaliencyError, match=r"gradcam\(layer\)"):
        sal.saliency(vgg, images, sal.class_score([[1], [2]]), "odam")
    with pytest.raises(sal.SaliencyError, match="D-RISE explains detections"):
        sal.saliency(vgg, images, sal.class_score([[1], [2]]), sal.drise())
    with pytest.raises(sal.SaliencyError, match="need a layer"):
        sal.saliency(vgg, images, sal.class_score([[1], [2]]), sal.odam())


def test_detection_metric_units():
    m = np.zeros((20, 20))
    m[2:6, 2:6] = 1.0       # 16 in the first box
    m[12:14, 12:14] = 2.0   # 8 in the second
    m[0, 19] = -5.0         # negative mass is ignored
    assert met.energy_pointing(m, (2, 2, 6, 6)) == pytest.approx(16 / 24)
    assert met.energy_pointing(np.zeros((4, 4)), (0, 0, 2, 2)) == 0.0
    spec = met.instance_specificity(m, (2, 2, 6, 6), [(12, 12, 14, 14), (15, 0, 20, 5)])
    assert spec["hit"] == 1.0 and spec["share"] == pytest.approx(16 / 24)
    assert met.instance_specificity(m, (12, 12, 14, 14), [(2, 2, 6, 6)])["hit"] == 0.0
    assert met.instance_specificity(m, (2, 2, 6, 6), [])["hit"] == 1.0


@pytest.mark.slow  # curves and a cascading randomisation on the shipped detector; test_detection_metric_units stays
def test_detection_deletion_insertion_and_randomisation(shipped):
    """Deletion starts, and insertion ends, at the detection's D-RISE similarity on the clean input (as
    D-RISE reports it), and deleting every pixel lowers it; the cascading randomisation of the detector
    decorrelates ODAM maps."""
    model, images, _, det = shipped
    t = sal.detections(det, np.zeros((3, 1), int))
    x = np.asarray(model.preprocess(images))
    e = sal.saliency(model, x, t, sal.drise(masks=8), preprocess=False)
    odam = sal.saliency(model, x, t, sal.odam(), preprocess=False).attributions
    target = t[:1]
    deletion = met.detection_deletion_insertion(model, x[0], odam[0, 0], target, steps=8)
    insertion = met.detection_deletion_insertion(model, x[0], odam[0, 0], target, insert=True, steps=8)
    both = met.curves(model, x[0], odam[0, 0], target, steps=8)  # picks the detection's curves
    np.testing.assert_array_equal(both["insertion"].scores, insertion.scores)
    assert list(both) == ["deletion", "insertion"] and list(met.curves(model, x[0], odam[0, 0], target, insertion=False,
                                                                       steps=8)) == ["deletion"]
    assert deletion.scores[0] == pytest.approx(float(e.scores[0, 0]), rel=1e-5)
    assert insertion.scores[-1] == pytest.approx(float(e.scores[0, 0]), rel=1e-5)
    assert 0 <= deletion.auc <= 1 and insertion.scores.shape == (9,)
    assert deletion.scores[-1] < deletion.scores[0]
    two = sal.detection(t.fields["anchor"][:2], t.fields["class"][:2])
    steps = met.cascading_randomisation(model, images[:2], two, method=sal.odam(),
                                        layers=["cls_head_3", "conv9_2", "conv3_1"])
    assert [s[0] for s in steps] == ["cls_head_3", "conv9_2", "conv3_1"]
    assert steps[-1][1] < 0.5, steps


@pytest.mark.slow  # compiles every method at two chunk sizes
def test_chunks_follow_the_memory_budget(monkeypatch):
    """With a budget below one pass, samples and targets go one at a time, and the maps do not change."""
    model = tiny_ssd(0)
    images = np.random.default_rng(7).random((1, 300, 300, 3), dtype=np.float32)
    target = sal.detection([[5, 900, 2000]], [[1, 2, 3]])
    method = sal.smoothgrad(samples=3, noise=0.1)
    whole = sal.saliency(model, images, target, method).attributions
    assert sal.chunk_sizes(model, 3, 3, (300, 300)) == (3, 3)
    monkeypatch.setattr(sal, "MEMORY_BUDGET", 1)
    assert sal.chunk_sizes(model, 3, 3, (300, 300)) == (1, 1)
    small = sal.saliency(model, images, target, method).attributions
    np.testing.assert_allclose(small, whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())


@pytest.mark.parametrize("which", ["tiny_ssd300", "shipped"])
def test_a_source_map_cell_lands_on_its_default_box_centre(which):
    """For every source map of SSD300's layout (38 … 1 cells, steps 8 … 300: the steps are not 300 / size) and
    of the shipped detector (16, 8, 3 and 1 cells, no steps), a one-hot map at cell (i, j), mapped to the input grid as the CAMs map it, peaks
    on the pixels nearest to the centre of that cell's default boxes; for an interior cell the map's mass
    centre is that centre."""
    model = tiny_ssd(0) if which == "tiny_ssd300" else jaxvis.load(assets.path("detector"))
    hw = model.spec.input_size
    centres = (model.anchors[:, :2] + model.anchors[:, 2:]) / 2  # (x, y), clipped boxes: interior cells only
    ys, xs = np.mgrid[0:hw[0], 0:hw[1]] + 0.5
    per = model.spec.config["anchors_per_location"]
    start = 0
    for k, ((h, w), a) in enumerate(zip(model.feature_sizes, per)):
        layer = f"map{k}"
        for i, j in {(h // 2, w // 2), (h - 1, 0), (0, w - 1)}:
            one = np.zeros((h, w))
            one[i, j] = 1.0
            m = np.asarray(sal.upsample(jnp.asarray(one), hw, sal.cell_scale(model, layer, (h, w), hw)))
            steps = model.spec.detection["anchors"].get("steps")  # none: half cells (the shipped detector)
            step = steps[k] if steps else hw[0] / h
            cy, cx = (i + 0.5) * step, (j + 0.5) * step   # the default boxes' centre, input pixels
            # the pixels whose centres lie within half a pixel of the box centre (clipped to the image) hold
            # the map's maximum (an edge cell's map is flat from its centre to the border)
            near = (np.abs(ys - min(cy, hw[0] - 0.5)) <= 0.5) & (np.abs(xs - min(cx, hw[1] - 0.5)) <= 0.5)
            # (when the centre falls between pixel centres, as at the 3 x 3 map's 128 / 3 steps, the nearest pixel
            # sits up to half a pixel down the bilinear slope in each direction)
            slack = 0.0 if float(step).is_integer() else 1.0 - (1.0 - 0.5 / step) ** 2
            assert m[near].max() >= m.max() * (1.0 - slack) - 1e-9, (layer, i, j, np.argwhere(m == m.max())[0], cy, cx)
            if 0 < i < h - 1 and 0 < j < w - 1 and (cy + step <= hw[0]) and (cx + step <= hw[1]):
                np.testing.assert_allclose([(m * ys).sum() / m.sum(), (m * xs).sum() / m.sum()], [cy, cx], atol=1e-6)
                box = start + (i * w + j) * a  # the first default box of the cell: same centre
                np.testing.assert_allclose(centres[box], [cx, cy], atol=1e-3)
                # on an image of another size (preprocess=True, squashed to the input), scaled coordinates
                big = (2 * hw[0], 3 * hw[1])
                m2 = np.asarray(sal.upsample(jnp.asarray(one), big, sal.cell_scale(model, layer, (h, w), big)))
                y2, x2 = np.mgrid[0:big[0], 0:big[1]] + 0.5
                np.testing.assert_allclose([(m2 * y2).sum() / m2.sum(), (m2 * x2).sum() / m2.sum()], [2 * cy, 3 * cx],
                                           atol=1e-6)
        start += h * w * a


def test_upsample_default_is_half_pixel_bilinear():
    m = jnp.asarray(np.random.default_rng(0).random((5, 7)), jnp.float32)
    want = F.interpolate(torch.tensor(np.asarray(m))[None, None], size=(40, 31), mode="bilinear",
                         align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(np.asarray(sal.upsample(m, (40, 31))), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sal.upsample(m, (40, 31))),
                               np.asarray(jax.image.resize(m, (40, 31), "bilinear", antialias=False)), atol=1e-6)


def test_cams_on_a_classifier_layer_that_only_a_pooling_reads_equal_torch_autograd():
    """Grad-CAM and ODAM of two classes on the tiny VGG's conv5_2 (the last convolution of its block, read by
    the max-pooling only) against torch autograd on its torch twin in float64, half-pixel cell centres."""
    from converters.torch_models import torch_vgg
    from torch_ref import place_on_grid

    vgg = tiny_vgg(0)
    x = np.random.default_rng(4).normal(size=(1, 64, 64, 3))
    net = torch_vgg(vgg).double()
    h = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    convs, a = 0, None
    for module in net.features:
        h = module(h)
        convs += isinstance(module, torch.nn.Conv2d)
        if isinstance(module, torch.nn.ReLU) and convs == sum(map(len, vgg.spec.config["blocks"])) and a is None:
            h = a = h.clone()
            a.retain_grad()
    logits = net.classifier(torch.flatten(net.avgpool(h), 1))
    wants = []
    for c in (1, 2):
        a.grad = None
        logits[0, c].backward(retain_graph=True)
        g, act = a.grad[0], a[0].detach()
        cams = {"gradcam": (g.mean((1, 2))[:, None, None] * act).sum(0), "odam": (g * act).sum(0)}
        wants.append({k: place_on_grid(torch.relu(v), (64, 64), (16.0, 16.0)).numpy() for k, v in cams.items()})
    with jax.enable_x64(True):
        m64 = float64(vgg)
        for method in (sal.gradcam("conv5_2", combine=sal.layer_sum), sal.odam("conv5_2", combine=sal.layer_sum)):
            maps = sal.saliency(m64, x, sal.class_score([[1, 2]]), method, preprocess=False).attributions
            for k in range(2):
                want = wants[k][method.name]
                assert want.max() > 0, (method, k)
                np.testing.assert_allclose(maps[0, k], want, rtol=0, atol=1e-4 * want.max())


@pytest.mark.slow  # the local head against the full backward; the tiny SSD's CAMs against torch stay
def test_detection_gradients_through_the_local_head_equal_torch_and_the_full_backward(monkeypatch):
    """The gradient of one-box targets starts its backward passes at the source maps, the heads' part being
    nine kernel products per map (saliency._head_vjp). On the tiny SSD in float64, for default boxes in the
    corners and the interior of four source maps: the input gradient of class logits equals torch autograd,
    and of box coordinates the full backward through the heads' transposed convolutions."""
    model = tiny_ssd(0)
    assert sal._head_layout(model, "detection") is not None and sal._head_layout(model, "box_label") is None
    x = np.random.default_rng(5).normal(size=(1, 300, 300, 3))
    per = [h * w * a for (h, w), a in zip(model.feature_sizes, model.spec.config["anchors_per_location"])]
    first = np.concatenate([[0], np.cumsum(per)[:-1]])
    anchors = [0, first[1] - 1, first[1] + 6 * (9 * 19 + 9) + 5, first[2] + 6 * 10 - 1, first[4] + 4 * 4 + 3,
               first[5] + 3]
    classes = [1, 2, 3, 4, 1, 2]
    with jax.enable_x64(True):
        m64 = float64(model)
        got = sal.explain(m64, x, sal.detection([anchors], [classes]), preprocess=False).attributions
        coords = sal.box_coordinate([anchors], [[0, 1, 2, 3, 0, 3]])
        local = sal.explain(m64, x, coords, preprocess=False).attributions
        monkeypatch.setattr(sal, "_head_layout", lambda model, kind: None)
        sal._gradient_program.forget(m64)
        full = sal.explain(m64, x, coords, preprocess=False).attributions
    np.testing.assert_allclose(local, full, rtol=0, atol=1e-10 * np.abs(full).max())
    tmodel = torch_ssd(model).double()
    xt = torch.tensor(x[0].transpose(2, 0, 1)[None], requires_grad=True)
    logits = tmodel.head(list(tmodel.backbone(xt).values()))["cls_logits"][0]
    for k, (a, c) in enumerate(zip(anchors, classes)):
        xt.grad = None
        logits[int(a), c].backward(retain_graph=True)
        want = xt.grad[0].permute(1, 2, 0).numpy()
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got[0, k], want, rtol=0, atol=1e-9 * np.abs(want).max())


def test_drise_chunks_are_sized_by_a_forward_pass_and_evened_out(monkeypatch):
    """D-RISE keeps nothing for a backward pass: its masks per chunk follow a forward pass's memory (less than
    a forward and backward pass's), and the masks are spread evenly over the fewest chunks that fit."""
    model = tiny_ssd(0)
    forward = sal._forward_bytes(model, (300, 300))
    assert 0 < forward < sal._per_image_bytes(model, (300, 300))
    monkeypatch.setattr(sal, "MEMORY_BUDGET", 39 * forward)
    assert sal.chunk_sizes(model, 4000, 1, (300, 300), backward=False) == (39, 1)
    assert sal.chunk_sizes(model, 256, 1, (300, 300), backward=False) == (37, 1)  # 7 chunks, not 6 and a padded 7th
    assert sal.chunk_sizes(model, 20, 1, (300, 300), backward=False) == (20, 1)
    monkeypatch.setattr(sal, "MEMORY_BUDGET", 1)
    assert sal.chunk_sizes(model, 256, 1, (300, 300), backward=False) == (1, 1)
