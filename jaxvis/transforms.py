"""Random transformations the image must survive (Lucid's transforms; MACO's shrinking crops), applied
to the network-input image before every forward pass of the optimisation.

A transform is any function ``transform(key, image, boxes, step, ctx) -> (image, boxes)``: ``key`` its
random key for this step and view, ``image`` (H, W, C) in the network's input space (C = 4 with an opacity
channel last), ``boxes`` the target boxes (M, 4; xyxy input pixels) to move as the image moves, or None
when nothing is to be moved (return None then), ``step`` the optimisation step (a traced int), ``ctx`` the
``Context`` (steps, fill value, black and white). It may change the image's size (the chain is cropped back
to the input size, centred, at the end). The built-in transforms below are such values (small frozen
``Transform`` records, so that their names and numbers are known), and ``compose(...)`` makes one of
several; a tuple of them runs in the order given:

| transform | what it does at each step |
|---|---|
| ``pad(n)`` | pads n pixels of mid grey on every side (the chain is cropped back to the input size, centred, at the end) |
| ``jitter(n)`` | shifts cyclically by a random offset of -n..n pixels in each direction |
| ``scale(lo, hi)`` | zooms about the centre by a random factor in [lo, hi] (bilinear; grey where nothing is seen) |
| ``rotate(degrees)`` | rotates about the centre by a random angle in [-degrees, degrees] (grey where nothing is seen) |
| ``rotate(degrees, grow)`` | the same; a target box's size follows the turn by the share ``grow`` in [0, 1] of the turned box's own box (0, the default: kept, as a disc's; 1: as a rectangle's) |
| ``turn90()`` | turns about the centre by a random multiple of 90 degrees (0, 90, 180 or 270, each as likely): exact on a square image, and it keeps a square's box, which any other angle grows; ``turn90(),rotate(20,wrap)`` turns by k x 90 degrees +- 20 |
| ``scale(lo, hi, wrap)``, ``rotate(degrees, wrap)`` | the same with the image repeated periodically instead of grey outside it (no grey corners for large rotations; a Fourier image is periodic anyway) |
| ``crop(start, end)`` | a random square crop whose side is ``start`` of the image at the first step and ``end`` at the last (linear in between), resized back to the full size (MACO) |
| ``blur(sigma)`` | a Gaussian blur of std sigma pixels |
| ``noise(std)`` | adds Gaussian noise of std ``std`` (network-input units) |
| ``recolour(m)`` | mixes the colours towards one random flat colour, by a share drawn from [0, m]: at m = 1 some views are one flat colour, so only the outline (of an image with opacity: of its opaque part) tells the class |

Consecutive scales and rotations of one mode (grey or wrap) run as one bilinear warp, their matrices
composed, so the image is interpolated once per run of them rather than once per transform; ``turn90``
samples no pixel outside a square image and joins a run of either mode.

A detector objective's target boxes move with the image (``apply(..., boxes=)``, which the engine uses):
shifted by pads, jitters and crops, scaled by zooms and crops, their centres turned by rotations, their
sizes kept by turns (width and height swapped by turns nearer a quarter or three quarters of a full
turn) or grown towards the turned box's box by a rotation's ``grow``, so that a box keeps framing what it
framed. (What a turned object's box is depends on the object: a disc's is kept, a square's grows; ``grow``
0.5 is halfway, wrong by at most 21 % for either.)

Randomness is keyed per point, never global: at step t a point with seed s draws the randomness of its
transform i from ``k_t = fold_in(key(s + 1), t)`` (i = 0) or ``fold_in(k_t, i)`` (i > 0). A point alone
therefore gives the same image as inside a sweep, and reruns are bit-identical. With several views per
step (the engine's ``views``), view k > 0 starts from ``fold_in(k_t, VIEW_KEYS + k)`` instead of k_t. The first transform's
key is the one the engine's historical ``jitter`` setting used, so ``jitter=n`` (which is
``(jitter(n),)``) keeps its results.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


class TransformError(ValueError):
    """A transform with bad numbers, or a text form that cannot be read."""


@dataclasses.dataclass(frozen=True)
class Context:
    """What transforms need besides the image: the run's steps (schedules), the grey fill value in
    the network's input space (per channel) and the input values of black and white (``recolour``'s
    colours; the engine always gives them)."""

    steps: int
    fill: tuple[float, ...]
    lo: tuple[float, ...] | None = None
    hi: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Transform:
    kind: str
    a: float = 0.0
    b: float = 0.0
    wrap: bool = False  # scale, rotate: sample the image as periodic instead of grey outside it

    @property
    def name(self) -> str:
        rotate = (self.a, self.b) if self.b else (self.a,)
        args = {"turn90": (), "pad": (self.a,), "jitter": (self.a,), "scale": (self.a, self.b), "rotate": rotate,
                "crop": (self.a, self.b), "blur": (self.a,), "noise": (self.a,), "recolour": (self.a,)}[self.kind]
        return f"{self.kind}({','.join([f'{v:g}' for v in args] + (['wrap'] if self.wrap else []))})"

    def __call__(self, key, x: jax.Array, boxes, t, ctx: Context):
        """(image, boxes) after this transform; ``boxes`` None stays None."""
        if self.kind in _MATRIX:
            matrix = _MATRIX[self.kind](self, key)
            moved = None if boxes is None else _warp_boxes(matrix, boxes, x.shape[:2],
                                                           self.b if self.kind == "rotate" else 0.0)
            return _warp(x, matrix, ctx, self.wrap), moved
        moved = None if boxes is None else _BOXES[self.kind](self, boxes, key, t, ctx, x.shape[:2])
        return _APPLY[self.kind](self, x, key, t, ctx), moved


@dataclasses.dataclass(frozen=True)
class Compose:
    """Several transforms as one: ``transforms`` in order, transform i drawing from ``fold_in(key, i)``
    (i > 0) or ``key`` (i = 0), consecutive built-in scales and rotations run as one warp."""

    transforms: tuple

    @property
    def name(self) -> str:
        return "compose(" + ",".join(name_of(t) for t in self.transforms) + ")"

    def __call__(self, key, x: jax.Array, boxes, t, ctx: Context):
        return run(self.transforms, key, x, boxes, t, ctx)


def compose(*transforms) -> Compose:
    """One transform made of ``transforms``, run in order.

    Example:

    ```python
    from jaxvis import transforms as T

    robust = T.compose(T.jitter(8), T.scale(0.65, 1.35, wrap=True), T.rotate(180, wrap=True))
    print(robust)
    ```
    """
    for tr in transforms:
        if not callable(tr):
            raise TransformError(f"a transform is a function (key, image, boxes, step, ctx) -> (image, boxes); got "
                                 f"{tr!r}.")
    return Compose(tuple(transforms))


def name_of(transform) -> str:
    """A transform's name: a built-in's (``rotate(180,wrap)``), else the function's name."""
    name = getattr(transform, "name", None)
    if isinstance(name, str):
        return name
    return getattr(transform, "__name__", type(transform).__name__)


