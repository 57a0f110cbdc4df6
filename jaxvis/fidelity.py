"""How faithful an attribution is to the model: ROAD, infidelity and max-sensitivity, for class targets and
detections alike (any ``jaxvis.saliency.Target``).

- ROAD, remove and debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
  Methods"): a share of the pixels is removed in the order of the map, most relevant first (MoRF) or least
  relevant first (LeRF), and each removed pixel is filled by noisy linear imputation: its value is the
  weighted mean of its eight neighbours (weight 1/6 for the four sharing an edge, 1/12 for the four diagonal
  ones, normalised over the neighbours inside the image), solved jointly for all removed pixels with the kept
  ones fixed, plus Gaussian noise of std ``noise``. Filling from the neighbours leaves no trace of the removal's
  shape for the model to read (the paper's class-information leakage), so the curve measures the information
  removed. The curve is the target's probability at each share (the paper's per-image counterpart of the
  model's accuracy on the perturbed set): a faithful map makes the MoRF curve fall fast and the LeRF curve stay
  high.
- Infidelity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations", as Captum defines it):
  for perturbations I drawn from N(0, noise^2) per pixel and channel, the mean over draws of
  (sum(I * a) - (f(x) - f(x - I)))^2, where a is the attribution and f the target's value; with ``normalize``,
  a is first scaled by the beta that minimises that mean, beta = E[(I.a) (f(x) - f(x - I))] / E[(I.a)^2]
  (Captum's: beta = E[(I.a) d] itself when E[(I.a)^2] is zero), so that the measure ignores the map's scale.
- Max-sensitivity (the same paper, Captum's ``sensitivity_max``): the largest, over draws d uniform in
  [-radius, radius] per pixel and channel, of ||a(x + d) - a(x)|| / ||a(x)|| (Euclidean norms over the whole
  attribution of one target; an all-zero a(x) counts as norm 1), where a is the method recomputed at the
  perturbed image.

Every image's draws come from its own key, ``jax.random.split(jax.random.key(seed), N)``, draw i from
``fold_in(key, i)``; each function also takes its draws explicitly (``draws=``) so that another
implementation can be given the same ones. ROAD and infidelity run every target and draw of a batch in one
jitted program (images vmapped, draws in chunks); max-sensitivity runs the method on the perturbed copies as a
batch of images, one call of the method's own program per chunk of draws.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import saliency as sal
from jaxvis.model import cached_on_model

# (row offset, column offset, weight) of the neighbours in ROAD's noisy linear imputation
NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6), (1, -1, 1 / 12),
              (1, 0, 1 / 6), (1, 1, 1 / 12))
ORDERS = ("morf", "lerf")


def _tolerance(dtype) -> float:
    """The imputation's default stopping point: the residual of the linear system relative to its right-hand side
    (1e-10 in float64, 1e-6 in float32)."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-6


# ----------------------------------------------------------------------------------------------- imputation


def _neighbour_sum(u: jax.Array) -> jax.Array:
    """sum over the eight neighbours of their weight times their value, zero beyond the image's edge."""
    h, w = u.shape[:2]
    pad = jnp.pad(u, ((1, 1), (1, 1)) + ((0, 0),) * (u.ndim - 2))
    return sum(wt * pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx, wt in NEIGHBOURS)


def impute(image, removed, *, tol: float | None = None, maxiter: int | None = None) -> jax.Array:
    """ROAD's linear imputation of one image (H, W, C): the pixels where ``removed`` (H, W) is true are replaced by
    the solution of x_p = sum_q w_q x_q / sum_q w_q over p's neighbours q inside the image (w = 1/6 across an
    edge, 1/12 across a corner), removed neighbours being unknowns too and kept ones the image's values; the
    others stay. The system is symmetric and positive definite on the removed pixels; it is solved by conjugate
    gradients preconditioned by the neighbour weights, to a residual of ``tol`` (default 1e-6 in float32, 1e-10
    in float64) relative to the right-hand side, in at most ``maxiter`` steps (default 20 (H + W)). Against a
    sparse direct solve in float64 the result is within 1e-9 of the image's range in float64; in float32 within
    about 2e-5 for scattered pixels and blocks of a few dozen pixels, and within about 6e-4 for a removed region
    200 pixels across (the system's condition number times float32's epsilon), far below ROAD's noise. A region of
    removed pixels that touches no kept one is undetermined; on a connected grid that happens only when every
    pixel is removed, and then every pixel takes the image's mean. Jittable and vmappable."""
    x = jnp.asarray(image)
    h, w = x.shape[:2]
    r = jnp.asarray(removed).astype(x.dtype)[..., None]
    kept = 1 - r
    weight = _neighbour_sum(jnp.ones((h, w, 1), x.dtype))           # the weights of the neighbours that exist
    tol = _tolerance(x.dtype) if tol is None else tol
    maxiter = 20 * (h + w) if maxiter is None else maxiter
    n_kept = jnp.sum(kept)
    # the image's grid is connected, so the system is singular only when every pixel is removed: nothing to solve
    solved = r * (n_kept > 0).astype(x.dtype)

    def system(u):
        return solved * (weight * u - _neighbour_sum(solved * u))

    b = solved * _neighbour_sum(kept * x)
    # from zero: the residual is then b, so that a system whose solution is zero (every kept neighbour zero) stops
    # at once instead of iterating on a residual that underflows
    u, _ = jax.scipy.sparse.linalg.cg(system, b, tol=tol, atol=0.0, maxiter=maxiter, M=lambda v: v / weight)
    return kept * x + r * jnp.where(n_kept > 0, u, jnp.mean(x, axis=(0, 1)))


