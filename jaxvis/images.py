"""Image files: reading them with one clear message for each way a file can be wrong, writing PNGs, safe
file names and the saliency colour ramp (helpers that know nothing of the engine or the report).

``load_image`` returns RGB float32 in [0, 1]. Grayscale, palette, RGBA and 16-bit images are converted
(and ``notes`` says how); missing, empty, truncated, non-image and oversized files are refused.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np

from jaxvis.fileio import atomic_write

MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """An image file that cannot be used."""


def load_image(path: str, max_pixels: int = MAX_PIXELS, notes: list[str] | None = None) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] from an image file.

    Conversions are reported by appending a line to ``notes``: grayscale (channel repeated), RGBA or LA
    (composited over white), palette (expanded), 16-bit (scaled by 65535).
    """
    from PIL import Image, UnidentifiedImageError

    notes = notes if notes is not None else []
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(path, *im.size, max_pixels)
                im.load()
                mode = im.mode
                image = im.copy()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path!r} is not an image that Pillow can read; give a PNG or JPEG file.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"image {path!r} is too large to decode safely; downscale it first.") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"image {path!r} could not be decoded ({e}); the file is truncated or damaged: "
                         "copy or export it again.") from None
    name = os.path.basename(path)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, np.float64)
        scale = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        notes.append(f"{name} is a {('16-bit' if scale == 65535.0 else '32-bit')} grayscale image; scaled by "
                     f"{scale:g} and repeated over RGB.")
        arr = np.clip(arr / scale, 0, 1)
        return np.repeat(arr[..., None], 3, axis=-1).astype(np.float32)
    if mode == "F":
        arr = np.asarray(image, np.float64)
        bad = int(np.size(arr) - np.isfinite(arr).sum())
        if bad:
            raise ImageError(f"image {path!r} holds {bad} NaN or infinite pixel value(s) of {arr.size}; nothing can "
                             "be measured on them: write the image again with finite values.")
        notes.append(f"{name} is a floating-point grayscale image; clipped to [0, 1] and repeated over RGB.")
        return np.repeat(np.clip(arr, 0, 1)[..., None], 3, axis=-1).astype(np.float32)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        notes.append(f"{name} has an alpha channel; composited over a white background.")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    elif mode in ("L", "1"):
        notes.append(f"{name} is grayscale; its channel is repeated over RGB.")
        image = image.convert("RGB")
    elif mode == "P":
        notes.append(f"{name} is a palette image; expanded to RGB.")
        image = image.convert("RGB")
    elif mode == "CMYK":
        notes.append(f"{name} is CMYK; converted to RGB.")
        image = image.convert("RGB")
    elif mode != "RGB":
        notes.append(f"{name} has mode {mode}; converted to RGB.")
        image = image.convert("RGB")
    return np.asarray(image, np.float32) / 255.0


def read_folder(folder: str, sizes) -> dict[int, np.ndarray]:
    """Every PNG or JPEG in ``folder`` (sorted by name) resized to each square size: size -> (N, size, size, 3)
    RGB in [0, 1], for ``parameterizations.image_statistics``. Each file is read as ``load_image`` reads it."""
    import glob

    from PIL import Image

    paths = sorted(p for ext in ("png", "jpg", "jpeg", "PNG", "JPG", "JPEG")
                   for p in glob.glob(os.path.join(glob.escape(folder), f"*.{ext}")))
    if not paths:
        raise ImageError(f"no PNG or JPEG images in {folder!r}; give a folder of images.")
    images = [Image.fromarray(np.round(load_image(p) * 255).astype(np.uint8)) for p in paths]
    return {int(size): np.stack([np.asarray(im.resize((size, size), Image.BILINEAR), np.float32) / 255.0
                                 for im in images]) for size in sizes}


def safe_name(text: str, limit: int = 60) -> str:
    """A file-name-safe version of a label or user string: letters, digits, ``-``, ``_`` and ``.`` only,
    no leading dot, never empty ("traffic light" -> "traffic_light", "N/A" -> "N_A", "../x" -> "x")."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    name = re.sub(r"_+", "_", name)[:limit].strip("._")
    return name or "_"


def file_stem(path: str, limit: int = 40) -> str:
    """A file-name-safe stem for outputs made from the file at ``path``: its ``safe_name``, followed by a short
    digest of the original stem whenever sanitising changed it, so that names differing only in characters
    ``safe_name`` drops ("圆.png", "方.png") keep distinct stems."""
    import hashlib

    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    safe = safe_name(stem, limit)
    if safe == stem:
        return safe
    digest = hashlib.sha1(stem.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{'image' if safe == '_' else safe}-{digest}"


def image_size(path: str, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding its pixels; the file is refused as
    ``load_image`` refuses it when it is missing, empty, not an image or larger than ``max_pixels``."""
    from PIL import Image, UnidentifiedImageError

    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except UnidentifiedImageError:
        raise ImageError(f"{path!r} is not an image that Pillow can read; give a PNG or JPEG file.") from None
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        return load_image(path, max_pixels).shape[:2]  # its own one-line error
    _check_pixels(path, w, h, max_pixels)
    return h, w


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise ImageError(f"image {path!r} does not exist; check the path.")
    if os.path.isdir(path):
        raise ImageError(f"{path!r} is a directory; give an image file (PNG, JPEG, ...).")
    if os.path.getsize(path) == 0:
        raise ImageError(f"image {path!r} is empty (0 bytes); give a PNG or JPEG file.")


def _check_pixels(path: str, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageError(f"image {path!r} is {w}x{h} = {w * h / 1e6:.0f} megapixels, more than the "
                         f"{max_pixels / 1e6:.0f} allowed; downscale it first (the models look at a few hundred "
                         "pixels).")


def save_png(path: str, image: np.ndarray) -> None:
    """Writes a uint8 image as a PNG, whole or not at all."""
    from PIL import Image

    atomic_write(path, lambda f: Image.fromarray(np.asarray(image)).save(f, format="PNG"), sync=False)


# A perceptually ordered colour ramp (black - purple - red - orange - yellow - white), sampled at 6 knots.
_RAMP = np.array([[0, 0, 0], [60, 15, 110], [170, 30, 90], [235, 90, 30], [250, 200, 40], [255, 255, 230]], np.float64)


def colourise(saliency_map: np.ndarray) -> np.ndarray:
    """(H, W) map -> uint8 RGB heat map, scaled between the map's minimum and its 99.5th percentile."""
    m = np.asarray(saliency_map, np.float64)
    lo, hi = float(m.min()), float(np.percentile(m, 99.5))
    t = np.clip((m - lo) / max(hi - lo, 1e-12), 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(t.astype(int), len(_RAMP) - 2)
    f = (t - i)[..., None]
    return (_RAMP[i] * (1 - f) + _RAMP[i + 1] * f + 0.5).astype(np.uint8)
