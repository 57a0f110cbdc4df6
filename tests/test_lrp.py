"""Layer-wise Relevance Propagation (jaxvis.lrp) against Captum's LRP and a torch reference on the same weights."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxvis import lrp
from jaxvis import saliency as sal
from tiny import float64, tiny_ssd, tiny_vgg, twin, two_detections


def captum_lrp(net, x, classes, set_rules=None):
    """Captum's LRP of each image's classes (x: NHWC numpy), as (N, K, H, W, 3); ``set_rules(net)`` before each
    call (Captum deletes the layers' ``rule`` attributes after every attribution)."""
    from captum.attr import LRP

    want = np.zeros(classes.shape + x.shape[1:])
    for k in range(classes.shape[1]):          # all images at once, each with its own class
        xt = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), requires_grad=True)
        if set_rules is not None:
            set_rules(net)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*backward hook.*")
            warnings.filterwarnings("ignore", category=UserWarning)
            a = LRP(net).attribute(xt, target=[int(c) for c in classes[:, k]])
        want[:, k] = a.detach().numpy().transpose(0, 2, 3, 1)
    return want


@pytest.mark.parametrize("rules", ["epsilon", "alphabeta", pytest.param("batch_norm", marks=pytest.mark.slow),
                                   pytest.param("epsilon_96", marks=pytest.mark.slow)])
def test_lrp_equals_captum_on_the_vgg_twin(rules):
    """Two images, two classes each, float64: Captum's LRP with its default rules (EpsilonRule, eps 1e-9, on every
    convolution, dense layer, batch norm and pool, the adaptive average pool included) against ``lrp_epsilon()``
    (also on a VGG with batch norm, and on 96-pixel images, whose 3 x 3 features the adaptive pool averages into
    2 x 2 in overlapping bins); with Alpha1_Beta0_Rule(set_bias_to_zero=True) on every convolution and
    EpsilonRule(0.01) on the dense layers against ``lrp_alphabeta(epsilon=0.01)``."""
    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule

    vgg = tiny_vgg(0, batch_norm=rules == "batch_norm")
    size = 96 if rules == "epsilon_96" else 64
    x = np.random.default_rng(5).normal(size=(2, size, size, 3))

    def alphabeta(net):
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.rule = Alpha1_Beta0_Rule(set_bias_to_zero=True)
            elif isinstance(m, torch.nn.Linear):
                m.rule = EpsilonRule(0.01)

    classes = np.array([[1, 4], [2, 1]])
    want = captum_lrp(twin(vgg), x, classes, alphabeta if rules == "alphabeta" else None)
    method = lrp.lrp_alphabeta(epsilon=0.01) if rules == "alphabeta" else lrp.lrp_epsilon()
    with jax.enable_x64(True):
        m64 = float64(vgg)
        got = method.attribute(m64, x, sal.class_score(classes), preprocess=False)
        if rules == "alphabeta":
            grad = sal.grad_x_input().attribute(m64, x, sal.class_score(classes), preprocess=False).attributions
            assert np.abs(got.attributions - grad).max() > 0.1 * np.abs(grad).max()    # not gradient x input
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got.attributions, want, rtol=0, atol=1e-6 * np.abs(want).max())
    # LRP-epsilon with eps -> 0 is gradient x input: test_relevance_is_conserved_where_no_bias_and_no_epsilon_take_any


