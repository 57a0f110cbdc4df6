"""Synthetic "shapes" scenes, made on the fly and deterministic from a seed.

Six classes of shapes (circle, square, triangle, star, cross, ring), each with a random colour, size,
position and rotation, drawn anti-aliased over a random textured background (stripes, checks, waves
or a gradient in two colours, plus pixel noise). Two forms:

- classification: one shape per image, its class as the label;
- detection: one to four shapes per image, each in its own quadrant, with tight xyxy boxes (pixels)
  and labels (class index + 1, so that 0 stays the detector's background); optionally a share of
  scenes (``free_share``) that hold one larger shape anywhere, across the quadrants' borders and the
  image's centre included.

Everything is written in JAX and vmapped over images, so a training step can draw its batch inside
``jit`` at no noticeable cost. The same key gives the same images.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
NUM_CLASSES = len(CLASSES)


def _rotate(x, y, angle):
    c, s = jnp.cos(angle), jnp.sin(angle)
    return c * x + s * y, -s * x + c * y


def _box_sdf(x, y, hw, hh):
    dx, dy = jnp.abs(x) - hw, jnp.abs(y) - hh
    outside = jnp.sqrt(jnp.maximum(dx, 0) ** 2 + jnp.maximum(dy, 0) ** 2)
    return outside + jnp.minimum(jnp.maximum(dx, dy), 0)


def _triangle_sdf(x, y, r):
    """Equilateral triangle with circumradius r, pointing up."""
    k = np.sqrt(3.0)
    side = r * k
    y = -y + r * 0.25  # centre the triangle's bounding box
    px = jnp.abs(x) - side / 2
    py = y + side / (2 * k)
    flip = px + k * py > 0
    px, py = jnp.where(flip, (px - k * py) / 2, px), jnp.where(flip, (-k * px - py) / 2, py)
    px = px - jnp.clip(px, -side, 0.0)
    return -jnp.sqrt(px * px + py * py) * jnp.sign(py)


def _star_sdf(x, y, r):
    """Five-pointed star, outer radius r, inner radius 0.45 r (a polar approximation of the distance)."""
    theta = jnp.arctan2(x, -y)
    sector = 2 * np.pi / 5
    t = jnp.abs(jnp.mod(theta + sector / 2, sector) - sector / 2) / (sector / 2)  # 0 at a tip, 1 between
    inner = 0.45 * r
    # the star's boundary between a tip and an inner corner is close to straight in polar form
    radius = r * inner / (inner + (r - inner) * t)
    return (jnp.sqrt(x * x + y * y) - radius) * 0.6


def shape_sdf(kind, x, y, r):
    """Signed distance (pixels, negative inside) of shape ``kind`` of radius ``r`` at coordinates (x, y)."""
    sdfs = [
        lambda: jnp.sqrt(x * x + y * y) - r,                                      # circle
        lambda: _box_sdf(x, y, 0.78 * r, 0.78 * r),                                # square
        lambda: _triangle_sdf(x, y, 1.1 * r),                                      # triangle
        lambda: _star_sdf(x, y, 1.15 * r),                                         # star
        lambda: jnp.minimum(_box_sdf(x, y, r, 0.3 * r), _box_sdf(x, y, 0.3 * r, r)),  # cross
        lambda: jnp.abs(jnp.sqrt(x * x + y * y) - 0.72 * r) - 0.28 * r,            # ring
    ]
    return jax.lax.switch(kind, sdfs)


# standard deviation of the pixel noise of the backgrounds ([0, 1] pixel units)
PIXEL_NOISE = 0.04


def _background(key, size, flat=None, noise: float = PIXEL_NOISE):
    """A textured background (size, size, 3) with pixel noise of std ``noise``, the pixel grids and its mean
    colour; ``flat`` (a boolean, traced or not) makes it one flat colour instead (``flat=None``: never, the
    same draws as ``False``)."""
    k = jax.random.split(key, 7)
    yy, xx = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32), jnp.arange(size, dtype=jnp.float32), indexing="ij")
    angle = jax.random.uniform(k[0], (), minval=0, maxval=np.pi)
    u = (jnp.cos(angle) * xx + jnp.sin(angle) * yy) / size
    v = (-jnp.sin(angle) * xx + jnp.cos(angle) * yy) / size
    freq = jax.random.uniform(k[1], (), minval=2.0, maxval=7.0)
    phase = jax.random.uniform(k[2], (), minval=0, maxval=2 * np.pi)
    patterns = jnp.stack([
        0.5 + 0.5 * jnp.sin(2 * np.pi * freq * u + phase),                                   # stripes
        (jnp.floor(freq * u) + jnp.floor(freq * v)) % 2,                                    # checks
        0.5 + 0.25 * jnp.sin(2 * np.pi * freq * u + phase) + 0.25 * jnp.sin(2 * np.pi * 1.7 * freq * v),  # waves
        jnp.clip(u + 0.5, 0, 1),                                                             # gradient
    ])
    t = patterns[jax.random.randint(k[3], (), 0, 4)]
    c1, c2 = jax.random.uniform(k[4], (3,)), jax.random.uniform(k[5], (3,))
    noise = noise * jax.random.normal(k[6], (size, size, 1))
    mean = (c1 + c2) / 2
    if flat is not None:
        t, mean = jnp.where(flat, 0.0, t), jnp.where(flat, c1, mean)
    return c1 * (1 - t[..., None]) + c2 * t[..., None] + noise, yy, xx, mean


def _object_colour(key, background_mean):
    """A random colour kept away from the background's mean colour."""
    c = jax.random.uniform(key, (3,))
    far = jnp.where(background_mean > 0.5, c * 0.45, 0.55 + c * 0.45)
    return jnp.where(jnp.linalg.norm(c - background_mean) > 0.45, c, far)


