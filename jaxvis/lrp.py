"""Layer-wise Relevance Propagation (Bach et al. 2015, PLOS ONE 10(7): e0130140) for jaxvis's VGG and SSD.

    from jaxvis import lrp, saliency as sal
    e = lrp.lrp_epsilon().attribute(vgg, images, sal.class_score([[3, 17]]), preprocess=False)
    e = lrp.lrp_alphabeta().attribute(ssd, images, sal.detection(anchors, classes), preprocess=False)

The target's value is the relevance of the output unit it reads; each layer hands its output relevance R_j to
its inputs by a rule, from the top down to the network input, whose relevances are the attribution
(N, K, H, W, 3). A rule sees a layer as z_j = sum_i x_i w_ij + b_j (for a convolution or a dense layer; a
batch norm or a pool is the same with its own weights) and sends back R_i = x_i sum_j w_ij s_j with

- ``Epsilon(eps)`` (LRP-epsilon, Bach et al. 2015): s_j = R_j / (z_j + eps sign(z_j)), sign(0) = +1, the
  layer's own weights and bias. Relevance is conserved up to what the bias and eps take:
  sum_i R_i = sum_j R_j (z_j - b_j) / (z_j + eps sign(z_j)), exact with no bias and eps = 0 (LRP-0).
- ``AlphaBeta(alpha, beta, eps)`` (Bach et al. 2015; Montavon et al. 2017, "deep Taylor decomposition", for
  alpha = 1, beta = 0): the positive and the negative weights in two passes, the bias left out,
  R_i = x_i (alpha sum_j w+_ij R_j / (z+_j + eps sign) - beta sum_j w-_ij R_j / (z-_j + eps sign)) with
  z+-_j = sum_i x_i w+-_ij. On inputs >= 0 (every layer behind a rectifier or a pool) w+ x is the sum of the
  positive contributions x_i w_ij; on the network input, whose values take both signs, the split is by the
  weights' sign. alpha - beta = 1 conserves relevance up to eps (exactly with eps = 0).

Every other operation: a rectifier passes relevance through unchanged; a max-pool is the epsilon rule on the
window's maximum (``others``' eps), which hands the relevance to the pixel that won the window (the first maximum
in row-major order, as torch); a batch norm is the epsilon rule (``others``) on its affine map gamma (x - mean) /
sqrt(var + e) + beta; so is VGG's adaptive average pool (``others``; the identity at the model's own input size,
7x7 features of a 224-pixel VGG16, and overlapping means at other sizes, as Captum's rule for
``AdaptiveAvgPool2d``); SSD's L2 norm of conv4_3 (x scale / ||x|| per pixel) is a rescaling that passes relevance
through unchanged, each channel keeping its own (``pass_norm``, the rule of the SSD's ``norm`` field). Through the
preprocessing (``preprocess=True``), the normalisation (value range, mean and std per pixel) passes relevance on
unchanged and the resize to the network's input hands each resized pixel's relevance back to the image's pixels by
its own interpolation weights, which sum to one per resized pixel: the image's relevances sum to the network
input's.

The usual choice per layer (Montavon et al. 2019, "Layer-wise relevance propagation: an overview"; Kohlbrenner
et al. 2020): ``lrp_alphabeta()`` puts alpha-beta on the convolutions, whose relevance it keeps positive and on
the object, and epsilon on the dense layers, whose relevance is sparse and signed; ``lrp_epsilon()`` puts
epsilon everywhere: with eps -> 0 this is gradient x input on a network of rectifiers and max-pools (Ancona et
al. 2018), a larger eps keeps the stronger contributions and absorbs the weak, noisy ones. ``layers``
gives any module its own rule by name (``{"conv1_1": Epsilon(0.1), "fc8": Epsilon(0.0)}``).

Captum's ``LRP`` computes the same with the same rule per layer (``EpsilonRule(eps)`` for ``Epsilon(eps)``,
``Alpha1_Beta0_Rule(set_bias_to_zero=True)`` for ``AlphaBeta(1, 0)`` with eps = 1e-9, its stabiliser; its
default ``Alpha1_Beta0_Rule()`` keeps the bias in the denominator), its default rules on the pools: its
attribution is the relevance of a unit output times the target's value, which is this, the rules being linear
in the relevance. ``tests/test_lrp.py`` checks it on a VGG and its torch twin, and on SSD detections against
torch autograd with the same rules in hooks.

Each method computes every target of every image of a batch in one compiled program: the rules are backward
passes (``jax.custom_vjp``) put on the model's own layers as it runs, its convolutions, dense layers and batch
norms through ``flax.linen.intercept_methods``, its rectifiers and pools through its ``relu`` and ``pool``
fields (``saliency.with_rules``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvis import preprocess as pre
from jaxvis import rules
from jaxvis import saliency as sal
from jaxvis.model import cached_on_model


def _sign(z):
    """sign(z) with sign(0) = +1, so that the stabiliser never cancels a zero denominator."""
    return jnp.where(z >= 0, jnp.ones_like(z), -jnp.ones_like(z))


def _share(apply, variables, x, r, eps: float):
    """sum_j w_ij s_j with s_j = r_j / (z_j + eps sign(z_j)), z = apply(variables, x): the layer's transpose
    applied to the stabilised ratio; a zero denominator (eps = 0) gives s_j = 0, its relevance lost."""
    z, vjp = jax.vjp(lambda u: apply(variables, u), x)
    den = z + eps * _sign(z)
    return vjp(jnp.where(den == 0, 0.0, r / jnp.where(den == 0, 1.0, den)))[0]   # 0/0 (eps = 0, a dead unit): 0


@dataclasses.dataclass(frozen=True)
class Epsilon:
    """LRP-epsilon: R_i = x_i sum_j w_ij R_j / (z_j + eps sign(z_j)) with the layer's weights and bias."""

    epsilon: float = 1e-9

    def relevance(self, apply, variables, x, r):
        return x * _share(apply, variables, x, r, self.epsilon)