def ruled_forward(tmodel, rules):
    """Forward hooks on the torch twin's layers that give each the backward pass of its LRP rule: a convolution or
    a max-pool sends the relevance r of its output to its input x as x * J'^T (r / (z' + eps sign(z'))), z' and J'
    its output and Jacobian with the rule's weights (``rules[type]``: (weights, bias, eps)); a rectifier passes r
    through. Returns the hook handles."""
    import torch.nn.functional as F

    class Rule(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y, f, eps):
            ctx.save_for_backward(x)
            ctx.f, ctx.eps = f, eps
            return y.clone()

        @staticmethod
        def backward(ctx, r):
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                u = x.detach().requires_grad_()
                z = ctx.f(u)
                sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
                (c,) = torch.autograd.grad(z, u, r / (z + ctx.eps * sign))
            return x * c, None, None, None

    class Pass(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            return y.clone()

        @staticmethod
        def backward(ctx, r):
            return r, None

    def hook(m, inputs, y):
        x = inputs[0]
        if isinstance(m, torch.nn.ReLU):
            return Pass.apply(x, y)
        if isinstance(m, torch.nn.MaxPool2d):
            f = lambda u: F.max_pool2d(u, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode)
            return Rule.apply(x, y, f, 1e-9)
        weights, bias, eps = rules[type(m)]
        f = lambda u: m._conv_forward(u, weights(m.weight), m.bias if bias else None)
        return Rule.apply(x, y, f, eps)

    kinds = (torch.nn.ReLU, torch.nn.MaxPool2d, torch.nn.Conv2d)
    return [m.register_forward_hook(hook) for m in tmodel.modules() if isinstance(m, kinds)], Pass


@pytest.mark.slow
@pytest.mark.parametrize("rules", ["epsilon", "alphabeta"])
def test_lrp_on_detections_equals_torch_with_the_rules_in_hooks(rules):
    """Two detections of the tiny SSD (SSD300's layout) in float64: each detection's class logit's relevance in
    the network input against the torch twin with the same rules in forward hooks (``ruled_forward``) and the L2
    norm of conv4_3 passing relevance through, times the logit. Alpha-beta (1, 0) on every convolution, the heads
    included (an SSD has no dense layer), or epsilon 0.01 on every convolution; the pools with epsilon 1e-9."""
    from torch_ref import torch_ssd

    model = tiny_ssd(0)
    x, anchors, classes = two_detections(model)
    tmodel = torch_ssd(model).double()
    conv = {"epsilon": (lambda w: w, True, 0.01), "alphabeta": (lambda w: w.clamp(min=0), False, 1e-9)}[rules]
    hooks, passed = ruled_forward(tmodel, {torch.nn.Conv2d: conv})
    want = np.zeros((1, 2, 300, 300, 3))
    for k, (a, c) in enumerate(zip(anchors[0], classes[0])):
        xt = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), requires_grad=True)
        net = tmodel.backbone
        h = net.features(xt)
        maps = [passed.apply(h, net.scale_weight.view(1, -1, 1, 1) * torch.nn.functional.normalize(h))]
        for block in net.extra:
            h = block(h)
            maps.append(h)
        value = tmodel.head(maps)["cls_logits"][0, a, c]
        value.backward()
        want[0, k] = (xt.grad[0] * value.detach()).numpy().transpose(1, 2, 0)
    for h in hooks:
        h.remove()
    method = lrp.lrp_epsilon(0.01) if rules == "epsilon" else lrp.lrp_alphabeta()
    with jax.enable_x64(True):
        m64 = float64(model)
        got = method.attribute(m64, x, sal.detection(anchors, classes), preprocess=False)
        grad = sal.grad_x_input().attribute(m64, x, sal.detection(anchors, classes), preprocess=False).attributions
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got.attributions, want, rtol=0, atol=1e-6 * np.abs(want).max())
    assert np.abs(got.attributions - grad).max() > 0.1 * np.abs(grad).max()


def zero_biases(model):
    return dataclasses.replace(model, params=jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.zeros_like(v) if "bias" in jax.tree_util.keystr(p) else v, model.params))


def test_relevance_is_conserved_where_no_bias_and_no_epsilon_take_any():
    """Without biases and with eps = 0 every layer hands on all its relevance: the input's relevances add up to the
    target's logit. With the model's biases the sum falls short by what they take (sum_j R_j b_j / z_j per layer),
    and LRP-0 is gradient x input (Ancona et al. 2018), the rectifiers and pools passing what the gradient passes."""
    vgg = tiny_vgg(2)
    x = np.random.default_rng(3).normal(size=(2, 64, 64, 3))
    classes = sal.class_score(np.array([[0, 7], [3, 3]]))
    zero = lrp.Epsilon(0.0)
    method = lrp.lrp(zero, zero, others=zero)
    with jax.enable_x64(True):
        m64 = float64(vgg)
        bare = method.attribute(m64, x, classes, params=zero_biases(m64).params, preprocess=False)
        traces = lrp.TRACES
        e = method.attribute(m64, x, classes, preprocess=False)
        assert lrp.TRACES == traces                                         # other parameters, the same program
        grad = sal.grad_x_input().attribute(m64, x, classes, preprocess=False).attributions
    assert np.abs(bare.scores).min() > 1e-3
    np.testing.assert_allclose(bare.attributions.sum(axis=(2, 3, 4)), bare.scores, rtol=1e-9)
    gap = e.scores - e.attributions.sum(axis=(2, 3, 4))
    assert np.abs(gap).max() > 1e-3 * np.abs(e.scores).max()          # the biases took some
    np.testing.assert_allclose(e.attributions, grad, rtol=0, atol=1e-9 * np.abs(grad).max())