def _draw(image, key, kind, cx, cy, r, yy, xx, background_mean):
    k1, k2 = jax.random.split(key)
    angle = jax.random.uniform(k1, (), minval=0, maxval=2 * np.pi)
    x, y = _rotate(xx + 0.5 - cx, yy + 0.5 - cy, angle)
    coverage = jnp.clip(0.5 - shape_sdf(kind, x, y, r), 0.0, 1.0)
    colour = _object_colour(k2, background_mean)
    return image * (1 - coverage[..., None]) + colour * coverage[..., None], coverage


def _tight_box(coverage, size):
    """xyxy pixel box of the pixels more than half covered."""
    inside = coverage > 0.5
    rows, cols = jnp.any(inside, axis=1), jnp.any(inside, axis=0)
    idx = jnp.arange(size, dtype=jnp.float32)
    return jnp.stack([jnp.min(jnp.where(cols, idx, size)), jnp.min(jnp.where(rows, idx, size)),
                      jnp.max(jnp.where(cols, idx + 1, 0)), jnp.max(jnp.where(rows, idx + 1, 0))]).astype(jnp.float32)


def _smooth_noise(key, size, n, cells: int = 6):
    """``n`` smooth random fields (size, size, n): Gaussian noise on a cells x cells grid, upsampled."""
    return jax.image.resize(jax.random.normal(key, (cells, cells, n)), (size, size, n), "cubic")