def pad(n: int) -> Transform:
    if int(n) != n or n < 0:
        raise TransformError(f"pad takes a whole number of pixels >= 0, got {n}.")
    return Transform("pad", float(n))


def jitter(n: int) -> Transform:
    if int(n) != n or n < 0:
        raise TransformError(f"jitter takes a whole number of pixels >= 0, got {n}.")
    return Transform("jitter", float(n))


def scale(lo: float, hi: float, *, wrap: bool = False) -> Transform:
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise TransformError(f"scale takes factors 0 < lo <= hi, got {lo}, {hi}.")
    return Transform("scale", float(lo), float(hi), bool(wrap))


def rotate(degrees: float, grow: float = 0.0, *, wrap: bool = False) -> Transform:
    """A random turn by up to ``degrees`` either way. ``grow`` in [0, 1] says how a target box's size follows
    the turn: 0 keeps it (the box of a turned disc), 1 takes the box of the turned box (that of a turned
    rectangle, up to 41 % wider at 45 degrees), and a share in between interpolates the two."""
    if not (math.isfinite(degrees) and degrees >= 0):
        raise TransformError(f"rotate takes a maximum angle in degrees >= 0, got {degrees}.")
    if not (math.isfinite(grow) and 0 <= grow <= 1):
        raise TransformError(f"rotate's second number is how much a target box grows with the turn, in [0, 1] "
                             f"(0: kept, a disc's box; 1: the turned box's box); got {grow}.")
    return Transform("rotate", float(degrees), float(grow), bool(wrap))


