"""Backward rules (jaxvis.rules) and the methods built on them, against Captum on the torch twin."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxvis import rules
from jaxvis import saliency as sal
from tiny import float64, tiny_ssd, tiny_vgg, twin, two_detections


def test_the_rules_backward_passes():
    x = jnp.array([-1.0, -0.5, 0.5, 2.0])
    g = jnp.array([1.0, -1.0, -3.0, 4.0])
    for relu, want in ((rules.guided_relu, [0.0, 0.0, 0.0, 4.0]), (rules.deconv_relu, [1.0, 0.0, 0.0, 4.0])):
        y, vjp = jax.vjp(relu, x)
        np.testing.assert_array_equal(y, jnp.maximum(x, 0))
        np.testing.assert_array_equal(vjp(g)[0], want)


@pytest.mark.parametrize("name", ["guided_backprop", "deconvnet"])
def test_guided_backprop_and_deconvnet_equal_captum(name):
    """Two images, two classes each, on the tiny VGG and its torch twin in float64 (Captum's GuidedBackprop and
    Deconvolution: hooks on every nn.ReLU)."""
    from captum.attr import Deconvolution, GuidedBackprop

    vgg = tiny_vgg(0)
    x = np.random.default_rng(5).normal(size=(2, 64, 64, 3))
    net = twin(vgg)
    captum = {"guided_backprop": GuidedBackprop, "deconvnet": Deconvolution}[name](net)
    classes = np.array([[1, 4], [2, 1]])
    want = np.zeros((2, 2, 64, 64, 3))
    for n in range(2):
        for k in range(2):
            xt = torch.tensor(np.ascontiguousarray(x[n:n + 1].transpose(0, 3, 1, 2)), requires_grad=True)
            with warnings.catch_warnings():   # Captum says it hooks the ReLUs, which is the point
                warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
                a = captum.attribute(xt, target=int(classes[n, k]))
            want[n, k] = a[0].detach().numpy().transpose(1, 2, 0)
    with jax.enable_x64(True):
        m64 = float64(vgg)
        method = {"guided_backprop": sal.guided_backprop(), "deconvnet": sal.deconvnet()}[name]
        got = sal.saliency(m64, x, sal.class_score(classes), method, preprocess=False).attributions
        plain = sal.saliency(m64, x, sal.class_score(classes), preprocess=False).attributions
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    assert np.abs(got - plain).max() > 1e-3 * np.abs(plain).max()       # the rule changes the map


def test_a_rule_passes_through_smoothgrad_and_a_module_without_a_rectifier_is_refused():
    vgg = tiny_vgg(0)
    images = np.random.default_rng(2).random((2, 64, 64, 3), dtype=np.float32)
    t = sal.class_score([[1], [2]])
    guided = sal.guided_backprop().attribute(vgg, images, t).attributions
    smooth = sal.smoothgrad(sal.guided_backprop(), samples=2, noise=0.0).attribute(vgg, images, t).attributions
    np.testing.assert_allclose(smooth, guided, rtol=1e-5, atol=1e-7 * np.abs(guided).max())
    assert not np.allclose(guided, sal.gradient().attribute(vgg, images, t).attributions)

    class NoRelu:
        pass

    with pytest.raises(sal.SaliencyError, match="takes no relu to replace"):
        sal.with_relu(dataclasses.replace(vgg, module=NoRelu()), rules.guided_relu)


def deconvnet_reconstruction(net, x, c):
    """Zeiler & Fergus's DeconvNet run literally on a torch VGG without batch norm (1 image, NCHW float64): the
    forward pass keeps the max-pooling switches; from the one-hot signal of class c back to the input, each
    linear layer applies its transpose (conv_transpose2d with the same filters, W^T), each max-pooling unpools
    through its switches and each rectifier rectifies the signal coming back. Biases take no part."""
    import torch.nn.functional as F

    h, steps = x, []
    for m in net.features:
        if isinstance(m, torch.nn.MaxPool2d):
            size = h.shape[-2:]
            h, idx = F.max_pool2d(h, 2, 2, return_indices=True)
            steps.append(("pool", idx, size))
        else:
            h = m(h)
            steps.append(("conv", m) if isinstance(m, torch.nn.Conv2d) else ("relu", None))
    assert net.avgpool(h).shape == h.shape        # the adaptive pool is the identity at this size
    fc = [m for m in net.classifier if isinstance(m, torch.nn.Linear)]
    s = torch.zeros(1, fc[-1].out_features, dtype=x.dtype)
    s[0, c] = 1.0
    for k, layer in enumerate(reversed(fc)):
        s = s @ layer.weight
        s = torch.relu(s) if k < len(fc) - 1 else s   # the rectifiers after the first two dense layers
    s = torch.relu(s.view(h.shape))                   # the last block's rectifier sits before its pooling
    for kind, *what in reversed(steps):
        if kind == "pool":
            s = F.max_unpool2d(s, what[0], 2, 2, output_size=what[1])
        elif kind == "relu":
            s = torch.relu(s)
        else:
            s = F.conv_transpose2d(s, what[0].weight, padding=1)
    return s


def test_deconvnet_is_the_gradient_with_the_rectifiers_rule_replaced():
    """Simonyan et al. 2013, section 4: on a network whose rectifiers are followed by convolutions or
    max-pooling, the DeconvNet reconstruction equals the gradient with each rectifier passing the positive part
    of the signal coming back instead of masking it by the forward input. The reconstruction is run literally
    (transposed filters, unpooling by the switches) on the tiny VGG's twin, the rule-swapped gradient in jaxvis."""
    from converters.torch_models import torch_vgg

    vgg = tiny_vgg(3)
    net = torch_vgg(vgg).double()
    x = np.random.default_rng(6).normal(size=(1, 64, 64, 3))
    xt = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with jax.enable_x64(True):
        m64 = float64(vgg)
        for c in (0, 3):
            with torch.no_grad():
                want = deconvnet_reconstruction(net, xt, c)[0].numpy().transpose(1, 2, 0)
            got = sal.saliency(m64, x, sal.class_score([[c]]), sal.deconvnet(), preprocess=False).attributions[0, 0]
            assert np.abs(want).max() > 0
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("name", ["guided_backprop", pytest.param("deconvnet", marks=pytest.mark.slow)])
def test_rules_on_detections_equal_torch_autograd_with_the_rule_in_hooks(name):
    """Two detections of the tiny SSD (SSD300's layout) in float64: jaxvis's rule-swapped gradient of each
    detection's class logit against torch autograd on the twin with the same rule in backward hooks on every
    nn.ReLU (Guided Backprop: relu of the masked gradient; DeconvNet: relu of the gradient coming back)."""
    from torch_ref import torch_ssd

    model = tiny_ssd(0)
    x, anchors, classes = two_detections(model)
    tmodel = torch_ssd(model).double()
    rule = {"guided_backprop": lambda m, gin, gout: (torch.relu(gin[0]),),
            "deconvnet": lambda m, gin, gout: (torch.relu(gout[0]),)}[name]
    hooks = [m.register_full_backward_hook(rule) for m in tmodel.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(hooks) >= 15
    want = np.zeros((1, 2, 300, 300, 3))
    for k, (a, c) in enumerate(zip(anchors[0], classes[0])):
        xt = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), requires_grad=True)
        tmodel.head(list(tmodel.backbone(xt).values()))["cls_logits"][0, a, c].backward()
        want[0, k] = xt.grad[0].numpy().transpose(1, 2, 0)
    for h in hooks:
        h.remove()
    with jax.enable_x64(True):
        m64 = dataclasses.replace(model, params=jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), model.params),
                                  module=model.module.clone(dtype=jnp.float64))
        method = {"guided_backprop": sal.guided_backprop(), "deconvnet": sal.deconvnet()}[name]
        got = sal.saliency(m64, x, sal.detection(anchors, classes), method, preprocess=False).attributions
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_guided_gradcam_equals_captum():
    """Guided Grad-CAM of the tiny VGG's conv4_1 (8 x 8 cells on 64 pixels) against Captum's GuidedGradCam on
    the twin, float64, two images, one class each."""
    from captum.attr import GuidedGradCam

    vgg = tiny_vgg(0)
    x = np.random.default_rng(9).normal(size=(2, 64, 64, 3))
    net = twin(vgg)
    relus = [m for m in net.features if isinstance(m, torch.nn.ReLU)]
    captum = GuidedGradCam(net, relus[4])            # the rectifier after conv4_1, the model's fifth
    classes = np.array([[3], [1]])
    want = np.zeros((2, 1, 64, 64, 3))
    for n in range(2):
        xt = torch.tensor(np.ascontiguousarray(x[n:n + 1].transpose(0, 3, 1, 2)), requires_grad=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
            want[n, 0] = captum.attribute(xt, target=int(classes[n, 0]))[0].detach().numpy().transpose(1, 2, 0)
    with jax.enable_x64(True):
        got = sal.guided_gradcam("conv4_1").attribute(float64(vgg), x, sal.class_score(classes), preprocess=False)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got.attributions, want, rtol=0, atol=1e-6 * np.abs(want).max())