@pytest.mark.slow
def test_alphabeta_conserves_relevance_without_biases():
    """Alpha-beta (1, 0) and (2, 1) on the convolutions, eps = 0, no biases: the input's relevances add up to the
    logit (the split by the weights' sign conserves on the network input too, whose values take both signs)."""
    vgg = tiny_vgg(2)
    x = np.random.default_rng(3).normal(size=(2, 64, 64, 3))
    classes = sal.class_score(np.array([[0, 7], [3, 3]]))
    zero = lrp.Epsilon(0.0)
    with jax.enable_x64(True):
        m64 = float64(vgg)
        for conv in (lrp.AlphaBeta(1.0, 0.0, 0.0), lrp.AlphaBeta(2.0, 1.0, 0.0)):
            e = lrp.lrp(conv, zero, others=zero).attribute(m64, x, classes, params=zero_biases(m64).params,
                                                           preprocess=False)
            assert np.abs(e.scores).min() > 1e-3
            np.testing.assert_allclose(e.attributions.sum(axis=(2, 3, 4)), e.scores, rtol=1e-9)


def test_bad_arguments_and_models_are_refused():
    vgg = tiny_vgg(0)
    images = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float32)
    t = sal.class_score([[1]])
    for bad in (-1.0, float("nan"), "0.1", True):
        with pytest.raises(sal.SaliencyError, match="epsilon is a finite number >= 0"):
            lrp.lrp_epsilon(bad)
    with pytest.raises(sal.SaliencyError, match="alpha - beta = 1"):
        lrp.lrp_alphabeta(alpha=2.0, beta=0.0)
    with pytest.raises(sal.SaliencyError, match="beta >= 0"):
        lrp.lrp_alphabeta(alpha=0.5, beta=-0.5)
    with pytest.raises(sal.SaliencyError, match="maps module names to rules"):
        lrp.lrp_epsilon(layers=["fc8"])
    with pytest.raises(sal.SaliencyError, match="Epsilon"):
        lrp.lrp(conv="alphabeta")
    with pytest.raises(sal.SaliencyError, match=r"has no \['conv9_9'\]"):
        lrp.lrp_epsilon(layers={"conv9_9": lrp.Epsilon()}).attribute(vgg, images, t)
    with pytest.raises(sal.SaliencyError, match="score=logit"):
        lrp.lrp_epsilon().attribute(vgg, images, sal.class_score([[1]], score=sal.prob))

    class NoRules:
        blocks = ()

    with pytest.raises(sal.SaliencyError, match="takes no pool or relu to replace"):
        lrp.lrp_epsilon().attribute(dataclasses.replace(vgg, module=NoRules()), images, t)


@pytest.mark.slow
def test_rules_by_layer_name_and_relevance_through_the_preprocessing():
    """A rule named for one layer changes the map and not the scores; with images of the model's input size, the
    relevance of each pixel is the relevance of the network input it becomes; images of another size are resized
    by the preprocessing, which hands the relevance back by its interpolation weights: the same total."""
    from jaxvis import preprocess as pre

    vgg = tiny_vgg(0)
    images = np.random.default_rng(4).random((2, 64, 64, 3), dtype=np.float32)
    t = sal.class_score([[1], [2]])
    base = lrp.lrp_epsilon().attribute(vgg, images, t)
    named = lrp.lrp_epsilon(layers={"conv1_1": lrp.AlphaBeta()}).attribute(vgg, images, t)
    inputs = lrp.lrp_epsilon().attribute(vgg, np.asarray(pre.preprocess(vgg.spec, images)), t, preprocess=False)
    top = np.abs(base.attributions).max()
    np.testing.assert_allclose(base.attributions, inputs.attributions, rtol=0, atol=1e-6 * top)
    assert np.abs(named.attributions - base.attributions).max() > 0.1 * top
    np.testing.assert_allclose(named.scores, base.scores)
    other = np.random.default_rng(5).random((2, 96, 80, 3), dtype=np.float32)
    resized = lrp.lrp_epsilon().attribute(vgg, other, t)
    direct = lrp.lrp_epsilon().attribute(vgg, np.asarray(pre.preprocess(vgg.spec, other)), t, preprocess=False)
    assert resized.attributions.shape == (2, 1, 96, 80, 3)
    np.testing.assert_allclose(resized.scores, direct.scores, rtol=1e-5)
    np.testing.assert_allclose(resized.attributions.sum(axis=(2, 3, 4)), direct.attributions.sum(axis=(2, 3, 4)),
                               rtol=1e-4)
