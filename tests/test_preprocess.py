"""model.preprocess against torchvision's own transforms on float tensors."""

import numpy as np
import pytest
import torch
from torchvision.transforms._presets import ImageClassification

from jaxvis import models, preprocess as pre

SPEC = models.arch_spec("vgg16")


@pytest.mark.parametrize("hw", [(480, 640), (193, 257), (500, 375), (224, 224), (100, 120), (256, 341)])
def test_classifier_preprocessing_matches_torchvision(hw):
    image = np.random.default_rng(0).random((*hw, 3), dtype=np.float32)
    want = ImageClassification(crop_size=224)(torch.from_numpy(image).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    got = np.asarray(pre.preprocess(SPEC, image))
    assert got.shape == (224, 224, 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-5 * np.abs(want).max())
    batch = np.asarray(pre.preprocess(SPEC, np.stack([image, image[::-1]])))
    np.testing.assert_allclose(batch[0], got, rtol=0, atol=1e-5)


def test_images_of_different_sizes_are_stacked():
    rng = np.random.default_rng(1)
    images = [rng.random((300, 400, 3), dtype=np.float32), rng.random((250, 250, 3), dtype=np.float32)]
    out = np.asarray(pre.preprocess(SPEC, images))
    assert out.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(out[1], np.asarray(pre.preprocess(SPEC, images[1])), rtol=0, atol=1e-5)


def test_uint8_is_scaled_and_inverse_restores_the_image():
    image = np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    x = pre.preprocess(SPEC, image)  # no resize at 256; the centre crop starts at (16, 16)
    np.testing.assert_allclose(np.asarray(pre.to_image(SPEC, x)), image[16:240, 16:240] / 255.0, atol=1e-6)


def test_squash_resize_without_antialias_matches_torch_interpolate():
    spec = SPEC.replace(input_size=(300, 300), resize="squash", resize_size=None, antialias=False,
                        mean=(0.48235, 0.45882, 0.40784), std=(1 / 255,) * 3)
    image = np.random.default_rng(3).random((480, 640, 3), dtype=np.float32)
    t = torch.from_numpy(image).permute(2, 0, 1)[None]
    t = (t - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    want = torch.nn.functional.interpolate(t, (300, 300), mode="bilinear", align_corners=False)[0]
    got = np.asarray(pre.preprocess(spec, image))
    np.testing.assert_allclose(got, want.permute(1, 2, 0).numpy(), rtol=0, atol=1e-4)


def test_bgr_order_reverses_channels():
    spec = SPEC.replace(channel_order="BGR", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    image = np.zeros((224, 224, 3), np.float32)
    image[..., 0] = 1.0  # red
    x = np.asarray(pre.preprocess(spec, image))
    assert x[..., 2].min() == 1.0 and x[..., 0].max() == 0.0
    np.testing.assert_array_equal(np.asarray(pre.to_image(spec, x)), image)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((224, 224), np.float32), r"\(H, W, 3\) or \(N, H, W, 3\), got shape \(224, 224\).*grayscale"),
    (np.zeros((224, 224, 4), np.float32), r"got shape \(224, 224, 4\).*RGBA"),
    (np.full((8, 8, 3), 255.0, np.float32), r"\[0, 1\], got values in \[255, 255\].*divide"),
    (np.zeros((8, 8, 3), np.int32), r"dtype int32"),
])
def test_bad_images_get_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        pre.preprocess(SPEC, bad)
