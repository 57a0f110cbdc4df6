"""Attributions along other paths than Integrated Gradients' straight line, and XRAI's regions ranked by IG.

    from jaxvis import paths, saliency as sal
    e = paths.blur_ig(steps=100, max_sigma=50).attribute(model, images, sal.class_score([[3]]))  # (N, K, H, W, 3)
    e = paths.guided_ig(steps=200, fraction=0.25, max_dist=0.02).attribute(model, images, targets)
    e = paths.xrai(steps=100).attribute(model, images, targets)                                 # (N, K, H, W)

- ``blur_ig(steps, max_sigma, grad_step, sqrt)`` (Xu et al. 2020, "Attribution in Scale and Space"): the path
  runs from the image x (sigma = 0) to its Gaussian blur of ``max_sigma`` pixels, through the blurs
  B(x, sigma_i), sigma_i = i max_sigma / steps (or the square root of that, ``sqrt=True``). The attribution is
  minus the Riemann sum over i < steps of (sigma_{i+1} - sigma_i) dB/dsigma(x, sigma_i) dS/dx(B(x, sigma_i)), with
  dB/dsigma the forward difference (B(x, sigma_i + grad_step) - B(x, sigma_i)) / grad_step; so the attributions
  add up to S(x) - S(B(x, max_sigma)) up to the Riemann and difference errors. The blur is separable over rows
  and columns, zero beyond the image's edge, with the sampled Gaussian kernel cut at 4 sigma (rounded to the
  nearest pixel) and normalised to sum to one, each colour channel on its own (``gaussian_blur``). This is the
  path of PAIR's ``saliency`` package (its ``BlurIG``).
- ``guided_ig(steps, fraction, max_dist, baseline)`` (Kapishnikov et al. 2021, "Guided Integrated Gradients"):
  the path starts at the baseline (zeros by default) and reaches the image in ``steps`` steps; step j closes
  the L1 distance to the image down to (1 - j / steps) of the whole by moving, again and again, the
  ``fraction`` of the features with the smallest |dS/dx| (the lower quantile of the features not yet at
  their limit) toward the image, each no further than alpha + ``max_dist`` along its own straight line
  (alpha = j / steps); features that fell behind alpha - ``max_dist`` are first pulled up to it. The
  attribution is the sum of each move times the gradient at the step's start. ``max_dist = 0`` keeps to
  the straight line (IG with left Riemann sums), 1 leaves the path free within the box between baseline and
  image. Each target follows its own path (one gradient per target per step); this is the algorithm of
  PAIR's ``saliency`` package (its ``GuidedIG``).
- ``xrai(steps, segments, ...)`` (Kapishnikov et al. 2019, "XRAI: Better Attributions Through Regions"):
  Integrated Gradients from a black and a white baseline (the image's smallest and largest value; PAIR's
  rule: ``steps`` points from the baseline to the image, both ends included, the sum divided by ``steps``),
  averaged and reduced by the largest value over the colour channels; the image over-segmented by
  Felzenszwalb's graph method at six scales, each segment dilated by a disk of 5 pixels
  (``felzenszwalb_segments``, which needs scikit-image), or the ``segments`` you give. Regions are then
  added greedily: at each round, the segment whose pixels not yet covered have the highest mean attribution
  (segments adding fewer than ``min_pixel_diff`` new pixels are dropped) gives that mean to those pixels,
  until no segment is left or more than ``area_threshold`` of the image is covered; the pixels left take
  their own mean. The map is (N, K, H, W), the region's gain at every pixel, as PAIR's ``XRAI`` ("full").
  ``algorithm="fast"`` is PAIR's fast variant: the segments are ordered once by the mean attribution of all
  their pixels (overlaps ignored, ties in the order given), then taken in that order, each giving the mean of
  the pixels it adds (at least ``min_pixel_diff``) to those pixels, over the whole image.

Blur IG and Guided IG are ``GradientMethod`` values: classifier and detector targets alike, attributions
(N, K, H, W, 3), every target of every image of a batch from one compiled program. XRAI runs its IG in one
compiled program, segments the images on the host (scikit-image) and ranks the regions of every target in a
second one.

Example:

```python
import jaxvis
from jaxvis import assets, paths, saliency as sal
from jaxvis.data import shapes

model = jaxvis.load(assets.path("classifier"))
images, labels, _ = shapes.classification_set(0, 2)
targets = sal.class_score(labels[:, None])
for method in (paths.blur_ig(steps=16, max_sigma=8), paths.guided_ig(steps=16), paths.xrai(steps=16)):
    print(method.name, method.attribute(model, images, targets).attributions.shape)   # (2, 1, 64, 64[, 3])
```
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import saliency as sal
from jaxvis.model import cached_on_model

TRUNCATE = 4.0  # the Gaussian kernel is cut at this many sigmas, rounded to the nearest pixel (as scipy.ndimage)
CLOSE = 1e-9  # Guided IG: the L1 distance has reached a step's target within this absolute or relative tolerance
#               (relative: 8 epsilons of the dtype where that is more, i.e. in float32)

# XRAI's segmentation (as PAIR's saliency package): the image scaled to [-1, 1] and resized to 224 x 224,
# Felzenszwalb's method at these scales with a smoothing of 0.8 pixels and segments of at least 150 pixels,
# the labels resized back (nearest) and each segment dilated by a disk of radius 5.
SEGMENT_SCALES = (50, 100, 150, 250, 500, 1200)
SEGMENT_SIGMA = 0.8
SEGMENT_MIN_SIZE = 150
SEGMENT_SIZE = (224, 224)
SEGMENT_DILATION = 5
MASK_BLOCK = 64  # the ranking's segments are padded (with empty masks) to a multiple of this many


# ----------------------------------------------------------------------------------------------- Gaussian blur


def gaussian_kernel(sigma: float, length: int, truncate: float = TRUNCATE) -> np.ndarray:
    """(length,) the one-sided weights w[d] of a sampled Gaussian of std ``sigma`` at offsets d = 0, 1, ...: the
    kernel exp(-d^2 / (2 sigma^2)) over |d| <= r = int(truncate sigma + 0.5), normalised to sum to one over
    -r .. r, zero beyond r; sigma <= 1e-15 is no blur (w = [1, 0, ...]), as scipy.ndimage.gaussian_filter."""
    w = np.zeros(length)
    if sigma <= 1e-15:
        w[0] = 1.0
        return w
    r = int(truncate * float(sigma) + 0.5)
    d = np.arange(-r, r + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * d ** 2)
    phi = phi / phi.sum()
    n = min(r + 1, length)
    w[:n] = phi[r:r + n]
    return w


def _blur_matrix(weights, n: int):
    """(n, n) the blur along one axis of n pixels as a matrix, zero beyond the edges: A[i, j] = w[|i - j|]."""
    d = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    return weights[jnp.asarray(d, jnp.int32)]


def _blur(image, weights):
    """``image`` (H, W, C) blurred along its height, then its width (as scipy orders the axes), by the one-sided
    weights ``weights`` (as long as the larger side)."""
    h, w = image.shape[:2]
    high = jax.lax.Precision.HIGHEST
    out = jnp.einsum("ij,jwc->iwc", _blur_matrix(weights, h), image, precision=high)
    return jnp.einsum("kl,ilc->ikc", _blur_matrix(weights, w), out, precision=high)


def gaussian_blur(image, sigma: float) -> jax.Array:
    """``image`` (H, W, C) blurred by a Gaussian of std ``sigma`` pixels along its height and width, each channel on
    its own, zero beyond the edges, the kernel cut at 4 sigma: scipy.ndimage.gaussian_filter(image, (sigma,
    sigma, 0), mode="constant"), the blur of Blur IG's path."""
    image = jnp.asarray(image)
    w = jnp.asarray(gaussian_kernel(float(sigma), max(image.shape[:2])), image.dtype)
    return _blur(image, w)


