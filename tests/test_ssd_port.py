"""SSD300 against torchvision's ssd300_vgg16 on the same randomised weights, converted through the CLI."""

import itertools
import math

import jax
import numpy as np
import pytest
import torch

import jaxvis
from jaxvis import boxes as bx
from torch_ref import nhwc


@pytest.fixture(scope="module")
def ssd(converted_ssd):
    tmodel, _, path = converted_ssd
    return tmodel, jaxvis.load(path)


def torch_forward(tmodel, image):
    """torchvision's transform, backbone, head and anchors for one RGB [0, 1] HWC image."""
    with torch.no_grad():
        images, _ = tmodel.transform([torch.from_numpy(image).permute(2, 0, 1)])
        feats = list(tmodel.backbone(images.tensors).values())
        head = tmodel.head(feats)
        anchors = tmodel.anchor_generator(images, feats)[0]
    return images.tensors, feats, head, anchors


@pytest.mark.slow  # SSD300 at full size
def test_head_outputs_feature_maps_and_default_boxes(ssd):
    tmodel, model = ssd
    image = np.random.default_rng(0).random((300, 300, 3), dtype=np.float32)
    x_ref, feats, head, anchors = torch_forward(tmodel, image)
    x = model.preprocess(image)[None]
    np.testing.assert_allclose(np.asarray(x), nhwc(x_ref), rtol=0, atol=1e-4)
    outputs, acts = jax.jit(model.apply)(model.params, x)
    for key in ("cls_logits", "bbox_regression"):
        want = head[key].numpy()
        assert outputs[key].shape == want.shape == ((1, 8732, 91) if key == "cls_logits" else (1, 8732, 4))
        np.testing.assert_allclose(np.asarray(outputs[key]), want, rtol=0, atol=1e-4 * np.abs(want).max())
    for i, f in enumerate(feats):
        want = nhwc(f)
        np.testing.assert_allclose(np.asarray(acts[f"map{i}"]), want, rtol=0, atol=1e-4 * np.abs(want).max())
    assert model.feature_sizes == [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
    np.testing.assert_allclose(model.anchors, anchors.numpy(), rtol=0, atol=1e-3)
    np.testing.assert_allclose(model.anchors[0], [-6.5, -6.5, 14.5, 14.5], atol=1e-4)


def _same_detections(got, want, n_valid):
    """Every torchvision detection has its own jaxvis detection: same label, box within 0.5 px, score within
    1e-4 (matched as sets, so that two detections with near-equal scores may come in either order)."""
    boxes, scores, labels = (np.asarray(got[k])[:n_valid] for k in ("boxes", "scores", "labels"))
    unused = set(range(n_valid))
    for b, s, lab in zip(want["boxes"].numpy(), want["scores"].numpy(), want["labels"].numpy()):
        hit = [j for j in unused if labels[j] == lab and abs(scores[j] - s) <= 1e-4 and np.abs(boxes[j] - b).max() <= 0.5]
        assert hit, f"torchvision's detection {lab} {s:.5f} {b} has no counterpart"
        unused.remove(hit[0])
    assert not unused


@pytest.mark.slow  # SSD300 at full size, as every test here but the prior boxes' formula
@pytest.mark.parametrize("hw", [(300, 300), (360, 480)])
def test_detections_are_torchvisions(ssd, hw):
    tmodel, model = ssd
    image = np.random.default_rng(1).random((*hw, 3), dtype=np.float32)
    with torch.no_grad():
        want = tmodel([torch.from_numpy(image).permute(2, 0, 1)])[0]
    got = jax.jit(model.detect)(model.params, image[None])
    got = {k: v[0] for k, v in got.items()}
    n = int(got["valid"].sum())
    assert 20 < len(want["scores"]) == n, "the test model should produce a good number of detections"
    assert np.all(np.asarray(got["valid"])[:n]) and not np.any(np.asarray(got["valid"])[n:])
    assert np.all(np.diff(np.asarray(got["scores"])[:n]) <= 0)
    _same_detections(got, want, n)
    # The default box behind each detection is the one whose decoded box it is.
    dec = bx.decode(np.asarray(jax.jit(model.apply)(model.params, model.preprocess(image)[None])[0]["bbox_regression"][0]),
                    model.anchors)
    dec = np.asarray(bx.clip_to_image(dec, 300, 300))
    anchor = np.asarray(got["anchor"])[:n]
    scale = np.array([hw[1] / 300, hw[0] / 300] * 2)
    np.testing.assert_allclose(dec[anchor] * scale, np.asarray(got["boxes"])[:n], rtol=0, atol=1e-3)


def test_voc_prior_boxes_follow_amdegroot_formula():
    spec = jaxvis.models.arch_spec("ssd300_vgg16_voc")
    module = jaxvis.models.build(spec)
    model = jaxvis.model.Detector(spec=spec, params=jax.eval_shape(
        module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 300, 300, 3), np.float32)), module=module)
    # PriorBox.forward of amdegroot/ssd.pytorch with its `voc` config, written out independently.
    fmaps, steps = [38, 19, 10, 5, 3, 1], [8, 16, 32, 64, 100, 300]
    min_sizes, max_sizes = [30, 60, 111, 162, 213, 264], [60, 111, 162, 213, 264, 315]
    ratios = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    priors = []
    for k, f in enumerate(fmaps):
        for i, j in itertools.product(range(f), repeat=2):
            f_k = 300 / steps[k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = min_sizes[k] / 300
            priors.append([cx, cy, s_k, s_k])
            s_p = math.sqrt(s_k * (max_sizes[k] / 300))
            priors.append([cx, cy, s_p, s_p])
            for ar in ratios[k]:
                priors.append([cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)])
                priors.append([cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)])
    priors = np.clip(np.asarray(priors), 0, 1)
    a = model.anchors / 300.0
    ours = np.concatenate([(a[:, :2] + a[:, 2:]) / 2, a[:, 2:] - a[:, :2]], 1)
    assert ours.shape == (8732, 4)
    np.testing.assert_allclose(ours, priors, rtol=0, atol=1e-6)
    assert priors[:, 0].max() == 1.0  # the centre clamp that torchvision does not do


