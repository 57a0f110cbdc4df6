"""DeepLift, DeepLiftShap and GradientShap (jaxvis.deeplift) against Captum on the tiny VGG's float64 torch twin,
and DeepLift of SSD detections against Captum's DeepLift on the SSD twin."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxvis import deeplift as dl
from jaxvis import rules
from jaxvis import saliency as sal
from jaxvis.models.pooling import plain
from tiny import float64, tiny_vgg, twin


def nchw(x):
    return torch.tensor(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def pools_read_copies(net):
    """Each nn.MaxPool2d of ``net`` reads a copy of its input. Captum's DeepLift hooks a rectifier's output tensor
    to read the signal coming back and a max-pool's input tensor to replace it; when the pool reads the
    rectifier's output itself, both hooks sit on one tensor and the rectifier reads the signal before the pool's
    rule has replaced it, so the pool's rule is lost. A copy in between gives each hook its own tensor."""
    for m in net.modules():
        if isinstance(m, torch.nn.MaxPool2d):
            m.register_forward_pre_hook(lambda module, inputs: (inputs[0].clone(),))
    return net


def captum(make, net, x, classes, **kwargs):
    """Captum's attributions (N, K, H, W, 3) of the class columns of ``classes`` (one call per column)."""
    want = np.zeros(classes.shape + x.shape[1:])
    for k in range(classes.shape[1]):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
            warnings.filterwarnings("ignore", message=".*backward hooks")
            a = make(net).attribute(nchw(x).requires_grad_(), target=[int(c) for c in classes[:, k]], **kwargs)
        want[:, k] = a.detach().numpy().transpose(0, 2, 3, 1)
    return want


def torch_scores(net, x, classes):
    """The twin's logits of ``classes`` (N, K) at the network inputs ``x`` (N, H, W, 3)."""
    with torch.no_grad():
        logits = net(nchw(x)).numpy()
    return np.take_along_axis(logits, classes, axis=1)


def torch_gradient_times(net, x, classes, diff):
    """The twin's gradient of each class at ``x``, times ``diff``: what DeepLift would be with every rule the
    gradient."""
    out = np.zeros(classes.shape + x.shape[1:])
    for k in range(classes.shape[1]):
        xt = nchw(x).requires_grad_()
        net(xt).gather(1, torch.tensor(classes[:, k:k + 1])).sum().backward()
        out[:, k] = xt.grad.numpy().transpose(0, 2, 3, 1) * diff
    return out