def blur_path(steps: int, max_sigma: float, grad_step: float, sqrt: bool) -> tuple[np.ndarray, np.ndarray]:
    """Blur IG's path: (sigma_i for i = 0 .. steps, each step's width sigma_{i+1} - sigma_i) in float64."""
    if sqrt:
        sigmas = [math.sqrt(float(i) * max_sigma / float(steps)) for i in range(steps + 1)]
    else:
        sigmas = [float(i) * max_sigma / float(steps) for i in range(steps + 1)]
    return np.array(sigmas), np.array([sigmas[i + 1] - sigmas[i] for i in range(steps)])


# ----------------------------------------------------------------------------------------------- Blur IG


@dataclasses.dataclass(frozen=True)
class BlurIG(sal.GradientMethod):
    """Blur IG (Xu et al. 2020): integrated gradients along the path of Gaussian blurs (see the module's
    docstring)."""

    steps: int = 100
    max_sigma: float = 50.0
    grad_step: float = 0.01
    sqrt: bool = False
    chunk: int | None = None
    name, counted_by = "blur_ig", "steps"

    def program_key(self):
        return dataclasses.replace(self, chunk=None)

    def combine(self, grad, z, g, key, data, chunk):
        h, w = z.shape[:2]
        sigmas, widths = blur_path(self.steps, self.max_sigma, self.grad_step, self.sqrt)
        length = max(h, w)
        kernels = np.stack([[gaussian_kernel(s, length), gaussian_kernel(s + self.grad_step, length)]
                            for s in sigmas[:-1]])                       # (steps, 2, length)
        kernels, widths = jnp.asarray(kernels, z.dtype), jnp.asarray(widths, z.dtype)

        def step(i):
            here = _blur(z, kernels[i, 0])
            ahead = _blur(z, kernels[i, 1])
            return widths[i] * ((ahead - here) / self.grad_step)[None] * grad(here)

        return -sal._accumulate(step, self.steps, chunk, g)


