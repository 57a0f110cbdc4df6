"""Extending jaxvis without editing it: a loss term, a parameterisation stage and an optimiser written here,
in the test file, run in a sweep as one compiled program over the grid (trace count 1), with per-point
weights and learning rates, and give what the same formula computes by hand."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvis import engine
from jaxvis import objectives as O
from jaxvis import parameterizations as P
from tiny import tiny_vgg


@pytest.fixture(scope="module")
def vgg():
    return tiny_vgg(0)


def centre_red(ctx: O.Context) -> jax.Array:
    """Minus the mean of the red channel over the 8x8 pixels at the centre of the image."""
    h, w = ctx.x.shape[:2]
    return -jnp.mean(ctx.x[h // 2 - 4:h // 2 + 4, w // 2 - 4:w // 2 + 4, 0])


def test_a_term_written_here_runs_in_a_sweep_with_per_point_weights(vgg):
    red = O.Term("centre_red", centre_red)
    sweep = engine.Sweep(targets=[1, 3], lrs=[0.05], losses=[O.score() + 0.5 * red, O.score()],
                         weights={red: [0.0, 4.0]}, init_scales=[0.3], seeds=[0])
    eng = engine.Engine(vgg, sweep, optimizer=optax.adam, steps=8)
    result = eng.run(sweep, progress=False)
    assert eng.trace_count == 1
    assert [t.name for t in sweep.terms] == ["score", "centre_red"]
    x0 = np.asarray(result.snapshots[0])
    np.testing.assert_allclose(result.terms[0, :, 1], -x0[:, 28:36, 28:36, 0].mean((1, 2)), rtol=1e-5, atol=1e-6)
    logits, _ = vgg.apply(vgg.params, x0)
    weights = []
    for i, point in enumerate(sweep.point_axes()):
        w = point["loss"].get("centre_red", 0.0) * point["w:centre_red"]
        weights.append(w)
        assert result.terms[0, i, 0] == pytest.approx(-float(logits[i, point["target"]]), rel=1e-5)
        assert result.loss[0, i] == pytest.approx(result.terms[0, i, 0] + w * result.terms[0, i, 1], rel=1e-5, abs=1e-6)
    weights = np.array(weights)
    # where the term weighs, the centre turns red; where it does not, only the score moves it
    drop = result.terms[0, :, 1] - result.terms[-1, :, 1]
    assert drop[weights > 0].min() > 3 * np.abs(drop[weights == 0]).max()
    # the same term in another sweep with other weights: the same program
    again = engine.Sweep(targets=[5, 6], lrs=[0.1], losses=[O.score() + 0.5 * red, O.score()], weights={red: [1.0, 2.0]},
                         init_scales=[0.3], seeds=[1])
    eng.run(again, progress=False)
    assert eng.trace_count == 1


def test_two_terms_of_one_name_are_refused():
    a, b = O.Term("mine", centre_red), O.Term("mine", lambda ctx: jnp.mean(ctx.x))
    with pytest.raises(O.ObjectiveError, match="two different terms are named 'mine'"):
        O.score() + a + b
    with pytest.raises(engine.SweepError, match="two different terms are named 'mine'"):
        engine.Sweep(targets=[0], lrs=[1.0], losses=[O.score() + a, O.score() + b])
    assert (a + a).loss == {"mine": 2.0}  # the same term twice is one term


@dataclasses.dataclass(frozen=True)
class Mirror(P.Stage):
    """A stage written here: the image made left-right symmetric, the mean of it and its mirror image."""

    def __call__(self, t, draw):
        return 0.5 * (t + t[:, ::-1])

    def check(self, chain, size):
        if size is not None and size[1] % 2:
            raise P.ParameterizationError("mirror needs an even width")


def test_a_parameterisation_stage_written_here_runs_in_a_sweep(vgg):
    chain = P.fourier() + P.sigmoid() + Mirror()
    assert chain.name == "fourier+sigmoid+mirror" and chain.stages[-1] == Mirror()
    # what the chain renders is the plain chain's image mirrored, by hand
    v = jax.random.normal(jax.random.key(0), chain.variable_shape((64, 64)))
    to_input = P.InputMap.of(vgg.spec)
    plain = np.asarray((P.fourier() + P.sigmoid()).image(v, P.Draw((64, 64), 1.3)))
    want = to_input(jnp.asarray(0.5 * (plain + plain[:, ::-1])))
    np.testing.assert_allclose(np.asarray(P.render(chain, v, (64, 64), to_input, 1.3)), want, atol=1e-6)
    # a grid over targets, learning rates and the Fourier decay: one program, every image symmetric
    sweep = engine.Sweep(targets=[1, 3], lrs=[0.05, 0.1], losses=[O.score()], init_scales=[0.5], seeds=[0],
                         decays=[1.0, 1.5])
    eng = engine.Engine(vgg, sweep, optimizer=optax.adam, steps=6, snapshots=[3], parameterization=chain)
    result = eng.run(sweep, progress=False)
    assert eng.trace_count == 1 and result.images.shape[0] == 8
    for images in (result.images, result.snapshots[0], result.snapshots[3]):
        np.testing.assert_allclose(images, images[:, :, ::-1], atol=1e-5)
    assert np.all(result.final_score > result.score[0])
    # its check runs with the model's input size; a stage that is not hashable is refused with the form to write
    with pytest.raises(P.ParameterizationError, match="mirror needs an even width"):
        chain.check((64, 63))

    class Loose(P.Stage):
        __hash__ = None

    with pytest.raises(P.ParameterizationError, match="frozen dataclass"):
        P.pixels() + Loose()


@pytest.mark.slow  # an optax schedule through a sweep; the term and stage written here stay
def test_an_optax_schedule_with_learning_rates_as_a_sweep_axis(vgg):
    """optax.adam under a warm-up-cosine schedule whose peak is each point's learning rate: the engine's
    images equal an optax loop of the same optimiser, point by point, from one compiled program (at rates
    where the trajectory is well conditioned, as ``test_images_equal_a_pytorch_loop`` explains: at 0.5, one
    pixel of 12288, whose gradient is at rounding level, takes Adam's step of the other sign)."""
    steps, target = 6, 2
    optimizer = engine.Optimizer(optax.adam, schedule=optax.warmup_cosine_decay_schedule(0.0, 1.0, 2, steps))
    sweep = engine.Sweep(targets=[target], lrs=[0.01, 0.05, 0.1], losses=[O.score()], init_scales=[0.3], seeds=[4])
    eng = engine.Engine(vgg, sweep, optimizer=optimizer, steps=steps)
    result = eng.run(sweep, progress=False)
    assert eng.trace_count == 1

    grad = jax.jit(jax.grad(lambda x: -vgg.apply(vgg.params, x[None])[0][0, target]))
    for i, lr in enumerate(sweep.lrs):
        opt = optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=2, decay_steps=steps))
        x = jnp.asarray(result.snapshots[0][i])
        with jax.numpy_dtype_promotion("standard"):  # optax's schedules mix int counts and floats
            state = opt.init(x)
            for _ in range(steps):
                updates, state = opt.update(grad(x), state, x)
                x = optax.apply_updates(x, updates)
        assert np.abs(x - result.snapshots[0][i]).max() > 1e-2 * lr, "the image must have moved"
        np.testing.assert_allclose(result.images[i], x, rtol=0, atol=1e-4 * np.abs(x).max(), err_msg=f"lr={lr}")
    # the warm-up starts at 0: the first step moves nothing, at every learning rate
    first = engine.Engine(vgg, sweep, optimizer=optimizer, steps=1).run(sweep, progress=False)
    np.testing.assert_array_equal(first.images, first.snapshots[0])
    eng.run(engine.Sweep(targets=[4], lrs=[0.2, 0.3, 0.05], losses=[O.score()], init_scales=[0.3], seeds=[5]),
            progress=False)
    assert eng.trace_count == 1


