"""ROAD, infidelity and max-sensitivity (jaxvis.fidelity): against Captum on the tiny VGG's float64 torch twin, the
imputation against a sparse solve of the paper's system, a ROAD case whose answer is certain, and detections."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch

from jaxvis import fidelity as fd
from jaxvis import saliency as sal
from tiny import float64, tiny_ssd, tiny_vgg


def nchw(a):
    return torch.tensor(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


def sparse_imputation(image, removed):
    """The paper's system written out: for each removed pixel p, sum_q w_q x_p - sum_{removed q} w_q x_q =
    sum_{kept q} w_q v_q over p's neighbours q inside the image (1/6 across an edge, 1/12 across a corner),
    solved by scipy's sparse direct solver."""
    h, w, c = image.shape
    where = np.argwhere(removed)
    index = -np.ones((h, w), int)
    index[removed] = np.arange(len(where))
    a = sp.lil_matrix((len(where), len(where)))
    b = np.zeros((len(where), c))
    steps = [(dy, dx, 1 / 12 if dy and dx else 1 / 6) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    for e, (y, x) in enumerate(where):
        total = 0.0
        for dy, dx, wt in steps:
            yy, xx = y + dy, x + dx
            if 0 <= yy < h and 0 <= xx < w:
                total += wt
                if removed[yy, xx]:
                    a[e, index[yy, xx]] = -wt
                else:
                    b[e] += wt * image[yy, xx]
        a[e, e] = total
    out = np.array(image, np.float64)
    out[removed] = sla.spsolve(a.tocsc(), b)
    return out


def test_imputation_equals_a_sparse_solve():
    """Random pixels (a tenth, half, nearly all) and a block touching two edges, in float32 (to 1e-4 of the
    image's range) and float64 (1e-8); every pixel removed keeps the image's mean; nothing removed is the image."""
    rng = np.random.default_rng(0)
    image = rng.random((48, 40, 3))
    block = np.zeros((48, 40), bool)
    block[20:, :30] = True
    cases = [rng.random((48, 40)) < p for p in (0.1, 0.5, 0.97)] + [block]
    impute = jax.jit(fd.impute)
    for removed in cases:
        want = sparse_imputation(image, removed)
        got = np.asarray(impute(image.astype(np.float32), removed))
        assert np.abs(want - image).max() > 0.1
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(got[~removed], image.astype(np.float32)[~removed])
    with jax.enable_x64(True):
        for removed in cases[1:]:
            np.testing.assert_allclose(np.asarray(jax.jit(fd.impute)(image, removed)),
                                       sparse_imputation(image, removed), rtol=0, atol=1e-8)
    every = np.asarray(impute(image.astype(np.float32), np.ones((48, 40), bool)))
    np.testing.assert_allclose(every, np.broadcast_to(image.mean((0, 1)), image.shape), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(impute(image.astype(np.float32), np.zeros((48, 40), bool))),
                                  image.astype(np.float32))


class Square(nn.Module):
    """Two logits that only the mean m of the 16-pixel square at (8, 8) decides: 12 m - 6 for class 0, 0 for
    class 1 (the white square, m = 1: probability sigmoid(6); an empty one: sigmoid(-6)); the square is its one
    activation (the memory estimate reads the activations' sizes)."""

    @nn.compact
    def __call__(self, x):
        square = x[:, 8:24, 8:24, :]
        m = jnp.mean(square, axis=(1, 2, 3))
        return jnp.stack([12 * m - 6, jnp.zeros_like(m)], axis=-1), {"square": square}


def test_road_ranks_the_right_map_above_a_random_one():
    """A white square on black that only the square's pixels decide: the map on the square empties it first
    (MoRF falls to the other class at once, LeRF keeps it to the end), a random map removes its pixels at
    random and the neighbours fill them back in."""
    model = dataclasses.replace(tiny_vgg(0), module=Square(), params={})
    image = np.zeros((1, 64, 64, 3), np.float32)
    image[0, 8:24, 8:24] = 1.0
    right = np.zeros((1, 1, 64, 64), np.float32)
    right[0, 0, 8:24, 8:24] = 1.0 + np.random.default_rng(0).random((16, 16))
    noisy = np.random.default_rng(1).random((1, 1, 64, 64)).astype(np.float32)
    targets = sal.class_score([[0]])
    curves = {(name, order): fd.road(model, image, m, targets, order=order, preprocess=False)
              for name, m in (("right", right), ("random", noisy)) for order in fd.ORDERS}
    probability = 1 / (1 + np.exp(-6.0))
    for curve in curves.values():
        assert curve.scores.shape == (1, 1, 9) and np.isclose(curve.clean[0, 0], probability)
    assert curves["right", "morf"].scores.max() < 0.01                       # the square is gone from 10 %
    assert curves["random", "morf"].scores[0, 0, :4].min() > 0.9             # random holes are filled back in
    assert curves["right", "morf"].mean[0, 0] < curves["random", "morf"].mean[0, 0] - 0.5
    assert curves["right", "lerf"].scores.min() > 0.99                       # the square stays to 90 %
    assert curves["right", "lerf"].mean[0, 0] > curves["random", "lerf"].mean[0, 0]
    # the noise lands on the imputed pixels only, from the image's key or given; order, noise and fractions are
    # data: one compiled program for all of these
    assert not np.allclose(fd.road(model, image, noisy, targets, noise=0.3, fractions=(0.5, 0.7, 0.2, 0.1, 0.9, 0.3,
                                                                                        0.4, 0.6, 0.8),
                                   preprocess=False).scores[..., 0], curves["random", "morf"].scores[..., 4])
    programs = model.__dict__["_cached"]["jaxvis.fidelity._road_program"]
    assert len(programs) == 1 and next(iter(programs.values()))._cache_size() == 1
    draws = np.zeros((1, 1, 2, 64, 64, 3), np.float32)
    draws[..., 8:24, 8:24, :] = -1.0
    given = fd.road(model, image, right, targets, fractions=(0.0, 0.05), order="lerf", draws=draws, preprocess=False)
    np.testing.assert_allclose(given.scores[0, 0, 0], probability, rtol=1e-5)   # nothing removed, no noise
    assert given.scores[0, 0, 1] > 0.99


def test_infidelity_equals_captum():
    """Two images, one class each, on the tiny VGG and its float64 torch twin: the gradient's infidelity with the
    same four Gaussian perturbations of each image given to Captum (its perturb_func returns them), plain and
    normalised; a channel-less map counts for every channel."""
    from captum.attr import Saliency
    from captum.metrics import infidelity

    from converters.torch_models import torch_vgg

    vgg = tiny_vgg(0)
    net = torch_vgg(vgg).double()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 64, 64, 3))
    classes = np.array([[3], [7]])
    draws = 0.05 * rng.normal(size=(2, 4, 64, 64, 3))
    xt = nchw(x).requires_grad_()
    attr = Saliency(net).attribute(xt, target=[3, 7], abs=False).detach()
    xt = xt.detach()
    perts = nchw(draws.reshape(8, 64, 64, 3))

    def perturb(inputs):
        return perts, inputs - perts

    with jax.enable_x64(True):
        m64 = float64(vgg)
        maps = sal.gradient().attribute(m64, x, sal.class_score(classes), preprocess=False).attributions
        np.testing.assert_allclose(maps[:, 0], attr.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
        for normalize in (False, True):
            want = infidelity(net, perturb, xt, attr, target=[3, 7], n_perturb_samples=4, normalize=normalize).numpy()
            got = fd.infidelity(m64, x, maps, sal.class_score(classes), draws=draws, normalize=normalize,
                                preprocess=False, chunk=3)
            assert got.values.shape == (2, 1) and np.abs(want).max() > 0
            np.testing.assert_allclose(got.values[:, 0], want, rtol=0, atol=1e-6 * np.abs(want).max())
        # drawn from the seed: reproducible, a scaled map is the same normalised, a map without channels is the
        # 3-channel map repeated
        a = fd.infidelity(m64, x, maps, sal.class_score(classes), samples=5, preprocess=False, normalize=True)
        b = fd.infidelity(m64, x, 10 * maps, sal.class_score(classes), samples=5, preprocess=False, normalize=True)
        np.testing.assert_allclose(a.values, b.values, rtol=1e-10)
        assert a.samples == 5 and np.all(a.values > 0)
        flat = maps.sum(-1)
        one = fd.infidelity(m64, x, flat, sal.class_score(classes), samples=5, preprocess=False).values
        three = fd.infidelity(m64, x, np.repeat(flat[..., None], 3, -1), sal.class_score(classes), samples=5,
                              preprocess=False).values
        np.testing.assert_allclose(one, three, rtol=1e-10)
        assert not np.allclose(one, fd.infidelity(m64, x, maps, sal.class_score(classes), samples=5,
                                                  preprocess=False).values)


def test_max_sensitivity_equals_captum():
    """The gradient's max-sensitivity against Captum's sensitivity_max over Captum Saliency (signed, abs=False)
    with the same three uniform perturbations of each image, on the float64 twin; chunks of two draws (the last
    one padded) give the same value."""
    from captum.attr import Saliency
    from captum.metrics import sensitivity_max

    from converters.torch_models import torch_vgg

    vgg = tiny_vgg(1)
    net = torch_vgg(vgg).double()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 64, 64, 3))
    classes = np.array([[1], [6]])
    draws = rng.uniform(-0.2, 0.2, size=(2, 3, 64, 64, 3))
    perts = nchw(draws.reshape(6, 64, 64, 3))

    def perturb(inputs, radius):
        return (inputs + perts).requires_grad_()

    want = sensitivity_max(Saliency(net).attribute, nchw(x).requires_grad_(), perturb, n_perturb_samples=3,
                           target=[1, 6], abs=False).numpy()
    with jax.enable_x64(True):
        m64 = float64(vgg)
        for chunk in (1, 2):
            got = fd.max_sensitivity(sal.gradient(), m64, x, sal.class_score(classes), draws=draws, preprocess=False,
                                     chunk=chunk)
            assert got.shape == (2, 1) and want.max() > 0
            np.testing.assert_allclose(got[:, 0], want, rtol=0, atol=1e-6 * want.max())
        # drawn from the seed; a larger radius moves the map more; a reduced map is compared when asked
        near = fd.max_sensitivity(sal.gradient(), m64, x, sal.class_score(classes), samples=3, radius=0.01,
                                  preprocess=False, chunk=1)
        far = fd.max_sensitivity(sal.gradient(), m64, x, sal.class_score(classes), samples=3, radius=0.5,
                                 preprocess=False, chunk=1)
        assert np.all(near > 0) and np.all(far > near)
        reduced = fd.max_sensitivity(sal.gradient(), m64, x, sal.class_score(classes), samples=3, radius=0.5,
                                     preprocess=False, reduce=sal.max_abs, chunk=1)
        assert np.all(np.isfinite(reduced)) and not np.allclose(reduced, far)


