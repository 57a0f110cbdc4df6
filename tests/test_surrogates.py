"""Shapley value sampling, Kernel SHAP and LIME against Captum's on the same weights and the same random draws."""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxvis import saliency as sal
from jaxvis import surrogates as sur
from tiny import float64, tiny_ssd, tiny_vgg

CELL = 16  # 16 features on 64 x 64


def grid_mask(size=64, cell=CELL):
    """Captum's feature mask of the grid jaxvis numbers row by row, (1, 1, H, W)."""
    cells = np.arange(size) // cell
    return torch.tensor((cells[:, None] * (-(-size // cell)) + cells[None, :])[None, None])


def per_feature(attributions, cell=CELL):
    """(N, K, F) coefficients read off (N, K, H, W, 3) maps at each cell's top-left pixel."""
    a = attributions[:, :, ::cell, ::cell, 0]
    return a.reshape(a.shape[:2] + (-1,))


def captum_runs(make, x, classes, seed, record, **kwargs):
    """Captum's attributions (N, K, H, W, 3) of ``classes`` (N, K), each image's targets with the same draws
    (torch's seed set anew before each target), and the draws each image used, (N, samples, F)."""
    want = np.zeros(classes.shape + x.shape[1:])
    draws = []
    for n in range(x.shape[0]):
        xt = torch.tensor(np.ascontiguousarray(x[n:n + 1].transpose(0, 3, 1, 2)))
        for k in range(classes.shape[1]):
            seen = []
            explainer = make()
            record(explainer, seen)
            with torch.random.fork_rng():                                    # other tests keep torch's state
                torch.manual_seed(seed + n)
                a = explainer.attribute(xt, target=int(classes[n, k]), feature_mask=grid_mask(x.shape[1]), **kwargs)
            want[n, k] = a[0].numpy().transpose(1, 2, 0)
            if k == 0:
                draws.append(np.stack(seen))
            else:
                np.testing.assert_array_equal(np.stack(seen), draws[-1])
    return want, np.stack(draws)


def record_orders(explainer, seen):
    draw = explainer.permutation_generator

    def recorded(n_features, n_samples):
        for order in draw(n_features, n_samples):
            seen.append(np.asarray(order, np.int32))
            yield order

    explainer.permutation_generator = recorded


def record_coalitions(explainer, seen):
    draw = explainer.perturb_func

    def recorded(inputs, **kwargs):
        for sample in draw(inputs, **kwargs):
            seen.append(sample[0].numpy().astype(np.int32))
            yield sample

    def recorded_once(inputs, **kwargs):
        sample = draw(inputs, **kwargs)
        seen.append(sample[0].numpy().astype(np.int32))
        return sample

    explainer.perturb_func = recorded if inspect.isgeneratorfunction(draw) else recorded_once


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Captum's many small forward passes run far faster on one thread than on cores shared with JAX."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vgg_pair():
    from converters.torch_models import torch_vgg

    vgg = tiny_vgg(2)
    return vgg, torch_vgg(vgg).double()


def test_shapley_sampling_equals_captum(vgg_pair):
    """Two images, two classes each, 16 features, 2 orders per image and a baseline of 0.2; and efficiency:
    the features' attributions add up to S(image) - S(baseline), over the two orders and for one alone."""
    from captum.attr import ShapleyValueSampling

    vgg, net = vgg_pair
    x = np.random.default_rng(3).normal(size=(2, 64, 64, 3))
    classes = np.array([[1, 7], [4, 0]])
    want, orders = captum_runs(lambda: ShapleyValueSampling(net), x, classes, 10, record_orders, n_samples=2,
                               baselines=0.2)
    assert orders.shape == (2, 2, 16)
    with jax.enable_x64(True):
        m64 = float64(vgg)
        got = sur.shapley_sampling(cell=CELL, baseline=0.2, draws=orders).attribute(
            m64, x, sal.class_score(classes), preprocess=False)
        one = sur.shapley_sampling(cell=CELL, baseline=0.2, draws=orders[:, [0, 0]]).attribute(
            m64, x, sal.class_score(classes), preprocess=False)                 # the first order alone
    assert np.abs(want).max() > 0
    # Captum adds its credits up in float32
    np.testing.assert_allclose(got.attributions, want, rtol=0, atol=1e-6 * np.abs(want).max())
    with torch.no_grad():
        base = net(torch.full((1, 3, 64, 64), 0.2, dtype=torch.float64))[0].numpy()
    drop = got.scores - base[classes]
    for e in (got, one):
        np.testing.assert_allclose(per_feature(e.attributions).sum(-1), drop, rtol=1e-9, atol=1e-9 * np.abs(drop).max())
    assert not np.allclose(per_feature(got.attributions), per_feature(one.attributions))


def test_kernel_shap_equals_captum(vgg_pair):
    """Two images, two classes each, 16 features, 40 coalitions per image (Captum's first two: all features
    and none), baseline -0.1; the 42 perturbed images (with the image and the baseline) in chunks of 9, the
    last one padded."""
    from captum.attr import KernelShap

    vgg, net = vgg_pair
    x = np.random.default_rng(4).normal(size=(2, 64, 64, 3))
    classes = np.array([[2, 5], [9, 3]])
    want, coalitions = captum_runs(lambda: KernelShap(net), x, classes, 20, record_coalitions, n_samples=40,
                                   baselines=-0.1)
    assert coalitions.shape == (2, 40, 16) and coalitions[:, 0].all() and not coalitions[:, 1].any()
    with jax.enable_x64(True):
        got = sur.kernel_shap(cell=CELL, baseline=-0.1, draws=coalitions, chunk=10).attribute(
            float64(vgg), x, sal.class_score(classes), preprocess=False)
    assert np.abs(want).max() > 0
    err = np.abs(got.attributions - want).max() / np.abs(want).max()
    # Captum's regression runs in float32 (its values, coalitions and weights are cast, then sklearn's lstsq):
    # about 1e-6 of the largest attribution
    assert err < 1e-5, err


def test_lime_equals_captum_with_a_linear_regression(vgg_pair):
    """Two images, two classes each, 16 features, 40 Bernoulli(1/2) coalitions, a baseline of 0.3, the cosine
    kernel of width 0.75, against Captum's Lime with SkLearnLinearRegression (Captum's default interpretable
    model is a Lasso)."""
    from captum._utils.models.linear_model import SkLearnLinearRegression
    from captum.attr import Lime
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    vgg, net = vgg_pair
    x = np.random.default_rng(5).normal(size=(2, 64, 64, 3)) + 0.5
    classes = np.array([[6, 1], [8, 2]])
    similarity = get_exp_kernel_similarity_function("cosine", 0.75)
    want, coalitions = captum_runs(
        lambda: Lime(net, interpretable_model=SkLearnLinearRegression(), similarity_func=similarity), x, classes, 30,
        record_coalitions, n_samples=40, baselines=0.3)
    with jax.enable_x64(True):
        got = sur.lime(cell=CELL, baseline=0.3, kernel_width=0.75, lasso=0.0, draws=coalitions).attribute(
            float64(vgg), x, sal.class_score(classes), preprocess=False)
    assert np.abs(want).max() > 0
    err = np.abs(got.attributions - want).max() / np.abs(want).max()
    assert err < 1e-5, err


def test_lime_equals_captums_default_lime_a_lasso(vgg_pair):
    """Captum's Lime as it comes (its interpretable model sklearn's Lasso(alpha=0.01), its kernel the cosine one
    of width 1), the Lasso solved to convergence on both sides: two images, two classes each, 16 features, 40
    coalitions, the baseline 0; and the L1 penalty sets some coefficients to zero, as the regression does not.
    (At sklearn's default tolerance, 1e-4, Captum's maps here stop 2.4e-4 of their maximum short of it.)"""
    from captum._utils.models.linear_model import SkLearnLasso
    from captum.attr import Lime

    vgg, net = vgg_pair
    x = np.random.default_rng(8).normal(size=(2, 64, 64, 3)) + 0.5
    classes = np.array([[3, 5], [7, 0]])
    want, coalitions = captum_runs(
        lambda: Lime(net, interpretable_model=SkLearnLasso(alpha=0.01, tol=1e-6, max_iter=100000)), x, classes,
        40, record_coalitions, n_samples=40)
    with jax.enable_x64(True):
        got = sur.lime(cell=CELL, draws=coalitions).attribute(float64(vgg), x, sal.class_score(classes),
                                                              preprocess=False)
        plain = sur.lime(cell=CELL, lasso=0.0, draws=coalitions).attribute(float64(vgg), x, sal.class_score(classes),
                                                                          preprocess=False)
    assert np.abs(want).max() > 0
    err = np.abs(got.attributions - want).max() / np.abs(want).max()
    assert err < 1e-5, err      # Captum's fit is in float32
    assert (got.attributions == 0).any() and not (plain.attributions == 0).any()


def test_lasso_equals_sklearn():
    """The weighted Lasso with an intercept equals sklearn's Lasso with sample weights, solved to convergence,
    for several penalties, the largest zeroing every coefficient."""
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, (60, 8)).astype(np.float64)
    y = x @ rng.normal(size=(8, 2)) + 0.3 * rng.normal(size=(60, 2))
    w = rng.random(60) + 0.1
    with jax.enable_x64(True):
        fit = jax.jit(lambda a: sur.lasso(jnp.asarray(x), jnp.asarray(y), jnp.asarray(w), a, 1e-13, 100000))
        for alpha in (0.001, 0.01, 0.1, 10.0):
            got = np.asarray(fit(alpha)).T
            want = Lasso(alpha=alpha, tol=1e-14, max_iter=1000000).fit(x, y, sample_weight=w).coef_
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=str(alpha))
            assert (got == 0).all() == (alpha == 10.0)


def test_least_squares_equals_sklearn():
    """The weighted fit with an intercept equals sklearn's LinearRegression and Ridge with sample weights, also
    where the samples do not determine it (fewer than the features: the smallest coefficients, as lstsq)."""
    from sklearn.linear_model import LinearRegression, Ridge

    rng = np.random.default_rng(0)
    for samples in (30, 4):
        x = rng.integers(0, 2, (samples, 6)).astype(np.float64)
        y, w = rng.normal(size=(samples, 2)), rng.random(samples) + 0.1
        with jax.enable_x64(True):
            fit = jax.jit(jax.vmap(sur.least_squares, in_axes=(None, None, None, 0)))
            plain, ridged = np.asarray(fit(jnp.asarray(x), jnp.asarray(y), jnp.asarray(w), jnp.array([0.0, 3.0])))
        np.testing.assert_allclose(plain.T, LinearRegression().fit(x, y, sample_weight=w).coef_, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ridged.T, Ridge(alpha=3.0).fit(x, y, sample_weight=w).coef_, rtol=0, atol=1e-10)
        assert np.abs(plain - ridged).max() > 1e-3


def test_draws_follow_captums_distributions():
    """Kernel SHAP's coalitions: all features, none, then sizes k with probability proportional to
    1 / (k (F - k)) and every feature alike; LIME's: each feature kept with probability 1/2; Shapley's orders
    are permutations."""
    key, f = jax.random.key(0), 8
    coalitions = np.asarray(jax.jit(sur.KernelShap(samples=20000).draw, static_argnums=1)(key, f))
    assert coalitions[0].all() and not coalitions[1].any()
    k = np.arange(1, f)
    p = 1 / (k * (f - k))
    sizes = np.bincount(coalitions[2:].sum(1), minlength=f + 1)
    np.testing.assert_allclose(sizes[1:f] / sizes.sum(), p / p.sum(), atol=0.01)
    assert sizes[0] == sizes[f] == 0
    np.testing.assert_allclose(coalitions[2:].mean(0), 0.5, atol=0.02)    # p(k) is symmetric in k and F - k
    bernoulli = np.asarray(jax.jit(sur.Lime(samples=20000).draw, static_argnums=1)(key, f))
    np.testing.assert_allclose(bernoulli.mean(0), 0.5, atol=0.02)
    orders = np.asarray(jax.jit(sur.ShapleySampling(samples=500).draw, static_argnums=1)(key, f))
    assert (np.sort(orders, 1) == np.arange(f)).all()
    np.testing.assert_allclose(np.mean(orders == 0, axis=0), 1 / f, atol=0.05)


@pytest.mark.parametrize("method", [sur.shapley_sampling(samples=2, cell=32), sur.kernel_shap(samples=12, cell=32),
                                    sur.lime(samples=12, cell=32)], ids=lambda m: m.name)
def test_random_draws_come_from_the_seed(vgg_pair, method):
    """Without draws, each image draws from its own key: the same seed gives the same maps, another seed
    others, both with the same compiled program (also for another baseline)."""
    vgg, _ = vgg_pair
    x = np.random.default_rng(6).normal(size=(2, 64, 64, 3)).astype(np.float32)
    t = sal.class_score([[1], [2]])
    a = method.attribute(vgg, x, t, preprocess=False, seed=1).attributions
    traces = sur.TRACES
    again = method.attribute(vgg, x, t, preprocess=False, seed=1).attributions
    other = method.attribute(vgg, x, t, preprocess=False, seed=2).attributions
    moved = dataclasses.replace(method, baseline=0.5).attribute(vgg, x, t, preprocess=False, seed=1).attributions
    assert sur.TRACES == traces                                              # no new program for seeds, baselines
    assert not np.allclose(a, moved)
    assert np.isfinite(a).all() and np.abs(a).max() > 0
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, other)
    assert not np.allclose(a[0], a[1])


def test_superpixel_labels_and_lime_ridge(vgg_pair):
    """A label map (N, H, W) of irregular regions, on images through the model's preprocessing: every pixel
    of a region carries its coefficient; the ridge penalty shrinks LIME's coefficients."""
    vgg, _ = vgg_pair
    x = np.random.default_rng(7).random((2, 64, 64, 3)).astype(np.float32)    # RGB in [0, 1], preprocessed
    iy, ix = np.mgrid[:64, :64]
    labels = np.stack([(iy + ix) // 32, (iy * ix) % 5]).astype(np.int32)    # 4 and 5 regions: F = 5
    t = sal.class_score([[3], [3]])
    plain = sur.lime(samples=30, features=labels, lasso=0.0).attribute(vgg, x, t)
    ridged = sur.lime(samples=30, features=labels, lasso=0.0, ridge=50.0).attribute(vgg, x, t)
    for e in (plain, ridged):
        for n in range(2):
            for f in np.unique(labels[n]):
                region = e.attributions[n, 0][labels[n] == f]
                assert np.ptp(region) == 0
    assert np.abs(plain.attributions).max() > 0
    assert np.abs(ridged.attributions).sum() < np.abs(plain.attributions).sum()


def ssd_logits(model, images, anchor, cls):
    """The class logit of one default box on each image, by the torch twin of the tiny SSD."""
    from torch_ref import torch_ssd

    net = torch_ssd(model)
    with torch.no_grad():
        xt = torch.tensor(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        return net.head(list(net.backbone(xt).values()))["cls_logits"][:, anchor, cls].double().numpy()


def test_kernel_shap_of_a_detection_on_the_tiny_ssd():
    """Kernel SHAP of one detection on the tiny SSD (9 features of 100 pixels) with 12 given coalitions equals
    the weighted least squares with an intercept written here from the torch twin's logits of the same
    perturbed images."""
    model = tiny_ssd(0)
    x = np.random.default_rng(9).normal(size=(1, 300, 300, 3)).astype(np.float32)
    anchor, cls = 1000, 2
    rng = np.random.default_rng(1)
    coalitions = np.concatenate([np.ones((1, 9)), np.zeros((1, 9)), rng.integers(0, 2, (10, 9))]).astype(np.int32)
    got = sur.kernel_shap(cell=100, draws=coalitions, baseline=0.1).attribute(
        model, x, sal.detection([[anchor]], [[cls]]), preprocess=False)

    cells = np.arange(300) // 100
    labels = cells[:, None] * 3 + cells[None, :]
    images = np.where(coalitions[:, labels][..., None] > 0, x[0], np.float32(0.1))
    logits = ssd_logits(model, images, anchor, cls)
    kept = coalitions.sum(1)
    w = np.where((kept == 0) | (kept == 9), 1e6, 1.0)
    design = np.concatenate([coalitions, np.ones((12, 1))], axis=1) * np.sqrt(w)[:, None]
    want = np.linalg.lstsq(design, logits * np.sqrt(w), rcond=None)[0][:9]
    assert np.abs(want).max() > 0 and np.isfinite(got.attributions).all()
    np.testing.assert_allclose(per_feature(got.attributions, 100)[0, 0], want, rtol=0, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(got.scores[0, 0], logits[0], rtol=1e-4)


@pytest.mark.slow
def test_shapley_sampling_and_lime_of_detections_on_the_tiny_ssd():
    """Shapley value sampling of two detections of the tiny SSD with two random orders of 4 features: finite,
    non-trivial, each order's credits equal to the torch twin's differences along it (efficiency follows);
    LIME runs and is finite."""
    model = tiny_ssd(0)
    x = np.random.default_rng(9).normal(size=(1, 300, 300, 3)).astype(np.float32)
    anchors, classes = [1000, 4000], [2, 4]
    target = sal.detection([anchors], [classes])
    orders = np.array([[2, 0, 3, 1], [1, 3, 0, 2]], np.int32)
    got = sur.shapley_sampling(cell=150, baseline=0.1, draws=orders).attribute(model, x, target, preprocess=False)
    cells = np.arange(300) // 150
    labels = cells[:, None] * 2 + cells[None, :]
    want = np.zeros((2, 4))
    for order in orders:
        keep = np.zeros(4, bool)
        images = [np.full_like(x[0], 0.1)]
        for f in order:
            keep[f] = True
            images.append(np.where(keep[labels][..., None], x[0], np.float32(0.1)))
        for k, (a, c) in enumerate(zip(anchors, classes)):
            v = ssd_logits(model, np.stack(images), a, c)
            want[k, order] += np.diff(v) / len(orders)
    assert np.abs(want).max() > 0 and np.isfinite(got.attributions).all()
    np.testing.assert_allclose(per_feature(got.attributions, 150)[0], want, rtol=0, atol=1e-4 * np.abs(want).max())
    e = sur.lime(samples=16, cell=150).attribute(model, x, target, preprocess=False)
    assert np.isfinite(e.attributions).all() and np.abs(e.attributions).max() > 0


def test_clear_errors():
    vgg = tiny_vgg(0)
    x = np.zeros((1, 64, 64, 3), np.float32)
    t = sal.class_score([[1]])
    with pytest.raises(sal.SaliencyError, match="whole number of samples"):
        sur.shapley_sampling(samples=0)
    with pytest.raises(sal.SaliencyError, match="at least 2"):
        sur.kernel_shap(samples=1)
    with pytest.raises(sal.SaliencyError, match="cell is a whole number"):
        sur.lime(cell=2.5)
    with pytest.raises(sal.SaliencyError, match="kernel_width is a finite number > 0"):
        sur.lime(kernel_width=0.0)
    with pytest.raises(sal.SaliencyError, match="ridge is a finite number >= 0"):
        sur.lime(ridge=-1.0)
    with pytest.raises(sal.SaliencyError, match="baseline is the finite number"):
        sur.kernel_shap(baseline=float("nan"))
    with pytest.raises(sal.SaliencyError, match="label map of non-negative integers"):
        sur.lime(features=np.full((64, 64), 0.5))
    with pytest.raises(sal.SaliencyError, match="leave samples out"):
        sur.kernel_shap(samples=5, draws=np.ones((4, 16), np.int32))
    with pytest.raises(sal.SaliencyError, match="larger than the 64x64 image"):
        sur.lime(cell=80).attribute(vgg, x, t)
    with pytest.raises(sal.SaliencyError, match="shaped like the images"):
        sur.lime(features=np.zeros((32, 32), np.int32)).attribute(vgg, x, t)
    with pytest.raises(sal.SaliencyError, match="16 features on their last axis|the images have 16"):
        sur.kernel_shap(draws=np.ones((4, 9), np.int32)).attribute(vgg, x, t)
    with pytest.raises(sal.SaliencyError, match="takes 500 samples and was given draws"):
        dataclasses.replace(sur.kernel_shap(), draws=np.ones((4, 16), np.int32)).attribute(vgg, x, t)
    with pytest.raises(sal.SaliencyError, match="one per image"):
        sur.kernel_shap(draws=np.ones((3, 4, 16), np.int32)).attribute(vgg, x, t)
    with pytest.raises(sal.SaliencyError, match="every row a permutation"):
        sur.shapley_sampling(draws=np.zeros((2, 16), np.int32)).attribute(vgg, x, t)
    with pytest.raises(sal.SaliencyError, match="rows of 0 .* and 1"):
        sur.lime(draws=np.full((4, 16), 2, np.int32)).attribute(vgg, x, t)
    with pytest.raises(sal.SaliencyError, match="needs at least 2 features"):
        sur.kernel_shap(cell=64).attribute(vgg, x, t)


@pytest.mark.slow
def test_kernel_shap_on_ssd300_fits_in_bounded_memory():
    """Kernel SHAP with 2,000 coalitions of a detection on SSD300 at 300 x 300 (361 features of 16 pixels):
    the compiled program's buffers (XLA's own count: arguments, outputs and temporaries) stay under 4 GiB,
    the perturbed images running in chunks sized to the memory budget."""
    import jaxvis
    from tiny import random_variables

    spec = jaxvis.models.arch_spec("ssd300_vgg16")
    model = jaxvis.from_spec(spec, random_variables(jaxvis.models.build(spec), (1, 300, 300, 3), 0))
    method = sur.kernel_shap(samples=2000, cell=16)
    target = sal.detection([[1000]], [[2]])
    chunk, _ = sal.chunk_sizes(model, 2002, 1, (300, 300), backward=False)
    assert chunk < 2002
    fn = sur._surrogate_program(model, target.kind, target.score, True, (300, 300), method.program_key(), 19 * 19,
                                False, chunk)
    compiled = fn.lower(model.params, jnp.zeros((1, 300, 300, 3), jnp.float32), sal._fields(target),
                        jnp.zeros((1, 300, 300), jnp.int32), jnp.float32(0), jnp.zeros((1, 0), jnp.int32),
                        jax.random.split(jax.random.key(0), 1), {}).compile()
    stats = compiled.memory_analysis()
    peak = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    assert peak < 4 * 2**30, peak / 2**30
