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
from tiny import tiny_vgg


def float64(model):
    return dataclasses.replace(model, params=jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params),
                               module=model.module.clone(dtype=jnp.float64))


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

    from converters.torch_models import torch_vgg

    vgg = tiny_vgg(0)
    x = np.random.default_rng(5).normal(size=(2, 64, 64, 3))
    net = torch_vgg(vgg).double()
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False
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

    with pytest.raises(sal.SaliencyError, match="takes no rectifier"):
        sal.with_relu(dataclasses.replace(vgg, module=NoRelu()), rules.guided_relu)
