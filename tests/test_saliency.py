"""Saliency maps against torch autograd, SmoothGrad/IG properties, batching, and the metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

import jaxvis
from jaxvis import metrics as met
from jaxvis import saliency as sal
from jaxvis.model import Detector, Model
from tiny import tiny_vgg


def float64(model):
    """The same model computing in float64 (inside jax.enable_x64)."""
    cls = Detector if model.spec.is_detector else Model
    return cls(spec=model.spec, params=jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), model.params),
               module=model.module.clone(dtype=jnp.float64))


@pytest.fixture(scope="module")
def vgg(converted_vgg):
    tmodel, _, path = converted_vgg("vgg11_bn")
    return tmodel, jaxvis.load(path)


@pytest.mark.slow  # full-size VGG11_bn in float64, four backward passes in each framework
def test_classifier_maps_equal_torch_autograd(vgg):
    """max over channels of |dS_c/dx| against torch autograd through torchvision's model, for two images
    and two classes each, in the network's input space and through the preprocessing to the image's own
    pixels. Compared in float64, for the max-pool reason given in test_vgg_port."""
    tmodel, model = vgg
    rng = np.random.default_rng(0)
    images = rng.random((2, 190, 250, 3))
    classes = np.array([[3, 17], [500, 3]])
    t64 = tmodel.double()
    try:
        def transform(image):  # torchvision's ImageClassification preset, kept in float64
            image = TF.center_crop(TF.resize(image, [256], antialias=True), [224])
            return TF.normalize(image, list(model.spec.mean), list(model.spec.std))

        with jax.enable_x64(True):
            m64 = float64(model)
            x = np.asarray(jaxvis.preprocess.preprocess(model.spec, jnp.asarray(images)))
            got_input = sal.saliency(m64, x, sal.class_score(classes), preprocess=False)
            got_image = sal.saliency(m64, images, sal.class_score(classes), preprocess=True)
        input_maps, image_maps = got_input.reduce(), got_image.reduce()
        assert input_maps.dtype == np.float64 and image_maps.shape == (2, 2, 190, 250)
        for i in range(2):
            for k in range(2):
                xt = torch.tensor(x[i].transpose(2, 0, 1)[None], requires_grad=True)
                t64(xt)[0, classes[i, k]].backward()
                want = xt.grad[0].abs().amax(0).numpy()
                np.testing.assert_allclose(input_maps[i, k], want, rtol=0, atol=1e-9 * want.max())
                it = torch.tensor(images[i].transpose(2, 0, 1), requires_grad=True)
                score = t64(transform(it)[None])[0, classes[i, k]]
                score.backward()
                want = it.grad.abs().amax(0).numpy()
                np.testing.assert_allclose(image_maps[i, k], want, rtol=0, atol=1e-5 * want.max())
                np.testing.assert_allclose(got_image.scores[i, k], score.item(), rtol=1e-6)
    finally:
        tmodel.float()


@pytest.mark.slow  # SSD300 at full size in float64; the CAM test on it is slow too
def test_detection_maps_equal_torch_autograd(converted_ssd):
    """The class score (logit) of the default box behind a detection, and one decoded box coordinate,
    differentiated with respect to the input, against torch autograd through torchvision's SSD."""
    tmodel, _, path = converted_ssd
    model = jaxvis.load(path)
    image = np.random.default_rng(1).random((300, 300, 3), dtype=np.float32)
    det = jax.device_get(jax.jit(model.detect)(model.params, image[None]))
    targets = sal.detection_targets(det, np.array([[0, 3]]))
    x = np.asarray(model.preprocess(image))[None].astype(np.float64)
    t64 = tmodel.double()
    try:
        with jax.enable_x64(True):
            m64 = float64(model)
            got = sal.saliency(m64, x, sal.detection(targets["anchor"], targets["class"]), preprocess=False).reduce()
            coords = sal.saliency(m64, x, sal.box_coordinate(targets["anchor"], np.array([[2, 1]])),
                                  preprocess=False).reduce()
        for k in range(2):
            a, c = int(targets["anchor"][0, k]), int(targets["class"][0, k])
            xt = torch.tensor(x[0].transpose(2, 0, 1)[None], requires_grad=True)
            head = t64.head(list(t64.backbone(xt).values()))
            head["cls_logits"][0, a, c].backward()
            want = xt.grad[0].abs().amax(0).numpy()
            np.testing.assert_allclose(got[0, k], want, rtol=0, atol=1e-9 * want.max())
            xt = torch.tensor(x[0].transpose(2, 0, 1)[None], requires_grad=True)
            head = t64.head(list(t64.backbone(xt).values()))
            anchors = torch.tensor(model.anchors, dtype=torch.float64)
            decoded = t64.box_coder.decode_single(head["bbox_regression"][0], anchors)
            decoded[a, [2, 1][k]].backward()
            want = xt.grad[0].abs().amax(0).numpy()
            np.testing.assert_allclose(coords[0, k], want, rtol=0, atol=1e-9 * want.max())
    finally:
        tmodel.float()