@pytest.mark.slow  # three compilations of the tiny SSD (300 x 300), about 10 s each on a CPU
def test_every_metric_runs_on_a_detection():
    """One detection of the tiny SSD (its pre-NMS default box and class): ROAD and max-sensitivity are finite;
    infidelity equals the formula evaluated with NumPy on the same draws."""
    model = tiny_ssd(0)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(1, 300, 300, 3)).astype(np.float32)
    targets = sal.detection([[1234]], [[2]])
    maps = rng.random((1, 1, 300, 300)).astype(np.float32)
    curve = fd.road(model, x, maps, targets, fractions=(0.3,), preprocess=False)
    assert np.all(np.isfinite(curve.scores)) and 0 < curve.scores[0, 0, 0] < 1
    draws = 0.1 * rng.normal(size=(1, 2, 300, 300, 3)).astype(np.float32)
    got = fd.infidelity(model, x, maps, targets, draws=draws, preprocess=False)

    def value(image):
        out, _ = model.apply(model.params, jnp.asarray(image[None]))
        return float(np.asarray(out["cls_logits"], np.float64)[0, 1234, 2])

    dots = [float(np.sum(maps[0, 0, ..., None].astype(np.float64) * draws[0, s])) for s in range(2)]
    diffs = [value(x[0]) - value(x[0] - draws[0, s]) for s in range(2)]
    want = np.mean([(d - f) ** 2 for d, f in zip(dots, diffs)])
    assert want > 0
    np.testing.assert_allclose(got.values[0, 0], want, rtol=1e-4)
    sens = fd.max_sensitivity(sal.gradient(), model, x, targets, samples=2, preprocess=False, chunk=1)
    assert sens.shape == (1, 1) and np.isfinite(sens).all() and sens[0, 0] > 0


