"""The benchmark completes on a tiny configuration and prints its table (no timings are asserted)."""

import json

import pytest

from conftest import run_module
from jaxvis import conv


@pytest.mark.slow  # three workloads, each in processes of its own with PyTorch beside
def test_bench_smoke_run_prints_the_table():
    proc = run_module("experiments.bench", "--tiny", "--reps", "1", "--steps", "1", "--workloads",
                      "shapes,vgg16,saliency", "--nofirst_step")
    out = proc.stdout
    assert "A jaxvis" in out and "A/B" in out and "of peak" in out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    workloads = [r["workload"] for r in rows]
    assert workloads[:3] == ["shapes", "vgg16", "saliency"] and workloads[-1] == "machine"
    for r in rows[:3]:
        assert r["A"] > 0 and r["B"] > 0 and r["C"] > 0 and r["peak_rss_gb"] > 0
        assert r["gflop_per_image_step"] > 0 and r["matmul_peak_gflops"] > 0
        assert r["conv"] == ("onednn" if conv.onednn_available() else "xla")
    # The FLOP count covers the convolutions whichever kernels ran them: VGG16's input gradient at
    # 64x64 is (64/224)^2 of its 60 GFLOP at 224, about 4.9.
    vgg16 = rows[1]
    assert 4.0 < vgg16["gflop_per_image_step"] < 6.0


@pytest.fixture
def bench_flags():
    """experiments.bench's flags, parsed at their defaults (restored afterwards)."""
    from absl import flags
    from absl.testing import flagsaver

    from experiments import bench

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver():
        yield bench


def test_workloads_are_values_in_a_registry(bench_flags):
    """Each workload names its model, its child's measurement and its PyTorch sides; a name that is not in the
    registry is refused with the names that are."""
    from absl import app

    bench = bench_flags
    assert list(bench.WORKLOADS) == ["vgg16", "ssd300", "shapes", "shapes_grid", "saliency", "feature_vis",
                                     "channels", "cams", "drise"]
    for w in bench.WORKLOADS.values():
        assert callable(w.model) and callable(w.child) and callable(w.torch_sides)
        assert (w.grid is not None) == w.dtypes == (w.child is bench.class_model_child)
        assert (w.lucid is not None) == (w.child is bench.feature_vis_child)
    assert bench.WORKLOADS["drise"].work() == bench.FLAGS.masks and bench.WORKLOADS["cams"].unit == "detections/s"
    with pytest.raises(app.UsageError, match="unknown workload 'vgg'; workloads: vgg16, ssd300, shapes"):
        bench.workload_named("vgg")

def test_the_shapes_grid_is_six_classes_by_learning_rates_by_seeds(bench_flags):
    bench = bench_flags
    model = bench.jaxvis_model("shapes_grid", tiny=False)
    points = bench.grid_points("shapes_grid", model)
    assert len(points) == 64
    assert {p[0] for p in points} == set(range(6)) == set(range(len(model.spec.labels)))
    assert {p[1] for p in points} == set(bench.LRS) and {p[2] for p in points} == {bench.GRID_INIT}
    assert {p[3] for p in points} == set(range(bench.GRID_SEEDS))
    assert len(set(points)) == 64  # no point twice
    # A runs the first points of the engine's grid; B and C run the same points in the same order.
    sweep, n = bench.grid_of("shapes_grid", model)
    arrays = sweep.arrays(sweep.term_names)
    assert n == 64 and [p[0] for p in points] == arrays["target"][:64].tolist()
    assert [p[3] for p in points] == arrays["seed"][:64].tolist()
    bench.FLAGS.grid_points = 73
    with pytest.raises(Exception, match="grid_points must lie in 1..72"):
        bench.grid_of("shapes_grid", model)


def test_the_pytorch_sides_start_from_each_points_noise(bench_flags):
    import torch

    bench = bench_flags
    x = bench._start(8, 8, [(0, 0.5, 0.1, 3), (1, 1.0, 0.0, 3), (2, 1.0, 0.1, 3)], "cpu")
    want = 0.1 * torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(3))
    assert x.shape == (3, 3, 8, 8)
    torch.testing.assert_close(x[0], want)
    torch.testing.assert_close(x[2], want)
    assert not x[1].any()


