"""experiments.class_model end to end on small models: the two study configs, outputs, resume rules and
clear errors."""

import json

import numpy as np
import pytest

from conftest import run_module


@pytest.fixture(scope="module")
def files(tiny_files):
    return tiny_files


def read_results(run):
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow  # 15 points x 200 steps through the launcher; tests/test_settings.py loads every study config
def test_vgg_goose_config_runs_end_to_end(files, tmp_path):
    vgg, _ = files
    run = tmp_path / "goose"
    proc = run_module("experiments.class_model", "--config", "experiments/configs/vgg_goose.py:shapes",
                      "--params", str(vgg), "--categories", "class2", "--steps", "12", "--snapshots", "4,12",
                      "--out", str(run), "--noprogress")
    assert "15 grid points x 12 steps" in proc.stdout
    results = read_results(run)
    assert len(results) == 15
    assert {r["label"].split(", ")[0] for r in results} == {"lr=0.01", "lr=0.1", "lr=1", "lr=10", "lr=100"}
    assert {json.dumps(r["loss"], sort_keys=True) for r in results} == {
        '{"score": 1.0}', '{"score": 1.0, "sq": 1.0}', '{"inv_score": 1.0}'}
    images = np.load(run / "images.npy")
    snapshots = np.load(run / "snapshots.npy")
    assert images.shape == (15, 64, 64, 3) and images.dtype == np.float32
    assert snapshots.shape == (3, 15, 64, 64, 3) and json.loads((run / "snapshot_steps.json").read_text()) == [0, 4, 12]
    assert not snapshots[0].any()                      # the zero start is kept
    np.testing.assert_array_equal(snapshots[2], images)
    for r in results:
        assert (run / r["file"]).stat().st_size > 0
    assert (run / "grid.png").exists() and (run / "iterations.png").exists()
    assert "report/data.js" in (run / "index.html").read_text()
    data = (run / "report" / "data.js").read_text()
    assert '"grid.png"' in data and '"curves/00014.png"' in data
    # lr 1 with the sq penalty raises the score above what the zero image gives.
    lab = [r for r in results if r["lr"] == 1.0 and r["loss"] == {"score": 1.0, "sq": 1.0}][0]
    assert lab["final_score"] > 1.0 and not lab["diverged"]


@pytest.mark.slow  # six SSD points at 300x300 through the launcher
def test_ssd_horse_config_runs_end_to_end(files, tmp_path):
    _, ssd = files
    run = tmp_path / "horse"
    run_module("experiments.class_model", "--config", "experiments/configs/ssd_horse.py:shapes",
               "--params", str(ssd), "--categories", "b", "--steps", "3", "--snapshots", "3", "--out", str(run),
               "--noprogress")
    results = read_results(run)
    assert len(results) == 6
    boxes = {json.dumps(r["boxes"]) for r in results}
    assert boxes == {json.dumps([[0.0, 0.0, 300.0, 300.0]]), json.dumps([[75.0, 75.0, 225.0, 225.0]])}
    assert {tuple(sorted(r["loss"])) for r in results} == {("biggest_box", "box_loc"), ("all_boxes",), ("multibox",)}
    assert np.load(run / "images.npy").shape == (6, 300, 300, 3)


@pytest.mark.slow  # five launcher runs
def test_rerun_and_resume_rules(files, tmp_path):
    vgg, _ = files
    run = tmp_path / "r"
    args = ["--params", str(vgg), "--categories", "0,1,2", "--lrs", "1", "--steps", "3", "--chunk_size", "1",
            "--out", str(run), "--noprogress"]
    run_module("experiments.class_model", *args)
    assert sorted(p.name for p in (run / "chunks").iterdir()) == ["00000.npz", "00001.npz", "00002.npz"]
    proc = run_module("experiments.class_model", *args, check=False)
    assert proc.returncode == 1 and "already holds a run; pass --resume" in proc.stderr
    proc = run_module("experiments.class_model", *args, "--resume")
    assert "3 chunk(s) already done" in proc.stdout
    changed = [a if a != "3" else "4" for a in args]
    proc = run_module("experiments.class_model", *changed, "--resume", check=False)
    assert proc.returncode == 1 and "another configuration; differing: steps (3 on disk, 4 now)" in proc.stderr