@pytest.fixture(scope="module")
def tiny():
    return tiny_vgg(0)


def test_smoothgrad_with_zero_noise_is_the_plain_map(tiny):
    images = np.random.default_rng(2).random((3, 64, 64, 3), dtype=np.float32)
    targets = sal.class_score(np.array([[1], [2], [3]]))
    plain = sal.gradient().attribute(tiny, images, targets).reduce()
    smooth = sal.smoothgrad(noise=0.0, samples=4).attribute(tiny, images, targets).reduce()
    np.testing.assert_allclose(smooth, plain, rtol=1e-6, atol=1e-9)
    before = sal.TRACES
    noisy = sal.smoothgrad(noise=0.2, samples=4).attribute(tiny, images, targets).reduce()
    assert sal.TRACES == before and not np.allclose(noisy, plain)  # the noise is data: the same program
    # the noise wraps any gradient method: gradient x input at zero noise is gradient x input
    gx = sal.smoothgrad(sal.grad_x_input(), noise=0.0, samples=2).attribute(tiny, images, targets).attributions
    np.testing.assert_allclose(gx, sal.grad_x_input().attribute(tiny, images, targets).attributions, rtol=1e-5,
                               atol=1e-8)
    # and integrated gradients at zero noise are integrated gradients
    ig = sal.integrated(steps=2).attribute(tiny, images[:1], targets[:1]).attributions
    smooth_ig = sal.smoothgrad(sal.integrated(steps=2), noise=0.0, samples=2).attribute(tiny, images[:1], targets[:1])
    np.testing.assert_allclose(smooth_ig.attributions, ig, rtol=1e-5, atol=1e-6 * np.abs(ig).max())
    with pytest.raises(sal.SaliencyError, match="averages a gradient method"):
        sal.smoothgrad(sal.odam())


def test_integrated_gradients_are_complete(tiny):
    """Attributions sum to score(x) - score(baseline), up to the path integral's error, which shrinks
    with the number of steps (the random tiny network is piecewise linear with many kinks)."""
    images = np.random.default_rng(3).random((2, 64, 64, 3), dtype=np.float32)
    targets = sal.class_score(np.array([[4, 1], [0, 7]]))
    at_zero = sal.saliency(tiny, np.zeros_like(images), targets)
    errors = {}
    for steps in (16, 1024):
        ig = sal.saliency(tiny, images, targets, sal.integrated(steps=steps))
        total = ig.attributions.reshape(2, 2, -1).sum(-1)
        diff = ig.scores - at_zero.scores
        assert np.all(np.abs(diff) > 0.05)
        errors[steps] = np.abs(total - diff) / np.abs(diff)
    assert np.all(errors[1024] <= 0.01), errors
    assert errors[1024].max() < errors[16].max() / 5, errors


def test_a_batch_is_one_compiled_call_and_equals_single_calls(tiny):
    images = np.random.default_rng(4).random((32, 64, 64, 3), dtype=np.float32)
    classes = np.arange(32).reshape(32, 1) % 10
    before = sal.TRACES
    batch = sal.saliency(tiny, images, sal.class_score(classes)).reduce()
    assert sal.TRACES == before + 1
    assert batch.shape == (32, 1, 64, 64)
    for i in range(32):
        single = sal.saliency(tiny, images[i:i + 1], sal.class_score(classes[i:i + 1])).reduce()
        np.testing.assert_allclose(batch[i], single[0], rtol=1e-5, atol=1e-7 * batch.max())
    assert sal.TRACES == before + 2  # the 32 single calls share one program