@dataclasses.dataclass(frozen=True)
class AlphaBeta:
    """LRP-alpha-beta: the positive weights' share times alpha less the negative weights' share times beta, the
    bias left out; eps stabilises both denominators. For layers with a kernel (convolutions, dense layers)."""

    alpha: float = 1.0
    beta: float = 0.0
    epsilon: float = 1e-9

    def relevance(self, apply, variables, x, r):
        params = dict(variables["params"])
        if "kernel" not in params:
            raise sal.SaliencyError(f"the alpha-beta rule splits a kernel by sign; this layer has only "
                                    f"{sorted(params)}: give it Epsilon(...) in layers=")

        def part(clip):
            kernel = clip(params["kernel"], 0)
            bias = {"bias": jnp.zeros_like(params["bias"])} if "bias" in params else {}
            return _share(apply, {**variables, "params": {**params, "kernel": kernel, **bias}}, x, r, self.epsilon)

        share = self.alpha * part(jnp.maximum)
        if self.beta:
            share = share - self.beta * part(jnp.minimum)
        return x * share


Rule = Epsilon | AlphaBeta


def epsilon_rule(epsilon: float = 1e-9) -> Epsilon:
    """The epsilon rule with stabiliser ``epsilon`` (>= 0; 0 is LRP-0)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.floating, np.integer)) \
            or not math.isfinite(epsilon) or epsilon < 0:
        raise sal.SaliencyError(f"LRP's epsilon is a finite number >= 0 (1e-9 by default, 0.25 for a smoother "
                                f"map); got {epsilon!r}")
    return Epsilon(float(epsilon))


def alphabeta_rule(alpha: float = 1.0, beta: float = 0.0, epsilon: float = 1e-9) -> AlphaBeta:
    """The alpha-beta rule: beta >= 0 and alpha - beta = 1 (so that relevance is conserved), e.g. (1, 0), (2, 1)."""
    numbers = (int, float, np.floating, np.integer)
    if not all(isinstance(v, numbers) and not isinstance(v, bool) and math.isfinite(v) for v in (alpha, beta)) \
            or beta < 0 or abs(alpha - beta - 1) > 1e-9:
        raise sal.SaliencyError(f"LRP's alpha-beta rule needs beta >= 0 and alpha - beta = 1 (alpha=1, beta=0 or "
                                f"alpha=2, beta=1); got alpha={alpha!r}, beta={beta!r}")
    return AlphaBeta(float(alpha), float(beta), epsilon_rule(epsilon).epsilon)


# a rectifier that passes relevance through unchanged
pass_relu = rules.rectifier(lambda x, g: g)


@dataclasses.dataclass(frozen=True)
class EpsilonPool:
    """A model's ``pool`` rule (``saliency.with_rules``): each max-pool with the epsilon rule's backward pass, the
    relevance of each window going to its maximum times max / (max + eps sign(max)); as VGG's ``avgpool`` rule,
    the adaptive average pool's relevance shared among each bin's inputs by their part of its mean."""

    epsilon: float = 1e-9

    def __call__(self, pool):
        eps = self.epsilon

        @jax.custom_vjp
        def pooled(x):
            return pool(x)

        def backward(x, r):
            return (Epsilon(eps).relevance(lambda _, u: pool(u), None, x, r),)

        pooled.defvjp(lambda x: (pool(x), x), backward)
        return pooled


TRACES = 0  # compilations of the batched LRP program (a test checks that another call reuses it)
_LOCAL = threading.local()


@contextlib.contextmanager
def _bare():
    """Module calls made by a rule's backward pass run as they are, not intercepted again."""
    before = getattr(_LOCAL, "bare", False)
    _LOCAL.bare = True
    try:
        yield
    finally:
        _LOCAL.bare = before