def test_an_optimiser_named_by_text_is_refused_with_the_form_to_write():
    with pytest.raises(engine.SweepError, match=r"not its name \('adam'\): Optimizer\(optax.sgd\)"):
        engine.Optimizer("adam")
    assert engine.Optimizer(optax.sgd, momentum=0.9).name == "sgd(momentum=0.9)"


def test_a_sweep_of_values_writes_a_resumable_run_directory(tmp_path, vgg):
    """A sweep with a term written here goes through ``sweeps.run_engine`` into the same run directory as the
    launcher's: records that say each point's settings, a report, a resume that reruns nothing, and a
    refusal to resume under another optimiser."""
    from jaxvis import sweeps
    from jaxvis.rundir import RunDirError

    red = O.Term("centre_red", centre_red)
    sweep = engine.Sweep(targets=[1, 2], lrs=[0.05], losses=[O.score() + 0.5 * red], weights={red: [1.0, 3.0]},
                         init_scales=[0.2], seeds=[0])
    eng = engine.Engine(vgg, sweep, optimizer=optax.adam, steps=4, snapshots=[2])
    out = tmp_path / "run"
    index = sweeps.run_engine(eng, sweep, str(out))
    assert os.path.exists(index) and (out / "axes.json").exists() and (out / "report" / "data.js").exists()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["target"], r["weights"]) for r in records] == [
        (1, {"score": 1.0, "centre_red": 0.5}), (1, {"score": 1.0, "centre_red": 1.5}),
        (2, {"score": 1.0, "centre_red": 0.5}), (2, {"score": 1.0, "centre_red": 1.5})]
    config = json.loads((out / "config.json").read_text())
    assert config["terms"] == [["score", {}], ["centre_red", {}]] and config["optimizer"] == "adam"
    images = np.load(out / "images.npy")
    np.testing.assert_array_equal(images, eng.run(sweep, progress=False).images)
    before = os.path.getmtime(out / "chunks")
    sweeps.run_engine(eng, sweep, str(out), resume=True)
    np.testing.assert_array_equal(np.load(out / "images.npy"), images)
    assert os.path.getmtime(out / "chunks") == before
    with pytest.raises(RunDirError):
        sweeps.run_engine(eng.replace(optimizer=engine.Optimizer(optax.sgd)), sweep, str(out), resume=True)


