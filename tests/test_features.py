"""Channel contributions and ablations against torch autograd on the tiny twins, dissection against a NumPy
reference, the shapes masks, and the checks of jaxvis.features."""


import jax
import numpy as np
import pytest
import torch

from jaxvis import features as ft
from jaxvis import saliency as sal
from jaxvis.data import shapes
from tiny import float64, tiny_ssd, tiny_vgg
from torch_ref import torch_ssd


def _torch_vgg_from_conv5_2(net, vgg, x):
    """(conv5_2 after its ReLU, a function of a replacement of it -> logits) of the torch twin."""
    h = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    convs, last = 0, sum(map(len, vgg.spec.config["blocks"]))
    modules = list(net.features)
    for i, module in enumerate(modules):
        h = module(h)
        convs += isinstance(module, torch.nn.Conv2d)
        if isinstance(module, torch.nn.ReLU) and convs == last:
            rest = modules[i + 1:]
            break

    def tail(a):
        for module in rest:
            a = module(a)
        return net.classifier(torch.flatten(net.avgpool(a), 1))

    return h, tail


def test_vgg_contributions_and_ablations_equal_torch():
    """The tiny VGG's conv5_2, two images, two classes each, float64: sum_xy A_k dS/dA_k against torch autograd,
    and the logits with single channels and a set of channels zeroed against a torch forward with them zeroed."""
    from converters.torch_models import torch_vgg

    vgg = tiny_vgg(0)
    x = np.random.default_rng(4).normal(size=(2, 64, 64, 3))
    net = torch_vgg(vgg).double()
    classes = np.array([[1, 2], [3, 1]])
    sets = [[0], [5], [3, 7, 11], []]
    want_c = np.zeros((2, 2, 32))
    want_a = np.zeros((2, 2, len(sets)))
    for n in range(2):
        a, tail = _torch_vgg_from_conv5_2(net, vgg, x[n:n + 1])
        a = a.detach().requires_grad_(True)
        logits = tail(a)
        for k, c in enumerate(classes[n]):
            (g,) = torch.autograd.grad(logits[0, c], a, retain_graph=True)
            want_c[n, k] = (g * a).sum((0, 2, 3)).detach().numpy()
            for s, chosen in enumerate(sets):
                keep = torch.ones(32, dtype=torch.float64)
                keep[chosen] = 0
                want_a[n, k, s] = tail(a * keep.view(1, -1, 1, 1))[0, c].item()
    with jax.enable_x64(True):
        m64 = float64(vgg)
        targets = sal.class_score(classes)
        got = ft.contributions(m64, x, targets, "conv5_2", preprocess=False)
        np.testing.assert_allclose(got.values, want_c, rtol=1e-6, atol=1e-9 * np.abs(want_c).max())
        abl = ft.ablate(m64, x, targets, "conv5_2", sets, preprocess=False)
        np.testing.assert_allclose(abl.values, want_a, rtol=1e-6)
        np.testing.assert_allclose(abl.values[..., 3], abl.scores, rtol=1e-12)   # the empty set changes nothing
        drop = ft.ablation(m64, x, targets, "conv5_2", preprocess=False)
        np.testing.assert_allclose(drop.values[..., 5], abl.scores - want_a[..., 1], rtol=1e-6, atol=1e-9)
    assert np.abs(want_c).max() > 0 and np.abs(want_a[..., 2] - abl.scores).max() > 0