def turn90() -> Transform:
    return Transform("turn90")


def crop(start: float = 1.0, end: float = 0.5) -> Transform:
    if not (0 < start <= 1 and 0 < end <= 1):
        raise TransformError(f"crop takes side fractions in (0, 1] at the first and last step, got {start}, {end}.")
    return Transform("crop", float(start), float(end))


def blur(sigma: float) -> Transform:
    if not (math.isfinite(sigma) and sigma > 0):
        raise TransformError(f"blur takes a std in pixels > 0, got {sigma}.")
    return Transform("blur", float(sigma))


def noise(std: float) -> Transform:
    if not (math.isfinite(std) and std >= 0):
        raise TransformError(f"noise takes a std >= 0, got {std}.")
    return Transform("noise", float(std))


def recolour(most: float = 1.0) -> Transform:
    if not (math.isfinite(most) and 0 <= most <= 1):
        raise TransformError(f"recolour takes the largest share of the flat colour, in [0, 1]; got {most}.")
    return Transform("recolour", float(most))


def _centre(h, w):
    return jnp.asarray([(h - 1) / 2.0, (w - 1) / 2.0], jnp.float32)


def _sample(x: jax.Array, coords: jax.Array, fill: jax.Array, wrap: bool = False) -> jax.Array:
    """Bilinear samples of ``x`` (H, W, C) at ``coords`` (2, H', W') (row, col), ``fill`` outside, or
    of ``x`` repeated periodically (period H, W) when ``wrap``: ``map_coordinates(order=1)`` per channel
    (constant or grid-wrap mode), written as one gather of the four neighbours' pixel rows (all channels at
    once), so that the gradient is one scatter of rows rather than one per channel and neighbour."""
    h, w, c = x.shape
    r0, q0 = jnp.floor(coords[0]), jnp.floor(coords[1])
    fr, fq = coords[0] - r0, coords[1] - q0
    r0, q0 = r0.astype(jnp.int32), q0.astype(jnp.int32)
    rows = (x if wrap else x - fill).reshape(h * w, c)
    index, weight = [], []
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for dq, wq in ((0, 1.0 - fq), (1, fq)):
            r, q, wt = r0 + dr, q0 + dq, wr * wq
            if wrap:
                r, q = r % h, q % w
            else:  # a neighbour outside the image reads the fill
                wt = jnp.where((r >= 0) & (r < h) & (q >= 0) & (q < w), wt, 0.0)
                r, q = jnp.clip(r, 0, h - 1), jnp.clip(q, 0, w - 1)
            index.append(r * w + q)
            weight.append(wt)
    out = jnp.einsum("khw,khwc->hwc", jnp.stack(weight), rows[jnp.stack(index)])
    return out if wrap else out + fill


def _grid(h, w):
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    return jnp.stack([rows, cols])


def _warp(x, matrix, ctx: Context, wrap: bool = False):
    """Output pixel p samples the input at matrix (p - c) + c, c the centre."""
    h, w = x.shape[:2]
    c = _centre(h, w)[:, None, None]
    g = _grid(h, w) - c
    coords = jnp.einsum("ij,jhw->ihw", matrix, g, precision=jax.lax.Precision.HIGHEST) + c
    return _sample(x, coords, jnp.asarray(ctx.fill, jnp.float32), wrap)


