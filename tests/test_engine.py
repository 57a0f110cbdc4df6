"""The sweep engine: agreement with a plain PyTorch loop, vmap/shard invariance, no recompiles,
objectives that improve, and isolation of diverging points."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest
import torch

from jaxvis import cli, conv, engine
from jaxvis import objectives as obj
from jaxvis import parameterizations as par
from jaxvis import transforms as tfm
from tiny import tiny_ssd, tiny_vgg
from torch_ref import torch_model_from

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def vgg():
    return tiny_vgg(0)


@pytest.fixture(scope="module")
def ssd():
    return tiny_ssd(0)


LAB = obj.score() + obj.sq()  # the lab's loss: -S_c + mean(x^2)


def lab_engine(model, steps=10, optimizer=engine.Optimizer(), snapshots=()):
    terms = (obj.score() + obj.sq()).terms
    return engine.Engine(model, terms, optimizer=optimizer, steps=steps, snapshots=snapshots)


def torch_loop(tmodel, x0, target, lr, lam, steps, optimizer):
    xt = torch.tensor(x0.transpose(2, 0, 1)[None].copy(), requires_grad=True)
    if optimizer == "sgd":
        opt = torch.optim.SGD([xt], lr=lr)
    elif optimizer == "momentum":
        opt = torch.optim.SGD([xt], lr=lr, momentum=0.9)
    else:
        opt = torch.optim.Adam([xt], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = -tmodel(xt)[0, target] + lam * (xt ** 2).mean()
        loss.backward()
        opt.step()
    return xt.detach().numpy()[0].transpose(1, 2, 0)


@pytest.mark.parametrize("optimizer,init,lrs", [
    ("sgd", 0.0, [0.1, 1.0, 3.0]),
    ("sgd", 1.0, [1.0, 10.0]),
    ("momentum", 1.0, [0.3]),
    ("adam", 1.0, [0.05]),
])
def test_images_equal_a_pytorch_loop(vgg, optimizer, init, lrs):
    """10 steps of -S_c + lambda mean(x^2) on the same weights (biases randomised: with zero biases a zero
    image has a zero gradient), against torch autograd and torch.optim, within 1e-4 relative.

    The settings are those where the trajectory is well conditioned. From the zero image every max-pool
    window is an exact tie, which both sides resolve the same way (the first element); after the first
    step the elements of a window differ by amounts proportional to the learning rate. At lr >= 0.05
    those differences are far above float32 rounding and the two implementations agree to ~5e-7; at
    lr 0.003-0.03 they are at the rounding level of the conv outputs, near-ties are decided by rounding,
    and two correct implementations route the gradient differently (measured: 0.2 relative apart after
    10 steps). From a shared random start (the engine's step-0 snapshot fed to torch) there are no
    systematic ties and larger learning rates compare too."""
    tmodel = torch_model_from(vgg.spec, jax.tree.map(np.asarray, vgg.params))
    eng = lab_engine(vgg, optimizer=cli.optimizer(optimizer))
    lam, target = 1.0, 3
    result = eng.run(engine.Sweep(targets=[target], lrs=lrs, losses=[obj.score() + lam * obj.sq()],
                                  init_scales=[init], seeds=[7]), progress=False)
    for i, lr in enumerate(lrs):
        x0 = result.snapshots[0][i]
        if init == 0:
            assert not x0.any()
        else:
            assert 0.5 < x0.std() < 1.5
        want = torch_loop(tmodel, x0, target, lr, lam, 10, optimizer)
        assert np.abs(want - x0).max() > 1e-3, "the image must have moved"
        np.testing.assert_allclose(result.images[i], want, rtol=0, atol=1e-4 * np.abs(want).max(), err_msg=f"lr={lr}")


def test_point_in_a_sweep_equals_the_point_alone_and_values_do_not_recompile(vgg):
    eng = lab_engine(vgg, steps=15, snapshots=[5])
    sweep = engine.Sweep(targets=[1, 4], lrs=[0.5, 2.0], losses=[LAB], weights={"sq": [0.0, 1.0]},
                         init_scales=[0.5], seeds=[3])
    grid = eng.run(sweep, chunk_size=8, progress=False)
    assert grid.images.shape == (8, 64, 64, 3) and eng.trace_count == 1
    axes = sweep.point_axes()
    k = 5
    assert axes[k] == {"target": 4, "lr": 0.5, "loss": LAB.loss, "w:sq": 1.0, "init": 0.5, "seed": 3, "boxes": []}
    alone_engine = lab_engine(vgg, steps=15, snapshots=[5])
    alone = alone_engine.run(engine.Sweep(targets=[4], lrs=[0.5], losses=[LAB],
                                          init_scales=[0.5], seeds=[3]), progress=False)
    scale = np.abs(alone.images).max()
    np.testing.assert_allclose(grid.images[k], alone.images[0], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(grid.snapshots[5][k], alone.snapshots[5][0], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(grid.loss[:, k], alone.loss[:, 0], rtol=1e-5, atol=1e-6)

    # New values, same shapes: the compiled program is reused.
    other = engine.Sweep(targets=[7, 9], lrs=[0.1, 0.3], losses=[2.0 * obj.score() + obj.sq()], weights={"sq": [0.5, 3.0]},
                         init_scales=[0.0], seeds=[11])
    again = eng.run(other, chunk_size=8, progress=False)
    assert eng.trace_count == 1
    assert not np.allclose(again.images, grid.images)


@pytest.fixture(scope="module")
def fixed_engine(vgg):
    """An engine that has run once, its sweep and its first result, shared by the replace() cases (each checks
    that the engine's own program is untouched by the engine it replaced)."""
    eng = lab_engine(vgg, steps=6)
    sweep = engine.Sweep(targets=[2], lrs=[1.0], losses=[LAB])
    return eng, sweep, eng.run(sweep, progress=False)


# Each case compiles a program of its own: three in the default suite (a shape, a stage, a parameterisation),
# the other settings behind the slow marker.
@pytest.mark.parametrize("name, value", [("steps", 4), pytest.param("jitter", 2, marks=pytest.mark.slow),
                                         pytest.param("clip", True, marks=pytest.mark.slow),
                                         pytest.param("loop", "other", marks=pytest.mark.slow),
                                         pytest.param("compute_dtype", "bfloat16", marks=pytest.mark.slow),
                                         pytest.param("snapshots", (0, 2), marks=pytest.mark.slow),
                                         ("transforms", (tfm.rotate(10),)),
                                         ("parameterization", par.fourier() + par.sigmoid())])
def test_settings_are_fixed_after_a_run_and_replace_builds_a_new_program(fixed_engine, name, value):
    """What a compiled program depends on cannot change under it: assigning is refused, replace() makes an
    engine whose first run compiles its own program and follows the new value."""
    eng, sweep, first = fixed_engine
    if value == "other":  # the loop that auto did not choose
        value = {"host": "scan", "scan": "host"}[eng.loop]
    with pytest.raises(AttributeError, match=rf"Engine.{name} is fixed once the engine is built.*replace"):
        setattr(eng, name, value)
    other = eng.replace(**{name: value})
    assert getattr(eng, name) != getattr(other, name) or name == "snapshots"
    second = other.run(sweep, progress=False)
    assert other.trace_count <= 1 and eng.trace_count <= 1  # the host loop traces its own step functions
    if name == "steps":
        assert second.loss.shape == (4, 1) and first.loss.shape == (6, 1)
    if name == "snapshots":
        assert sorted(second.snapshots) == [0, 2] and sorted(first.snapshots) == [0]
    # The first engine's program is untouched: a rerun gives its first result bit for bit.
    np.testing.assert_array_equal(eng.run(sweep, progress=False).images, first.images)


def test_snapshots_are_the_images_after_k_steps(vgg):
    sweep = engine.Sweep(targets=[2], lrs=[1.0], losses=[LAB])
    full = lab_engine(vgg, steps=12, snapshots=[4, 12]).run(sweep, progress=False)
    short = lab_engine(vgg, steps=4).run(sweep, progress=False)
    np.testing.assert_array_equal(full.snapshots[4], short.images)
    np.testing.assert_array_equal(full.snapshots[12], full.images)
    assert sorted(full.snapshots) == [0, 4, 12]
    assert full.loss.shape == (12, 1) and full.terms.shape == (12, 1, 2)
    np.testing.assert_allclose(full.loss[0], full.terms[0, :, 0] + full.terms[0, :, 1], rtol=1e-6)  # -S_c + sq


def test_sharded_over_eight_cpu_devices_equals_unsharded(tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np, jax
        sys.path.insert(0, "tests")
        from jaxvis import engine
        from jaxvis import objectives as obj
        from tiny import tiny_vgg
        assert len(jax.devices()) == 8, jax.devices()
        model = tiny_vgg(0)
        sweep = engine.Sweep(targets=[0, 1, 2, 3, 4], lrs=[0.3, 1.0], losses=[obj.score() + obj.sq()],
                             init_scales=[0.2], seeds=[5])
        terms = sweep.terms
        sharded = engine.Engine(model, terms, steps=8, snapshots=[4])
        one = engine.Engine(model, terms, steps=8, snapshots=[4], devices=jax.devices()[:1])
        assert sharded.chunk_size(10, 8) == 8
        a = sharded.run(sweep, chunk_size=8, progress=False)
        b = one.run(sweep, chunk_size=8, progress=False)
        np.savez(sys.argv[1], a=a.images, b=b.images, sa=a.snapshots[4], sb=b.snapshots[4], la=a.loss, lb=b.loss)
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = tmp_path / "r.npz"
    proc = subprocess.run([sys.executable, "-c", script, str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    r = np.load(out)
    assert r["a"].shape == (10, 64, 64, 3)
    scale = np.abs(r["b"]).max()
    np.testing.assert_allclose(r["a"], r["b"], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(r["sa"], r["sb"], rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(r["la"], r["lb"], rtol=1e-5, atol=1e-6)


OBJECTIVES = [
    ("vgg", "score", {}), ("vgg", "log_prob", {}), ("vgg", "inv_score", {}),
    ("vgg", "activation", {"layer": "conv3_2"}), ("vgg", "activation", {"layer": "conv4_1", "position": (2, 3)}),
    ("vgg", "activation", {"layer": "fc7_pre"}), ("vgg", "sq", {}), ("vgg", "l2", {}), ("vgg", "tv", {}),
    ("ssd", "biggest_box", {}), ("ssd", "box_loc", {}), ("ssd", "all_boxes", {}),
    ("ssd", "all_boxes", {"reduce": "sum"}), ("ssd", "multibox", {}), ("ssd", "activation", {"layer": "conv8_2"}),
    ("ssd", "tv", {}),
]


@pytest.fixture(scope="module")
def objective_engines(vgg, ssd):
    """One engine per model holding every term of OBJECTIVES, compiled once: a test's loss weighs its own term
    1 and the others 0, so each run optimises that term alone through the one program."""
    engines = {}

    def get(kind):
        if kind not in engines:
            terms = [cli.term(t, **o) for k, t, o in OBJECTIVES if k == kind]
            eng = engine.Engine(vgg if kind == "vgg" else ssd, obj.Objective(tuple(p for t in terms for p in t.parts)),
                                optimizer=engine.Optimizer(optax.adam), steps=20)
            engines[kind] = eng, terms
        return engines[kind]

    return get


@pytest.mark.parametrize("kind,term,options", OBJECTIVES,
                         ids=[f"{k}-{t}-{'-'.join(map(str, o.values()))}" for k, t, o in OBJECTIVES])
def test_every_objective_improves(objective_engines, kind, term, options):
    eng, terms = objective_engines(kind)
    mine = cli.term(term, **options).terms[0].name
    (part,) = [t.parts[0] for t in terms if t.terms[0].name == mine]
    loss = obj.Objective(tuple((t.parts[0][0], 0.0) if t.parts[0] is not part else part for t in terms))
    boxes = [[[0, 0, 300, 300]], [[75, 75, 225, 225]]] if kind == "ssd" else [[]]
    # a channel for activation terms (the detector's: also a class, as its engine holds class terms)
    targets = [3] if kind == "ssd" else [5] if term == "activation" else [1, 3]
    result = eng.run(engine.Sweep(targets=targets, lrs=[0.05], losses=[loss], init_scales=[0.5],
                                  seeds=[1], boxes=boxes), chunk_size=2, progress=False)
    assert eng.trace_count == 1  # every term's run goes through the one compiled program
    before, after = result.loss[0], result.final_loss
    assert np.all(np.isfinite(after)) and np.all(result.diverged_step == -1)
    assert np.all(after < before - 1e-3 * np.abs(before)), (before, after)


def test_a_diverging_point_is_reported_and_leaves_the_others_bit_identical(vgg):
    eng = lab_engine(vgg, steps=12)
    kw = dict(targets=[0, 5], losses=[obj.score() + 0.0 * obj.sq()], init_scales=[0.3], seeds=[2])
    with_bad = eng.run(engine.Sweep(lrs=[0.5, 1e30, 2.0], **kw), chunk_size=6, progress=False)
    without = eng.run(engine.Sweep(lrs=[0.5, 2.0], **kw), chunk_size=6, progress=False)
    assert eng.trace_count == 1
    lrs = [p["lr"] for p in engine.Sweep(lrs=[0.5, 1e30, 2.0], **kw).point_axes()]
    bad = np.array([lr == 1e30 for lr in lrs])
    assert np.all(with_bad.diverged_step[bad] >= 0) and np.all(with_bad.diverged_step[~bad] == -1)
    assert np.all(np.isfinite(with_bad.images))  # a diverged point keeps its last finite image
    np.testing.assert_array_equal(with_bad.images[~bad], without.images)
    np.testing.assert_array_equal(with_bad.loss[:, ~bad], without.loss)
    np.testing.assert_array_equal(with_bad.final_score[~bad], without.final_score)


@pytest.mark.parametrize("change,match", [
    (dict(targets=[]), r"axis 'target' is empty"),
    (dict(lrs=[0.0]), r"learning rates must be positive and finite, got \[0.0\]"),
    (dict(lrs=[-1.0, 1.0]), r"positive and finite, got \[-1.0\]"),
    (dict(targets=[10]), r"target index 10 is out of range: the classes of tiny_vgg are numbered 0 to 9"),
    (dict(losses=[obj.score()]), r"the losses use terms \['score'\] but the engine was built with \['score', 'sq'\]"),
    (dict(weights={"tv": [1.0]}), r"weight factors are given for \['tv'\], which no loss uses"),
    (dict(losses=[]), r"axis 'loss' is empty"),
    (dict(init_scales=[-1.0]), r"initialisation scales must be >= 0"),
])
def test_invalid_sweeps_are_refused(vgg, change, match):
    kw = dict(targets=[0], lrs=[1.0], losses=[LAB])
    kw.update(change)
    with pytest.raises(engine.SweepError, match=match):
        lab_engine(vgg).run(engine.Sweep(**kw), progress=False)


def test_invalid_steps_boxes_and_terms_are_refused(vgg, ssd):
    with pytest.raises(engine.SweepError, match=r"steps must be a positive number"):
        lab_engine(vgg, steps=0)
    with pytest.raises(engine.SweepError, match=r"snapshot iterations must lie in 0..steps \(10\), got \[11\]"):
        lab_engine(vgg, snapshots=[11])
    eng = engine.Engine(ssd, obj.multibox().terms, steps=2)
    for boxes, match in [([[[10, 10, 10, 50]]], r"zero or negative area"), ([[[-5, 0, 100, 100]]], r"outside the 300x300"),
                         ([[]], r"need target boxes")]:
        with pytest.raises(engine.SweepError, match=match):
            eng.run(engine.Sweep(targets=[1], lrs=[1.0], losses=[obj.multibox()], boxes=boxes), progress=False)
    with pytest.raises(ValueError, match=r"term 'score' is for classifiers, and tiny_ssd is a detector"):
        engine.Engine(ssd, obj.score(), steps=2)
    with pytest.raises(ValueError, match=r"term 'multibox' is for detectors"):
        engine.Engine(vgg, obj.multibox(), steps=2)
    with pytest.raises(ValueError, match=r"unknown objective term 'scor'"):
        cli.term("scor")
    with pytest.raises(ValueError, match=r"no layer named 'conv9'"):
        engine.Engine(vgg, obj.activation("conv9"), steps=2)


def test_inv_score_continues_below_eps_with_the_right_slope():
    ctx = lambda s: obj.Context(outputs=jax.numpy.reshape(s, (1, 1)), acts={}, x=None, target=0,  # noqa: E731
                                boxes=None, box_valid=None)
    f = obj.inv_score_fn(1.0)
    value = lambda s: float(f(ctx(np.float32(s))))  # noqa: E731
    assert value(4.0) == pytest.approx(0.25) and value(1.0) == pytest.approx(1.0)
    assert value(0.0) == pytest.approx(2.0) and value(-3.0) == pytest.approx(5.0)
    g = jax.grad(lambda s: f(ctx(s)))
    assert float(g(np.float32(-2.0))) == pytest.approx(-1.0) and float(g(np.float32(2.0))) == pytest.approx(-0.25)


def test_bfloat16_compute_runs_and_improves(vgg):
    terms = (obj.score() + obj.sq()).terms
    sweep = engine.Sweep(targets=[1, 2], lrs=[1.0], losses=[LAB], init_scales=[0.5], seeds=[0])
    result = engine.Engine(vgg, terms, steps=10, compute_dtype="bfloat16").run(sweep, progress=False)
    assert result.images.dtype == np.float32 and result.loss.dtype == np.float32
    assert np.all(result.final_loss < result.loss[0])
    full = lab_engine(vgg, steps=10).run(sweep, progress=False)
    # On the same starting image the loss agrees to bfloat16's precision (8 significant bits, summed
    # over the layers); after that the two trajectories part ways slowly, as the float32 ones of two
    # libraries do, so only the start is compared.
    assert not np.array_equal(result.images, full.images)
    np.testing.assert_allclose(result.loss[0], full.loss[0], rtol=0.03)
    assert np.all(result.final_score > result.score[0])
    with pytest.raises(engine.SweepError, match=r"compute_dtype must be float32 or bfloat16"):
        engine.Engine(vgg, terms, compute_dtype="float16")


def test_jitter_and_clip(vgg):
    terms = (obj.score() + obj.sq()).terms
    sweep = engine.Sweep(targets=[3], lrs=[10.0], losses=[LAB], init_scales=[1.0], seeds=[2])
    clipped = engine.Engine(vgg, terms, steps=10, clip=True).run(sweep, progress=False)
    lo = (0 - np.asarray(vgg.spec.mean)) / np.asarray(vgg.spec.std)
    hi = (1 - np.asarray(vgg.spec.mean)) / np.asarray(vgg.spec.std)
    for x in (clipped.images, clipped.snapshots[0]):
        assert np.all(x >= lo - 1e-6) and np.all(x <= hi + 1e-6)
    assert np.any(np.isclose(clipped.images, hi)) and np.any(np.isclose(clipped.images, lo))
    plain = engine.Engine(vgg, terms, steps=10).run(sweep, progress=False)
    jittered = engine.Engine(vgg, terms, steps=10, jitter=4).run(sweep, progress=False)
    assert not np.allclose(jittered.images, plain.images)
    assert np.all(jittered.final_loss < jittered.loss[0])
    with pytest.raises(engine.SweepError, match=r"jitter is a shift in pixels"):
        engine.Engine(vgg, terms, jitter=64)


def test_host_loop_and_scan_agree(vgg):
    """The two ways of looping over steps run the same program: same curves, images and snapshots."""
    terms = (obj.score() + obj.sq()).terms
    sweep = engine.Sweep(targets=[1, 2, 3], lrs=[0.5, 2.0], losses=[LAB], init_scales=[0.0, 0.3], seeds=[1])
    runs = {}
    for loop in ("scan", "host"):
        eng = engine.Engine(vgg, terms, steps=6, snapshots=[2, 6], jitter=3, clip=True, loop=loop)
        assert eng.loop == loop
        runs[loop] = eng.run(sweep, chunk_size=4, progress=False)
        assert eng.trace_count == 1
    a, b = runs["scan"], runs["host"]
    for name in ("images", "loss", "score", "prob", "terms", "final_loss", "final_prob"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-5, atol=1e-6, err_msg=name)
    for k in a.snapshots:
        np.testing.assert_allclose(b.snapshots[k], a.snapshots[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(b.diverged_step, a.diverged_step)
    # auto on CPUs: the scan where every convolution runs in oneDNN's kernels, the host loop with XLA's.
    assert engine.Engine(vgg, terms).loop == ("scan" if conv.onednn_available() else "host")
    assert engine.Engine(vgg.with_conv_backend("xla"), terms).loop == "host"
    assert engine.Engine(vgg, terms, compute_dtype="bfloat16").loop == "host"  # oneDNN's kernels are float32
    with pytest.raises(engine.SweepError, match="loop must be auto, scan or host"):
        engine.Engine(vgg, terms, loop="while")
