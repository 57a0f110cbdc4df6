"""Feature accentuation (Hamblin et al. 2024): a sweep over start images, each point starting from its
own image and pulled towards it by ``l2_start``; the launcher's ``--start_images``."""

import json

import numpy as np
import optax
import pytest

from conftest import run_module
from jaxvis import cli
from jaxvis import engine
from jaxvis import objectives as obj
from jaxvis import parameterizations as par
from jaxvis import preprocess as pre
from tiny import tiny_vgg


@pytest.fixture(scope="module")
def vgg():
    return tiny_vgg(0)


def start_images(model, n, seed=0):
    """n network-input images of smooth colour blobs."""
    rng = np.random.default_rng(seed)
    h, w = model.spec.input_size
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    rgb = [np.clip(0.5 + 0.4 * np.sin(6 * xx[..., None] * rng.uniform(0.5, 2, 3) + 4 * yy[..., None]
                                          * rng.uniform(0.5, 2, 3) + rng.uniform(0, 6, 3)), 0, 1) for _ in range(n)]
    return np.asarray(pre.normalize(model.spec, np.asarray(rgb, np.float32)))


@pytest.mark.parametrize("parameterization", [par.pixels(), cli.parameterization("fourier+decorrelated+sigmoid")])
def test_each_point_starts_from_its_image_and_stays_near_it(vgg, parameterization):
    starts = start_images(vgg, 2)
    sweep = engine.Sweep(targets=[1, 3], lrs=[0.05], losses=[obj.score() + 10.0 * obj.l2_start()], starts=starts)
    assert [n for n, _ in sweep.axes()][0] == "start" and sweep.size == 4
    eng = engine.Engine(vgg, sweep.terms, steps=6, optimizer=engine.Optimizer(optax.adam),
                        parameterization=parameterization, snapshots=[0])
    result = eng.run(sweep, progress=None)
    scale = np.abs(starts).max()
    for i, point in enumerate(sweep.point_axes()):
        # iteration 0 is the point's own start image (sigmoid: moved 1e-3 inside the range)
        np.testing.assert_allclose(result.snapshots[0][i], starts[point["start"]], rtol=0, atol=0.02 * scale)
    # the class score rose while the image stayed closer to its own start than to the other one
    assert np.all(result.score[-1] > result.score[0])
    for i, point in enumerate(sweep.point_axes()):
        own = np.mean((result.images[i] - starts[point["start"]]) ** 2)
        other = np.mean((result.images[i] - starts[1 - point["start"]]) ** 2)
        assert own < 0.25 * other
    # the l2_start term is the mean squared distance to the point's start image
    first = result.terms[0, :, 1]
    np.testing.assert_allclose(first, [np.mean((result.snapshots[0][i] - starts[p["start"]]) ** 2)
                                       for i, p in enumerate(sweep.point_axes())], rtol=1e-4, atol=1e-7)


def test_a_start_image_alone_equals_its_points_in_the_sweep(vgg):
    starts = start_images(vgg, 3, seed=1)
    kw = dict(targets=[0, 2], lrs=[0.3], losses=[obj.score() + obj.l2_start()], init_scales=[0.05], seeds=[4])
    both = engine.Sweep(starts=starts, **kw)
    alone = engine.Sweep(starts=starts[2:], **kw)
    eng = engine.Engine(vgg, both.terms, steps=4, transforms=(), jitter=2)
    a = eng.run(both, chunk_size=4, progress=None)  # the third image's points straddle two chunks
    b = eng.run(alone, chunk_size=4, progress=None)
    np.testing.assert_array_equal(a.images[4:], b.images)


def test_bad_start_images_are_refused(vgg):
    with pytest.raises(engine.SweepError, match=r"\(N, H, W, 3\)"):
        engine.Sweep(targets=[0], lrs=[1.0], losses=[obj.score()], starts=np.zeros((64, 64, 3)))
    sweep = engine.Sweep(targets=[0], lrs=[1.0], losses=[obj.score()], starts=np.zeros((1, 32, 32, 3)))
    with pytest.raises(engine.SweepError, match="resize them first"):
        sweep.validate(vgg, sweep.terms, 3)
    sweep = engine.Sweep(targets=[0], lrs=[1.0], losses=[obj.score() + obj.l2_start()])
    with pytest.raises(engine.SweepError, match="l2_start .* has none"):
        sweep.validate(vgg, sweep.terms, 3)


@pytest.mark.slow  # the launcher over image files; the start images in Python stay
def test_launcher_sweeps_over_start_image_files(tiny_files, tmp_path):
    from PIL import Image

    vgg_path, _ = tiny_files
    folder = tmp_path / "starts"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (80, 90, 3), np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    run = tmp_path / "run"
    proc = run_module("experiments.class_model", "--params", str(vgg_path), "--categories", "0,1", "--lrs", "0.1",
                      "--loss", "score+l2_start", "--start_images", str(folder), "--steps", "2", "--out", str(run),
                      "--noprogress", "--nopngs")
    assert "4 grid points" in proc.stdout
    results = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert [r["start"] for r in results] == [0, 0, 1, 1]
    config = json.loads((run / "config.json").read_text())
    assert [f for f, _ in config["start_images"]] == ["a.png", "b.png"]
    proc = run_module("experiments.class_model", "--params", str(vgg_path), "--categories", "0", "--lrs", "0.1",
                      "--start_images", str(tmp_path / "missing.png"), "--out", str(tmp_path / "r2"), "--noprogress",
                      check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr


@pytest.mark.slow  # the shipped classifier, 36 points
def test_accentuation_study_writes_its_figure_and_table(tmp_path):
    out = tmp_path / "acc"
    run_module("experiments.accentuate", "--out", str(out), "--steps", "3", "--pulls", "5")
    table = json.loads((tmp_path / "acc.json").read_text())["pulls"]["5"]
    assert table["of"] == 30 and 0 <= table["judge_reads_target"] <= 30 and table["rms_moved"] > 0
    assert (tmp_path / "acc.png").stat().st_size > 0 and "| 5 |" in (tmp_path / "acc.md").read_text()