def test_bad_arguments_say_what_to_do():
    vgg = tiny_vgg(0)
    x = np.zeros((2, 64, 64, 3), np.float32)
    t = sal.class_score([[1], [2]])
    maps = np.zeros((2, 1, 64, 64), np.float32)
    with pytest.raises(sal.SaliencyError, match=r"needs the maps shaped \(2, 1, 64, 64\)"):
        fd.road(vgg, x, np.zeros((2, 1, 32, 32)), t)
    with pytest.raises(sal.SaliencyError, match="reduce the channels first"):
        fd.road(vgg, x, np.zeros((2, 1, 64, 64, 3)), t)
    with pytest.raises(sal.SaliencyError, match=r"numbers in \[0, 1\]"):
        fd.road(vgg, x, maps, t, fractions=(0.5, 1.2))
    with pytest.raises(sal.SaliencyError, match="'morf'"):
        fd.road(vgg, x, maps, t, order="MoRF")
    with pytest.raises(sal.SaliencyError, match="noise is a finite number >= 0"):
        fd.road(vgg, x, maps, t, noise=-1.0)
    with pytest.raises(sal.SaliencyError, match=r"draws are .*\(2, 1, 9, 64, 64, 3\)"):
        fd.road(vgg, x, maps, t, draws=np.zeros((2, 1, 3, 64, 64, 3)))
    with pytest.raises(sal.SaliencyError, match="as a jaxvis.saliency Target"):
        fd.infidelity(vgg, x, maps, {"class": [[1], [2]]})
    with pytest.raises(sal.SaliencyError, match="samples is a whole number"):
        fd.infidelity(vgg, x, maps, t, samples=0)
    with pytest.raises(sal.SaliencyError, match=r"draws are the perturbations I .*\(2, S, 64, 64, 3\)"):
        fd.infidelity(vgg, x, maps, t, draws=np.zeros((2, 4, 64, 64)))
    with pytest.raises(sal.SaliencyError, match="normalize is True or False"):
        fd.infidelity(vgg, x, maps, t, normalize="yes")
    with pytest.raises(sal.SaliencyError, match="recomputes a method value"):
        fd.max_sensitivity("gradient", vgg, x, t)
    with pytest.raises(sal.SaliencyError, match="radius is a finite number > 0"):
        fd.max_sensitivity(sal.gradient(), vgg, x, t, radius=0.0)
    with pytest.raises(sal.SaliencyError, match="2 images"):
        fd.max_sensitivity(sal.gradient(), vgg, x, sal.class_score([[1]]))