def _removed(saliency_map, count, sign) -> jax.Array:
    """(H, W) the ``count`` pixels first in the map's order: the highest values (``sign`` -1, MoRF) or the lowest
    (``sign`` 1, LeRF), ties by position."""
    flat = saliency_map.ravel()
    order = jnp.argsort(sign * flat, stable=True)
    rank = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    return (rank < count).reshape(saliency_map.shape)


# ----------------------------------------------------------------------------------------------- checks


def _inputs(model, images, targets, preprocess: bool, what: str):
    z = sal._images(images, preprocess)
    if not isinstance(targets, sal.Target):
        raise sal.SaliencyError(f"{what} takes the targets as a jaxvis.saliency Target (class_score(classes), "
                                f"detection(anchors, classes), ...); got {type(targets).__name__}")
    sal._check(model, z, targets)
    return z


def _maps(maps, z, targets, what: str, channels: bool, preprocess: bool) -> jax.Array:
    m = jnp.asarray(maps.attributions if isinstance(maps, sal.Explanation) else maps)
    n, k = targets.shape
    h, w = z.shape[1:3]
    shapes = [(n, k, h, w)] + ([(n, k, h, w, 3)] if channels else [])
    if tuple(m.shape) not in shapes:
        hint = ("reduce the channels first (Explanation.reduce())" if m.ndim == 5 and not channels
                else f"with preprocess={bool(preprocess)} as here")
        raise sal.SaliencyError(f"{what} needs the maps shaped {' or '.join(map(str, shapes))} (images, targets, the "
                                f"images' pixels{', channels' if channels else ''}); got {tuple(m.shape)}: compute "
                                f"them on the same images and targets, {hint}")
    if channels and m.ndim == 4:
        m = jnp.broadcast_to(m[..., None], m.shape + (3,))             # a map without channels counts for each one
    return m.astype(z.dtype)