def _pad(tr, x, key, t, ctx):
    n = int(tr.a)
    fill = jnp.asarray(ctx.fill, jnp.float32)
    out = jnp.broadcast_to(fill, (x.shape[0] + 2 * n, x.shape[1] + 2 * n, x.shape[-1]))
    return out.at[n:n + x.shape[0], n:n + x.shape[1]].set(x)


def _jitter_shift(tr, key):
    """A jitter's random (row, col) shift; the image and the target boxes read the same draw."""
    n = int(tr.a)
    return jax.random.randint(key, (2,), -n, n + 1)


def _jitter(tr, x, key, t, ctx):
    shift = _jitter_shift(tr, key)
    return jnp.roll(x, (shift[0], shift[1]), axis=(0, 1))


def _scale_matrix(tr, key):
    s = jax.random.uniform(key, (), jnp.float32, tr.a, tr.b)
    return jnp.eye(2, dtype=jnp.float32) / s


def _turn(cos, sin):
    return jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])


def _rotate_matrix(tr, key):
    theta = jnp.deg2rad(jax.random.uniform(key, (), jnp.float32, -tr.a, tr.a))
    return _turn(jnp.cos(theta), jnp.sin(theta))


def _turn90_matrix(tr, key):
    quarter = jax.random.randint(key, (), 0, 4)
    # exact, where cos(pi / 2) is not
    return _turn(jnp.asarray([1.0, 0.0, -1.0, 0.0], jnp.float32)[quarter],
                 jnp.asarray([0.0, 1.0, 0.0, -1.0], jnp.float32)[quarter])


_MATRIX = {"scale": _scale_matrix, "rotate": _rotate_matrix, "turn90": _turn90_matrix}


def _warped(tr, x, key, t, ctx):
    """A scale, rotation or quarter turn on its own: one warp by its matrix."""
    return _warp(x, _MATRIX[tr.kind](tr, key), ctx, tr.wrap)


def _crop_frame(tr, key, t, ctx, hw):
    """A crop's side as a share ``f`` of the image at step ``t`` and its random (row, col) corner in pixels;
    the image and the target boxes read the same draw."""
    progress = jnp.asarray(t, jnp.float32) / max(ctx.steps - 1, 1)
    f = tr.a + (tr.b - tr.a) * jnp.clip(progress, 0.0, 1.0)
    return f, jax.random.uniform(key, (2,), jnp.float32) * (1.0 - f) * jnp.asarray(hw, jnp.float32)


def _crop(tr, x, key, t, ctx):
    h, w = x.shape[:2]
    f, corner = _crop_frame(tr, key, t, ctx, (h, w))
    coords = corner[:, None, None] + (_grid(h, w) + 0.5) * f - 0.5
    return _sample(x, coords, jnp.asarray(ctx.fill, jnp.float32))


