"""DeepLift, DeepLiftShap and GradientShap: attributions that explain the change of a target from a reference.

    from jaxvis import deeplift as dl, saliency as sal
    e = dl.deeplift(baseline=0.0).attribute(model, images, sal.class_score([[3, 17]]))
    e = dl.deeplift_shap(references).attribute(model, images, sal.class_score([[3, 17]]))   # (B, H, W, 3)
    e = dl.gradient_shap(references, samples=32, noise=0.1).attribute(model, images, sal.class_score([[3]]))

- ``deeplift(baseline)`` (Shrikumar et al. 2017, the rescale rule): the attribution of pixel i is
  (x_i - r_i) m_i, where m is the target's gradient with every rectifier's and max-pool's derivative replaced by
  a multiplier, the change of its output over the change of its input between the image x and the reference r
  (``jaxvis.rules.rescale_relu``, ``rescale_pool``); linear layers (convolutions, dense layers, average pooling)
  keep their gradient, and so does every other nonlinearity (SSD's L2 norm of conv4_3). With a logit target the
  attributions add up to S(x) - S(r) (summation to delta). As Captum's DeepLift, the model runs on the pair
  [x; r] and the gradient is that of S(x) + S(r), whose second half carries the signal the max-pool rule sends
  back through the reference's switches. Where Captum 0.9 differs: on a network whose max-pools read a
  rectifier's output directly (VGG, SSD), its hook on the rectifier reads the signal coming back before the
  pool's hook has replaced it, so the pool's rule is lost and the sum misses S(x) - S(r); ``pool=pooling.plain``
  reproduces that (the tests check both against Captum, the rule's version with a copy between each rectifier
  and its pool). Overlapping windows (SSD's 3x3, stride-1 pool5) add their shares where they share a switch,
  where Captum's unpooling keeps one of them; where |x - r| < 1e-10 at a pool's input, each half takes its own
  pool gradient, where Captum takes the first example's of its batch (no difference after a rectifier, whose
  multiplier there is zero unless its own input does not change either).
- ``deeplift_shap(baselines)`` (Lundberg & Lee 2017, DeepSHAP as Captum's DeepLiftShap): DeepLift against each
  reference of a set of B, averaged.
- ``gradient_shap(baselines, samples, noise)`` (Lundberg & Lee 2017, GradientSHAP as Captum's GradientShap):
  the expected value of (x' - b) dS/dx at b + alpha (x' - b), over a reference b drawn uniformly from the set,
  alpha ~ U(0, 1) and x' = x + e, e Gaussian noise of std ``noise`` (in the units of the attributed input:
  image pixels, or network inputs with ``preprocess=False``), estimated with ``samples`` draws from the image's
  key; ``draws=`` passes the draws instead (``{"baseline": (N, S) indices, "alpha": (N, S), "noise": (N, S,
  H, W, 3)}``).

Each returns an ``Explanation`` with attributions (N, K, H, W, 3) and the targets' values at the images, all
targets of all images of a batch from one compiled program; references run in chunks sized to the free
memory. DeepLift needs a model that takes its rules as values (jaxvis's VGG and SSD: ``relu``, ``pool``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import preprocess as pre
from jaxvis import rules
from jaxvis import saliency as sal
from jaxvis.model import cached_on_model


def _references(name: str, value, shape, dtype, what: str) -> jax.Array:
    try:
        return jnp.broadcast_to(jnp.asarray(value, dtype), shape)
    except (TypeError, ValueError):
        raise sal.SaliencyError(f"{name}'s {what} must broadcast to {shape}, got shape {np.shape(value)}; give "
                                "references of the images' size (the network input's with preprocess=False)") from None


@dataclasses.dataclass(frozen=True)
class _Rescaled(sal.Method):
    """DeepLift against ``count`` references per image, averaged; a subclass says how ``references(z)`` (N,
    count, H, W, 3) are made. ``pool``: the max-pools' rule, a function of each pooling function
    (``rules.rescale_pool``; ``pooling.plain`` keeps the pools' gradient)."""

    count = 1
    chunk = None

    def references(self, z) -> jax.Array:
        raise NotImplementedError

    def compute(self, model, z, targets, params, preprocess, seed):
        refs = self.references(z)
        model = sal.with_rules(model, relu=rules.rescale_relu, pool=self.pool)
        n, k = targets.shape
        points, tchunk = sal.chunk_sizes(model, 2 * self.count, k, tuple(z.shape[1:3]))
        chunk = int(self.chunk or max(1, min(points // 2, self.count)))
        fn = _deeplift_program(model, targets.kind, targets.score, preprocess, self.count, chunk, tchunk)
        scores, attributions = fn(params, z, refs, sal._fields(targets))
        return sal.Explanation(np.asarray(attributions), np.asarray(scores), self)


@dataclasses.dataclass(frozen=True)
class DeepLift(_Rescaled):
    """DeepLift with the rescale rule (Shrikumar et al. 2017): (x - r) times the multipliers of the target
    (see the module's docstring); ``baseline`` r is a number or an array broadcast to the images (None: zeros)."""

    baseline: Any = dataclasses.field(default=None, compare=False, hash=False)
    pool: Callable = rules.rescale_pool
    chunk: int | None = None
    name = "deeplift"

    def references(self, z):
        if self.baseline is None:
            return jnp.zeros_like(z)[:, None]
        return _references("deeplift", self.baseline, z.shape, z.dtype, "baseline")[:, None]


@dataclasses.dataclass(frozen=True)
class DeepLiftShap(_Rescaled):
    """DeepLift against each of the references ``baselines`` (B, H, W, 3), averaged (DeepSHAP, Lundberg & Lee
    2017, as Captum's DeepLiftShap); every image uses the whole set."""

    baselines: Any = dataclasses.field(default=None, compare=False, hash=False)
    count: int = 1
    pool: Callable = rules.rescale_pool
    chunk: int | None = None
    name = "deeplift_shap"

    def references(self, z):
        shape = (z.shape[0], self.count) + tuple(z.shape[1:])
        return _references("deeplift_shap", jnp.asarray(self.baselines)[None], shape, z.dtype, "baselines")


@cached_on_model
def _deeplift_program(model, kind, score, preprocess: bool, count: int, chunk: int, tchunk: int):
    """One jitted function: every target's DeepLift attributions of every image against its ``count`` references,
    averaged, and the targets' values at the images. ``model`` carries DeepLift's rules."""

    def network(params, images):
        return model.apply(params, pre.preprocess(model.spec, images) if preprocess else images)[0]

    def half(outputs, i):
        return jax.tree.map(lambda a: a[i:i + 1], outputs)

    def against(params, z, r, targets):
        """The targets' values at z (K,) and (z - r) times their multipliers (K, H, W, 3), from the gradient of
        S(z) + S(r) on the pair [z; r]."""
        outputs, vjp = jax.vjp(lambda pair: network(params, pair), jnp.stack([z, r]))

        def one(t):
            value, g = jax.value_and_grad(lambda o: sal.target_value(model, half(o, 0), t, kind, score))(outputs)
            g_ref = jax.grad(lambda o: sal.target_value(model, half(o, 1), t, kind, score))(outputs)
            return value, vjp(jax.tree.map(jnp.add, g, g_ref))[0][0]

        scores, m = sal._map(one, targets, tchunk)
        return scores, m * (z - r)[None]

    def per_image(params, z, refs, targets):
        if chunk >= count:  # every reference in one pass, no loop to compile
            scores, each = jax.vmap(lambda r: against(params, z, r, targets))(refs)
            return scores[0], jnp.sum(each, axis=0) / count
        outputs = network(params, z[None])
        scores = jax.vmap(lambda t: sal.target_value(model, outputs, t, kind, score))(targets)
        like = jnp.zeros(scores.shape + z.shape, z.dtype)
        return scores, sal._accumulate(lambda j: against(params, z, refs[j], targets)[1], count, chunk, like) / count

    @jax.jit
    def run(params, z, refs, targets):
        return jax.vmap(lambda zi, ri, ti: per_image(params, zi, ri, ti))(z, refs, targets)

    return run


@dataclasses.dataclass(frozen=True)
class GradientShap(sal.GradientMethod):
    """GradientSHAP (Lundberg & Lee 2017, as Captum's GradientShap): the mean over ``samples`` draws of
    (x' - b) dS/dx at b + alpha (x' - b), b drawn uniformly from the ``count`` references ``baselines``, alpha
    ~ U(0, 1), x' = x + e with e ~ N(0, ``noise``^2) per pixel; the draws come from the image's key, or from
    ``draws`` ({"baseline", "alpha", "noise"}, leading axes (N, samples)) when given (``given``)."""

    baselines: Any = dataclasses.field(default=None, compare=False, hash=False)
    samples: int = 25
    noise: float = 0.0
    draws: Any = dataclasses.field(default=None, compare=False, hash=False)
    count: int = 1
    given: bool = False
    chunk: int | None = None
    name, counted_by = "gradient_shap", "samples"

    def data(self, z):
        n = z.shape[0]
        refs = _references("gradient_shap", jnp.asarray(self.baselines)[None], (n, self.count) + tuple(z.shape[1:]),
                           z.dtype, "baselines")
        data = {"baselines": refs, "noise": jnp.full((n,), self.noise, z.dtype)}
        if self.given:
            d = self.draws
            want = {"baseline": (n, self.samples), "alpha": (n, self.samples),
                    "noise": (n, self.samples) + tuple(z.shape[1:])}
            bad = {k: np.shape(d[k]) for k in want if np.shape(d[k]) != want[k]}
            if bad:
                raise sal.SaliencyError(f"gradient_shap's draws must be shaped {want} for these {n} images; got {bad}")
            data["draws"] = {"baseline": jnp.asarray(d["baseline"], jnp.int32),
                             "alpha": jnp.asarray(d["alpha"], z.dtype), "noise": jnp.asarray(d["noise"], z.dtype)}
        return data

    def program_key(self):
        return dataclasses.replace(self, baselines=None, noise=0.0, draws=None, chunk=None)

    def combine(self, grad, z, g, key, data, chunk):
        def sample(i):
            if self.given:
                j, alpha, e = data["draws"]["baseline"][i], data["draws"]["alpha"][i], data["draws"]["noise"][i]
            else:
                kb, ka, ke = jax.random.split(jax.random.fold_in(key, i), 3)
                j = jax.random.randint(kb, (), 0, self.count)
                alpha = jax.random.uniform(ka, (), z.dtype)
                e = data["noise"] * jax.random.normal(ke, z.shape, z.dtype)
            b = data["baselines"][j]
            noisy = z + e
            return grad(alpha * noisy + (1 - alpha) * b) * (noisy - b)[None]

        return sal._accumulate(sample, self.samples, chunk, g) / self.samples


# ------------------------------------------------------------------------------------------------ constructors


def _reference_set(name: str, baselines) -> np.ndarray:
    try:
        refs = np.asarray(baselines, dtype=np.float64 if np.asarray(baselines).dtype == np.float64 else np.float32)
    except (TypeError, ValueError):
        raise sal.SaliencyError(f"{name}'s baselines are an array of references shaped (B, H, W, 3); got "
                                f"{type(baselines).__name__}") from None
    if refs.ndim != 4 or refs.shape[0] < 1 or refs.shape[-1] != 3:
        raise sal.SaliencyError(f"{name}'s baselines are references shaped (B, H, W, 3), B >= 1; got shape "
                                f"{refs.shape}: stack the references along a leading axis")
    if not np.isfinite(refs).all():
        raise sal.SaliencyError(f"{name}'s baselines hold NaN or infinite values; give finite references")
    return refs


def _pool_rule(name: str, pool):
    if not callable(pool):
        raise sal.SaliencyError(f"{name}'s pool is a pooling rule, a function of each max-pooling function "
                                f"(rules.rescale_pool, the default, or pooling.plain); got {pool!r}")
    return pool


def deeplift(baseline=None, pool=rules.rescale_pool, chunk: int | None = None) -> DeepLift:
    """DeepLift (rescale rule) against ``baseline``: None (zeros), a number, or an array broadcast to the images
    ((N, H, W, 3), (H, W, 3), (3,) …). ``pool`` is the max-pools' rule: ``rules.rescale_pool`` (DeepLift's, which
    keeps the summation to S(x) - S(r)), or ``pooling.plain`` (the pools' own gradient, each half through its own
    switches; Captum 0.9's DeepLift computes this on a network whose max-pools read a rectifier's output directly,
    as its hook on the rectifier reads the signal before the pool's rule has changed it)."""
    if baseline is not None:
        b = np.asarray(baseline)
        if not np.issubdtype(b.dtype, np.number) or not np.isfinite(b).all():
            raise sal.SaliencyError(f"deeplift's baseline is None (zeros), a number or an array of finite pixels "
                                    f"broadcast to the images; got {baseline!r}")
    return DeepLift(baseline, _pool_rule("deeplift", pool), sal.check_chunk("deeplift", chunk, "references"))


def deeplift_shap(baselines, pool=rules.rescale_pool, chunk: int | None = None) -> DeepLiftShap:
    """DeepLift against each reference of ``baselines`` (B, H, W, 3), averaged (DeepLiftShap); ``pool`` as in
    ``deeplift``."""
    refs = _reference_set("deeplift_shap", baselines)
    return DeepLiftShap(refs, refs.shape[0], _pool_rule("deeplift_shap", pool),
                        sal.check_chunk("deeplift_shap", chunk, "references"))


def gradient_shap(baselines, samples: int = 25, noise: float = 0.0, draws=None,
                  chunk: int | None = None) -> GradientShap:
    """GradientSHAP against the references ``baselines`` (B, H, W, 3) with ``samples`` draws and input noise of
    std ``noise``; ``draws`` ({"baseline": (N, S) indices, "alpha": (N, S), "noise": (N, S, H, W, 3)}) passes
    the draws instead, S of them (``samples`` and ``noise`` are then read off them)."""
    refs = _reference_set("gradient_shap", baselines)
    if draws is not None:
        if not isinstance(draws, dict) or set(draws) != {"baseline", "alpha", "noise"}:
            got = sorted(draws) if isinstance(draws, dict) else type(draws).__name__
            raise sal.SaliencyError(f"gradient_shap's draws are a dict with 'baseline' (N, S) indices, 'alpha' (N, S) "
                                    f"and 'noise' (N, S, H, W, 3); got {got}")
        index = np.asarray(draws["baseline"])
        if index.ndim != 2 or not np.issubdtype(index.dtype, np.integer) or index.min() < 0 \
                or index.max() >= refs.shape[0]:
            raise sal.SaliencyError(f"gradient_shap's draws['baseline'] are (N, S) integer indices into the "
                                    f"{refs.shape[0]} baselines; got shape {index.shape}, dtype {index.dtype}")
        return GradientShap(refs, int(index.shape[1]), 0.0, draws, refs.shape[0], True,
                            sal.check_chunk("gradient_shap", chunk, "samples"))
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise sal.SaliencyError(f"gradient_shap needs samples >= 1 (draws of a reference, alpha and noise); got "
                                f"{samples!r}")
    if not (isinstance(noise, (int, float, np.floating, np.integer)) and np.isfinite(noise) and noise >= 0):
        raise sal.SaliencyError(f"gradient_shap's noise is the standard deviation of the noise added to the input, "
                                f">= 0 (0: none); got {noise!r}")
    return GradientShap(refs, int(samples), float(noise), None, refs.shape[0], False,
                        sal.check_chunk("gradient_shap", chunk, "samples"))
