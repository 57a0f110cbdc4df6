"""Image files: conversions that are noted, and one clear error for each unusable file."""

import numpy as np
import pytest
from PIL import Image

from jaxvis.images import ImageError, load_image


def _save(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return str(path)


def test_rgb_png_and_jpeg(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = load_image(_save(tmp_path / "a.png", rgb))
    assert out.dtype == np.float32 and out.shape == (20, 30, 3)
    np.testing.assert_allclose(out, rgb / 255.0, atol=1e-7)
    notes = []
    assert load_image(_save(tmp_path / "a.jpg", rgb), notes=notes).shape == (20, 30, 3) and notes == []


@pytest.mark.parametrize("kind,note", [
    ("gray", "is grayscale; its channel is repeated over RGB"),
    ("rgba", "has an alpha channel; composited over a white background"),
    ("gray16", "is a 16-bit grayscale image; scaled by 65535"),
    ("palette", "is a palette image; expanded to RGB"),
])
def test_conversions_are_noted(tmp_path, kind, note):
    path = str(tmp_path / f"{kind}.png")
    if kind == "gray":
        Image.fromarray(np.full((8, 8), 128, np.uint8)).save(path)
        expect = np.full((8, 8, 3), 128 / 255.0)
    elif kind == "rgba":
        a = np.zeros((8, 8, 4), np.uint8)
        a[..., 0] = 255
        a[:4, ..., 3] = 255  # top half opaque red, bottom half transparent
        Image.fromarray(a, "RGBA").save(path)
        expect = np.ones((8, 8, 3))
        expect[:4, :, 1:] = 0.0
    elif kind == "gray16":
        Image.fromarray(np.full((8, 8), 65535 // 2, np.uint16)).save(path)
        expect = np.full((8, 8, 3), (65535 // 2) / 65535)
    else:
        Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).convert("P").save(path)
        expect = None
    notes = []
    out = load_image(path, notes=notes)
    assert out.shape == (8, 8, 3) and out.dtype == np.float32
    assert len(notes) == 1 and note in notes[0]
    if expect is not None:
        np.testing.assert_allclose(out, expect, atol=1e-6)


def test_unusable_files(tmp_path):
    with pytest.raises(ImageError, match=r"does not exist; check the path"):
        load_image(str(tmp_path / "missing.jpg"))
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"is empty \(0 bytes\)"):
        load_image(str(tmp_path / "empty.png"))
    (tmp_path / "notes.txt").write_text("not an image at all")
    with pytest.raises(ImageError, match=r"is not an image that Pillow can read"):
        load_image(str(tmp_path / "notes.txt"))
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    _save(tmp_path / "full.jpg", rgb)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"truncated or damaged"):
        load_image(str(tmp_path / "cut.jpg"))
    with pytest.raises(ImageError, match=r"is 64x64 = 0 megapixels, more than the 0 allowed; downscale it"):
        load_image(str(tmp_path / "full.jpg"), max_pixels=1000)
    with pytest.raises(ImageError, match=r"is a directory"):
        load_image(str(tmp_path))