def test_grad_x_input_and_reductions(tiny):
    images = np.random.default_rng(5).random((1, 64, 64, 3), dtype=np.float32)
    e = sal.saliency(tiny, images, sal.class_score(np.array([[2]])))
    g = e.attributions[0, 0]
    assert g.shape == (64, 64, 3)
    np.testing.assert_allclose(e.reduce()[0, 0], np.abs(g).max(-1), rtol=1e-6)
    np.testing.assert_allclose(e.reduce(sal.sum_abs)[0, 0], np.abs(g).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(e.reduce(sal.signed_sum)[0, 0], g.sum(-1), rtol=1e-4, atol=1e-6 * np.abs(g).max())
    with pytest.raises(sal.SaliencyError, match=r"saliency.max_abs, sum_abs, l2_norm, signed_sum"):
        e.reduce("max")
    gx = sal.grad_x_input().attribute(tiny, images, sal.class_score(np.array([[2]]))).attributions[0, 0]
    np.testing.assert_allclose(gx, g * images[0], rtol=1e-5, atol=1e-9)


def test_bad_requests_are_refused(tiny):
    images = np.zeros((1, 64, 64, 3), np.float32)
    with pytest.raises(sal.SaliencyError, match=r"kind 'detection' is for detectors"):
        sal.saliency(tiny, images, sal.detection([[0]], [[1]]))
    with pytest.raises(sal.SaliencyError, match=r"class targets need \['class'\]; missing \['class'\]"):
        sal.saliency(tiny, images, sal.Target("class", {"anchor": np.zeros((1, 1), np.int32)}))
    with pytest.raises(sal.SaliencyError, match=r"leading \(images, targets\) shape"):
        sal.saliency(tiny, images, sal.class_score([1, 2]))
    with pytest.raises(sal.SaliencyError, match=r"leading \(images, targets\) shape with 1 images"):
        sal.saliency(tiny, images, sal.class_score([[1], [2]]))
    with pytest.raises(sal.SaliencyError, match=r"method is a value: gradient\(\)"):
        sal.saliency(tiny, images, sal.class_score([[1]]), "gradcam")
    with pytest.raises(sal.SaliencyError, match=r"space= is now preprocess="):
        sal.saliency(tiny, images, sal.class_score([[1]]), preprocess=False, space="input")
    with pytest.raises(sal.SaliencyError, match=r"preprocess is True"):
        sal.explain(tiny, images, sal.class_score([[1]]), preprocess="input")
    with pytest.raises(sal.SaliencyError, match=r"not dicts"):
        sal.saliency(tiny, images, {"class": [[1]]})
    with pytest.raises(sal.SaliencyError, match=r"the keywords \['kind', 'reduce'\] are gone"):
        sal.saliency(tiny, images, sal.class_score([[1]]), kind="class", reduce="max")
    det = {"anchor": np.zeros((1, 3), int), "labels": np.ones((1, 3), int), "valid": np.array([[True, False, False]])}
    with pytest.raises(sal.SaliencyError, match=r"does not exist"):
        sal.detection_targets(det, [[1]])


def test_metrics_units():
    m = np.zeros((10, 10))
    m[2, 7] = 1.0
    assert met.pointing_hit(m, (6, 1, 9, 4)) and not met.pointing_hit(m, (0, 0, 5, 5))
    assert met.pointing_hit(m, (0, 0, 6.5, 5), tolerance=1.0)
    a = np.random.default_rng(0).random(100)
    assert met.spearman(a, a) == pytest.approx(1.0) and met.spearman(a, -a) == pytest.approx(-1.0)
    assert met.spearman(a, a ** 3) == pytest.approx(1.0)


def test_deletion_and_insertion_curves(tiny):
    x = np.random.default_rng(6).standard_normal((64, 64, 3)).astype(np.float32)
    target = sal.class_score([[2]])
    m = sal.saliency(tiny, x[None], target, preprocess=False).reduce()[0, 0]
    deletion = met.deletion_insertion(tiny, x, m, target, steps=16)
    insertion = met.deletion_insertion(tiny, x, m, target, insert=True, steps=16)
    p = float(jax.nn.softmax(tiny.apply(tiny.params, x[None])[0][0])[2])
    p0 = float(jax.nn.softmax(tiny.apply(tiny.params, np.zeros((1, 64, 64, 3), np.float32))[0][0])[2])
    assert deletion.scores.shape == (17,) and deletion.fractions[0] == 0 and deletion.fractions[-1] == 1
    assert deletion.scores[0] == pytest.approx(p, rel=1e-5) and deletion.scores[-1] == pytest.approx(p0, rel=1e-5)
    assert insertion.scores[-1] == pytest.approx(p, rel=1e-5)
    assert 0 <= deletion.auc <= 1 and 0 <= insertion.auc <= 1
    logit = met.deletion_insertion(tiny, x, m, target, steps=16, score=None)  # the target's own
    assert logit.scores[0] == pytest.approx(float(tiny.apply(tiny.params, x[None])[0][0, 2]), rel=1e-5)
    with pytest.raises(ValueError, match=r"one target of one image"):
        met.deletion_insertion(tiny, x, m, sal.class_score([[2, 3]]))
    with pytest.raises(ValueError, match=r"as a jaxvis.saliency Target"):
        met.deletion_insertion(tiny, x, m, {"class": 2})


def test_no_cache_keeps_a_model_alive():
    """The compiled programs of saliency and of the metrics live on the model: a model nobody holds any more
    is freed, with its parameters."""
    import gc
    import weakref

    model = tiny_vgg(3)
    images = np.random.default_rng(0).uniform(size=(1, 64, 64, 3)).astype(np.float32)
    sal.saliency(model, images, sal.class_score([[1]]), sal.gradient())
    sal.saliency(model, images, sal.class_score([[1]]), sal.gradcam("conv4_2"))
    x = np.random.default_rng(6).standard_normal((64, 64, 3)).astype(np.float32)
    m = sal.saliency(model, x[None], sal.class_score([[1]]), sal.gradient(), preprocess=False).attributions[0, 0, ..., 0]
    met.deletion_insertion(model, x, m, sal.class_score([[1]]), steps=4)
    assert model.__dict__["_cached"]
    freed = weakref.ref(model)
    del model
    gc.collect()
    assert freed() is None


def test_detections_match_ground_truth_best_first_and_maps_have_a_centroid():
    det = {"valid": np.array([[True, True, True, True, False]]),
           "scores": np.array([[0.9, 0.8, 0.7, 0.3, 0.99]]),
           "boxes": np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [1, 1, 10, 10], [50, 50, 60, 60], [50, 50, 60, 60]]],
                             np.float32)}
    gt = np.array([[[0, 0, 10, 10], [21, 21, 31, 31], [50, 50, 60, 60], [0, 0, 10, 10]]], np.float32)
    valid = np.array([[True, True, True, False]])
    # rank 2 duplicates rank 0's object (taken), rank 3 scores too little, rank 4 is not a detection, and the
    # fourth ground-truth box is padding
    assert met.match_detections(det, gt, valid, min_score=0.5, most=4) == [[(0, 0), (1, 1)]]
    assert met.match_detections(det, gt, valid, min_score=0.2, most=4) == [[(0, 0), (1, 1), (3, 2)]]
    assert met.match_detections(det, gt, valid, min_score=0.5, most=1) == [[(0, 0)]]
    assert met.match_detections(det, gt, valid, min_score=0.5, most=4, iou=0.8) == [[(0, 0)]]
    m = np.zeros((20, 30))
    m[5, 7] = 2.0
    m[5, 9] = 2.0
    m[0, 0] = -5.0  # negative mass does not count
    assert met.centroid_offset(m, (4, 2, 10, 8)) == (1.5, 0.5)  # mass at x 7.5 and 9.5, y 5.5
    assert all(np.isnan(met.centroid_offset(-np.abs(m), (0, 0, 1, 1))))