def test_ssd_contributions_and_ablations_equal_torch():
    """The tiny SSD's conv4_3 (read by the L2 norm of the first source map and by the rest of the network), two
    detections of one image in float64: contributions against torch autograd, ablated class logits against a
    torch forward with the channels zeroed."""
    model = tiny_ssd(0)
    x = np.random.default_rng(3).normal(size=(1, 300, 300, 3))
    per = [h * w * a for (h, w), a in zip(model.feature_sizes, model.spec.config["anchors_per_location"])]
    first = np.concatenate([[0], np.cumsum(per)[:-1]])
    anchors = np.array([[first[0] + 4 * (19 * 38 + 20) + 1, first[1] + 6 * (9 * 19 + 9)]])
    classes = np.array([[1, 3]])
    tmodel = torch_ssd(model).double()
    net = tmodel.backbone
    xt = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    conv4_3 = net.features(xt).detach().requires_grad_(True)

    def logits_of(a):
        feats = [net.scale_weight.view(1, -1, 1, 1) * torch.nn.functional.normalize(a)]
        h = a
        for block in net.extra:
            h = block(h)
            feats.append(h)
        return tmodel.head(feats)["cls_logits"]

    sets = [[2], [0, 9, 31]]
    logits = logits_of(conv4_3)
    want_c, want_a = np.zeros((1, 2, 32)), np.zeros((1, 2, 2))
    for k, (a, c) in enumerate(zip(anchors[0], classes[0])):
        (g,) = torch.autograd.grad(logits[0, a, c], conv4_3, retain_graph=True)
        want_c[0, k] = (g * conv4_3).sum((0, 2, 3)).detach().numpy()
        for s, chosen in enumerate(sets):
            keep = torch.ones(32, dtype=torch.float64)
            keep[chosen] = 0
            want_a[0, k, s] = logits_of(conv4_3 * keep.view(1, -1, 1, 1))[0, a, c].item()
    with jax.enable_x64(True):
        m64 = float64(model)
        targets = sal.detection(anchors, classes)
        got = ft.contributions(m64, x, targets, "conv4_3", preprocess=False)
        np.testing.assert_allclose(got.values, want_c, rtol=1e-6, atol=1e-9 * np.abs(want_c).max())
        abl = ft.ablate(m64, x, targets, "conv4_3", sets, preprocess=False)
        np.testing.assert_allclose(abl.values, want_a, rtol=1e-6)
    # the first detection's head reads conv4_3 through the scale-invariant norm only: its contributions sum to zero
    assert abs(want_c[0, 0].sum()) < 1e-8 * np.abs(want_c[0, 0]).max() and np.abs(want_c[0, 1]).sum() > 0


def _upsample_reference(m, hh, ww, sy, sx):
    """Bilinear resampling with cell i's centre at output coordinate (i + 0.5) * s, constant beyond the
    outermost centres, written as loops."""
    h, w = m.shape
    out = np.zeros((hh, ww))
    for y in range(hh):
        v = min(max((y + 0.5) / sy - 0.5, 0.0), h - 1)
        y0 = int(np.floor(v))
        y1, fy = min(y0 + 1, h - 1), v - y0
        for x in range(ww):
            u = min(max((x + 0.5) / sx - 0.5, 0.0), w - 1)
            x0 = int(np.floor(u))
            x1, fx = min(x0 + 1, w - 1), u - x0
            out[y, x] = ((1 - fy) * ((1 - fx) * m[y0, x0] + fx * m[y0, x1])
                         + fy * ((1 - fx) * m[y1, x0] + fx * m[y1, x1]))
    return out


@pytest.mark.parametrize("scale, on", [(None, "pixels"), ((8.0, 8.0), "pixels"), (None, "cells")])
def test_dissection_iou_equals_a_numpy_reference(scale, on):
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(5, 4, 4, 3)), 0).astype(np.float32)
    masks = rng.integers(-1, 3, size=(5, 30, 30))
    masks[:, :8] = 2          # a large region of class 2 ...
    acts[:, 0, :, 1] += 3.0   # ... under channel 1's strongest cells
    top = 0.1
    iou, t = ft.dissect_maps(acts, masks, [0, 1, 2], scale, top, threshold_on=on)
    sy, sx = (30 / 4, 30 / 4) if scale is None else scale
    want = np.zeros((3, 3))
    for k in range(3):
        up = np.stack([_upsample_reference(acts[n, :, :, k], 30, 30, sy, sx) for n in range(5)])
        tk = np.quantile((up if on == "pixels" else acts[..., k]).ravel(), 1 - top)
        assert np.isclose(t[k], tk, rtol=1e-5)
        region = up > tk
        assert top / 2 < region.mean() <= top or on == "cells"   # ties (flat borders) keep a little less
        for c in range(3):
            cls = masks == c
            want[k, c] = (region & cls).sum() / (region | cls).sum()
    np.testing.assert_allclose(iou, want, rtol=1e-5)
    d = ft.Dissection("x", ("a", "b", "c"), iou, t, 0.15)
    assert d.labels[0] is None and d.labels[1] == "c" and iou[1, 2] >= 0.15


def _masks_follow_boxes(boxes, labels, valid, masks):
    for n in range(len(masks)):
        for j in np.nonzero(valid[n])[0]:
            if sum(labels[n, i] == labels[n, j] for i in np.nonzero(valid[n])[0]) > 1:
                continue
            ys, xs = np.nonzero(masks[n] == labels[n, j])
            np.testing.assert_array_equal([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], boxes[n, j])