def blur_ig(steps: int = 100, max_sigma: float = 50.0, grad_step: float = 0.01, sqrt: bool = False,
            chunk: int | None = None) -> BlurIG:
    """Blur IG along ``steps`` blurs from sigma 0 to ``max_sigma`` pixels (PAIR's defaults: 100, 50, a
    difference step of 0.01 pixels, linear spacing)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise sal.SaliencyError(f"blur_ig needs an integer number of steps >= 1, got {steps!r}")
    for name, value in (("max_sigma", max_sigma), ("grad_step", grad_step)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (np.isfinite(value)
                                                                                             and value > 0):
            raise sal.SaliencyError(f"blur_ig's {name} is a positive number of pixels (defaults: max_sigma 50, "
                                    f"grad_step 0.01); got {value!r}")
    if not isinstance(sqrt, (bool, np.bool_)):
        raise sal.SaliencyError(f"blur_ig's sqrt is True (sigmas spaced as square roots) or False; got {sqrt!r}")
    return BlurIG(int(steps), float(max_sigma), float(grad_step), bool(sqrt),
                  sal.check_chunk("blur_ig", chunk, "path points"))


# ----------------------------------------------------------------------------------------------- Guided IG


def _guided_step(x, g, image, baseline, j, steps: int, fraction_index: int, max_dist, l1_total):
    """Step ``j`` (0-based) of one target's Guided IG path: (the point after it, the attribution it adds), from the
    point ``x`` and the target's gradient ``g`` there."""
    dtype = x.dtype
    alpha = (j + 1).astype(dtype) / steps
    alpha_min, alpha_max = jnp.maximum(alpha - max_dist, 0.0), jnp.minimum(alpha + max_dist, 1.0)
    span = image - baseline
    x_min, x_max = baseline + span * alpha_min, baseline + span * alpha_max
    l1_target = l1_total * (1 - (j + 1).astype(dtype) / steps)
    moving = span != 0
    safe = jnp.where(moving, span, 1.0)
    tolerance = max(CLOSE, 8 * float(jnp.finfo(dtype).eps))     # float32 cannot resolve 1e-9 of the distance

    def body(state):
        x, gm, attr, _, it = state
        before = x
        where_on_line = jnp.where(moving, (x - baseline) / safe, alpha_max)
        x = jnp.where(where_on_line < alpha_min, x_min, x)                # features left behind catch up
        l1 = jnp.sum(jnp.abs(x - image))
        close = jnp.abs(l1_target - l1) <= jnp.maximum(tolerance * jnp.maximum(jnp.abs(l1_target), jnp.abs(l1)), CLOSE)
        gm = jnp.where(x == x_max, jnp.inf, gm)                           # features at their limit are out
        threshold = jnp.sort(jnp.abs(gm).ravel())[fraction_index]
        chosen = (jnp.abs(gm) <= threshold) & (gm != jnp.inf)
        room = jnp.sum(jnp.where(chosen, jnp.abs(x - x_max), 0.0))
        gamma = jnp.where(room > 0, jnp.maximum(l1 - l1_target, 0.0) / jnp.where(room > 0, room, 1.0), jnp.inf)
        moved = jnp.where(chosen, jnp.where(gamma > 1, x_max, x + (x_max - x) * gamma), x)
        x = jnp.where(close, x, moved)
        gamma = jnp.where(close, 0.0, gamma)
        return x, gm, attr + (x - before) * g, gamma, it + 1

    # every round but the last puts one feature or more at its limit for good: x.size + 1 rounds bound the loop
    state = (x, g, jnp.zeros_like(x), jnp.asarray(jnp.inf, dtype), jnp.asarray(0, jnp.int32))
    x, _, attr, _, _ = jax.lax.while_loop(lambda s: (s[3] > 1) & (s[4] <= x.size), body, state)
    return x, attr