def _count(value, what: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise sal.SaliencyError(f"{what}'s {name} is a whole number of at least 1; got {value!r}")
    return int(value)


def _positive(value, what: str, name: str, zero: bool = False) -> float:
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and np.isfinite(value) and (
        value >= 0 if zero else value > 0)
    if not ok:
        raise sal.SaliencyError(f"{what}'s {name} is a finite number {'>= 0' if zero else '> 0'}; got {value!r}")
    return float(value)


def _draws(draws, shape, dtype, what: str, meaning: str) -> jax.Array:
    """``draws`` checked against ``shape``, where the entry "S" (the number of draws) may be any size >= 1."""
    d = jnp.asarray(draws)
    fits = d.ndim == len(shape) and all(s == "S" and n >= 1 or s == n for s, n in zip(shape, d.shape))
    if not fits:
        wanted = "(" + ", ".join(map(str, shape)) + ")"
        raise sal.SaliencyError(f"{what}'s draws are {meaning}, shaped {wanted} (S draws); got {tuple(d.shape)}")
    return d.astype(dtype)


def _chunk(model, n: int, hw, chunk, what: str) -> int:
    if chunk is not None:
        return sal.check_chunk(what, chunk, "perturbed images")
    return sal.chunk_sizes(model, n, 1, hw, backward=False)[0]


# ----------------------------------------------------------------------------------------------- ROAD


@dataclasses.dataclass
class RoadCurve:
    """``scores`` (N, K, F): the target's value with ``fractions[f]`` of the pixels removed and imputed, in
    ``order`` ("morf" or "lerf"); ``clean`` (N, K): on the unperturbed images."""

    fractions: np.ndarray
    scores: np.ndarray
    clean: np.ndarray
    order: str

    @property
    def mean(self) -> np.ndarray:
        """(N, K) the curve's mean over the fractions: low is good for MoRF, high for LeRF."""
        return self.scores.mean(-1)


@cached_on_model
def _road_program(model, kind, score, preprocess: bool, explicit: bool, tol: float, maxiter: int,
                  chunk: int):
    forward = sal._forward(model, preprocess)

    def per_image(params, z, maps, targets, counts, sign, key, noise, draws):
        k, f = maps.shape[0], counts.shape[0]

        def value(x, t):
            return sal.target_value(model, forward(params, x)[0], t, kind, score)

        def one(i):
            ki, fi = i // f, i % f
            t = jax.tree.map(lambda a: a[ki], targets)
            removed = _removed(maps[ki], counts[fi], sign)
            filled = impute(z, removed, tol=tol, maxiter=maxiter)
            eps = draws[ki, fi] if explicit else noise * jax.random.normal(jax.random.fold_in(key, i), z.shape, z.dtype)
            return value(filled + removed[..., None].astype(z.dtype) * eps, t)

        clean = jax.vmap(lambda t: value(z, t))(targets)
        return clean, sal._map(one, jnp.arange(k * f), chunk).reshape(k, f)

    @jax.jit
    def run(params, z, maps, targets, counts, sign, keys, noise, draws):
        return jax.vmap(lambda zi, mi, ti, ki, di: per_image(params, zi, mi, ti, counts, sign, ki, noise, di))(
            z, maps, targets, keys, draws)

    return run


def road(model, images, maps, targets, *, fractions=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
         order: str = "morf", noise: float = 0.01, score=sal.prob, draws=None, seed: int = 0,
         preprocess: bool = True, params=None, tol: float | None = None, maxiter: int | None = None,
         chunk: int | None = None) -> RoadCurve:
    """ROAD curves (see the module's docstring) of every target of a batch.

    Args:
      images: (N, H, W, 3), RGB in [0, 1] (``preprocess=True``: pixels are removed in the image, which then goes
        through the model's preprocessing) or network inputs (``preprocess=False``).
      maps: (N, K, H, W) one map per target on the images' pixels (``Explanation.reduce()``).
      targets: a ``jaxvis.saliency.Target`` of shape (N, K): ``class_score(...)``, ``detection(...)``, ...
      fractions: shares of the pixels removed, each in [0, 1]; ``round(fraction * H * W)`` pixels.
      order: "morf" (most relevant first) or "lerf" (least relevant first).
      noise: std of the Gaussian noise added to the imputed pixels (the paper's 0.01), in the images' units.
      score: what is measured of a class or detection target, a function of (logits, class): its probability
        (``saliency.prob``, the default), ``saliency.logit``, ...; None: the target's own score. Other targets
        are measured as they are defined.
      draws: (N, K, F, H, W, 3) the noise itself, added to the imputed pixels of target k at fraction f (then
        ``noise`` and ``seed`` are unused); None: drawn from the images' keys.
      tol, maxiter: the imputation's stopping rule (``impute``).
    """
    what = "road"
    z = _inputs(model, images, targets, preprocess, what)
    m = _maps(maps, z, targets, what, False, preprocess)
    f = np.asarray(fractions, np.float64)
    if f.ndim != 1 or f.size == 0 or not np.all((f >= 0) & (f <= 1)):
        raise sal.SaliencyError(f"road's fractions are shares of the pixels to remove, a non-empty list of numbers in "
                                f"[0, 1]; got {fractions!r}")
    if order not in ORDERS:
        raise sal.SaliencyError(f"road's order is 'morf' (most relevant first) or 'lerf' (least relevant first); got "
                                f"{order!r}")
    noise = _positive(noise, what, "noise", zero=True)
    if score is not None and not callable(score):
        raise sal.SaliencyError(f"road's score is a function (logits, class) -> scalar (saliency.prob, logit, ...) or "
                                f"None for the target's own; got {score!r}")
    score = targets.score if score is None or targets.kind not in ("class", "detection") else score
    n, k = targets.shape
    h, w = (int(v) for v in z.shape[1:3])
    if draws is not None:
        draws = _draws(draws, (n, k, len(f), h, w, 3), z.dtype, what, "the noise added to each target's imputed "
                       "pixels at each fraction")
    counts = jnp.asarray(np.round(f * h * w).astype(np.int32))
    dtype = z.dtype
    tol = _tolerance(dtype) if tol is None else _positive(tol, what, "tol")
    maxiter = 20 * (h + w) if maxiter is None else _count(maxiter, what, "maxiter")
    chunk = _chunk(model, k * len(f), (h, w), chunk, what)
    fn = _road_program(model, targets.kind, score, bool(preprocess), draws is not None, float(tol), int(maxiter),
                       int(chunk))
    keys = jax.random.split(jax.random.key(seed), n)
    sign = jnp.asarray(-1.0 if order == "morf" else 1.0, dtype)
    clean, values = fn(model.params if params is None else params, z, m, sal._fields(targets), counts, sign, keys,
                       jnp.asarray(noise, dtype), draws)
    return RoadCurve(fractions=f, scores=np.asarray(values), clean=np.asarray(clean), order=order)


# ----------------------------------------------------------------------------------------------- infidelity


@dataclasses.dataclass
class Infidelity:
    """``values`` (N, K): the infidelity of each target's attribution; ``sums`` (N, K, 4): over the draws, of
    (I.a)^2, (I.a) d, d^2 and (I.a - d)^2, d = f(x) - f(x - I); ``samples``: the number of draws."""

    values: np.ndarray
    sums: np.ndarray
    samples: int


@cached_on_model
def _infidelity_program(model, kind, score, preprocess: bool, samples: int, explicit: bool, chunk: int):
    forward = sal._forward(model, preprocess)

    def per_image(params, z, attr, targets, key, noise, draws):
        def values(x):
            outputs = forward(params, x)[0]
            return jax.vmap(lambda t: sal.target_value(model, outputs, t, kind, score))(targets)

        fx = values(z)

        def one(i):
            pert = draws[i] if explicit else noise * jax.random.normal(jax.random.fold_in(key, i), z.shape, z.dtype)
            dot = jnp.sum(attr * pert[None], axis=(1, 2, 3))
            diff = fx - values(z - pert)
            return jnp.stack([dot * dot, dot * diff, diff * diff, (dot - diff) ** 2], axis=-1)

        return fx, sal._accumulate(one, samples, chunk, jnp.zeros((fx.shape[0], 4), z.dtype))

    @jax.jit
    def run(params, z, attr, targets, keys, noise, draws):
        return jax.vmap(lambda zi, ai, ti, ki, di: per_image(params, zi, ai, ti, ki, noise, di))(
            z, attr, targets, keys, draws)

    return run


def infidelity(model, images, maps, targets, *, samples: int = 10, noise: float = 0.003, normalize: bool = False,
               draws=None, seed: int = 0, preprocess: bool = True, params=None,
               chunk: int | None = None) -> Infidelity:
    """Infidelity (see the module's docstring) of every target's attribution, with Gaussian perturbations
    I ~ N(0, noise^2) of every pixel and channel, the target's value measured at x - I.

    Args:
      images: (N, H, W, 3), images (``preprocess=True``) or network inputs (``preprocess=False``), as the
        attributions were computed.
      maps: (N, K, H, W, 3) attributions (``Explanation.attributions``, or the Explanation), or (N, K, H, W) maps,
        which count for every channel: sum(I * a) is then sum over pixels of a times I summed over channels.
      targets: a ``jaxvis.saliency.Target`` of shape (N, K), each measured by its own score (a class target's
        logit by default: the value the attributions explain).
      draws: (N, S, H, W, 3) the perturbations I themselves, S of them per image (then ``samples``, ``noise`` and
        ``seed`` are unused); None: drawn from the images' keys.
    """
    what = "infidelity"
    z = _inputs(model, images, targets, preprocess, what)
    a = _maps(maps, z, targets, what, True, preprocess)
    n, k = targets.shape
    h, w = (int(v) for v in z.shape[1:3])
    if not isinstance(normalize, (bool, np.bool_)):
        raise sal.SaliencyError(f"infidelity's normalize is True or False; got {normalize!r}")
    if draws is not None:
        draws = _draws(draws, (n, "S", h, w, 3), z.dtype, what, "the perturbations I of each image")
        samples = int(draws.shape[1])
    else:
        samples = _count(samples, what, "samples")
        noise = _positive(noise, what, "noise")
    chunk = _chunk(model, samples, (h, w), chunk, what)
    fn = _infidelity_program(model, targets.kind, targets.score, bool(preprocess), samples, draws is not None,
                             int(chunk))
    keys = jax.random.split(jax.random.key(seed), n)
    _, sums = fn(model.params if params is None else params, z, a, sal._fields(targets), keys,
                 jnp.asarray(noise, z.dtype), draws)
    sums = np.asarray(sums)
    if normalize:
        aa, ab, bb = sums[..., 0], sums[..., 1], sums[..., 2]
        beta = ab / np.where(aa == 0, 1.0, aa)
        values = (beta * beta * aa - 2 * beta * ab + bb) / samples
    else:
        values = sums[..., 3] / samples
    return Infidelity(values=values, sums=sums, samples=samples)


# ----------------------------------------------------------------------------------------------- sensitivity


@jax.jit
def _uniform(keys, index, radius, like):
    """(N, len(index), H, W, 3): draw ``index[j]`` of each image, uniform in [-radius, radius]."""
    def one(key):
        return jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), like.shape[1:], like.dtype,
                                                     -radius, radius))(index)

    return jax.vmap(one)(keys)