@pytest.mark.slow  # SSD300 at 300x300 through jaxvis and torchvision: about a minute
def test_torch_drise_equals_jaxvis_drise_on_the_same_masks():
    """The PyTorch D-RISE of the benchmark computes jaxvis's map when given jaxvis's masks: the same
    proposals, similarity and weighting, so that the two sides time the same work."""
    import jax
    import numpy as np
    import torch

    from converters.torch_models import torch_ssd300
    from experiments import bench_explain as bx
    from jaxvis import saliency as sal

    model = bx.random_ssd300()
    image = np.random.default_rng(0).random((1, 300, 300, 3), dtype=np.float32)
    x = np.asarray(model.preprocess(image))
    anchor, cls, masks, seed = len(model.anchors) // 3, 1, 6, 5
    target = sal.detection(np.array([[anchor]]), np.array([[cls]]))
    e = sal.saliency(model, x, target, sal.drise(masks=masks, chunk=4), preprocess=False, seed=seed)
    key = jax.random.split(jax.random.key(seed), 1)[0]
    ms = np.stack([np.asarray(sal.rise_mask(jax.random.fold_in(key, i), (300, 300), 16, 0.5)) for i in range(masks)])
    tmodel = torch_ssd300(model).requires_grad_(False)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy())
    clean, got = bx.torch_drise(tmodel, model, xt, anchor, cls, masks, 4,
                                mask_fn=lambda start, n: torch.tensor(ms[start:start + n]))
    want = e.attributions[0, 0]
    assert want.max() > 0 and float(clean) == pytest.approx(float(e.scores[0, 0]), rel=1e-4)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-4 * want.max())
    # torch's own masks are RISE masks of the same kind: binary grids up-sampled, values in [0, 1].
    tm = bx.torch_rise_masks(3, 300, 300, generator=torch.Generator().manual_seed(0))
    assert tm.shape == (3, 300, 300) and 0 <= float(tm.min()) and float(tm.max()) <= 1


def test_the_lucid_rows_read_the_same_activations_on_both_sides(bench_flags):
    """feature_vis: 6 classes x 4 seeds of the logits; channels: the 64 channels of conv5_2 x 2 seeds. Lucent's
    hook of each row (a module path of the torch twin, "_" for ".") gives what the jaxvis objective reads."""
    import jax.numpy as jnp
    import numpy as np
    import torch

    bench = bench_flags
    model = bench.jaxvis_model("channels", tiny=False)
    tmodel = bench.torch_twin(model)
    modules = dict(tmodel.named_modules())
    x = np.random.default_rng(0).standard_normal(model.input_shape(2)).astype(np.float32)
    logits, out = model.apply(model.params, jnp.asarray(x))
    for name, jaxvis_layer, points in (("feature_vis", None, 24), ("channels", "conv5_2", 128)):
        lucid = bench.WORKLOADS[name].lucid
        got = bench.fv_points(model, lucid)
        assert len(got) == len(set(got)) == points and got[:2] == [(0, 0), (0, 1)]
        seen = []
        hook = modules[lucid.lucent_layer.replace("_", ".")].register_forward_hook(lambda m, i, o: seen.append(o))
        with torch.no_grad():
            tmodel(torch.tensor(x.transpose(0, 3, 1, 2).copy()))
        hook.remove()
        want = np.asarray(logits if jaxvis_layer is None else out[jaxvis_layer])
        got = seen[0].numpy()
        np.testing.assert_allclose(got if got.ndim == 2 else got.transpose(0, 2, 3, 1), want, atol=1e-4)
    assert bench.CHANNELS.targets(model) == 64 and not bench.CHANNELS.judged and bench.CLASS_MODELS.judged


def test_lucent_batched_side_renders_every_class_model(bench_flags):
    """Lucent's batched side (one step): 24 RGB images of the classifier's input size, in [0, 1]."""
    pytest.importorskip("lucent")
    import numpy as np

    bench = bench_flags
    bench.FLAGS.fv_steps = 1
    model = bench.jaxvis_model("feature_vis", tiny=False)
    _, batched = bench.lucent_sides(model, bench.torch_twin(model))
    images = batched()
    assert images.shape == (24, 64, 64, 3) and np.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1
    assert 0 <= bench.judge_transfer(model, images, [c for c, _ in bench.fv_points(model)]) <= 1


@pytest.mark.slow  # the shapes grid and feature-visualisation rows, tiny, with PyTorch and Lucent beside
def test_bench_grid_and_feature_vis_rows():
    pytest.importorskip("lucent")
    proc = run_module("experiments.bench", "--reps", "1", "--steps", "1", "--grid_points", "8", "--fv_steps", "1",
                      "--workloads", "shapes_grid,feature_vis", "--nofirst_step")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    grid, fv = rows[0], rows[1]
    assert grid["workload"] == "shapes_grid" and grid["points"] == 8 and grid["loop"] in ("host", "scan")
    assert fv["workload"] == "feature_vis" and fv["points"] == 24 and fv["steps"] == 1
    for r in (grid, fv):
        assert r["A"] > 0 and r["B"] > 0 and r["C"] > 0
    for side in ("A", "B", "C"):
        assert 0 <= fv[f"judge_{side}"] <= 1
    assert "feature_vis" in proc.stdout and "A/C" in proc.stdout


@pytest.mark.slow  # SSD300 at 300x300 on both sides, a few minutes
def test_bench_explanation_rows():
    proc = run_module("experiments.bench", "--reps", "1", "--detections", "2", "--masks", "4", "--mask_chunk", "2",
                      "--workloads", "cams,drise", "--nofirst_step")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["workload"] for r in rows[:4]] == ["odam", "gradcam", "gradient", "drise"]
    for r in rows[:4]:
        assert r["A"] > 0 and r["B"] > 0 and r["C"] is None and r["A/B"] > 0
    assert rows[3]["unit"] == "masks/s" and rows[3]["points"] == 4 and rows[3]["chunk"] == 2
    assert rows[0]["unit"] == "detections/s" and rows[0]["points"] == 2
