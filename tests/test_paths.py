"""Blur IG, Guided IG and XRAI (jaxvis.paths) against PAIR's saliency package driven by the same model's gradients."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxvis import paths
from jaxvis import saliency as sal
from tiny import float64, tiny_ssd, tiny_vgg

KEY = "INPUT_OUTPUT_GRADIENTS"  # saliency.core.base's name for the gradients PAIR asks its model function for


def pair_model(model, kind="class", anchor=0):
    """PAIR's model function for ``model``: the gradient of a class logit (``call_model_args`` the class; for a
    detector, the class score of default box ``anchor``) with respect to a batch of HWC network inputs."""
    def value(x, c):
        outputs, _ = model.apply(model.params, x[None])
        fields = {"class": c} if kind == "class" else {"anchor": jnp.asarray(anchor, jnp.int32), "class": c}
        return sal.target_value(model, outputs, fields, kind, sal.logit)

    grads = jax.jit(jax.vmap(jax.grad(value), in_axes=(0, None)))

    def call(x_batch, call_model_args=None, expected_keys=None):
        assert expected_keys == [KEY]
        with jax.enable_x64(True):
            return {KEY: np.asarray(grads(jnp.asarray(x_batch), jnp.asarray(call_model_args, jnp.int32)))}

    return call


class _Numpy:
    """numpy for PAIR's Guided IG, which still calls np.quantile(..., interpolation=): numpy 2 renamed it method=."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, interpolation=None):
        return np.quantile(a, q, method=interpolation)


@pytest.fixture
def pair_guided_ig(monkeypatch):
    from saliency.core import guided_ig

    monkeypatch.setattr(guided_ig, "np", _Numpy())
    return guided_ig.GuidedIG()


@pytest.fixture(scope="module")
def vgg64():
    """The tiny VGG in float64, two images of network inputs, two classes each, PAIR's model function of it."""
    with jax.enable_x64(True):
        model = float64(tiny_vgg(0))
    return model, np.random.default_rng(3).normal(size=(2, 64, 64, 3)), np.array([[4, 1], [2, 7]]), pair_model(model)


def per_target(fn, x, classes):
    return np.stack([np.stack([fn(x[n], int(c)) for c in classes[n]]) for n in range(len(x))])


def test_gaussian_blur_equals_scipy():
    """The blur of Blur IG's path against scipy.ndimage.gaussian_filter as PAIR calls it (zero beyond the edges, the
    kernel cut at 4 sigma, the channels apart), on a 37 x 50 image: no blur, a kernel of one pixel (0.1), radii of
    1, 7 and 24, and one wider than the image."""
    x = np.random.default_rng(0).normal(size=(37, 50, 3))
    with jax.enable_x64(True):
        for sigma in (0.0, 0.1, 0.3, 1.7, 6.0, 40.0):
            want = ndimage.gaussian_filter(x, [sigma, sigma, 0], mode="constant")
            np.testing.assert_allclose(np.asarray(paths.gaussian_blur(x, sigma)), want, rtol=0, atol=1e-14)
    assert np.abs(paths.gaussian_blur(x, 6.0) - x).max() > 0.5


def test_blur_ig_equals_pair(vgg64):
    """Two images, two classes each, 8 steps to a blur of 6 pixels, in float64: PAIR's BlurIG fed the gradients of the
    same network (relative error 1e-9 of the maximum; seen: 2e-14)."""
    from saliency.core.blur_ig import BlurIG

    model, x, classes, call = vgg64
    with jax.enable_x64(True):
        got = paths.blur_ig(steps=8, max_sigma=6.0).attribute(model, x, sal.class_score(classes), preprocess=False)
    want = per_target(lambda xi, c: BlurIG().GetMask(xi, call, c, max_sigma=6.0, steps=8), x, classes)
    assert got.attributions.shape == (2, 2, 64, 64, 3) and got.attributions.dtype == np.float64
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got.attributions, want, rtol=0, atol=1e-9 * np.abs(want).max())
    plain = per_target(lambda xi, c: call(xi[None], c, [KEY])[KEY][0], x, classes)
    assert np.abs(got.attributions / np.abs(got.attributions).max() - plain / np.abs(plain).max()).max() > 0.1