@dataclasses.dataclass(frozen=True)
class GuidedIG(sal.GradientMethod):
    """Guided Integrated Gradients (Kapishnikov et al. 2021; see the module's docstring)."""

    steps: int = 200
    fraction: float = 0.25
    max_dist: float = 0.02
    baseline: Any = dataclasses.field(default=None, compare=False, hash=False)  # None: zeros
    name = "guided_ig"

    def data(self, z):
        b = self.baseline
        return {"baseline": jnp.zeros_like(z) if b is None else jnp.broadcast_to(jnp.asarray(b, z.dtype), z.shape),
                "max_dist": jnp.full((z.shape[0],), self.max_dist, z.dtype)}

    def program_key(self):
        return dataclasses.replace(self, baseline=None, max_dist=0.0)

    def combine(self, grad, z, g, key, data, chunk):
        k = g.shape[0]
        baseline = data["baseline"]
        index = int(np.floor((z.size - 1) * self.fraction))     # the lower quantile's rank among the features
        l1_total = jnp.sum(jnp.abs(z - baseline))

        def gradients(x):
            """Each target's gradient at its own point x[k]."""
            if k == 1:
                return grad(x[0])
            return jax.vmap(lambda xk, i: grad(xk)[i])(x, jnp.arange(k))

        def step(j, carry):
            x, attr = carry
            x, da = jax.vmap(lambda xk, gk: _guided_step(xk, gk, z, baseline, j, self.steps, index, data["max_dist"],
                                                         l1_total))(x, gradients(x))
            return x, attr + da

        start = jnp.broadcast_to(baseline, (k,) + z.shape)
        return jax.lax.fori_loop(0, self.steps, step, (start, jnp.zeros_like(start)))[1]

    def compute(self, model, z, targets, params, preprocess, seed):
        """Each (image, target) pair runs as an image of its own with one target: the paths differ by target,
        and one gradient per pair and step is all a step needs."""
        n, k = targets.shape
        if k == 1:
            return super().compute(model, z, targets, params, preprocess, seed)
        rows = jax.tree.map(lambda a: np.asarray(a).reshape((n * k, 1) + np.shape(a)[2:]), targets)
        method = self
        if self.baseline is not None:
            b = np.broadcast_to(np.asarray(self.baseline), z.shape)
            method = dataclasses.replace(self, baseline=np.repeat(b, k, axis=0))
        e = sal.GradientMethod.compute(method, model, jnp.repeat(z, k, axis=0), rows, params, preprocess, seed)
        return sal.Explanation(e.attributions.reshape((n, k) + e.attributions.shape[2:]), e.scores.reshape(n, k),
                               self)