def mirror(key, x, boxes, t, ctx):
    """Mirrors the image left-right with probability 1/2, and the target boxes with it."""
    flip = jax.random.bernoulli(key)
    w = x.shape[1]
    y = jnp.where(flip, x[:, ::-1], x)
    if boxes is not None:
        boxes = jnp.where(flip, jnp.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], -1), boxes)
    return y, boxes


@pytest.mark.slow
def test_a_transform_written_here_moves_the_target_boxes():
    """A detector sweep through a transform of this file: the view and the boxes the objective sees are the
    mirrored ones whenever the point's key says so, the loss is MultiBox's on them, and the grid is one
    program."""
    import jaxvis
    from jaxvis import assets
    from jaxvis import transforms as T
    from jaxvis.engine import core

    ssd = jaxvis.load(assets.path("detector"))
    box = [12.0, 30.0, 52.0, 70.0]
    sweep = engine.Sweep(targets=[1, 4], lrs=[0.05], losses=[O.multibox()], init_scales=[0.3], seeds=[0],
                         boxes=[[box]])
    eng = engine.Engine(ssd, sweep, optimizer=optax.adam, steps=4, transforms=(mirror,))
    result = eng.run(sweep, progress=False)
    assert eng.trace_count == 1 and np.all(result.diverged_step == -1)

    pts = jax.tree.map(jnp.asarray, sweep.arrays(eng.term_names))
    p = {k: v[0] for k, v in pts.items()}
    x = jnp.asarray(result.snapshots[0][0])
    flips = []
    for t in range(4):
        view, boxes = core.seen(eng.config, x, p, t, with_boxes=True)
        flip = bool(jax.random.bernoulli(T.view_key(p["seed"], t)))
        flips.append(flip)
        want = np.asarray(x)[:, ::-1] if flip else np.asarray(x)
        np.testing.assert_array_equal(np.asarray(view), want)
        want_box = [128 - box[2], box[1], 128 - box[0], box[3]] if flip else box
        np.testing.assert_allclose(np.asarray(boxes)[0], want_box)
        if t == 0:
            outputs, acts = ssd.apply(ssd.params, jnp.asarray(want)[None])
            ctx = O.Context(outputs=outputs, acts=acts, x=x, target=jnp.int32(1), boxes=jnp.asarray([want_box]),
                            box_valid=jnp.ones((1,), bool))
            assert result.loss[0, 0] == pytest.approx(float(O.multibox().value(ssd, ctx)), rel=1e-5)
    assert any(flips) and not all(flips), flips
    # composed with built-ins, and new boxes: the same program
    eng = engine.Engine(ssd, sweep, optimizer=optax.adam, steps=1, transforms=(T.compose(mirror, T.jitter(2)),))
    eng.run(sweep, progress=False)
    eng.run(engine.Sweep(targets=[2, 3], lrs=[0.1], losses=[O.multibox()], boxes=[[[60.0, 60.0, 100.0, 110.0]]]),
            progress=False)
    assert eng.trace_count == 1
    assert T.name_of(T.compose(mirror, T.jitter(2))) == "compose(mirror,jitter(2))"
    with pytest.raises(engine.SweepError, match="transforms are functions"):
        engine.Engine(ssd, sweep, transforms=("mirror",))