def _ruled(rule, module, x, y, variables):
    """``y``, the output of ``module`` (unbound) at ``x``, whose backward pass is ``rule``'s relevance: the
    relevance of y goes to x, none through the layer's own gradient."""

    @jax.custom_vjp
    def layer(x, y, variables):
        return y

    def backward(res, r):
        x, variables = res
        with _bare():
            rx = rule.relevance(module.apply, variables, x, r)
        return rx, jnp.zeros_like(r), jax.tree.map(jnp.zeros_like, variables)

    layer.defvjp(lambda x, y, v: (y, (x, v)), backward)
    return layer(x, y, variables)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _passed(x, y, flip: bool):
    """``y``, an element-wise rescaling of ``x`` of the same shape (the L2 norm, the preprocessing), through
    which relevance passes unchanged (channels reversed back where ``flip``)."""
    return y


def _passed_fwd(x, y, flip):
    return y, None


def _passed_bwd(flip, res, r):
    return (r[..., ::-1] if flip else r), jnp.zeros_like(r)


_passed.defvjp(_passed_fwd, _passed_bwd)


def pass_norm(norm):
    """SSD's normalisation of conv4_3 (its ``norm`` field's rule): an element-wise rescaling of its input, through
    which relevance passes unchanged."""
    return lambda x: _passed(x, norm(x), False)


@dataclasses.dataclass(frozen=True)
class LRP(sal.Method):
    """Layer-wise Relevance Propagation (see the module's docstring): ``conv`` on every convolution, ``dense`` on
    every dense layer, ``layers`` ((name, rule) pairs) on the modules so named, ``others`` (an epsilon rule) on
    max-pools and batch norms. Targets: class scores and detections, scored by their logit (the relevance the
    propagation starts from)."""

    conv: Rule = Epsilon()
    dense: Rule = Epsilon()
    layers: tuple = ()
    others: Epsilon = Epsilon()
    chunk: int | None = None  # targets per backward batch
    name = "lrp"

    def rule_for(self, module) -> Rule:
        """The rule of a convolution, dense layer or batch norm of the model."""
        named = dict(self.layers)
        if module.name in named:
            return named[module.name]
        if isinstance(module, nn.Conv):
            return self.conv
        if isinstance(module, nn.Dense):
            return self.dense
        if isinstance(module, nn.BatchNorm):
            return self.others
        raise sal.SaliencyError(f"LRP has no rule for a {type(module).__name__} ({module.name}); name it in layers= "
                                "with Epsilon(...) if it is linear")

    def compute(self, model, z, targets, params, preprocess, seed):
        if callable(targets.kind) or targets.kind not in ("class", "detection") or targets.score is not sal.logit:
            raise sal.SaliencyError(f"LRP starts from the logit of a class or a detection: give class_score(classes) "
                                    f"or detection(anchors, classes) with score=logit; got a {targets.kind} target "
                                    f"scored by {getattr(targets.score, '__name__', targets.score)}")
        fields = getattr(type(model.module), "__dataclass_fields__", {})
        others = {"norm": pass_norm, "avgpool": EpsilonPool(self.others.epsilon)}   # SSD's, VGG's
        ruled = sal.with_rules(model, relu=pass_relu, pool=EpsilonPool(self.others.epsilon),
                               **{name: rule for name, rule in others.items() if name in fields})
        _check_layers(model, self.layers)
        _, tchunk = sal.chunk_sizes(model, 1, targets.shape[1], tuple(z.shape[1:3]))
        fn = _lrp_program(ruled, targets.kind, dataclasses.replace(self, chunk=None), bool(preprocess),
                          int(self.chunk or tchunk))
        scores, relevance = fn(params, z, sal._fields(targets))
        return sal.Explanation(np.asarray(relevance), np.asarray(scores), self)