def close(got, want):
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_the_rescale_rules_backward_passes():
    """On a batch [input; reference]: the rectifier's multiplier (relu(x) - relu(r)) / (x - r) for both halves
    (the derivative where x = r); the 2 x 2 max-pool's difference of maxima split at max(o, o_ref) and sent back
    through each half's switches, over x - r."""
    x = jnp.array([[-1.0, 2.0, 3.0, 0.5], [1.0, 4.0, 3.0, -0.5]])
    g = jnp.array([[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    y, vjp = jax.vjp(rules.rescale_relu, x)
    np.testing.assert_array_equal(y, jnp.maximum(x, 0))
    np.testing.assert_allclose(vjp(g)[0], g * jnp.asarray([[0.5, 1.0, 1.0, 0.5]]), rtol=1e-12)

    from jaxvis.models.pooling import max_pool_2x2

    pool = rules.rescale_pool(max_pool_2x2)
    assert rules.rescale_pool(max_pool_2x2) is pool                    # one rule per pool (the model is hashed)
    xin = jnp.array([1.0, 5.0, 2.0, 0.0]).reshape(1, 2, 2, 1)
    xref = jnp.array([4.0, 1.0, 0.0, 2.0]).reshape(1, 2, 2, 1)
    out, vjp = jax.vjp(pool, jnp.concatenate([xin, xref]))
    np.testing.assert_array_equal(out.ravel(), [5.0, 4.0])
    back = vjp(jnp.array([3.0, 3.0]).reshape(2, 1, 1, 1))[0]
    # o - o_ref = 1 = (5 - 4) through the input's switch (pixel 1) + (5 - 5) through the reference's (pixel 0)
    want = np.array([0.0, 3.0 * 1.0 / 4.0, 0.0, 0.0])
    np.testing.assert_allclose(back[0].ravel(), want, rtol=1e-6)
    np.testing.assert_allclose(back[1].ravel(), want, rtol=1e-6)
    assert float(jnp.sum(back[0] * (xin - xref)[0])) == pytest.approx(3.0 * (5.0 - 4.0))


@pytest.mark.parametrize("rule", ["rescale", "plain"])
def test_deeplift_equals_captum_and_sums_to_the_change_of_the_target(rule):
    """Two images, two classes each, against a non-zero baseline per image, on the tiny VGG and its float64 twin.
    ``rescale`` (the default): DeepLift's max-pool rule, against Captum's DeepLift with each pool reading a copy
    of its input (``pools_read_copies``), and the attributions add up to S(x) - S(r). ``plain``: the pools' own
    gradient, against Captum's DeepLift on the twin as it is (where the rectifier before each pool reads the
    signal before the pool's rule replaces it), which then does not add up to S(x) - S(r)."""
    from captum.attr import DeepLift

    vgg = tiny_vgg(0)
    x = np.random.default_rng(5).normal(size=(2, 32, 32, 3))
    r = 0.3 * np.random.default_rng(6).normal(size=(2, 32, 32, 3))
    classes = np.array([[1, 4], [2, 1]])
    net = twin(vgg) if rule == "plain" else pools_read_copies(twin(vgg))
    want = captum(DeepLift, net, x, classes, baselines=nchw(r))
    with jax.enable_x64(True):
        method = dl.deeplift(r, pool=plain if rule == "plain" else rules.rescale_pool)
        e = method.attribute(float64(vgg), x, sal.class_score(classes), preprocess=False)
    close(e.attributions, want)
    change = e.scores - torch_scores(net, r, classes)
    total = e.attributions.sum(axis=(2, 3, 4))
    # the rules matter: DeepLift is not the gradient times (x - r)
    assert np.abs(e.attributions - torch_gradient_times(net, x, classes, x - r)).max() > 0.1 * np.abs(want).max()
    if rule == "rescale":
        np.testing.assert_allclose(total, change, rtol=0, atol=1e-9 * np.abs(change).max())
    else:
        assert np.abs(total - change).max() > 1e-3 * np.abs(change).max()


def test_deeplift_shap_equals_captum():
    """Two images, two classes each, three references shared by both, against Captum's DeepLiftShap on the twin
    with copies before the pools; the attributions add up to S(x) minus the references' mean score."""
    from captum.attr import DeepLiftShap

    vgg = tiny_vgg(1)
    x = np.random.default_rng(11).normal(size=(2, 32, 32, 3))
    refs = 0.5 * np.random.default_rng(12).normal(size=(3, 32, 32, 3))
    classes = np.array([[0, 7], [3, 0]])
    net = pools_read_copies(twin(vgg))
    want = captum(DeepLiftShap, net, x, classes, baselines=nchw(refs))
    with jax.enable_x64(True):
        e = dl.deeplift_shap(refs).attribute(float64(vgg), x, sal.class_score(classes), preprocess=False)
    close(e.attributions, want)
    with torch.no_grad():
        ref_logits = net(nchw(refs)).numpy()
    change = e.scores - ref_logits.mean(0)[classes]
    np.testing.assert_allclose(e.attributions.sum(axis=(2, 3, 4)), change, rtol=0, atol=1e-9 * np.abs(change).max())


def test_gradient_shap_equals_captum_with_its_own_draws(monkeypatch):
    """Two images, two classes each, three references, four samples and noise of std 0.2, against Captum's
    GradientShap on the twin; Captum's draws (np.random.choice of the references, torch.normal's noise,
    np.random.uniform's alphas) are recorded and passed to jaxvis. Captum is seeded alike for both class columns,
    so that both columns see the same draws, as jaxvis's targets of an image do."""
    from captum.attr import GradientShap

    vgg = tiny_vgg(0)
    x = np.random.default_rng(3).normal(size=(2, 32, 32, 3))
    refs = 0.5 * np.random.default_rng(4).normal(size=(3, 32, 32, 3))
    classes = np.array([[1, 4], [2, 1]])
    drawn = []

    def recorder(fn):
        def record(*args, **kwargs):
            out = fn(*args, **kwargs)
            drawn.append(out.clone() if isinstance(out, torch.Tensor) else np.array(out))
            return out
        return record

    monkeypatch.setattr(np.random, "choice", recorder(np.random.choice))
    monkeypatch.setattr(np.random, "uniform", recorder(np.random.uniform))
    monkeypatch.setattr(torch, "normal", recorder(torch.normal))

    class Seeded(GradientShap):
        def attribute(self, *args, **kwargs):
            np.random.seed(0)
            torch.manual_seed(0)
            return super().attribute(*args, **kwargs)

    net = twin(vgg)
    want = captum(Seeded, net, x, classes, baselines=nchw(refs), n_samples=4, stdevs=0.2)
    monkeypatch.undo()
    assert len(drawn) == 6
    index, noise, alpha = drawn[:3]
    for a, b in zip(drawn[:3], drawn[3:]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    draws = {"baseline": np.asarray(index).reshape(2, 4), "alpha": np.asarray(alpha).reshape(2, 4),
             "noise": noise.numpy().astype(np.float64).reshape(2, 4, 3, 32, 32).transpose(0, 1, 3, 4, 2)}
    assert np.abs(draws["noise"]).max() > 0.1 and len(set(draws["baseline"].ravel())) > 1
    with jax.enable_x64(True):
        m64 = float64(vgg)
        method = dl.gradient_shap(refs, draws=draws, chunk=3)
        got = method.attribute(m64, x, sal.class_score(classes), preprocess=False).attributions
    assert method.samples == 4
    close(got, want)


def test_gradient_shap_draws_from_the_image_key():
    """Drawn from the seed (float32 images): the same seed gives the same map, another seed another."""
    vgg = tiny_vgg(0)
    images = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
    refs = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype(np.float32)
    t = sal.class_score([[1, 2], [2, 3]])
    method = dl.gradient_shap(refs, samples=2, noise=0.05)
    a = method.attribute(vgg, images, t, seed=1, preprocess=False).attributions
    b = method.attribute(vgg, images, t, seed=1, preprocess=False).attributions
    c = method.attribute(vgg, images, t, seed=2, preprocess=False).attributions
    assert a.shape == (2, 2, 32, 32, 3) and np.isfinite(a).all() and np.abs(a).max() > 0
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3 * np.abs(a).max()


def test_deeplift_is_one_program_per_shape_and_works_through_the_preprocessing():
    vgg = tiny_vgg(0)
    images = np.random.default_rng(2).random((2, 64, 64, 3), dtype=np.float32)
    t = sal.class_score([[1, 2], [2, 3]])
    e = dl.deeplift(0.5).attribute(vgg, images, t)
    e2 = dl.deeplift(np.full((64, 64, 3), 0.5, np.float32)).attribute(vgg, images, t)
    np.testing.assert_array_equal(e.attributions, e2.attributions)
    assert e.attributions.shape == (2, 2, 64, 64, 3) and np.abs(e.attributions).max() > 0
    from jaxvis import preprocess as pre

    logits = jax.jit(lambda im: vgg.apply(vgg.params, pre.preprocess(vgg.spec, im))[0])(np.full_like(images, 0.5))
    change = e.scores - np.take_along_axis(np.asarray(logits), np.array([[1, 2], [2, 3]]), axis=1)
    np.testing.assert_allclose(e.attributions.sum(axis=(2, 3, 4)), change, rtol=0, atol=1e-3 * np.abs(change).max())
    model = sal.with_rules(vgg, relu=rules.rescale_relu, pool=rules.rescale_pool)
    programs = model.__dict__["_cached"]["jaxvis.deeplift._deeplift_program"]
    assert len(programs) == 1
    assert next(iter(programs.values()))._cache_size() == 1


@pytest.mark.slow
def test_deeplift_shap_in_chunks_of_references_equals_one_pass():
    """Three references in chunks of two (a loop over chunks, the last one padded) give the one-pass map."""
    vgg = tiny_vgg(2)
    images = np.random.default_rng(4).normal(size=(2, 32, 32, 3)).astype(np.float32)
    refs = np.random.default_rng(5).normal(size=(3, 32, 32, 3)).astype(np.float32)
    t = sal.class_score([[1, 2], [2, 3]])
    one = dl.deeplift_shap(refs).attribute(vgg, images, t, preprocess=False)
    chunked = dl.deeplift_shap(refs, chunk=2).attribute(vgg, images, t, preprocess=False)
    top = np.abs(one.attributions).max()
    assert top > 0
    np.testing.assert_allclose(chunked.attributions, one.attributions, rtol=0, atol=1e-5 * top)
    np.testing.assert_allclose(chunked.scores, one.scores, rtol=1e-6)


def test_bad_arguments_and_a_model_without_rule_fields_are_refused():
    vgg = tiny_vgg(0)
    x = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(sal.SaliencyError, match=r"baselines are references shaped \(B, H, W, 3\)"):
        dl.deeplift_shap(np.zeros((64, 64, 3)))
    with pytest.raises(sal.SaliencyError, match="samples >= 1"):
        dl.gradient_shap(np.zeros((2, 64, 64, 3)), samples=0)
    with pytest.raises(sal.SaliencyError, match="noise is the standard deviation"):
        dl.gradient_shap(np.zeros((2, 64, 64, 3)), noise=-0.1)
    with pytest.raises(sal.SaliencyError, match="draws are a dict"):
        dl.gradient_shap(np.zeros((2, 64, 64, 3)), draws={"alpha": np.zeros((1, 2))})
    with pytest.raises(sal.SaliencyError, match="integer indices into the 2 baselines"):
        dl.gradient_shap(np.zeros((2, 64, 64, 3)), draws={"baseline": np.full((1, 2), 2), "alpha": np.zeros((1, 2)),
                                                         "noise": np.zeros((1, 2, 64, 64, 3))})
    with pytest.raises(sal.SaliencyError, match="draws must be shaped"):
        dl.gradient_shap(np.zeros((2, 64, 64, 3)), draws={"baseline": np.zeros((2, 2), np.int64),
                                                         "alpha": np.zeros((2, 2)), "noise": np.zeros((2, 2, 8, 8, 3))}
                         ).attribute(vgg, np.zeros((2, 64, 64, 3), np.float32), sal.class_score([[1], [2]]))
    with pytest.raises(sal.SaliencyError, match="baseline is None"):
        dl.deeplift("grey")
    with pytest.raises(sal.SaliencyError, match="pool is a pooling rule"):
        dl.deeplift(pool="max")
    with pytest.raises(sal.SaliencyError, match="chunk is a positive whole number of references"):
        dl.deeplift_shap(np.zeros((2, 64, 64, 3)), chunk=0)
    with pytest.raises(sal.SaliencyError, match=r"baseline must broadcast to \(1, 64, 64, 3\)"):
        dl.deeplift(np.zeros((32, 32, 3))).attribute(vgg, x, sal.class_score([[1]]))

    class NoRules:
        pass

    with pytest.raises(sal.SaliencyError, match="takes no pool or relu to replace"):
        dl.deeplift().attribute(dataclasses.replace(vgg, module=NoRules()), x, sal.class_score([[1]]))


def captum_maxpool_summed(module, inputs, outputs, grad_input, grad_output, eps=1e-10):
    """Captum's max-pool rule with the unpooling written as the pool's own gradient (torch autograd), which adds
    the shares of overlapping windows where they share a switch; Captum's max_unpool2d keeps one of them, which
    only differs for overlapping windows (SSD's 3 x 3, stride-1 pool5)."""
    out, out_ref = outputs.chunk(2)
    g, g_ref = grad_output.chunk(2)
    top = torch.max(out, out_ref)
    with torch.enable_grad():   # hooks run inside the backward pass, where autograd is off
        x = module.input.detach().requires_grad_()
        pooled = torch.nn.functional.max_pool2d(x, module.kernel_size, module.stride, module.padding,
                                                module.dilation, module.ceil_mode)
        spread = torch.autograd.grad(pooled, x, torch.cat([g * (top - out_ref), g_ref * (out - top)]))[0]
    spread = torch.cat(2 * [sum(spread.chunk(2))])
    x_in, x_ref = inputs.chunk(2)
    delta = torch.cat(2 * [x_in - x_ref])
    return torch.where(delta.abs() < eps, grad_input, spread / delta)


@pytest.mark.slow
def test_deeplift_of_detections_equals_captum_on_the_ssd_twin(monkeypatch):
    """Two detections of the tiny SSD (SSD300's layout, 300 x 300) in float64, one image against a non-zero
    reference: jaxvis's DeepLift of each detection's class logit against Captum's DeepLift on the torch twin
    (tests/torch_ref.py) wrapped to return that default box's class logits, each pool reading a copy of its
    input (``pools_read_copies``) and Captum's max-pool rule unpooling by autograd (``captum_maxpool_summed``).
    The L2 norm of conv4_3 is no rectifier nor max-pool: both keep its gradient, as Captum keeps every layer's
    that it has no rule for, so only the detection whose head does not read it sums to the change of its logit."""
    import captum.attr._core.deep_lift as captum_deep_lift
    from captum.attr import DeepLift

    from tiny import tiny_ssd
    from torch_ref import torch_ssd

    model = tiny_ssd(0)
    x = np.random.default_rng(7).normal(size=(1, 300, 300, 3))
    r = 0.3 * np.random.default_rng(8).normal(size=(1, 300, 300, 3))
    per = [h * w * a for (h, w), a in zip(model.feature_sizes, model.spec.config["anchors_per_location"])]
    first = np.concatenate([[0], np.cumsum(per)[:-1]])
    anchors = np.array([[first[0] + 4 * (19 * 38 + 20) + 1, first[2] + 6 * 33 + 2]])
    classes = np.array([[1, 3]])
    net = pools_read_copies(torch_ssd(model).double())
    monkeypatch.setitem(captum_deep_lift.SUPPORTED_NON_LINEAR, torch.nn.MaxPool2d, captum_maxpool_summed)

    class Box(torch.nn.Module):
        def __init__(self, anchor):
            super().__init__()
            self.net, self.anchor = net, anchor

        def forward(self, images):
            return self.net.head(list(self.net.backbone(images).values()))["cls_logits"][:, self.anchor]

    want = np.zeros((1, 2, 300, 300, 3))
    for k, (a, c) in enumerate(zip(anchors[0], classes[0])):
        want[:, k] = captum(DeepLift, Box(int(a)), x, np.array([[c]]), baselines=nchw(r))[:, 0]
    with jax.enable_x64(True):
        m64 = float64(model)
        e = dl.deeplift(r).attribute(m64, x, sal.detection(anchors, classes), preprocess=False)
    with torch.no_grad():
        change = e.scores - np.array([[float(Box(int(a))(nchw(r))[0, c]) for a, c in zip(anchors[0], classes[0])]])
    close(e.attributions, want)
    total = e.attributions.sum(axis=(2, 3, 4))
    # the second box's head reads an extra layer, reached through rectifiers, pools and linear layers only:
    # its attributions add up to the change of its logit; the first box's head reads conv4_3 after the L2 norm,
    # whose gradient is no multiplier, and they do not
    np.testing.assert_allclose(total[0, 1], change[0, 1], rtol=0, atol=1e-9 * np.abs(change).max())
    assert abs(total[0, 0] - change[0, 0]) > 1e-2 * np.abs(change).max()
