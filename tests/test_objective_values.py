"""Objectives as values: the algebra gives the value of the written sum, names read back into terms,
two activation objectives on different layers in one loss, and every objective improves over 20 steps
(objectives x models: a tiny VGG, the shipped shapes classifier and detector)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxvis
from jaxvis import assets, cli, engine
from jaxvis import objectives as O
from tiny import tiny_vgg


@pytest.fixture(scope="module")
def vgg():
    return tiny_vgg(0)


def context(model, x, target):
    outputs, acts = model.apply(model.params, x[None])
    return O.Context(outputs=outputs, acts=acts, x=x, target=jnp.int32(target), boxes=jnp.zeros((1, 4)),
                     box_valid=jnp.ones((1,), bool)), np.asarray(outputs)[0], {k: np.asarray(v)[0] for k, v in acts.items()}


def test_the_algebra_gives_the_value_of_the_written_sum(vgg):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 64, 3)).astype(np.float32))
    ref = np.random.default_rng(1).standard_normal((64, 64, 3)).astype(np.float32)
    vec = np.random.default_rng(2).standard_normal(32).astype(np.float32)
    ctx, logits, acts = context(vgg, x, target=4)
    xn = np.asarray(x, np.float64)
    tv = np.abs(np.diff(xn, axis=0)).mean() + np.abs(np.diff(xn, axis=1)).mean()
    log_softmax = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    cases = [
        (O.score() + 0.1 * O.sq(), -logits[4] + 0.1 * (xn ** 2).mean()),
        (-O.score(2) - O.tv() / 4, logits[2] - tv / 4),
        (2 * O.log_prob() - O.l2(), -2 * log_softmax[4] - (xn ** 2).sum()),
        (O.channel("conv3_2_pre") + O.channel("conv4_1_pre", 7) - 0.5 * O.neuron("conv5_1_pre", 3, (1, 2)),
         -acts["conv3_2_pre"][..., 4].mean() - acts["conv4_1_pre"][..., 7].mean() + 0.5 * acts["conv5_1_pre"][1, 2, 3]),
        (O.direction("conv4_2", vec) + 3 * O.l2_to(ref),
         -(acts["conv4_2"] @ vec).mean() + 3 * ((xn - ref) ** 2).mean()),
        (O.score() + O.score() - 0.5 * O.score(), -1.5 * logits[4]),
        (sum([O.sq(), O.tv(), O.sq()]), 2 * (xn ** 2).mean() + tv),
    ]
    for objective, want in cases:
        got = float(objective.value(vgg, ctx))
        assert got == pytest.approx(want, rel=1e-5, abs=1e-5), objective.name
    assert (O.score() + 0.1 * O.sq()).name == "score+0.1*sq"
    assert (O.channel("conv4_3", 7) + O.channel("conv5_1", 3)).name == "channel:conv4_3[7]+channel:conv5_1[3]"
    assert (-O.score(2) - O.tv() / 4).loss == {"score[2]": -1.0, "tv": -0.25}
    assert (O.score() + O.score()).loss == {"score": 2.0}
    assert (O.inv_score() + O.inv_score()).loss == {"inv_score": 2.0}  # a built-in is known by name and options
    with pytest.raises(TypeError):
        O.score() + 1.0
    with pytest.raises(TypeError):
        O.score() * O.sq()


def test_names_read_back_into_terms_and_bad_ones_are_refused(vgg):
    for objective in (O.neuron("conv4_1", 7, (2, 3)), O.inv_score(eps=0.5), O.score(3), O.channel("fc7_pre"),
                      O.all_boxes(total=True), O.head(1, 4), O.activation("conv5_1", (1, 2))):
        (term,) = objective.terms
        assert cli.term_named(term.name) == objective, term.name
    assert cli.loss("score+0.1*sq-0.5*tv") == O.score() + 0.1 * O.sq() - 0.5 * O.tv()
    with pytest.raises(cli.TextError, match=r"unknown objective term 'chanel:conv4_1'"):
        cli.term_named("chanel:conv4_1")
    for bad in ("score+0.1*sq+", "score sq", "2*"):
        with pytest.raises(cli.TextError, match=r"cannot read loss"):
            cli.loss(bad)
    with pytest.raises(cli.TextError, match=r"cannot read loss 'score\+sqq': unknown objective term 'sqq'"):
        cli.loss("score+sqq")
    with pytest.raises(O.ObjectiveError, match=r"no layer named 'conv9_9'; the model has conv1_1"):
        O.channel("conv9_9").fits(vgg)
    with pytest.raises(O.ObjectiveError, match=r"no layer named 'conv9_9'"):
        engine.Engine(vgg, O.channel("conv9_9"))
    with pytest.raises(cli.TextError, match=r"term 'neuron' needs position"):
        cli.term("neuron", layer="conv4_1")
    with pytest.raises(engine.SweepError, match=r"not a dict of term names"):
        engine.Sweep(targets=[0], lrs=[1.0], losses=[{"score": 1.0}])
    sweep = engine.Sweep(targets=[40], lrs=[1.0], losses=[O.channel("conv4_1_pre")])
    eng = engine.Engine(vgg, sweep.terms, steps=2)
    with pytest.raises(engine.SweepError, match=r"target index 40 is out of range: the channels of conv4_1_pre "
                                                r"are numbered 0 to 31"):
        eng.run(sweep, progress=False)


def test_two_activation_objectives_on_different_layers_in_one_loss(vgg):
    both = O.channel("conv3_2_pre") + O.channel("conv5_1_pre", 3)
    sweep = engine.Sweep(targets=[1, 6], lrs=[0.05], losses=[both, O.channel("conv3_2_pre")], init_scales=[0.5])
    terms = sweep.terms
    assert [t.name for t in terms] == ["channel:conv3_2_pre", "channel:conv5_1_pre[3]"]
    result = engine.Engine(vgg, terms, optimizer=engine.Optimizer(optax.adam), steps=20).run(sweep, progress=False)
    x0 = result.snapshots[0]
    _, acts = vgg.apply(vgg.params, x0)
    a3, a5 = np.asarray(acts["conv3_2_pre"]), np.asarray(acts["conv5_1_pre"])
    for i, point in enumerate(sweep.point_axes()):
        c = point["target"]
        want = [-a3[i, ..., c].mean(), -a5[i, ..., 3].mean()]
        np.testing.assert_allclose(result.terms[0, i], want, rtol=1e-5, atol=1e-6)
        weights = [1.0, 1.0] if len(point["loss"]) == 2 else [1.0, 0.0]
        assert result.loss[0, i] == pytest.approx(np.dot(weights, want), rel=1e-5)
    assert np.all(result.final_loss < result.loss[0])
    # both layers move: each term improves where the loss has both
    both_points = [i for i, p in enumerate(sweep.point_axes()) if len(p["loss"]) == 2]
    assert np.all(result.terms[-1, both_points] < result.terms[0, both_points])


def _models():
    return {"tiny_vgg": tiny_vgg(0), "shapes_vgg": jaxvis.load(assets.path("classifier")),
            "shapes_ssd": jaxvis.load(assets.path("detector"))}


CLASSIFIER = {
    "score": lambda m: O.score(), "log_prob": lambda m: O.log_prob(), "inv_score": lambda m: O.inv_score(),
    "channel": lambda m: O.channel("conv4_1_pre", 5), "neuron": lambda m: O.neuron("conv3_2_pre", 2, (5, 6)),
    "direction": lambda m: O.direction("conv5_1_pre", np.linspace(-1, 1, 32 if m.spec.arch == "tiny_vgg" else 64)),
    "two_layers": lambda m: O.channel("conv3_1_pre", 1) + O.channel("fc7_pre", 4),
    "lab": lambda m: O.score() + 0.1 * O.sq(),
    "sq": lambda m: O.sq(), "l2": lambda m: O.l2(), "tv": lambda m: O.tv(),
    "l2_to": lambda m: O.l2_to(np.full((64, 64, 3), 0.3, np.float32)),
}
def active_channel(model, layer):
    """A channel of a ReLU layer that is on for noise (a channel that is off everywhere has no gradient)."""
    x = 0.5 * np.random.default_rng(0).standard_normal(model.input_shape(1)).astype(np.float32)
    _, acts = model.apply(model.params, x)
    return int(np.asarray(acts[layer])[0].mean((0, 1)).argmax())


def active_neuron(model, layer):
    x = 0.5 * np.random.default_rng(0).standard_normal(model.input_shape(1)).astype(np.float32)
    _, acts = model.apply(model.params, x)
    a = np.asarray(acts[layer])[0]
    row, col, c = np.unravel_index(a.argmax(), a.shape)
    return O.neuron(layer, int(c), (int(row), int(col)))


DETECTOR = {
    "multibox": lambda m: O.multibox(), "biggest_box+box_loc": lambda m: O.biggest_box() + O.box_loc(),
    "all_boxes": lambda m: O.all_boxes(), "channel": lambda m: O.channel("map1", active_channel(m, "map1")),
    "neuron": lambda m: active_neuron(m, "conv4_3"), "tv": lambda m: O.tv(),
    "l2_to": lambda m: O.l2_to(np.zeros((128, 128, 3), np.float32)),
    "head": lambda m: O.head(2), "two_heads": lambda m: O.head(0, 1) + 0.5 * O.head(3),
}


@pytest.mark.parametrize("model_name", ["tiny_vgg", pytest.param("shapes_vgg", marks=pytest.mark.slow),
                                        pytest.param("shapes_ssd", marks=pytest.mark.slow)])  # the shipped models: slow
def test_every_objective_improves_over_20_steps(model_name):
    """All objectives of a model in one sweep (the losses axis; one compiled program): each point's loss
    after 20 Adam steps is below its loss at the start."""
    model = _models()[model_name]
    table = DETECTOR if model.spec.is_detector else CLASSIFIER
    objectives = {name: make(model) for name, make in table.items()}
    boxes = [[[32.0, 32.0, 96.0, 96.0]]] if model.spec.is_detector else [[]]
    sweep = engine.Sweep(targets=[2], lrs=[0.05], losses=list(objectives.values()), init_scales=[0.5], seeds=[1],
                         boxes=boxes)
    result = engine.Engine(model, sweep.terms, optimizer=engine.Optimizer(optax.adam),
                           steps=20).run(sweep, progress=False)
    before, after = result.loss[0], result.final_loss
    assert np.all(result.diverged_step == -1)
    for name, b, a in zip(objectives, before, after):
        assert a < b - 1e-3 * abs(b), (model_name, name, b, a)


def test_heads_split_all_boxes_by_scale():
    """The heads' terms are all_boxes restricted to each source map's default boxes: weighted by their box
    counts they add up to all_boxes; each equals the mean logit over its rows, counted from the maps."""
    model = _models()["shapes_ssd"]
    x = jnp.asarray(np.random.default_rng(0).standard_normal((128, 128, 3)).astype(np.float32))
    outputs, acts = model.apply(model.params, x[None])
    ctx = O.Context(outputs=outputs, acts=acts, x=x, target=jnp.int32(3), boxes=jnp.zeros((1, 4)),
                    box_valid=jnp.ones((1,), bool))
    logits = np.asarray(outputs["cls_logits"])[0, :, 3]
    per = model.spec.config["anchors_per_location"]
    counts = [acts[f"map{k}"].shape[1] * acts[f"map{k}"].shape[2] * a for k, a in enumerate(per)]
    assert sum(counts) == len(logits)
    values, start = [], 0
    for k, n in enumerate(counts):
        value = float(O.head(k).value(model, ctx))
        np.testing.assert_allclose(value, -logits[start:start + n].mean(), rtol=1e-5, atol=1e-6)
        values.append(value)
        start += n
    everything = float(O.all_boxes().value(model, ctx))
    np.testing.assert_allclose(np.dot(counts, values) / sum(counts), everything, rtol=1e-5, atol=1e-6)
    assert O.head(1, 4).name == "head:map1[4]" and cli.term_named("head:map1[4]") == O.head(1, 4)
    with pytest.raises(O.ObjectiveError, match="map0 ... map3"):
        O.head(6).fits(model)
    with pytest.raises(O.ObjectiveError, match="for detectors"):
        O.head(0).fits(tiny_vgg(0))


def test_opacity_outside_weighs_the_opacity_by_the_distance_past_the_target_boxes():
    model = _models()["shapes_ssd"]
    x = jnp.zeros((128, 128, 3))
    outputs, acts = model.apply(model.params, x[None])
    alpha = np.random.default_rng(3).uniform(size=(128, 128)).astype(np.float32)
    boxes = np.array([[40.0, 30.0, 80.0, 70.0], [100.0, 100.0, 120.0, 124.0], [0.0, 0.0, 128.0, 128.0]], np.float32)
    valid = np.array([True, True, False])  # an invalid box (padding) covers nothing
    ctx = O.Context(outputs=outputs, acts=acts, x=x, target=jnp.int32(1), boxes=jnp.zeros((3, 4)),
                    box_valid=jnp.asarray(valid), alpha=jnp.asarray(alpha), image_boxes=jnp.asarray(boxes))
    centre = np.arange(128) + 0.5
    weight = np.ones((128, 128))
    for (x0, y0, x1, y1), ok in zip(boxes, valid):
        if ok:
            dy = np.maximum(np.maximum(y0 - centre, centre - y1), 0)[:, None]
            dx = np.maximum(np.maximum(x0 - centre, centre - x1), 0)[None, :]
            weight = np.minimum(weight, np.clip(np.maximum(dy, dx) / O.OUTSIDE_MARGIN, 0, 1))
    assert weight[50, 60] == 0 and weight[20, 60] == 1 and 0 < weight[50, 82] < 1
    np.testing.assert_allclose(float(O.opacity_outside().value(model, ctx)), (alpha * weight).mean(), rtol=1e-5)
    with pytest.raises(O.ObjectiveError, match="for detectors"):
        O.opacity_outside().fits(_models()["shapes_vgg"])