def margin(model, outputs, fields):
    """How much more the classifier believes class ``a`` than class ``b``."""
    logits = outputs[0]
    return logits[fields["a"]] - logits[fields["b"]]


def test_an_attribution_target_written_here_is_explained_by_the_gradient_methods(vgg):
    from jaxvis import saliency as sal

    x = np.random.default_rng(3).normal(size=(2, 64, 64, 3)).astype(np.float32)
    target = sal.target(margin, a=[[1, 4]] * 2, b=[[2, 2]] * 2)
    got = sal.saliency(vgg, x, target, sal.gradient(), preprocess=False)
    a = sal.saliency(vgg, x, sal.class_score([[1, 4]] * 2), sal.gradient(), preprocess=False)
    b = sal.saliency(vgg, x, sal.class_score([[2, 2]] * 2), sal.gradient(), preprocess=False)
    scale = np.abs(a.attributions).max()
    np.testing.assert_allclose(got.attributions, a.attributions - b.attributions, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(got.scores, a.scores - b.scores, rtol=1e-5, atol=1e-5)
    traces = sal.TRACES
    sal.saliency(vgg, x, sal.target(margin, a=[[0, 3]] * 2, b=[[5, 6]] * 2), sal.gradient(), preprocess=False)
    assert sal.TRACES == traces  # other classes, the same program
    smooth = sal.saliency(vgg, x, target, sal.smoothgrad(samples=4), preprocess=False)
    assert smooth.attributions.shape == (2, 2, 64, 64, 3) and np.isfinite(smooth.attributions).all()


@pytest.mark.slow  # a GradientMethod written here; the attribution target written here stays
def test_an_attribution_method_written_here_runs_in_the_gradient_program(vgg):
    """VarGrad (Adebayo et al. 2018), the variance of the gradient over noisy copies of the image, written as a
    GradientMethod here: one compiled program for every image and target, equal to the formula by hand at
    the same noisy copies (drawn from each image's key), and wrapped by SmoothGrad as a built-in method is."""
    from jaxvis import saliency as sal

    @dataclasses.dataclass(frozen=True)
    class VarGrad(sal.GradientMethod):
        samples: int = 4
        noise: float = 0.2
        name = "vargrad"

        @property
        def points(self):
            return self.samples

        def combine(self, grad, z, g, key, data, chunk):
            sigma = self.noise * (jnp.max(z) - jnp.min(z))
            draws = jax.vmap(lambda i: grad(z + sigma * jax.random.normal(jax.random.fold_in(key, i), z.shape, z.dtype)))
            return jnp.var(draws(jnp.arange(self.samples)), axis=0)

    x = np.random.default_rng(4).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    classes = [[1, 4], [2, 0]]
    traces = sal.TRACES
    got = VarGrad().attribute(vgg, x, sal.class_score(classes), preprocess=False, seed=5)
    assert sal.TRACES == traces + 1 and got.attributions.shape == (2, 2, 64, 64, 3)
    keys = jax.random.split(jax.random.key(5), 2)
    by_hand = jax.jit(jax.vmap(jax.grad(lambda im, c: vgg.apply(vgg.params, im[None])[0][0, c]), in_axes=(0, None)))
    for n in range(2):
        sigma = 0.2 * (x[n].max() - x[n].min())
        noisy = [x[n] + sigma * np.asarray(jax.random.normal(jax.random.fold_in(keys[n], i), x[n].shape))
                 for i in range(4)]
        for k, c in enumerate(classes[n]):
            grads = np.asarray(by_hand(jnp.asarray(np.stack(noisy)), c))
            np.testing.assert_allclose(got.attributions[n, k], grads.var(0), rtol=1e-3, atol=1e-6 * grads.var(0).max())
    smoothed = sal.smoothgrad(VarGrad(), samples=2, noise=0.1).attribute(vgg, x, sal.class_score(classes),
                                                                         preprocess=False, seed=5)
    assert smoothed.attributions.shape == got.attributions.shape and np.all(smoothed.attributions >= 0)


@pytest.mark.slow
def test_a_detector_target_written_here_equals_its_gradient_by_hand():
    """A detector: the class's mean probability over the default boxes centred in a region of the input."""
    import jaxvis
    from jaxvis import assets
    from jaxvis import saliency as sal

    ssd = jaxvis.load(assets.path("detector"))
    centres = (ssd.anchors[:, :2] + ssd.anchors[:, 2:]) / 2

    def region_presence(model, outputs, fields):
        inside = jnp.all((centres >= fields["region"][:2]) & (centres <= fields["region"][2:]), axis=-1)
        probs = jax.nn.softmax(outputs["cls_logits"][0], axis=-1)[:, fields["class"]]
        return jnp.sum(jnp.where(inside, probs, 0.0)) / jnp.sum(inside.astype(probs.dtype))

    z = np.random.default_rng(4).uniform(size=(1, 128, 128, 3)).astype(np.float32)
    fields = {"region": np.array([[[20.0, 20.0, 70.0, 60.0]]], np.float32), "class": np.array([[2]])}
    got = sal.saliency(ssd, z, sal.target(region_presence, **fields), sal.gradient(), preprocess=False)
    f = {k: jnp.asarray(v[0, 0]) for k, v in fields.items()}
    want = jax.grad(lambda zi: region_presence(ssd, ssd.apply(ssd.params, zi[None])[0], f))(jnp.asarray(z[0]))
    np.testing.assert_allclose(got.attributions[0, 0], want, rtol=0, atol=1e-5 * np.abs(want).max())
    with pytest.raises(sal.SaliencyError, match="D-RISE explains a detection or a box with a label"):
        sal.saliency(ssd, z, sal.target(region_presence, **fields), sal.drise(masks=4), preprocess=False)


def test_targets_are_pytrees_that_slice_and_concatenate():
    from jaxvis import saliency as sal

    t = sal.detection([[3, 5], [7, 9], [1, 2]], [[1, 1], [2, 2], [3, 3]])
    same = jax.jit(lambda target: target)(t)
    assert isinstance(same, sal.Target) and same.kind == "detection"
    np.testing.assert_array_equal(same.fields["anchor"], t.fields["anchor"])
    assert t[1:].shape == (2, 2) and t[[0, 2]].fields["class"].tolist() == [[1, 1], [3, 3]]
    whole = sal.Target.concatenate([t[:1], t[1:]])
    np.testing.assert_array_equal(whole.fields["anchor"], t.fields["anchor"])
    with pytest.raises(sal.SaliencyError, match="one kind"):
        sal.Target.concatenate([t, sal.class_score([[1, 2]])])


def test_the_two_namespaces_hold_what_a_researcher_composes(vgg):
    from jaxvis import attribution as at
    from jaxvis import engine as engine_module
    from jaxvis import optvis as ov
    from jaxvis import saliency

    for namespace in (ov, at):
        assert all(hasattr(namespace, name) for name in namespace.__all__), namespace.__name__
    assert ov.Sweep is engine_module.Sweep and at.target is saliency.target
    red = ov.Term("centre_red", centre_red)
    sweep = ov.Sweep(targets=[1], lrs=[0.05], losses=[ov.score() + red], init_scales=[0.2])
    result = ov.Engine(vgg, sweep, optimizer=optax.adam, steps=2, transforms=(ov.jitter(2),)).run(sweep, progress=False)
    assert np.isfinite(result.final_loss).all()
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    why = at.explain(vgg, x, at.target(margin, a=[[1]], b=[[2]]), at.gradient(), preprocess=False)
    assert why.attributions.shape == (1, 1, 64, 64, 3)
