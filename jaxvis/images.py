"""Reading images from files, with one clear message for each way a file can be wrong.

``load_image`` returns RGB float32 in [0, 1]. Grayscale, palette, RGBA and 16-bit images are converted
(and ``notes`` says how); missing, empty, truncated, non-image and oversized files are refused.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

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
    if not os.path.exists(path):
        raise ImageError(f"image {path!r} does not exist; check the path.")
    if os.path.isdir(path):
        raise ImageError(f"{path!r} is a directory; give an image file (PNG, JPEG, ...).")
    if os.path.getsize(path) == 0:
        raise ImageError(f"image {path!r} is empty (0 bytes); give a PNG or JPEG file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageError(f"image {path!r} is {w}x{h} = {w * h / 1e6:.0f} megapixels, more than the "
                                     f"{max_pixels / 1e6:.0f} allowed; downscale it first (the models look at a few "
                                     "hundred pixels).")
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