def _norm(a, axes) -> np.ndarray:
    return np.sqrt(np.sum(np.square(a), axis=axes))


def max_sensitivity(method, model, images, targets, *, samples: int = 10, radius: float = 0.02, draws=None,
                    seed: int = 0, preprocess: bool = True, params=None, reduce=None,
                    chunk: int | None = None) -> np.ndarray:
    """(N, K) max-sensitivity (see the module's docstring) of ``method`` (a ``jaxvis.saliency`` method value:
    ``gradient()``, ``smoothgrad(...)``, ``gradcam(layer)``, ...) for every target: the method is recomputed at
    x + d for draws d uniform in [-radius, radius].

    Args:
      images: (N, H, W, 3), images (``preprocess=True``) or network inputs (``preprocess=False``).
      draws: (N, S, H, W, 3) the perturbations d themselves (then ``samples``, ``radius`` and ``seed`` are
        unused); None: drawn from the images' keys.
      reduce: None compares the attributions as they are; a channel reduction (``saliency.max_abs``, ...)
        compares the reduced maps.
      chunk: draws per call of the method (default: as many as make 32 perturbed images, at least one); each
        call is one run of the method's program on N x chunk images, the last one padded to the same size.

    The perturbed copies are explained with ``seed`` like the images, as a batch of N x chunk images: a random
    method (SmoothGrad) draws its own noise for them from that batch's keys, so its sensitivity includes its
    own randomness.
    """
    what = "max_sensitivity"
    if not isinstance(method, sal.Method):
        raise sal.SaliencyError(f"max_sensitivity recomputes a method value (saliency.gradient(), smoothgrad(...), "
                                f"...) at perturbed images; got {method!r}")
    z = _inputs(model, images, targets, preprocess, what)
    n, k = targets.shape
    h, w = (int(v) for v in z.shape[1:3])
    if draws is not None:
        draws = _draws(draws, (n, "S", h, w, 3), z.dtype, what, "the perturbations d of each image")
        samples = int(draws.shape[1])
    else:
        samples = _count(samples, what, "samples")
        radius = _positive(radius, what, "radius")
    chunk = min(samples, max(1, 32 // n)) if chunk is None else min(samples, _count(chunk, what, "chunk"))

    def explain(x, t):
        e = method.attribute(model, x, t, params=params, preprocess=preprocess, seed=seed)
        return np.asarray(sal.reduce_channels(e.attributions, reduce), np.float64)

    base = explain(z, targets)                                       # (N, K, ...)
    axes = tuple(range(2, base.ndim))
    scale = _norm(base, axes)
    scale = np.where(scale == 0, 1.0, scale)
    keys = jax.random.split(jax.random.key(seed), n)
    repeated = jax.tree.map(lambda v: np.repeat(np.asarray(v), chunk, axis=0), targets)
    worst = np.full((n, k), -np.inf)
    for start in range(0, samples, chunk):
        index = np.minimum(np.arange(start, start + chunk), samples - 1)
        if draws is None:
            d = _uniform(keys, jnp.asarray(index, jnp.int32), jnp.asarray(radius, z.dtype), z)
        else:
            d = draws[:, index]
        moved = explain((z[:, None] + d).reshape((n * chunk,) + z.shape[1:]), repeated)
        moved = moved.reshape((n, chunk) + base.shape[1:])
        ratio = _norm(moved - base[:, None], tuple(range(3, moved.ndim))) / scale[:, None]   # (N, chunk, K)
        worst = np.maximum(worst, ratio.max(axis=1))
    return worst