def _blur(tr, x, key, t, ctx):
    radius = max(1, int(math.ceil(3 * tr.a)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / tr.a) ** 2)
    k = jnp.asarray(k / k.sum(), jnp.float32)
    padded = jnp.pad(x, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    rows = sum(k[i] * padded[i:i + x.shape[0]] for i in range(2 * radius + 1))
    return sum(k[i] * rows[:, i:i + x.shape[1]] for i in range(2 * radius + 1))


def _with_colours(x, rgb):
    """``x`` with its colours replaced by ``rgb``; an opacity channel is left as it is."""
    return jnp.concatenate([rgb, x[..., 3:]], -1)


def _noise(tr, x, key, t, ctx):
    return _with_colours(x, x[..., :3] + tr.a * jax.random.normal(key, x.shape[:2] + (3,), jnp.float32))


def _recolour(tr, x, key, t, ctx):
    if ctx.lo is None or ctx.hi is None:
        raise TransformError("recolour draws colours between black and white: give the Context lo and hi (the "
                             "network-input values of black and white).")
    k_share, k_colour = jax.random.split(key)
    lo, hi = jnp.asarray(ctx.lo, jnp.float32), jnp.asarray(ctx.hi, jnp.float32)
    colour = lo + jax.random.uniform(k_colour, (3,), jnp.float32) * (hi - lo)
    share = jax.random.uniform(k_share, (), jnp.float32, 0.0, tr.a)
    return _with_colours(x, x[..., :3] * (1.0 - share) + colour * share)


_APPLY = {"pad": _pad, "jitter": _jitter, "scale": _warped, "rotate": _warped, "turn90": _warped, "crop": _crop,
          "blur": _blur, "noise": _noise, "recolour": _recolour}


# Target boxes follow the image: each transform's map of input pixels (xyxy, continuous coordinates, pixel i
# spans [i, i + 1]) to where they are seen, drawing the same randomness from the same key as the image.
def _pad_boxes(tr, boxes, key, t, ctx, hw):
    return boxes + tr.a


def _jitter_boxes(tr, boxes, key, t, ctx, hw):
    shift = _jitter_shift(tr, key).astype(jnp.float32)
    return boxes + jnp.stack([shift[1], shift[0], shift[1], shift[0]])


def _crop_boxes(tr, boxes, key, t, ctx, hw):
    f, corner = _crop_frame(tr, key, t, ctx, hw)
    return (boxes - jnp.stack([corner[1], corner[0], corner[1], corner[0]])) / f


def _same_boxes(tr, boxes, key, t, ctx, hw):
    return boxes


_BOXES = {"pad": _pad_boxes, "jitter": _jitter_boxes, "crop": _crop_boxes, "blur": _same_boxes,
          "noise": _same_boxes, "recolour": _same_boxes}


def _warp_boxes(matrix, boxes, hw, grow=0.0):
    """The box seen through a warp whose output pixel p samples the input at matrix (p - c) + c: its centre
    moves to matrix^-1 (centre - c) + c and its sides scale by the warp's zoom, 1 / sqrt|det matrix|. With
    ``grow`` 0 a turn keeps the box's size (the box of a turned disc; a turned square's own box grows by up to
    41 %), its width and height swapped by a turn nearer to 90 or 270 degrees than to 0 or 180 (a quarter
    turn's box is exact); with ``grow`` 1 the box is that of the turned box, (|cos| w + |sin| h, |sin| w +
    |cos| h) (a turned rectangle's); a share in between mixes the two sizes."""
    c = _centre(*hw)
    centre = jnp.stack([(boxes[:, 1] + boxes[:, 3]) / 2, (boxes[:, 0] + boxes[:, 2]) / 2], -1) - 0.5  # (row, col)
    inverse = jnp.linalg.inv(matrix)
    moved = jnp.einsum("ij,mj->mi", inverse, centre - c, precision=jax.lax.Precision.HIGHEST) + c + 0.5
    zoom = 1.0 / jnp.sqrt(jnp.abs(jnp.linalg.det(matrix)))
    width, height = (boxes[:, 2] - boxes[:, 0]) * zoom, (boxes[:, 3] - boxes[:, 1]) * zoom
    swap = jnp.abs(inverse[0, 1]) > jnp.abs(inverse[0, 0])
    half_w, half_h = jnp.where(swap, height, width) / 2, jnp.where(swap, width, height) / 2
    if grow:
        cos, sin = jnp.abs(inverse[0, 0]) / zoom, jnp.abs(inverse[0, 1]) / zoom  # the turn alone, zoom divided out
        half_w = (1 - grow) * half_w + grow * (cos * width + sin * height) / 2
        half_h = (1 - grow) * half_h + grow * (sin * width + cos * height) / 2
    return jnp.stack([moved[:, 1] - half_w, moved[:, 0] - half_h, moved[:, 1] + half_w, moved[:, 0] + half_h], -1)


def step_key(seed, t):
    """A point's key at step ``t``: the first transform's; transform i > 0 folds in i."""
    return jax.random.fold_in(jax.random.key(seed + jnp.uint32(1)), t)


VIEW_KEYS = 0x7F000000  # view k > 0 of a step folds VIEW_KEYS + k into the step's key


def view_key(seed, t, view: int = 0):
    """The key of a point's ``view``-th copy at step ``t`` (its first transform's key)."""
    base = step_key(seed, t)
    return jax.random.fold_in(base, VIEW_KEYS + int(view)) if view else base


def apply(transforms: Sequence, x: jax.Array, seed, t, ctx: Context, view: int = 0,
          boxes: jax.Array | None = None):
    """The image the network sees at step ``t``: ``transforms`` in order, then a centred crop back to
    ``x``'s size when padding made it larger. ``view`` k > 0 (a Python int) is another random copy of the
    same step: its key is ``fold_in(k_t, VIEW_KEYS + k)``; view 0 draws as described above.

    With ``boxes`` (M, 4; xyxy input pixels) it returns (image, boxes) with the boxes moved as the image is:
    shifted with pads, jitters and crops, scaled with zooms and crops, their centres turned with rotations
    (their sizes kept, or grown as a rotation's ``grow`` says), so that a target box stays on what it framed."""
    if not transforms:
        return x if boxes is None else (x, boxes)
    h, w = x.shape[:2]
    y, boxes = run(transforms, view_key(seed, t, view), x, boxes, t, ctx)
    if y.shape[:2] != (h, w):
        top, left = (y.shape[0] - h) // 2, (y.shape[1] - w) // 2
        y = y[top:top + h, left:left + w]
        if boxes is not None:
            boxes = boxes - jnp.asarray([left, top, left, top], jnp.float32)
    return y if boxes is None else (y, boxes)


def _warps(tr) -> bool:
    return isinstance(tr, Transform) and tr.kind in _MATRIX


def run(transforms: Sequence, base, x: jax.Array, boxes, t, ctx: Context):
    """``transforms`` in order from the key ``base``: (image, boxes), the image at the size the chain makes."""
    y, i = x, 0
    while i < len(transforms):
        tr = transforms[i]
        key = base if i == 0 else jax.random.fold_in(base, i)
        if not _warps(tr):
            y, boxes = tr(key, y, boxes, t, ctx)
            i += 1
            continue
        # a run of scales and rotations of one mode is one warp: output p samples at M_i (M_i+1 (... (p - c))) + c;
        # quarter turns join a run of either mode (the run's mode is that of its first other transform)
        matrix, i = _MATRIX[tr.kind](tr, key), i + 1
        mode = None if tr.kind == "turn90" else tr.wrap
        grow = tr.b if tr.kind == "rotate" else 0.0  # the run's: its rotations' largest
        while i < len(transforms) and _warps(transforms[i]) and (
                transforms[i].kind == "turn90" or mode is None or transforms[i].wrap == mode):
            if transforms[i].kind != "turn90":
                mode = transforms[i].wrap
            if transforms[i].kind == "rotate":
                grow = max(grow, transforms[i].b)
            step = _MATRIX[transforms[i].kind](transforms[i], jax.random.fold_in(base, i))
            matrix, i = jnp.matmul(matrix, step, precision=jax.lax.Precision.HIGHEST), i + 1
        if boxes is not None:
            boxes = _warp_boxes(matrix, boxes, y.shape[:2], grow)
        y = _warp(y, matrix, ctx, bool(mode))
    return y, boxes


def check(transforms: Sequence, size: tuple[int, int]) -> None:
    """Raise ``TransformError`` for a transform that is not a function, or a built-in that does not fit an
    image of ``size`` (height, width)."""
    for tr in transforms:
        if isinstance(tr, Compose):
            check(tr.transforms, size)
            continue
        if not callable(tr):
            raise TransformError(f"a transform is a function (key, image, boxes, step, ctx) -> (image, boxes), such "
                                 f"as jaxvis.transforms.jitter(4); got {tr!r}.")
        if not isinstance(tr, Transform):
            continue
        if tr.kind == "jitter" and tr.a >= min(size):
            raise TransformError(f"jitter is a shift in pixels, 0 <= jitter < {min(size)}; got {int(tr.a)}.")
        if tr.kind == "turn90" and size[0] != size[1]:
            raise TransformError(f"turn90 turns a square image onto itself; this image is {size[0]} x {size[1]} "
                                 "pixels: use rotate(180) for a non-square one.")