def test_staged_randomisation_reports_each_stage(tiny):
    x = np.random.default_rng(2).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    t = sal.class_score([[1], [3]])
    order = met.layer_order(tiny.params)
    out = met.staged_randomisation(tiny, x, t, sal.gradient(), {"none": [], "top": order[:2], "all": order})
    assert list(out) == ["none", "top", "all"]
    assert out["none"] == pytest.approx(1.0) and out["all"] < 0.9 and -1.0 <= out["all"] <= 1.0


def test_every_method_refuses_a_chunk_that_is_not_a_positive_whole_number():
    from jaxvis import attribution as at

    refs = np.zeros((2, 8, 8, 3))
    makers = {"smoothgrad": at.smoothgrad, "integrated": at.integrated, "gradcam": at.gradcam, "odam": at.odam,
              "guided_gradcam": at.guided_gradcam, "drise": at.drise, "occlusion": at.occlusion,
              "feature_ablation": at.feature_ablation, "deeplift": at.deeplift,
              "deeplift_shap": lambda **kw: at.deeplift_shap(refs, **kw),
              "gradient_shap": lambda **kw: at.gradient_shap(refs, **kw), "lrp": at.lrp_epsilon,
              "shapley_sampling": at.shapley_sampling, "kernel_shap": at.kernel_shap, "lime": at.lime,
              "blur_ig": at.blur_ig, "xrai": at.xrai}
    for name, make in makers.items():
        assert make(chunk=3).chunk == 3 and make(chunk=np.int64(2)).chunk == 2 and make().chunk is None, name
        for bad in (0, -1, 2.5, True, "4"):
            with pytest.raises(sal.SaliencyError, match=rf"^{name}'s chunk is a positive whole number of \w"):
                make(chunk=bad)
