"""Attributions to features of an image by perturbation: Shapley value sampling, Kernel SHAP and LIME.

    from jaxvis import saliency as sal, surrogates
    e = sal.explain(model, images, sal.class_score([[3]]), surrogates.kernel_shap(samples=500, cell=16))
    e = sal.explain(ssd, images, sal.detection([[1234]], [[2]]), surrogates.shapley_sampling(samples=8))

The image is cut into features: a grid of ``cell`` x ``cell`` squares from its top-left corner (the last
ones cut at the edges, numbered row by row, as ``saliency.feature_ablation``), or ``features=``, an integer
label map (H, W) or (N, H, W) (superpixels, say) whose labels 0 .. F - 1 name the features. A coalition is a
set of features kept; the others, every colour channel of their pixels, take ``baseline``. With
v(S) the target on the image with only the coalition S kept:

- ``shapley_sampling`` (Strumbelj & Kononenko 2010; Castro et al. 2009): for each of ``samples`` random
  orders of the features, the features are added one at a time to the empty coalition and each is credited
  with the change of v it makes; a feature's attribution is its mean credit over the orders. For every order
  the credits add up to v(all) - v(none) (efficiency), so the mean does too.
- ``kernel_shap`` (Lundberg & Lee 2017): ``samples`` coalitions, the first all features and the second
  none, the rest drawn by choosing a size k from 1 .. F - 1 with probability proportional to
  1 / (k (F - k)) and then k features uniformly; a weighted linear regression with an intercept of v on the
  coalitions' 0/1 vectors, every weight 1 but the full and the empty coalition's (1e6, which nearly pins the
  fit to v(all) and v(none)). Drawing sizes with that probability and weighting the rest alike is the
  Shapley kernel (F - 1) / (C(F, k) k (F - k)) in expectation. The attributions are the coefficients.
- ``lime`` (Ribeiro et al. 2016): ``samples`` coalitions each keeping every feature with probability 1/2,
  weighted by exp(-d^2 / (2 ``kernel_width``^2)), d the cosine distance 1 - cos(image, perturbed image)
  over all pixels; a weighted linear fit with an intercept of v on the coalitions' 0/1 vectors: by default
  a Lasso (L1 penalty ``lasso`` = 0.01 on the weighted squared error over twice the weights' sum, sklearn's
  ``Lasso`` as Captum's Lime fits it, solved by coordinate descent), with ``lasso=0`` the least-squares
  regression of Kernel SHAP (``ridge`` > 0 adds ``ridge`` * |coefficients|^2 to the weighted squared error).

These are the estimators of Captum's ShapleyValueSampling, KernelShap and Lime. The least-squares fits are of
the centred data, solved by an SVD: where the coalitions do not determine the fit (fewer independent
coalitions than features), the smallest coefficients that fit, as numpy's ``lstsq``.

Every perturbed image runs through the model in chunks sized to the free memory inside one compiled program
for every image and target; the random orders or coalitions come from each image's key, or are given
(``draws=``: orders (samples, F) or coalitions (samples, F) of 0 and 1, the same for every image or one set
per image (N, samples, F)). ``attributions`` are (N, K, H, W, 3), each pixel its feature's coefficient on
every channel; ``scores`` the target on the image.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import saliency as sal
from jaxvis.model import cached_on_model

INF_WEIGHT = 1e6  # Kernel SHAP's weight of the full and the empty coalition
LASSO = 0.01  # LIME's L1 penalty by default: Captum's Lime fits sklearn's Lasso(alpha=0.01)
LASSO_TOL, LASSO_SWEEPS = 1e-6, 1000  # its coordinate descent stops when a sweep moves no coefficient by more
# than LASSO_TOL of the largest (sklearn's test on the coefficients, at 1e-4, before its duality gap)
TRACES = 0  # compilations of the surrogate program (tests check that seeds and baselines do not recompile)


@dataclasses.dataclass(frozen=True)
class Surrogate(sal.Method):
    """A perturbation method over features of the image (see the module's docstring): ``samples`` random
    draws (orders or coalitions), the features (``cell`` or ``features``), the ``baseline`` that removed
    features take, explicit ``draws``. A subclass defines how it draws, which coalitions it evaluates and
    how it turns their values into attributions."""

    samples: int = 25
    cell: int = 16
    features: Any = dataclasses.field(default=None, compare=False, hash=False)  # None: the grid of ``cell``
    baseline: float = 0.0
    draws: Any = dataclasses.field(default=None, compare=False, hash=False)  # None: from the images' keys
    chunk: int | None = None

    def data(self, dtype) -> dict:
        """Per-call numbers of the fit (not compiled in)."""
        return {}

    def program_key(self) -> "Surrogate":
        return dataclasses.replace(self, features=None, baseline=0.0, draws=None, chunk=None)

    def evaluations(self, n_features: int) -> int:
        """How many coalitions the method evaluates."""
        return self.samples

    def draw(self, key, n_features: int) -> jax.Array:
        raise NotImplementedError

    def check_draws(self, draws: np.ndarray, n_features: int) -> None:
        raise NotImplementedError

    def check_features(self, n_features: int) -> None:
        """Raises SaliencyError where the method cannot work with ``n_features`` features."""

    def coalition(self, draws, i) -> jax.Array:
        """The i-th coalition evaluated, (F,) bool."""
        return draws[i] > 0

    def fit(self, draws, values, cosines, full, empty, data) -> jax.Array:
        """Coefficients (K, F) from the coalitions' target values (S, K), the cosine similarity of each
        perturbed image to the image (S,), and the targets on the image and on the baseline (K,)."""
        raise NotImplementedError

    def compute(self, model, z, targets, params, preprocess, seed):
        n, h, w = (int(v) for v in z.shape[:3])
        labels, n_features = self._labels(n, h, w)
        self.check_features(n_features)
        draws = self._draws(n, n_features)
        count = self.evaluations(n_features)
        chunk, _ = sal.chunk_sizes(model, count + 2, 1, (h, w), backward=False)
        chunk = int(self.chunk or max(1, chunk // n))  # every image's chunk runs at once
        keys = jax.random.split(jax.random.key(seed), n)
        fn = _surrogate_program(model, targets.kind, targets.score, preprocess, (h, w), self.program_key(),
                                n_features, draws is not None, chunk)
        given = jnp.zeros((n, 0), jnp.int32) if draws is None else jnp.asarray(draws)
        scores, maps = fn(params, z, sal._fields(targets), jnp.asarray(labels), jnp.asarray(self.baseline, z.dtype),
                          given, keys, self.data(z.dtype))
        return sal.Explanation(np.asarray(maps), np.asarray(scores), self)

    def _labels(self, n: int, h: int, w: int) -> tuple[np.ndarray, int]:
        """The feature of every pixel (N, H, W) int32 and the number of features."""
        if self.features is None:
            if self.cell > max(h, w):
                raise sal.SaliencyError(f"{self.name}'s cell of {self.cell} pixels is larger than the {w}x{h} image; "
                                        f"give a cell of at most {max(h, w)} pixels")
            cols = -(-w // self.cell)
            grid = (np.arange(h)[:, None] // self.cell) * cols + np.arange(w)[None, :] // self.cell
            return np.broadcast_to(grid.astype(np.int32), (n, h, w)), int(grid.max()) + 1
        labels = np.asarray(self.features)
        if labels.shape not in ((h, w), (n, h, w)):
            raise sal.SaliencyError(f"{self.name}'s features are a label map shaped like the images, (H, W) = "
                                    f"{(h, w)} or (N, H, W) = {(n, h, w)}; got shape {labels.shape}")
        return np.broadcast_to(labels.astype(np.int32), (n, h, w)), int(labels.max()) + 1

    def _draws(self, n: int, n_features: int) -> np.ndarray | None:
        if self.draws is None:
            return None
        draws = np.asarray(self.draws)
        if draws.shape[-1] != n_features:
            raise sal.SaliencyError(f"{self.name}'s draws have {draws.shape[-1]} features on their last axis, the "
                                    f"images have {n_features}; give draws (samples, {n_features}) or (N, samples, "
                                    f"{n_features})")
        if draws.ndim not in (2, 3) or draws.shape[-2] != self.samples:
            raise sal.SaliencyError(f"{self.name} takes {self.samples} samples and was given draws of shape "
                                    f"{draws.shape}; give (samples, F) or (N, samples, F), or build it with "
                                    f"{self.name}(draws=...), which counts them")
        if draws.ndim == 3 and draws.shape[0] != n:
            raise sal.SaliencyError(f"{self.name}'s draws are one set for every image (samples, F) or one per image "
                                    f"(N, samples, F) with N = {n}; got shape {draws.shape}")
        self.check_draws(draws, n_features)
        return np.broadcast_to(draws.astype(np.int32), (n,) + draws.shape[-2:])


@dataclasses.dataclass(frozen=True)
class ShapleySampling(Surrogate):
    """Shapley value sampling (see the module's docstring): ``samples`` random orders of the features."""

    name = "shapley_sampling"

    def evaluations(self, n_features):
        return self.samples * n_features

    def draw(self, key, n_features):
        keys = jax.random.split(key, self.samples)
        return jax.vmap(lambda k: jax.random.permutation(k, n_features))(keys).astype(jnp.int32)

    def check_draws(self, draws, n_features):
        if not (np.sort(draws, axis=-1) == np.arange(n_features)).all():
            raise sal.SaliencyError(f"shapley_sampling's draws are orders of the features: every row a permutation of "
                                    f"0 .. {n_features - 1}; some row is not")

    def coalition(self, draws, i):
        n_features = draws.shape[-1]
        order = draws[i // n_features]
        rank = jnp.zeros(n_features, jnp.int32).at[order].set(jnp.arange(n_features, dtype=jnp.int32))
        return rank <= i % n_features  # the first (i mod F) + 1 features of the order

    def fit(self, draws, values, cosines, full, empty, data):
        p, n_features = draws.shape
        v = values.reshape(p, n_features, -1)                               # after adding each feature of the order
        before = jnp.concatenate([jnp.broadcast_to(empty, (p, 1, v.shape[-1])), v[:, :-1]], axis=1)
        credit = jnp.zeros((n_features, v.shape[-1]), v.dtype).at[draws.reshape(-1)].add(
            (v - before).reshape(p * n_features, -1))
        return credit.T / p


@dataclasses.dataclass(frozen=True)
class Regression(Surrogate):
    """A weighted linear regression with an intercept of the coalitions' values on their 0/1 vectors."""

    def check_draws(self, draws, n_features):
        if not np.isin(draws, (0, 1)).all():
            raise sal.SaliencyError(f"{self.name}'s draws are coalitions: rows of 0 (feature removed) and 1 (kept); "
                                    f"got values {np.unique(draws)[:5].tolist()}")

    def weights(self, draws, cosines, data):
        raise NotImplementedError

    def fit(self, draws, values, cosines, full, empty, data):
        x = draws.astype(values.dtype)
        w = self.weights(x, cosines, data)
        if "lasso" in data:
            return lasso(x, values, w, data["lasso"], LASSO_TOL, LASSO_SWEEPS).T
        return least_squares(x, values, w, data.get("ridge", 0.0)).T


def least_squares(x, y, w, ridge=0.0) -> jax.Array:
    """Coefficients b (F, K) of the weighted least squares with an intercept, min over b, c of
    sum_s w_s |y_s - x_s b - c|^2 + ridge |b|^2, for x (S, F), y (S, K), w (S,): the weighted means taken
    out, rows scaled by sqrt(w), solved by an SVD (the smallest b where the data do not determine it)."""
    total = jnp.sum(w)
    xm, ym = w @ x / total, w @ y / total
    r = jnp.sqrt(w)[:, None]
    a, b = (x - xm) * r, (y - ym) * r
    n_features = x.shape[1]
    a = jnp.concatenate([a, jnp.sqrt(jnp.asarray(ridge, x.dtype)) * jnp.eye(n_features, dtype=x.dtype)])
    b = jnp.concatenate([b, jnp.zeros((n_features, y.shape[1]), y.dtype)])
    return jnp.linalg.lstsq(a, b)[0]


def lasso(x, y, w, alpha, tol: float = 1e-6, sweeps: int = 1000) -> jax.Array:
    """Coefficients b (F, K) of the weighted Lasso with an intercept, min over b, c of
    sum_s w_s |y_s - x_s b - c|^2 / (2 sum_s w_s) + alpha sum_f |b_f|, for x (S, F), y (S, K), w (S,): sklearn's
    ``Lasso(alpha).fit(x, y, sample_weight=w)`` (which scales the weights to sum to S), each column of y its own
    problem. Cyclic coordinate descent as sklearn's, from zero, on the weighted means taken out and the rows
    scaled by sqrt(w), until a sweep over the features moves no coefficient by more than ``tol`` of the
    largest (or ``sweeps`` sweeps)."""
    total = jnp.sum(w)
    xm, ym = w @ x / total, w @ y / total
    r = jnp.sqrt(w)[:, None]
    a, resid = (x - xm) * r, (y - ym) * r                                  # residual of b = 0
    norms = jnp.sum(a * a, axis=0)
    threshold = alpha * total
    n_features = x.shape[1]

    def update(j, state):
        b, resid, moved = state
        aj = a[:, j]
        rho = aj @ resid + norms[j] * b[j]                                  # (K,)
        new = jnp.where(norms[j] > 0, jnp.sign(rho) * jnp.maximum(jnp.abs(rho) - threshold, 0)
                        / jnp.where(norms[j] > 0, norms[j], 1), 0)
        resid = resid - aj[:, None] * (new - b[j])[None]
        return b.at[j].set(new), resid, jnp.maximum(moved, jnp.max(jnp.abs(new - b[j])))

    def sweep(state):
        b, resid, _, count = state
        b, resid, moved = jax.lax.fori_loop(0, n_features, update, (b, resid, jnp.zeros((), b.dtype)))
        return b, resid, moved, count + 1

    def going(state):
        b, _, moved, count = state
        return (count < sweeps) & ((count == 0) | (moved > tol * jnp.max(jnp.abs(b))))

    b0 = jnp.zeros((n_features, y.shape[1]), y.dtype)
    b, _, _, _ = jax.lax.while_loop(going, sweep, (b0, resid, jnp.zeros((), y.dtype), 0))
    return b


@dataclasses.dataclass(frozen=True)
class KernelShap(Regression):
    """Kernel SHAP (see the module's docstring)."""

    name = "kernel_shap"

    def draw(self, key, n_features):
        size_key, pick_key = jax.random.split(key)
        k = jnp.arange(1, n_features, dtype=jnp.float32)
        sizes = 1 + jax.random.categorical(size_key, -jnp.log(k * (n_features - k)), shape=(self.samples,))
        noise = jax.random.normal(pick_key, (self.samples, n_features))
        rank = jnp.argsort(jnp.argsort(-noise, axis=-1), axis=-1)
        drawn = rank < sizes[:, None]                                       # k features, uniformly
        ends = jnp.stack([jnp.ones(n_features, bool), jnp.zeros(n_features, bool)])
        return jnp.concatenate([ends, drawn])[:self.samples].astype(jnp.int32)

    def check_features(self, n_features):
        if n_features < 2:
            raise sal.SaliencyError(f"kernel_shap draws coalitions of 1 .. F - 1 features and needs at least 2 "
                                    f"features; the image has {n_features}: give a smaller cell or more labels")

    def weights(self, x, cosines, data):
        kept = jnp.sum(x, axis=1)
        return jnp.where((kept == 0) | (kept == x.shape[1]), INF_WEIGHT, 1.0).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class Lime(Regression):
    """LIME with a linear model (see the module's docstring)."""

    kernel_width: float = 1.0
    ridge: float = 0.0
    lasso: float = LASSO
    name = "lime"

    def data(self, dtype):
        data = {"width": jnp.asarray(self.kernel_width, dtype), "ridge": jnp.asarray(self.ridge, dtype)}
        if self.lasso > 0:
            data["lasso"] = jnp.asarray(self.lasso, dtype)
        return data

    def program_key(self):   # the penalties' values are data; whether the fit is a Lasso is the program's
        return dataclasses.replace(super().program_key(), kernel_width=1.0, ridge=0.0, lasso=float(self.lasso > 0))

    def draw(self, key, n_features):
        return jax.random.bernoulli(key, 0.5, (self.samples, n_features)).astype(jnp.int32)

    def weights(self, x, cosines, data):
        return jnp.exp(-(1 - cosines) ** 2 / (2 * data["width"] ** 2))


@cached_on_model
def _surrogate_program(model, kind, score, preprocess: bool, hw, method: Surrogate, n_features: int, given: bool,
                       chunk: int):
    forward = sal._forward(model, preprocess)
    count = method.evaluations(n_features)

    def values(params, x, targets):
        outputs = forward(params, x)[0]
        return jax.vmap(lambda t: sal.target_value(model, outputs, t, kind, score))(targets)

    def per_image(params, z, targets, labels, baseline, draws, key, data):
        if not given:
            draws = method.draw(key, n_features)
        norm = jnp.sqrt(jnp.sum(z * z))

        def one(i):
            # the method's coalitions, then every feature (the image) and none (the baseline)
            kept = jnp.where(i < count, method.coalition(draws, jnp.minimum(i, count - 1)), i == count)[labels]
            zi = jnp.where(kept[..., None], z, baseline)
            cosine = jnp.sum(z * zi) / (jnp.maximum(norm, 1e-8) * jnp.maximum(jnp.sqrt(jnp.sum(zi * zi)), 1e-8))
            return values(params, zi, targets), cosine

        vals, cosines = _evaluate(one, count + 2, chunk)
        full, empty = vals[count], vals[count + 1]
        coef = method.fit(draws, vals[:count], cosines[:count], full, empty, data)    # (K, F)
        maps = coef[:, labels]
        return full, jnp.broadcast_to(maps[..., None], maps.shape + (3,))

    @jax.jit
    def run(params, z, targets, labels, baseline, draws, keys, data):
        global TRACES
        TRACES += 1
        return jax.vmap(lambda zi, ti, li, di, ki: per_image(params, zi, ti, li, baseline, di, ki, data))(
            z, targets, labels, draws, keys)

    return run


def _evaluate(fn, n: int, chunk: int):
    """fn(i) for i < n, stacked: ``chunk`` indices at a time (evened out, the last chunk padded with repeats of
    n - 1) in one loop, so that the model's pass is compiled once."""
    steps = -(-n // max(1, min(chunk, n)))
    size = -(-n // steps)
    idx = jnp.minimum(jnp.arange(steps * size, dtype=jnp.int32), n - 1).reshape(steps, size)
    out = jax.vmap(jax.vmap(fn))(idx) if steps == 1 else jax.lax.map(jax.vmap(fn), idx)
    return jax.tree.map(lambda a: a.reshape((steps * size,) + a.shape[2:])[:n], out)


# ----------------------------------------------------------------------------------------------- constructors


def _check_common(name: str, samples, cell, features, baseline, draws, least: int, default: int) -> int:
    if draws is not None:
        shape = np.shape(draws)
        if len(shape) not in (2, 3) or shape[-2] < least:
            raise sal.SaliencyError(f"{name}'s draws are (samples, F) or (N, samples, F) with at least {least} "
                                    f"sample(s); got shape {shape}")
        if not np.issubdtype(np.asarray(draws).dtype, np.integer) and not np.issubdtype(np.asarray(draws).dtype,
                                                                                       np.bool_):
            raise sal.SaliencyError(f"{name}'s draws are integers (orders or 0/1 coalitions); got dtype "
                                    f"{np.asarray(draws).dtype}")
        if samples is not None and samples != shape[-2]:
            raise sal.SaliencyError(f"{name} was given {samples} samples and draws of {shape[-2]}; leave samples out "
                                    "with draws (their number is the number of samples)")
        samples = shape[-2]
    samples = default if samples is None else samples
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < least:
        raise sal.SaliencyError(f"{name} takes a whole number of samples, at least {least}; got {samples!r}")
    if isinstance(cell, bool) or not isinstance(cell, (int, np.integer)) or cell < 1:
        raise sal.SaliencyError(f"{name}'s cell is a whole number of pixels, at least 1; got {cell!r}")
    if features is not None:
        labels = np.asarray(features)
        if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer) or labels.size == 0 \
                or labels.min() < 0:
            raise sal.SaliencyError(f"{name}'s features are a label map of non-negative integers, (H, W) or (N, H, W) "
                                    f"(superpixels, say); got {labels.dtype} of shape {labels.shape}")
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float, np.integer, np.floating)) \
            or not np.isfinite(baseline):
        raise sal.SaliencyError(f"{name}'s baseline is the finite number removed features take; got {baseline!r}")
    return int(samples)


def shapley_sampling(samples: int | None = None, cell: int = 16, features=None, baseline: float = 0.0, draws=None,
                     chunk: int | None = None) -> ShapleySampling:
    """Shapley value sampling over ``samples`` random orders of the features (25 by default; with ``draws``,
    the orders given: (samples, F) or (N, samples, F) permutations of 0 .. F - 1)."""
    samples = _check_common("shapley_sampling", samples, cell, features, baseline, draws, 1, 25)
    chunk = sal.check_chunk("shapley_sampling", chunk, "perturbed images")
    return ShapleySampling(samples, int(cell), features, float(baseline), draws, chunk)


def kernel_shap(samples: int | None = None, cell: int = 16, features=None, baseline: float = 0.0, draws=None,
                chunk: int | None = None) -> KernelShap:
    """Kernel SHAP over ``samples`` coalitions (500 by default; with ``draws``, the coalitions given: (samples, F)
    or (N, samples, F) of 0 and 1)."""
    samples = _check_common("kernel_shap", samples, cell, features, baseline, draws, 2, 500)
    chunk = sal.check_chunk("kernel_shap", chunk, "perturbed images")
    return KernelShap(samples, int(cell), features, float(baseline), draws, chunk)


def lime(samples: int | None = None, cell: int = 16, features=None, baseline: float = 0.0, kernel_width: float = 1.0,
         lasso: float = LASSO, ridge: float = 0.0, draws=None, chunk: int | None = None) -> Lime:
    """LIME over ``samples`` coalitions (500 by default; with ``draws``, the coalitions given: (samples, F) or
    (N, samples, F) of 0 and 1), weighted by an exponential kernel of width ``kernel_width`` of the cosine
    distance, the interpretable model a weighted linear fit with an intercept: a Lasso of L1 penalty ``lasso``
    (0.01, Captum's default: sklearn's ``Lasso(alpha=0.01)``, see ``lasso``), or with ``lasso=0`` a least-squares
    regression, plain or with the L2 penalty ``ridge``."""
    samples = _check_common("lime", samples, cell, features, baseline, draws, 2, 500)
    chunk = sal.check_chunk("lime", chunk, "perturbed images")
    for what, value, least in (("kernel_width", kernel_width, "> 0"), ("ridge", ridge, ">= 0"),
                               ("lasso", lasso, ">= 0")):
        ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) \
            and np.isfinite(value) and (value > 0 if what == "kernel_width" else value >= 0)
        if not ok:
            raise sal.SaliencyError(f"lime's {what} is a finite number {least}; got {value!r}")
    if lasso > 0 and ridge > 0:
        raise sal.SaliencyError(f"lime fits a Lasso (lasso={lasso}) or a ridge regression (lasso=0, ridge={ridge}), "
                                "not both: give lasso=0 with a ridge")
    return Lime(samples, int(cell), features, float(baseline), draws, chunk, float(kernel_width), float(ridge),
                float(lasso))