def amdegroot_state_dict(tv_state):
    """A state_dict in amdegroot/ssd.pytorch's layout made of a torchvision SSD's tensors (PORTING §3.1)."""
    out = {}
    for k, v in tv_state.items():
        if k.startswith("backbone.features."):
            out["vgg." + k[len("backbone.features."):]] = v
        elif k == "backbone.scale_weight":
            out["L2Norm.weight"] = v
        elif k.startswith("backbone.extra.0.7."):
            idx, p = k[len("backbone.extra.0.7."):].split(".")
            out[f"vgg.{ {'1': 31, '3': 33}[idx] }.{p}"] = v
        elif k.startswith("backbone.extra.0."):
            idx, p = k[len("backbone.extra.0."):].split(".")
            out[f"vgg.{ {'1': 24, '3': 26, '5': 28}[idx] }.{p}"] = v
        elif k.startswith("backbone.extra."):
            block, idx, p = k[len("backbone.extra."):].split(".")
            out[f"extras.{2 * (int(block) - 1) + int(idx) // 2}.{p}"] = v
        elif k.startswith("head.classification_head.module_list."):
            out["conf." + k.split("module_list.")[1]] = v
        elif k.startswith("head.regression_head.module_list."):
            out["loc." + k.split("module_list.")[1]] = v
        else:
            raise KeyError(k)
    return out