@pytest.mark.slow  # four launcher runs
def test_conv_backend_and_loop_change_how_not_what(files, tmp_path):
    vgg, _ = files
    args = ["--params", str(vgg), "--categories", "0,1,2", "--lrs", "1", "--steps", "4", "--chunk_size", "1",
            "--noprogress"]
    run_module("experiments.class_model", *args, "--out", str(tmp_path / "a"))
    run_module("experiments.class_model", *args, "--out", str(tmp_path / "b"), "--conv_backend", "xla",
               "--loop", "scan")
    a, b = np.load(tmp_path / "a" / "images.npy"), np.load(tmp_path / "b" / "images.npy")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.abs(b).max())
    # They are not part of a run's identity: a run resumes under other values.
    (tmp_path / "a" / "chunks" / "00002.npz").unlink()
    proc = run_module("experiments.class_model", *args, "--out", str(tmp_path / "a"), "--resume",
                      "--conv_backend", "xla", "--loop", "scan")
    assert "2 chunk(s) already done" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--categories", "clas1"], "unknown category 'clas1'; did you mean 'class1'"),
    (["--categories", "12"], "category index 12 is out of range: this model's classes are numbered 0 to 9"),
    (["--categories", "1", "--lrs", "0"], "learning rates must be positive and finite, got [0.0]"),
    (["--categories", "1", "--steps", "0"], "steps must be a positive number of iterations, got 0"),
    (["--categories", "1", "--model", "vgg16"], "holds a tiny_vgg but vgg16 was asked for"),
    (["--categories", "1", "--objective", "multibox"], "term 'multibox' is for detectors"),
    (["--categories", "1", "--penalty", "sq"], "--penalty reads name=weight(s)"),
    (["--categories", "1", "--loss", "score", "--penalty", "sq=1"], "give either --loss variants or --objective"),
    (["--categories", "1", "--loss", "score+sqq"], "cannot read loss 'score+sqq': unknown objective term 'sqq'"),
    (["--categories", "1", "--loss", "score+*sq"], "cannot read loss 'score+*sq' from '+*sq'"),
    (["--categories", "1", "--objective", "channel:conv9"], "no layer named 'conv9'"),
])
def test_bad_input_gets_one_clear_line(files, tmp_path, args, message):
    vgg, _ = files
    proc = run_module("experiments.class_model", "--params", str(vgg), "--out", str(tmp_path / "x"), "--noprogress",
                      *args, check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr


@pytest.mark.slow
def test_study_configs_run_on_vgg16_and_ssd300(converted_vgg, converted_ssd, tmp_path):
    _, _, vgg16 = converted_vgg("vgg16")
    run = tmp_path / "goose"
    proc = run_module("experiments.class_model", "--config", "experiments/configs/vgg_goose.py", "--params",
                      str(vgg16), "--steps", "2", "--snapshots", "1,2", "--lrs", "0.1,1", "--out", str(run),
                      "--noprogress")
    assert "vgg16: 6 grid points x 2 steps" in proc.stdout
    results = read_results(run)
    assert len(results) == 6 and {r["target_name"] for r in results} == {"goose"}
    assert np.load(run / "images.npy").shape == (6, 224, 224, 3)

    _, _, ssd300 = converted_ssd
    run = tmp_path / "horse"
    run_module("experiments.class_model", "--config", "experiments/configs/ssd_horse.py:coco", "--params",
               str(ssd300), "--steps", "2", "--snapshots", "2", "--out", str(run), "--noprogress")
    results = read_results(run)
    assert len(results) == 6 and {r["target_name"] for r in results} == {"horse"}
    assert np.load(run / "images.npy").shape == (6, 300, 300, 3)

    # the feature-visualisation recipes for the full-size networks, two steps each
    for recipe, params, category, size in (("lucid", vgg16, "goose", 224), ("ssd300", ssd300, "horse", 300)):
        run = tmp_path / recipe
        run_module("experiments.class_model", "--config", f"experiments/configs/feature_vis.py:{recipe}", "--params",
                   str(params), "--categories", category, "--seeds", "0", "--steps", "2", "--snapshots", "",
                   "--nopngs", "--out", str(run), "--noprogress")
        results = read_results(run)
        assert len(results) == 1 and results[0]["target_name"] == category
        assert np.all(np.isfinite(np.load(run / "images.npy")))
        assert np.load(run / "images.npy").shape == (1, size, size, 3)