def _decoy(image, key, size, yy, xx):
    """``image`` with a decoy drawn on it: a shape-shaped hole (the image shows through) in a fragmentary
    frame of clutter in several colours, anywhere in the image. It is no object: a detector trained with
    decoys in its scenes learns that an object is the flat-coloured region, not a gap that the clutter
    around it outlines, which is what class models by gradient ascent otherwise draw."""
    k = jax.random.split(key, 8)
    kind = jax.random.randint(k[0], (), 0, NUM_CLASSES)
    r = jax.random.uniform(k[1], (), minval=FREE_RADIUS[0], maxval=FREE_RADIUS[1]) * size
    c = jax.random.uniform(k[2], (2,), minval=r, maxval=size - r)
    angle = jax.random.uniform(k[3], (), minval=0, maxval=2 * np.pi)
    x, y = _rotate(xx + 0.5 - c[0], yy + 0.5 - c[1], angle)
    sdf = shape_sdf(kind, x, y, r)
    width = jax.random.uniform(k[4], (), minval=0.25, maxval=0.8) * r
    frame = jnp.clip(0.5 + sdf, 0.0, 1.0) * jnp.clip(0.5 - (sdf - width), 0.0, 1.0)
    kept = jax.random.uniform(k[5], (), minval=-0.6, maxval=0.3)  # from most of the frame to a third of it
    frame = jnp.where(_smooth_noise(k[6], size, 1, cells=10)[..., 0] > kept, frame, 0.0)
    palette = jax.random.uniform(k[7], (3, 3))
    pick = jax.nn.one_hot(jnp.argmax(_smooth_noise(jax.random.fold_in(key, 1), size, 3, cells=8), axis=-1), 3)
    colours = pick @ palette
    return image * (1 - frame[..., None]) + colours * frame[..., None]


def classification_image(key, size: int = 64, masks: bool = False):
    """One image (size, size, 3) in [0, 1], its class index and the shape's xyxy pixel box; with ``masks``,
    the shape's mask follows, a (size, size) int32 map of the class index where the shape covers more than
    half of a pixel and -1 elsewhere."""
    k = jax.random.split(key, 5)
    image, yy, xx, bg_mean = _background(k[0], size)
    kind = jax.random.randint(k[1], (), 0, NUM_CLASSES)
    r = jax.random.uniform(k[2], (), minval=0.2, maxval=0.4) * size
    c = jax.random.uniform(k[3], (2,), minval=r * 1.05, maxval=size - r * 1.05)
    image, cover = _draw(image, k[4], kind, c[0], c[1], r, yy, xx, bg_mean)
    out = (jnp.clip(image, 0, 1), kind, _tight_box(cover, size))
    return out + (jnp.where(cover > 0.5, kind, -1).astype(jnp.int32),) if masks else out


# radius of a free scene's shape, as a share of the image size: boxes of 28 to 70 px at 128 px, up to
# beyond the lab's centred quarter (64 px); quadrant scenes' shapes measure 28 to 54 px
FREE_RADIUS = (0.11, 0.27)