@pytest.mark.slow  # a second full-size SSD300 (the VOC layout); its prior-box formula stays in the default suite
def test_voc_layout_gives_torchvisions_head_outputs(tmp_path):
    """The amdegroot VOC model (21 classes) loaded from its own layout. Its network differs from
    torchvision's only in the L2Norm epsilon (||x|| + 1e-10 against max(||x||, 1e-12)), a relative change
    of ~1e-10 here, so the head outputs must agree on the same input. The inputs themselves differ slightly:
    amdegroot subtracts exactly (123, 117, 104) where torchvision subtracts 255 x (0.48235, 0.45882, 0.40784)
    = (122.999, 116.999, 103.999). Its prior boxes, box decoding (no dw/dh clamp), post-processing and
    loss normaliser differ too (tested elsewhere) and are not part of the head outputs."""
    import torchvision
    from conftest import run_module
    from torch_ref import randomise_

    torch.manual_seed(5)
    tmodel = randomise_(torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None,
                                                                 num_classes=21), 6)
    state = amdegroot_state_dict(tmodel.state_dict())
    assert len(state) == 71 and "vgg.33.weight" in state and "extras.7.bias" in state and "conf.5.weight" in state
    torch.save(state, tmp_path / "voc.pth")
    run_module("converters.torchvision", "--arch", "ssd300_vgg16_voc", "--checkpoint", str(tmp_path / "voc.pth"),
               "--out", str(tmp_path / "voc.safetensors"))
    model = jaxvis.load(tmp_path / "voc.safetensors")
    assert model.spec.labels[13] == "horse" and model.spec.num_classes == 21
    image = np.random.default_rng(2).random((375, 500, 3), dtype=np.float32)
    x_ref, _, _, _ = torch_forward(tmodel, image)
    x = model.preprocess(image)[None]
    np.testing.assert_allclose(np.asarray(x), nhwc(x_ref), rtol=0, atol=1e-3)   # the mean rounding
    assert np.abs(np.asarray(x) - nhwc(x_ref)).max() > 1e-4
    with torch.no_grad():
        head = tmodel.head(list(tmodel.backbone(torch.tensor(np.asarray(x).transpose(0, 3, 1, 2))).values()))
    outputs, _ = jax.jit(model.apply)(model.params, x)
    for key in ("cls_logits", "bbox_regression"):
        want = head[key].numpy()
        np.testing.assert_allclose(np.asarray(outputs[key]), want, rtol=0, atol=1e-4 * np.abs(want).max())


@pytest.mark.slow  # two full-size checkpoints
def test_checkpoint_of_the_other_layout_is_named(converted_ssd, tmp_path):
    from conftest import run_module

    _, pth, _ = converted_ssd
    proc = run_module("converters.torchvision", "--arch", "ssd300_vgg16_voc", "--checkpoint", str(pth),
                      "--out", str(tmp_path / "x.safetensors"), check=False)
    assert proc.returncode == 1
    assert "does not match amdegroot/ssd.pytorch's ssd300_vgg16_voc" in proc.stderr
    assert "missing keys (71)" in proc.stderr and "unexpected keys (71)" in proc.stderr
    assert proc.stderr.strip().endswith("it fits torchvision's ssd300_vgg16: pass --arch ssd300_vgg16.")
    proc = run_module("converters.torchvision", "--arch", "ssd300_vgg16_voc", "--out", str(tmp_path / "y.safetensors"),
                      check=False)
    assert "fetch ssd300_mAP_77.43_v2.pth" in proc.stderr and "--checkpoint PATH" in proc.stderr


@pytest.mark.slow  # a full-size checkpoint converted again
def test_bgr_checkpoint_gets_a_bgr_spec(converted_ssd, tmp_path):
    from converters.torchvision import convert

    _, pth, _ = converted_ssd
    rgb = jaxvis.load(convert("ssd300_vgg16", str(pth), str(tmp_path / "rgb.safetensors"), log=lambda *_: None))
    bgr = jaxvis.load(convert("ssd300_vgg16", str(pth), str(tmp_path / "bgr.safetensors"), channel_order="BGR",
                              log=lambda *_: None))
    assert bgr.spec.channel_order == "BGR" and bgr.spec.mean == rgb.spec.mean[::-1]
    image = np.random.default_rng(3).random((50, 60, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(bgr.preprocess(image)), np.asarray(rgb.preprocess(image))[..., ::-1],
                               rtol=0, atol=1e-4)