@pytest.mark.slow  # ten rectifiers in float64: 9 s
def test_deconvnet_and_the_gradient_differ_only_by_the_rule_at_each_rectifier():
    """The paper's section 4, one rectifier at a time: with the DeconvNet rule at rectifier k alone, the map
    differs from the gradient by exactly the plain backward pass, from k's input down to the image, of what the
    rule changes at k: max(s, 0) - s * [x > 0], s the gradient arriving at k, x its input. So the convolutions'
    transposes and the pools' switches pass the signal back as the gradient does; only the rectifier differs."""
    vgg = tiny_vgg(0)
    c = 3
    with jax.enable_x64(True):
        m64 = float64(vgg)
        image = jnp.asarray(np.random.default_rng(9).normal(size=(1, 32, 32, 3)))
        shapes = jax.eval_shape(m64.module.apply, m64.params, image)[1]
        names = [n[:-len("_pre")] for n in shapes if n.endswith("_pre")]  # the rectifiers, in network order
        assert len(names) == 10  # eight convolutions, fc6, fc7

        def logit(im, deconv, probes):
            """Logit c, the rectifier at call i passing back deconv[i] of the DeconvNet rule and 1 - deconv[i]
            of the gradient (its output is relu's either way), with probes[i] added to its output."""
            calls = []

            def relu(v):
                i = len(calls)
                calls.append(i)
                mixed = deconv[i] * rules.deconv_relu(v) + (1 - deconv[i]) * jax.nn.relu(v)
                return mixed + probes[i]
            return m64.module.clone(relu=relu).apply(m64.params, im)[0][0, c]

        zeros = [jnp.zeros(shapes[f"{n}_pre"].shape, jnp.float64) for n in names]
        none = jnp.zeros(len(names))
        arriving = jax.jit(jax.grad(logit, argnums=2))(image, none, zeros)  # the gradient arriving at each
        image_grad = jax.jit(jax.grad(logit))
        gradient = image_grad(image, none, zeros)
        pre = jax.jit(lambda im: [m64.module.apply(m64.params, im)[1][f"{n}_pre"] for n in names])
        inputs, below = jax.vjp(pre, image)
        below = jax.jit(below)
        for k, name in enumerate(names):
            x = inputs[k]
            change = jnp.maximum(arriving[k], 0) - jnp.where(x > 0, arriving[k], 0.0)
            assert float(jnp.abs(change).max()) > 0, name
            cotangent = [change if j == k else z for j, z in enumerate(zeros)]
            one = image_grad(image, none.at[k].set(1.0), zeros)
            np.testing.assert_allclose(one - gradient, below(cotangent)[0], rtol=0,
                                       atol=1e-10 * float(jnp.abs(gradient).max()), err_msg=name)