def guided_ig(steps: int = 200, fraction: float = 0.25, max_dist: float = 0.02, baseline=None) -> GuidedIG:
    """Guided IG in ``steps`` steps, moving the ``fraction`` of the features with the smallest gradient at a time,
    at most ``max_dist`` (a fraction of the path) off the straight line, from ``baseline`` (zeros by default; a
    value or an array that broadcasts to the images). PAIR's defaults: 200, 0.25, 0.02."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise sal.SaliencyError(f"guided_ig needs an integer number of steps >= 1, got {steps!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.number)) or not 0 < fraction <= 1:
        raise sal.SaliencyError(f"guided_ig's fraction is the share of features moved at a time, in (0, 1] (0.25 by "
                                f"default); got {fraction!r}")
    if isinstance(max_dist, bool) or not isinstance(max_dist, (int, float, np.number)) or not 0 <= max_dist <= 1:
        raise sal.SaliencyError(f"guided_ig's max_dist is how far off the straight line a feature may go, a fraction "
                                f"of the path in [0, 1] (0.02 by default, 0 is IG's line); got {max_dist!r}")
    if baseline is not None and not np.all(np.isfinite(np.asarray(baseline, dtype=float))):
        raise sal.SaliencyError("guided_ig's baseline must be finite: a value or an array that broadcasts to the "
                                "images (None: zeros)")
    return GuidedIG(int(steps), float(fraction), float(max_dist), baseline)


# ----------------------------------------------------------------------------------------------- XRAI


@dataclasses.dataclass(frozen=True)
class EndpointIG(sal.GradientMethod):
    """Integrated Gradients as PAIR's ``saliency`` package sums them, averaged over baselines: for each baseline b,
    (x - b) times the sum of the gradients at b + a (x - b) for a = 0, 1 / (steps - 1), ..., 1 (both ends),
    divided by ``steps``; ``baselines`` (B, H, W, 3) or (N, B, H, W, 3), or None: the image's smallest and largest
    value (XRAI's black and white)."""

    steps: int = 100
    count: int = 2
    baselines: Any = dataclasses.field(default=None, compare=False, hash=False)
    chunk: int | None = None
    name = "endpoint_ig"

    @property
    def points(self) -> int:
        return self.steps * self.count

    def data(self, z):
        if self.baselines is None:
            low = jnp.broadcast_to(jnp.min(z, axis=(1, 2, 3))[:, None, None, None], z.shape)
            high = jnp.broadcast_to(jnp.max(z, axis=(1, 2, 3))[:, None, None, None], z.shape)
            return {"baselines": jnp.stack([low, high], axis=1)}
        return {"baselines": jnp.stack([jnp.broadcast_to(jnp.asarray(b, z.dtype), z.shape) for b in self.baselines],
                                       axis=1)}

    def program_key(self):
        return dataclasses.replace(self, baselines=None, chunk=None)

    def combine(self, grad, z, g, key, data, chunk):
        alphas = jnp.asarray(np.linspace(0, 1, self.steps), z.dtype)

        def point(i):
            base = data["baselines"][i // self.steps]
            return grad(base + alphas[i % self.steps] * (z - base)) * (z - base)[None]

        return sal._accumulate(point, self.points, chunk, g) / self.steps / self.count


def felzenszwalb_segments(image) -> list[np.ndarray]:
    """XRAI's segments of one image (H, W, C), as PAIR's ``saliency`` package makes them: the image scaled to
    [-1, 1] and resized to 224 x 224 (cubic), segmented by Felzenszwalb's graph method (Felzenszwalb &
    Huttenlocher 2004) at the scales ``SEGMENT_SCALES``, each segmentation resized back (nearest), every label of
    every scale a boolean (H, W) mask dilated by a disk of ``SEGMENT_DILATION`` pixels. Needs scikit-image."""
    try:
        from skimage import segmentation
        from skimage.morphology import dilation, disk
        from skimage.transform import resize
    except ImportError:
        raise sal.SaliencyError("XRAI's segments need scikit-image: pip install scikit-image (or pass segments=, "
                                "boolean (H, W) masks per image)") from None
    image = np.asarray(image, np.float64)
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low if high > low else 1.0) * 2.0 - 1.0
    small = resize(scaled, SEGMENT_SIZE, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    footprint = disk(SEGMENT_DILATION)
    masks = []
    for scale in SEGMENT_SCALES:
        labels = segmentation.felzenszwalb(small, scale=scale, sigma=SEGMENT_SIGMA, min_size=SEGMENT_MIN_SIZE)
        labels = resize(labels, image.shape[:2], order=0, preserve_range=True, mode="constant",
                        anti_aliasing=False).astype(int)
        masks += [dilation(labels == v, footprint=footprint) for v in range(labels.min(), labels.max() + 1)]
    return masks


def _the_rest_their_mean(a, out):
    """The region map ``out`` (flat, -inf where no region was ranked) with those pixels given their own mean of
    ``a``, as both of XRAI's rankings end."""
    rest = out == -jnp.inf
    fill = jnp.sum(jnp.where(rest, a, 0.0)) / jnp.maximum(jnp.sum(rest), 1).astype(a.dtype)
    return jnp.where(rest, fill, out)


def _rank_regions(attr, masks, min_pixel_diff: int, area_threshold):
    """XRAI's greedy ranking of one target's map ``attr`` (H, W) over the segments ``masks`` (M, H, W) (empty ones
    are padding): the (H, W) map of each pixel's region gain."""
    a = attr.ravel()
    least = min_pixel_diff.astype(a.dtype)
    m = masks.reshape(masks.shape[0], -1)
    mf = m.astype(a.dtype)
    high = jax.lax.Precision.HIGHEST

    def new(covered):
        """Per segment: how many pixels it adds, and their mean attribution."""
        free = (~covered).astype(a.dtype)
        count = jnp.dot(mf, free, precision=high)
        total = jnp.dot(mf, a * free, precision=high)
        return count, total / jnp.maximum(count, 1.0)

    def going(state):
        covered, _, count, _ = state
        return (jnp.mean(covered.astype(a.dtype)) <= area_threshold) & jnp.any(count >= least)

    def add(state):
        covered, out, count, gain = state
        best = jnp.argmax(jnp.where(count >= least, gain, -jnp.inf))
        added = m[best] & ~covered
        value = jnp.sum(jnp.where(added, a, 0.0)) / jnp.sum(added).astype(a.dtype)
        covered = covered | m[best]
        return (covered, jnp.where(added, value, out)) + new(covered)

    covered = jnp.zeros(a.shape, bool)
    _, out, _, _ = jax.lax.while_loop(going, add, (covered, jnp.full(a.shape, -jnp.inf, a.dtype)) + new(covered))
    return _the_rest_their_mean(a, out).reshape(attr.shape)


def _rank_regions_fast(attr, masks, min_pixel_diff: int, area_threshold):
    """XRAI's fast ranking of one target's map ``attr`` (H, W) over the segments ``masks`` (M, H, W): one order
    of the segments by the mean attribution of all their pixels (empty ones last), then each in turn gives the
    mean of the pixels it adds to them, if it adds at least ``min_pixel_diff``. ``area_threshold`` is unused
    (the fast variant covers the whole image)."""
    del area_threshold
    a = attr.ravel()
    least = min_pixel_diff.astype(a.dtype)
    m = masks.reshape(masks.shape[0], -1)
    count = jnp.sum(m, axis=1).astype(a.dtype)
    total = jnp.dot(m.astype(a.dtype), a, precision=jax.lax.Precision.HIGHEST)
    density = jnp.where(count > 0, total / jnp.maximum(count, 1.0), -jnp.inf)
    order = jnp.argsort(-density, stable=True)  # highest first; equal densities keep the segments' order

    def add(i, state):
        covered, out = state
        segment = m[order[i]]
        added = segment & ~covered
        n_added = jnp.sum(added).astype(a.dtype)
        taken = n_added >= least
        value = jnp.sum(jnp.where(added, a, 0.0)) / jnp.maximum(n_added, 1.0)
        return covered | (segment & taken), jnp.where(added & taken, value, out)

    state = (jnp.zeros(a.shape, bool), jnp.full(a.shape, -jnp.inf, a.dtype))
    _, out = jax.lax.fori_loop(0, m.shape[0], add, state)
    return _the_rest_their_mean(a, out).reshape(attr.shape)


XRAI_ALGORITHMS = {"full": _rank_regions, "fast": _rank_regions_fast}


@functools.partial(jax.jit, static_argnames="algorithm")
def _rank_program(attr, masks, min_pixel_diff, area_threshold, algorithm="full"):
    """Every target's region map of every image: ``attr`` (N, K, H, W), ``masks`` (N, M, H, W)."""
    per_target = jax.vmap(XRAI_ALGORITHMS[algorithm], in_axes=(0, None, None, None))
    return jax.vmap(per_target, in_axes=(0, 0, None, None))(attr, masks, min_pixel_diff, area_threshold)


def _check_algorithm(algorithm, area_threshold):
    if not isinstance(algorithm, str) or algorithm not in XRAI_ALGORITHMS:
        raise sal.SaliencyError(f"xrai's algorithm is 'full' (the greedy ranking) or 'fast' (one order of the "
                                f"segments, overlaps ignored); got {algorithm!r}")
    if algorithm == "fast" and area_threshold != 1:
        raise sal.SaliencyError(f"xrai's fast algorithm ranks regions over the whole image, so it takes no "
                                f"area_threshold (got {area_threshold}); drop it, or use algorithm='full'")


def rank_regions(attributions, segments, min_pixel_diff: int = 50, area_threshold: float = 1.0,
                 algorithm: str = "full") -> np.ndarray:
    """XRAI's region map (N, K, H, W) of ``attributions`` (N, K, H, W) or (N, K, H, W, C), the channels reduced by
    their largest value, over ``segments``: per image, a sequence of boolean (H, W) masks. ``algorithm``: "full"
    (the greedy ranking, up to ``area_threshold`` of the image) or "fast" (PAIR's: one order, overlaps ignored)."""
    _check_algorithm(algorithm, area_threshold)
    attr = np.asarray(attributions)
    if attr.ndim == 5:
        attr = attr.max(axis=-1)
    if attr.ndim != 4:
        raise sal.SaliencyError(f"XRAI ranks attributions shaped (N, K, H, W) or (N, K, H, W, C); got {attr.shape}")
    n, _, h, w = attr.shape
    masks = _masks(segments, n, (h, w))
    a = jnp.asarray(attr)
    a = a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(jnp.float32)
    out = _rank_program(a, jnp.asarray(masks), jnp.asarray(int(min_pixel_diff), jnp.int32),
                        jnp.asarray(area_threshold, a.dtype), algorithm=algorithm)
    return np.asarray(out)


def _masks(segments, n: int, hw) -> np.ndarray:
    """(n, M, H, W) boolean masks from per-image sequences of (H, W) masks, padded with empty ones."""
    if isinstance(segments, np.ndarray) and segments.ndim == 4:
        segments = list(segments)
    if not isinstance(segments, (list, tuple)) or len(segments) != n:
        got = f"{len(segments)} of them" if isinstance(segments, (list, tuple)) else type(segments).__name__
        raise sal.SaliencyError(f"XRAI's segments are one sequence of boolean (H, W) masks per image, for {n} "
                                f"image(s); got {got}")
    per = [np.asarray(s, bool) if len(s) else np.zeros((0,) + tuple(hw), bool) for s in segments]
    bad = [p.shape for p in per if p.ndim != 3]
    if bad:
        raise sal.SaliencyError(f"XRAI's segments of an image are boolean (H, W) masks, stacked (M, H, W) or listed; "
                                f"got shape {bad[0]}")
    bad = [p.shape[1:] for p in per if p.shape[1:] != tuple(hw)]
    if bad:
        raise sal.SaliencyError(f"XRAI's segments must be (H, W) = {tuple(hw)} masks, the images' size; got {bad[0]}")
    most = -(-max(1, max(len(p) for p in per)) // MASK_BLOCK) * MASK_BLOCK   # fewer shapes, fewer compilations
    out = np.zeros((n, most) + tuple(hw), bool)
    for i, p in enumerate(per):
        out[i, :len(p)] = p
    return out


@cached_on_model
def _score_program(model, kind, score, preprocess: bool):
    """The targets' values (N, K) at the images: one forward pass each."""
    forward = sal._forward(model, preprocess)

    def per_image(params, z, targets):
        outputs = forward(params, z)[0]
        return jax.vmap(lambda t: sal.target_value(model, outputs, t, kind, score))(targets)

    return jax.jit(lambda params, z, targets: jax.vmap(lambda zi, ti: per_image(params, zi, ti))(z, targets))


@dataclasses.dataclass(frozen=True)
class XRAI(sal.Method):
    """XRAI (Kapishnikov et al. 2019; see the module's docstring): (N, K, H, W) maps of region gains."""

    steps: int = 100
    segments: Any = dataclasses.field(default=None, compare=False, hash=False)
    baselines: Any = dataclasses.field(default=None, compare=False, hash=False)
    attributions: Any = dataclasses.field(default=None, compare=False, hash=False)
    min_pixel_diff: int = 50
    area_threshold: float = 1.0
    chunk: int | None = None
    algorithm: str = "full"
    name = "xrai"

    def integrated(self) -> EndpointIG:
        """The attribution XRAI ranks: IG from its baselines (black and white by default)."""
        count = 2 if self.baselines is None else len(self.baselines)
        return EndpointIG(self.steps, count, self.baselines, self.chunk)

    def compute(self, model, z, targets, params, preprocess, seed):
        n, k = targets.shape
        hw = tuple(int(v) for v in z.shape[1:3])
        if self.attributions is None:
            e = self.integrated().compute(model, z, targets, params, preprocess, seed)
            attr, scores = e.attributions, e.scores
        else:
            attr = np.asarray(self.attributions)
            if attr.shape[:4] != (n, k) + hw or attr.ndim not in (4, 5):
                raise sal.SaliencyError(f"XRAI's attributions are (N, K, H, W) or (N, K, H, W, C) with (N, K, H, W) = "
                                        f"{(n, k) + hw}, the images' and targets'; got {attr.shape}")
            scores = np.asarray(_score_program(model, targets.kind, targets.score, preprocess)(
                params, z, sal._fields(targets)))
        segments = self.segments
        if segments is None:
            segments = [felzenszwalb_segments(image) for image in np.asarray(z)]
        maps = rank_regions(attr, segments, self.min_pixel_diff, self.area_threshold, self.algorithm)
        return sal.Explanation(maps, scores, self)


def xrai(steps: int = 100, segments=None, baselines=None, attributions=None, min_pixel_diff: int = 50,
         area_threshold: float = 1.0, chunk: int | None = None, algorithm: str = "full") -> XRAI:
    """XRAI with IG of ``steps`` points per baseline (``baselines``: a sequence of values or arrays that broadcast
    to the images; None: the image's smallest and largest value), over ``segments`` (per image, a sequence of
    boolean (H, W) masks; None: ``felzenszwalb_segments``, which needs scikit-image), or ranking the given
    ``attributions`` (N, K, H, W[, C]) instead of computing IG. PAIR's defaults: 100 steps, 50 pixels, 1.0,
    the "full" algorithm ("fast": PAIR's fast variant, one order of the segments, overlaps ignored)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise sal.SaliencyError(f"xrai needs an integer number of IG steps >= 1, got {steps!r}")
    if isinstance(min_pixel_diff, bool) or not isinstance(min_pixel_diff, (int, np.integer)) or min_pixel_diff < 1:
        raise sal.SaliencyError(f"xrai's min_pixel_diff is the fewest new pixels a segment must add, an integer >= 1 "
                                f"(50 by default); got {min_pixel_diff!r}")
    if isinstance(area_threshold, bool) or not isinstance(area_threshold, (int, float, np.number)) \
            or not 0 <= area_threshold <= 1:
        raise sal.SaliencyError(f"xrai's area_threshold is the share of the image to cover with ranked regions, in "
                                f"[0, 1] (1.0 by default); got {area_threshold!r}")
    if baselines is not None and (not isinstance(baselines, (list, tuple)) or not baselines):
        raise sal.SaliencyError(f"xrai's baselines are a non-empty list of values or arrays that broadcast to the "
                                f"images (None: black and white); got {type(baselines).__name__}")
    if baselines is not None:
        baselines = tuple(baselines)
    _check_algorithm(algorithm, area_threshold)
    return XRAI(int(steps), segments, baselines, attributions, int(min_pixel_diff), float(area_threshold),
                sal.check_chunk("xrai", chunk, "path points"), algorithm)