def test_blur_ig_with_square_root_spacing_equals_pair(vgg64):
    """sigma_i = sqrt(i max_sigma / steps), steps of unequal width, and a difference step of 0.3 pixels (which blurs
    at the first step, unlike 0.01). PAIR applies each batch's last width to the whole batch, so the reference runs
    one step per batch, its default."""
    from saliency.core.blur_ig import BlurIG

    model, x, classes, call = vgg64
    with jax.enable_x64(True):
        got = paths.blur_ig(steps=8, max_sigma=6.0, grad_step=0.3, sqrt=True).attribute(
            model, x, sal.class_score(classes[:, :1]), preprocess=False)
    want = per_target(lambda xi, c: BlurIG().GetMask(xi, call, c, max_sigma=6.0, steps=8, grad_step=0.3, sqrt=True),
                      x, classes[:, :1])
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got.attributions, want, rtol=0, atol=1e-9 * np.abs(want).max())


@pytest.mark.slow  # 128 steps; Blur IG against PAIR stays
def test_blur_ig_is_complete_up_to_the_riemann_error(vgg64):
    """The attributions add up to S(x) - S(blur of max_sigma) (Xu et al. 2020, as IG's completeness), up to the
    Riemann sum's and the finite difference's error: 3 % of the gap with 128 steps to a blur of 4 pixels (seen:
    1.4 %; 29 % with 8 steps)."""
    model, x, classes, _ = vgg64
    with jax.enable_x64(True):
        e = paths.blur_ig(steps=128, max_sigma=4.0).attribute(model, x[:1], sal.class_score(classes[:1, :1]),
                                                              preprocess=False)
        logits = model.class_logits(model.apply(model.params, jnp.stack([x[0], paths.gaussian_blur(x[0], 4.0)]))[0])
    gap = float(logits[0, classes[0, 0]] - logits[1, classes[0, 0]])
    assert abs(gap) > 1.0
    assert abs(e.attributions.sum() - gap) < 0.03 * abs(gap), (e.attributions.sum(), gap)
    np.testing.assert_allclose(e.scores, logits[:1, classes[0, 0]][None], rtol=1e-12)


def test_guided_ig_equals_pair(vgg64, pair_guided_ig):
    """Two images, two classes each (each target on its own path), 8 steps, in float64: from zeros with max_dist 0.1,
    and from a random baseline with the path free (max_dist 1), against PAIR's GuidedIG fed the same network's
    gradients (relative error 1e-9; seen: 1e-15); with max_dist 0, IG's straight line with left Riemann sums.
    max_dist is data: one compiled program for the three."""
    model, x, classes, call = vgg64
    baseline = np.random.default_rng(5).normal(size=x.shape)
    targets = sal.class_score(classes)
    traces = sal.TRACES
    with jax.enable_x64(True):
        got, free, line = (paths.guided_ig(steps=8, max_dist=d, baseline=b).attribute(
            model, x, targets, preprocess=False).attributions for d, b in ((0.1, None), (1.0, baseline), (0.0, None)))
    assert sal.TRACES == traces + 1
    want = per_target(lambda xi, c: pair_guided_ig.GetMask(xi, call, c, x_steps=8, max_dist=0.1), x, classes)
    want_free = np.stack([np.stack([pair_guided_ig.GetMask(x[n], call, int(c), x_baseline=baseline[n], x_steps=8,
                                                           max_dist=1.0) for c in classes[n]]) for n in range(2)])
    want_line = per_target(lambda xi, c: sum(call(xi[None] * j / 8, c, [KEY])[KEY][0] for j in range(8)) * xi / 8,
                           x, classes)
    for a, b in ((got, want), (free, want_free), (line, want_line)):
        assert a.shape == (2, 2, 64, 64, 3) and np.abs(b).max() > 0
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * np.abs(b).max())
    assert np.abs(got - line).max() > 0.1 * np.abs(line).max()      # the path left the straight line


def test_xrai_equals_pair(vgg64):
    """Two images, two classes each, IG of 6 steps from black and white: PAIR's XRAI (its IG, the full greedy
    ranking) fed the same network's gradients, over the Felzenszwalb segments of each, which are equal mask for
    mask. PAIR sums IG's gradients in float32, so the maps agree to 1e-6 of their maximum (seen: 6e-9)."""
    from saliency.core import xrai as pair

    model, x, classes, call = vgg64
    segments = [paths.felzenszwalb_segments(image) for image in x]
    theirs = [pair._get_segments_felzenszwalb(image) for image in x]
    for n in range(2):
        assert len(segments[n]) == len(theirs[n]) > 20
        assert all(np.array_equal(a, b) for a, b in zip(segments[n], theirs[n]))
    with jax.enable_x64(True):
        got = paths.xrai(steps=6, segments=segments).attribute(model, x, sal.class_score(classes), preprocess=False)
    params = pair.XRAIParameters(steps=6)
    want = np.stack([np.stack([pair.XRAI().GetMask(x[n], call, int(c), segments=theirs[n], extra_parameters=params)
                               for c in classes[n]]) for n in range(2)])
    assert got.attributions.shape == (2, 2, 64, 64) and got.scores.shape == (2, 2)
    assert np.abs(want).max() > 0 and len(np.unique(want[0, 0])) > 5
    np.testing.assert_allclose(got.attributions, want, rtol=0, atol=1e-6 * np.abs(want).max())