def test_shapes_masks_follow_the_boxes():
    _, boxes, labels, valid, masks = shapes.detection_set(5, 6, size=64, batch=6, max_objects=2, masks=True)
    _masks_follow_boxes(boxes, labels, valid, masks)
    im, lab, box, m = shapes.classification_set(2, 4, size=32, batch=4, masks=True)
    assert all(set(np.unique(m[i])) == {-1, lab[i]} for i in range(4))


@pytest.mark.slow
def test_shapes_masks_change_nothing_else():
    plain = shapes.detection_set(5, 6, batch=6, free_share=0.3, even_noise=True)
    with_masks = shapes.detection_set(5, 6, batch=6, free_share=0.3, even_noise=True, masks=True)
    for a, b in zip(plain, with_masks):
        np.testing.assert_array_equal(a, b)
    _masks_follow_boxes(*with_masks[1:])
    for a, b in zip(shapes.classification_set(2, 4, batch=4), shapes.classification_set(2, 4, batch=4, masks=True)):
        np.testing.assert_array_equal(a, b)


def test_importance_and_faithfulness_on_a_small_set(tmp_path):
    vgg = tiny_vgg(1)
    images = np.random.default_rng(0).random((6, 64, 64, 3)).astype(np.float32)
    data = ft.Dataset(images, np.array([0, 1, 1, 2, 0, 0]), classes=vgg.spec.labels)
    imp = ft.importance(vgg, data, "conv5_2", batch=4)
    assert imp.contribution.shape == (10, 32) and list(imp.counts[:3]) == [3, 2, 1] and not imp.counts[3:].any()
    ranking = imp.ranking()
    assert list(ranking) == ["class0", "class1", "class2"] and sorted(ranking["class0"]) == list(range(32))
    assert ranking["class0"][0] == int(np.nanargmax(imp.ablation[0]))
    f = ft.faithfulness(vgg, data, "conv5_2", ranking, k=4, random_sets=5)
    assert f["class2"]["count"] == 1 and len(f["class2"]["random"]) == 5
    for c in ranking:
        top, med = f[c]["top"], f[c]["median_random"]
        assert f[c]["ratio"] == (pytest.approx(top / med) if med > 0 else float("inf"))


def test_bad_input_says_what_was_expected():
    vgg = tiny_vgg(0)
    images = np.zeros((1, 64, 64, 3), np.float32)
    t = sal.class_score([[1]])
    with pytest.raises(ft.FeatureError, match="no activation 'conv9_9'.*conv5_2"):
        ft.contributions(vgg, images, t, "conv9_9")
    with pytest.raises(ft.FeatureError, match="channels 0 to 31"):
        ft.ablate(vgg, images, t, "conv5_2", [[40]])
    with pytest.raises(ft.FeatureError, match="list of channel sets"):
        ft.ablate(vgg, images, t, "conv5_2", [])
    with pytest.raises(ft.FeatureError, match="'ablation' or 'contribution'"):
        ft.Importance("conv5_2", ("a",), np.zeros((1, 2)), None, np.ones(1)).ranking("size")
    with pytest.raises(ft.FeatureError, match="share of a channel's activations"):
        ft.thresholds(np.zeros((2, 2, 2, 3)), 0.0)
    with pytest.raises(ft.FeatureError, match="masks"):
        ft.dissect(vgg, ft.Dataset(images, np.array([1])), "conv5_2")


@pytest.mark.slow
@pytest.mark.parametrize("which, layer", [("classifier", "conv5_2"), ("detector", "conv5_3")])
def test_the_rankings_of_the_shipped_models_are_faithful(which, layer):
    """Each class's top 8 channels by ablation on 200 scenes, zeroed together on 200 others, lower the class's
    mean score (a detection's probability, the classifier's class probability) at least 3x as much as the
    median of 20 random sets of 8."""
    import jaxvis
    from jaxvis import assets

    model = jaxvis.load(assets.path(which))
    ranking = ft.importance(model, ft.shapes_dataset(model, 200, 0), layer).ranking()
    check = ft.faithfulness(model, ft.shapes_dataset(model, 200, 1), layer, ranking)
    assert len(check) == 6
    for name, r in check.items():
        assert r["count"] >= 15 and r["ratio"] >= 3, (name, r)