def _check_layers(model, layers):
    names = set(model.params.get("params", {}))
    unknown = sorted(name for name, _ in layers if name not in names)
    if unknown:
        raise sal.SaliencyError(f"LRP's layers= names modules of the model; {model.spec.arch} has no {unknown} "
                                f"(it has {sorted(names)})")
    for name, rule in layers:
        if not isinstance(rule, (Epsilon, AlphaBeta)):
            raise sal.SaliencyError(f"layer {name}'s rule must be Epsilon(...) or AlphaBeta(...); got {rule!r}")


def _interceptor(method: LRP):
    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if getattr(_LOCAL, "bare", False):
            return next_fun(*args, **kwargs)
        if context.method_name != "__call__" or not isinstance(module, (nn.Conv, nn.Dense, nn.BatchNorm)):
            return next_fun(*args, **kwargs)
        rule = method.rule_for(module)
        y = next_fun(*args, **kwargs)
        variables = flax.core.unfreeze(module.variables)
        return _ruled(rule, module.clone(parent=None), args[0], y, variables)

    return intercept


@cached_on_model
def _lrp_program(model, kind, method: LRP, preprocess: bool, tchunk: int):
    intercept = _interceptor(method)
    flip = model.spec.channel_order == "BGR"

    def forward(params, z):
        if preprocess:   # the resize hands relevance back by its own weights; the normalisation passes it on
            r = pre.resize_to_input(model.spec, z)
            z = _passed(r, pre.normalize(model.spec, r), flip)
        with nn.intercept_methods(intercept):
            return model.apply(params, z[None])[0]

    def per_image(params, z, targets):
        outputs, vjp = jax.vjp(lambda z_: forward(params, z_), z)

        def one(t):
            value, g_out = jax.value_and_grad(lambda o: sal.target_value(model, o, t, kind, sal.logit))(outputs)
            return value, vjp(g_out)[0] * value

        return sal._map(one, targets, tchunk)

    @jax.jit
    def run(params, z, targets):
        global TRACES
        TRACES += 1
        return jax.vmap(lambda zi, ti: per_image(params, zi, ti))(z, targets)

    return run


def _named(layers) -> tuple:
    if layers is None:
        return ()
    if not isinstance(layers, dict):
        raise sal.SaliencyError(f"layers= maps module names to rules, {{'fc8': Epsilon(0.0)}}; got {layers!r}")
    return tuple(sorted(layers.items()))


def lrp(conv: Rule | None = None, dense: Rule | None = None, layers: dict | None = None,
        others: Epsilon | None = None, chunk: int | None = None) -> LRP:
    """LRP with ``conv`` on the convolutions, ``dense`` on the dense layers (both ``Epsilon()`` by default),
    ``layers`` ({module name: rule}) overriding them by name, ``others`` (``Epsilon()``) on max-pools and batch
    norms."""
    conv, dense, others = conv or Epsilon(), dense or Epsilon(), others or Epsilon()
    for what, rule in (("conv", conv), ("dense", dense)):
        if not isinstance(rule, (Epsilon, AlphaBeta)):
            raise sal.SaliencyError(f"LRP's {what} rule is Epsilon(...) or AlphaBeta(...); got {rule!r}")
    if not isinstance(others, Epsilon):
        raise sal.SaliencyError(f"LRP's rule on pools and batch norms is Epsilon(...); got {others!r}")
    return LRP(conv, dense, _named(layers), others, sal.check_chunk("lrp", chunk, "targets"))


def lrp_epsilon(epsilon: float = 1e-9, layers: dict | None = None, chunk: int | None = None) -> LRP:
    """LRP-epsilon on every convolution and dense layer (``epsilon``: the stabiliser, 1e-9 as Captum's), the
    pools with 1e-9; ``layers`` ({module name: rule}) overrides by name."""
    rule = epsilon_rule(epsilon)
    return lrp(rule, rule, layers, chunk=chunk)


def lrp_alphabeta(alpha: float = 1.0, beta: float = 0.0, epsilon: float = 1e-9, layers: dict | None = None,
                  chunk: int | None = None) -> LRP:
    """The usual choice per layer: alpha-beta (``alpha``, ``beta``) on the convolutions, epsilon (``epsilon``)
    on the dense layers; ``layers`` ({module name: rule}) overrides by name."""
    return lrp(alphabeta_rule(alpha, beta), epsilon_rule(epsilon), layers, chunk=chunk)


__all__ = ["LRP", "Epsilon", "AlphaBeta", "EpsilonPool", "epsilon_rule", "alphabeta_rule", "lrp", "lrp_epsilon",
           "lrp_alphabeta", "pass_relu"]