def overlapping_segments(rng, copied: int):
    """XRAI's segments of two 32 x 40 images: 12 and 17 random rectangles, a copy of rectangle ``copied``, a disc,
    and a strip of 3 pixels (too small to count)."""
    yy, xx = np.mgrid[:32, :40]
    segments = []
    for n in range(2):
        masks = [(yy >= a) & (yy < a + h) & (xx >= b) & (xx < b + w)
                 for a, b, h, w in rng.integers([0, 0, 4, 4], [24, 30, 16, 20], size=(12 + 5 * n, 4))]
        masks += [masks[copied].copy(), (yy - 16) ** 2 + (xx - 20) ** 2 < 60, (yy == 0) & (xx < 3)]
        segments.append(masks)
    return segments


def test_xrai_ranking_equals_pair_with_given_segments_and_attributions():
    """The greedy ranking alone, exactly: random attributions (N, K, H, W, 3) reduced by their channels' maximum,
    rectangles and blobs as segments (overlapping, duplicated, one too small to count, padding: the images have
    different numbers of segments), the whole image and 40 % of it covered before the rest takes its mean."""
    from saliency.core.xrai import XRAI

    rng = np.random.default_rng(2)
    attr = rng.normal(size=(2, 2, 32, 40, 3))
    segments = overlapping_segments(rng, copied=0)
    for threshold in (1.0, 0.4):
        with jax.enable_x64(True):
            got = paths.rank_regions(attr, segments, min_pixel_diff=10, area_threshold=threshold)
        assert got.dtype == np.float64
        for n in range(2):
            for k in range(2):
                want, _ = XRAI._xrai(attr[n, k].max(-1), segments[n], area_perc_th=threshold, min_pixel_diff=10)
                assert len(np.unique(want)) > 5
                np.testing.assert_allclose(got[n, k], want, rtol=0, atol=1e-12)
    vgg = tiny_vgg(0)
    x = rng.random((2, 32, 40, 3)).astype(np.float32)
    given = paths.xrai(segments=segments, attributions=attr, min_pixel_diff=10).attribute(
        vgg, x, sal.class_score([[1, 2], [3, 4]]))
    np.testing.assert_allclose(given.attributions, paths.rank_regions(attr, segments, 10), rtol=0, atol=1e-6)
    assert given.scores.shape == (2, 2)


def test_xrai_fast_ranking_equals_pairs_fast_variant():
    """PAIR's fast XRAI on the same attributions and segments (overlapping, duplicated, one too small to add
    anything, different counts per image padded with empty masks): one order by each segment's whole mean, the
    pixels each adds given their mean, the rest theirs. It differs from the greedy ranking on these segments,
    and it takes no area threshold."""
    from saliency.core.xrai import XRAI

    rng = np.random.default_rng(5)
    attr = rng.normal(size=(2, 2, 32, 40))
    segments = overlapping_segments(rng, copied=3)
    with jax.enable_x64(True):
        got = paths.rank_regions(attr, segments, min_pixel_diff=10, algorithm="fast")
        full = paths.rank_regions(attr, segments, min_pixel_diff=10)
    for n in range(2):
        for k in range(2):
            want, _ = XRAI._xrai_fast(attr[n, k], segments[n], min_pixel_diff=10)
            assert len(np.unique(want)) > 5
            np.testing.assert_allclose(got[n, k], want, rtol=0, atol=1e-12)
    assert np.abs(got - full).max() > 0.1
    with pytest.raises(sal.SaliencyError, match="fast algorithm ranks regions over the whole image"):
        paths.xrai(area_threshold=0.5, algorithm="fast")
    with pytest.raises(sal.SaliencyError, match="algorithm is 'full' .* or 'fast'"):
        paths.xrai(algorithm="greedy")
    assert paths.xrai(algorithm="fast") != paths.xrai()  # two programs, told apart