def detection_image(key, size: int = 128, max_objects: int = 4, free_share: float = 0.0,
                    decoy_share: float = 0.0, flat_share: float = 0.0, even_noise: bool = False,
                    masks: bool = False):
    """One scene: image (size, size, 3), boxes (max_objects, 4) xyxy pixels, labels (class + 1) and a
    validity mask; one to ``max_objects`` shapes, each in its own quadrant of a 2x2 layout, or, with
    probability ``free_share``, one shape of radius ``FREE_RADIUS`` x size anywhere it fits. With
    probability ``decoy_share`` the scene's background also holds a decoy (``_decoy``: a shape-shaped hole
    in a frame of clutter, anywhere, under the shapes), which is no object. With probability
    ``flat_share`` the background is one flat colour instead of a pattern: a detector that never saw one
    finds no shape on a plain wall. The backgrounds carry pixel noise and the shapes none, which a detector
    learns to tell a shape by; ``even_noise`` instead lays the noise over the whole scene, shapes
    included, at a level drawn per scene from none to the backgrounds' ``PIXEL_NOISE``. The quadrant scenes do not
    depend on ``free_share``, and no scene's shapes on ``decoy_share`` or ``flat_share``: the same key
    gives the same shapes, with or without a decoy or a flat background (their colours stay away from the
    background's mean colour, so a shape's colour may differ over a flat background). With ``masks`` a fifth
    array follows: the objects' masks as one (size, size) int32 map, each pixel more than half covered by a
    shape holding that shape's label (class + 1), every other pixel -1."""
    if max_objects > 4:
        raise ValueError("at most four objects: one per quadrant")
    for name, share in (("free_share", free_share), ("decoy_share", decoy_share), ("flat_share", flat_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} is a probability in [0, 1]; got {share}")
    decoy = None
    if decoy_share > 0.0:
        kd = jax.random.fold_in(key, 0xDEC0)
        on = jax.random.uniform(jax.random.fold_in(kd, 1), ()) < decoy_share
        decoy = lambda im, yy, xx: jnp.where(on, _decoy(im, kd, size, yy, xx), im)  # noqa: E731
    flat = None
    if flat_share > 0.0:
        flat = jax.random.uniform(jax.random.fold_in(key, 0xF1A7), ()) < flat_share
    noise = 0.0 if even_noise else PIXEL_NOISE
    scene = _quadrant_scene(key, size, max_objects, decoy, flat, noise)
    if free_share > 0.0:
        scene = _free_scene(key, size, scene, free_share, decoy, flat, noise)
    image, boxes, labels, valid, where = scene
    if even_noise:
        level = jax.random.uniform(jax.random.fold_in(key, 0x1015E), ()) * PIXEL_NOISE
        image = jnp.clip(image + level * jax.random.normal(jax.random.fold_in(key, 0x1015F), (size, size, 1)), 0, 1)
    return (image, boxes, labels, valid, where) if masks else (image, boxes, labels, valid)


def _free_scene(key, size, scene, free_share, decoy, flat, noise):
    """``scene``, or with probability ``free_share`` one shape of radius ``FREE_RADIUS`` x size anywhere."""
    image, boxes, labels, valid, where = scene
    kf = jax.random.split(jax.random.fold_in(key, 0x5EED), 5)
    background, yy, xx, bg_mean = _background(kf[0], size, flat, noise)
    if decoy is not None:
        background = decoy(background, yy, xx)
    kind = jax.random.randint(kf[1], (), 0, NUM_CLASSES)
    r = jax.random.uniform(kf[2], (), minval=FREE_RADIUS[0], maxval=FREE_RADIUS[1]) * size
    c = jax.random.uniform(kf[3], (2,), minval=r * 1.05, maxval=size - r * 1.05)
    drawn, cover = _draw(background, kf[4], kind, c[0], c[1], r, yy, xx, bg_mean)
    free_boxes = jnp.zeros_like(boxes).at[0].set(_tight_box(cover, size))
    free_labels = jnp.zeros_like(labels).at[0].set(kind + 1)
    free_valid = jnp.zeros_like(valid).at[0].set(True)
    free = jax.random.uniform(jax.random.fold_in(key, 0xF4EE), ()) < free_share
    pick = lambda a, b: jnp.where(free, a, b)  # noqa: E731
    free_where = jnp.where(cover > 0.5, kind + 1, -1)
    return (pick(jnp.clip(drawn, 0, 1), image), pick(free_boxes, boxes), pick(free_labels, labels),
            pick(free_valid, valid), pick(free_where, where))


def _quadrant_scene(key, size, max_objects, decoy=None, flat=None, noise=PIXEL_NOISE):
    k = jax.random.split(key, 4)
    image, yy, xx, bg_mean = _background(k[0], size, flat, noise)
    if decoy is not None:
        image = decoy(image, yy, xx)
    count = jax.random.randint(k[1], (), 1, max_objects + 1)
    quadrants = jax.random.permutation(k[2], 4)[:max_objects]
    keys = jax.random.split(k[3], max_objects)
    half = size / 2
    boxes, labels, valid = [], [], []
    where = jnp.full((size, size), -1, jnp.int32)
    for i in range(max_objects):
        ki = jax.random.split(keys[i], 4)
        kind = jax.random.randint(ki[0], (), 0, NUM_CLASSES)
        r = jax.random.uniform(ki[1], (), minval=0.22, maxval=0.42) * half
        qy, qx = (quadrants[i] // 2).astype(jnp.float32), (quadrants[i] % 2).astype(jnp.float32)
        c = jax.random.uniform(ki[2], (2,), minval=r * 1.05, maxval=half - r * 1.05)
        cx, cy = qx * half + c[0], qy * half + c[1]
        drawn, cover = _draw(image, ki[3], kind, cx, cy, r, yy, xx, bg_mean)
        present = i < count
        image = jnp.where(present, drawn, image)
        where = jnp.where(present & (cover > 0.5), kind + 1, where)
        boxes.append(_tight_box(cover, size))
        labels.append(kind + 1)
        valid.append(present)
    return jnp.clip(image, 0, 1), jnp.stack(boxes), jnp.stack(labels).astype(jnp.int32), jnp.stack(valid), where


@functools.partial(jax.jit, static_argnames=("batch", "size", "masks"))
def classification_batch(key, batch: int, size: int = 64, masks: bool = False):
    """(images (batch, size, size, 3), labels (batch,), boxes (batch, 4)) drawn from ``key`` (and the masks,
    with ``masks``)."""
    return jax.vmap(lambda k: classification_image(k, size, masks))(jax.random.split(key, batch))


@functools.partial(jax.jit, static_argnames=("batch", "size", "max_objects", "free_share", "decoy_share",
                                             "flat_share", "even_noise", "masks"))
def detection_batch(key, batch: int, size: int = 128, max_objects: int = 4, free_share: float = 0.0,
                    decoy_share: float = 0.0, flat_share: float = 0.0, even_noise: bool = False, masks: bool = False):
    """(images, boxes, labels, valid) for ``batch`` scenes drawn from ``key`` (and the masks, with ``masks``)."""
    return jax.vmap(lambda k: detection_image(k, size, max_objects, free_share, decoy_share, flat_share,
                                              even_noise, masks))(jax.random.split(key, batch))


def classification_set(seed: int, n: int, size: int = 64, batch: int = 256, masks: bool = False):
    """A fixed set of ``n`` labelled images as numpy arrays (images, labels, boxes), the same for a seed; with
    ``masks``, the shapes' masks follow (``classification_image``)."""
    key = jax.random.key(seed)
    parts = [[np.asarray(a) for a in classification_batch(jax.random.fold_in(key, i), batch, size, masks)]
             for i in range(0, n, batch)]
    return tuple(np.concatenate([p[j] for p in parts])[:n] for j in range(len(parts[0])))


def detection_set(seed: int, n: int, size: int = 128, batch: int = 128, max_objects: int = 4,
                  free_share: float = 0.0, decoy_share: float = 0.0, flat_share: float = 0.0,
                  even_noise: bool = False, masks: bool = False):
    """A fixed set of ``n`` scenes as numpy arrays (images, boxes, labels, valid), the same for a seed; with
    ``masks``, the objects' masks follow (``detection_image``)."""
    key = jax.random.key(seed)
    parts = []
    for i in range(0, n, batch):
        parts.append([np.asarray(a) for a in detection_batch(jax.random.fold_in(key, i), batch, size, max_objects,
                                                             free_share, decoy_share, flat_share, even_noise, masks)])
    return tuple(np.concatenate([p[j] for p in parts])[:n] for j in range(len(parts[0])))


def statistics_images(n: int, sizes, seed: int = 2023) -> dict[int, np.ndarray]:
    """``n`` images of the generator per size, RGB in [0, 1], for ``parameterizations.image_statistics``: the
    detection scenes at 128 pixels, the classification images at any other size."""
    out = {}
    for size in sizes:
        images = detection_set(seed, n)[0] if size == 128 else classification_set(seed, n, size=size)[0]
        out[int(size)] = np.clip(np.asarray(images), 0, 1)
    return out