@pytest.mark.slow  # the tiny SSD at 300 x 300: three programs of its gradients
def test_blur_ig_guided_ig_and_xrai_explain_a_detection_as_pair():
    """One detection (a default box of conv4_3's head, class 2) of the tiny SSD, 4 steps, in float64: the three
    maps are finite, non-trivial and equal to PAIR's methods fed that detection's gradient (XRAI over the same
    Felzenszwalb segments; its IG summed in float32 by PAIR)."""
    from saliency.core import guided_ig
    from saliency.core.blur_ig import BlurIG
    from saliency.core.xrai import XRAI, XRAIParameters

    anchor = 4 * (19 * 38 + 20) + 1
    x = np.random.default_rng(4).normal(size=(1, 300, 300, 3))
    segments = [paths.felzenszwalb_segments(x[0])]
    with jax.enable_x64(True):
        model = float64(tiny_ssd(0))
        call = pair_model(model, "detection", anchor)
        targets = sal.detection([[anchor]], [[2]])
        blur, guided, regions = (method.attribute(model, x, targets, preprocess=False).attributions for method in (
            paths.blur_ig(steps=4, max_sigma=8.0), paths.guided_ig(steps=4, max_dist=0.1),
            paths.xrai(steps=4, segments=segments)))
    want_blur = BlurIG().GetMask(x[0], call, 2, max_sigma=8.0, steps=4)
    numpy_, guided_ig.np = guided_ig.np, _Numpy()
    try:
        want_guided = guided_ig.GuidedIG().GetMask(x[0], call, 2, x_steps=4, max_dist=0.1)
    finally:
        guided_ig.np = numpy_
    want_regions = XRAI().GetMask(x[0], call, 2, segments=segments[0], extra_parameters=XRAIParameters(steps=4))
    assert regions.shape == (1, 1, 300, 300)
    for got, want, tolerance in ((blur, want_blur, 1e-9), (guided, want_guided, 1e-9), (regions, want_regions, 1e-6)):
        assert np.isfinite(got).all() and np.abs(want).max() > 0
        np.testing.assert_allclose(got[0, 0], want, rtol=0, atol=tolerance * np.abs(want).max())


@pytest.mark.slow  # a second compiled program of the tiny VGG's gradients
def test_guided_ig_wrapped_in_smoothgrad_follows_each_targets_path(vgg64):
    """Inside smoothgrad (no noise, one sample) Guided IG takes every target's gradient at every target's point
    and keeps each target's own: the same map as Guided IG alone, which runs each target as an image of its own."""
    model, x, classes, _ = vgg64
    targets = sal.class_score(classes)
    with jax.enable_x64(True):
        alone = paths.guided_ig(steps=4, max_dist=0.1).attribute(model, x, targets, preprocess=False).attributions
        wrapped = sal.smoothgrad(paths.guided_ig(steps=4, max_dist=0.1), samples=1, noise=0.0).attribute(
            model, x, targets, preprocess=False).attributions
    np.testing.assert_allclose(wrapped, alone, rtol=0, atol=1e-12 * np.abs(alone).max())


def test_bad_arguments_raise_clear_errors(monkeypatch):
    for call, message in ((lambda: paths.blur_ig(steps=0), "steps >= 1"),
                          (lambda: paths.blur_ig(max_sigma=-1.0), "max_sigma is a positive number"),
                          (lambda: paths.blur_ig(grad_step=float("nan")), "grad_step is a positive number"),
                          (lambda: paths.blur_ig(sqrt="yes"), "sqrt is True"),
                          (lambda: paths.guided_ig(steps=2.5), "steps >= 1"),
                          (lambda: paths.guided_ig(fraction=0.0), r"fraction .* in \(0, 1\]"),
                          (lambda: paths.guided_ig(max_dist=1.5), r"max_dist .* in \[0, 1\]"),
                          (lambda: paths.guided_ig(baseline=np.inf), "baseline must be finite"),
                          (lambda: paths.xrai(steps=0), "steps >= 1"),
                          (lambda: paths.xrai(min_pixel_diff=0), "integer >= 1"),
                          (lambda: paths.xrai(area_threshold=2.0), r"in \[0, 1\]"),
                          (lambda: paths.xrai(baselines=np.zeros(3)), "non-empty list"),
                          (lambda: paths.rank_regions(np.zeros((1, 1, 8, 8)), [[np.ones((4, 4), bool)]]),
                           r"\(8, 8\) masks"),
                          (lambda: paths.rank_regions(np.zeros((2, 1, 8, 8)), [[np.ones((8, 8), bool)]]),
                           "for 2 image"),
                          (lambda: paths.rank_regions(np.zeros((8, 8)), [[np.ones((8, 8), bool)]]),
                           r"\(N, K, H, W\)")):
        with pytest.raises(sal.SaliencyError, match=message):
            call()
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(sal.SaliencyError, match="pip install scikit-image"):
        paths.felzenszwalb_segments(np.zeros((8, 8, 3)))
