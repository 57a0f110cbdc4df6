"""experiments.saliency end to end: classifier and detector targets, outputs, clear errors."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_module


@pytest.fixture(scope="module")
def setup(tiny_files, tmp_path_factory):
    folder = tiny_files[0].parent
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (70, 70), dtype=np.uint8)).save(folder / "gray.png")
    return folder


def test_classifier_targets(setup, tmp_path):
    out = tmp_path / "s"
    proc = run_module("experiments.saliency", "--params", str(setup / "vgg.safetensors"), "--image",
                      str(setup / "a.png"), "--image", str(setup / "gray.png"), "--top_k", "2",
                      "--metrics", "deletion,insertion", "--out", str(out))
    assert "note: gray.png is grayscale" in proc.stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4
    first = records[0]
    m = np.load(out / first["map"])
    assert m.dtype == np.float32 and m.shape == (90, 120)
    assert np.load(out / records[2]["map"]).shape == (70, 70)
    with Image.open(out / first["png"]) as picture:
        assert picture.size == (120, 90)
    assert set(first["metrics"]) == {"deletion_auc", "insertion_auc"}
    assert "derived_box" in first


@pytest.mark.slow  # detector targets through the launcher; test_detection_methods stays
def test_detector_targets(setup, tmp_path):
    out = tmp_path / "d"
    run_module("experiments.saliency", "--params", str(setup / "ssd.safetensors"), "--image", str(setup / "a.png"),
               "--detection", "0,1", "--out", str(out))
    run_module("experiments.saliency", "--params", str(setup / "ssd.safetensors"), "--image", str(setup / "a.png"),
               "--box", "10,10,60,50", "--category", "b", "--out", str(out))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["detection", "detection", "box_label"]
    assert records[2]["box"] == [10.0, 10.0, 60.0, 50.0] and records[2]["target"] == "b in box"
    for r in records:
        assert np.load(out / r["map"]).shape == (90, 120)


@pytest.mark.parametrize("args,message", [
    (["--image", "missing.png", "--category", "1"], "does not exist; check the path"),
    (["--category", "nope"], "unknown category 'nope'"),
    (["--detection", "0"], "is a classifier: --detection and --box are for detectors"),
    ([], "give --category or --top_k"),
    (["--category", "1", "--metrics", "pointing"], "the pointing game needs --gt_box"),
])
def test_bad_input(setup, tmp_path, args, message):
    base = ["--params", str(setup / "vgg.safetensors"), "--out", str(tmp_path / "x")]
    if "--image" not in args:
        base += ["--image", str(setup / "a.png")]
    proc = run_module("experiments.saliency", *base, *args, check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr


@pytest.mark.parametrize("method", [pytest.param("odam", marks=pytest.mark.slow), "gradcam",
                                    pytest.param("drise", marks=pytest.mark.slow),
                                    pytest.param("smoothgrad", marks=pytest.mark.slow),   # sampling methods: slow
                                    pytest.param("guided_backprop", marks=pytest.mark.slow),
                                    pytest.param("guided_gradcam", marks=pytest.mark.slow),
                                    pytest.param("occlusion", marks=pytest.mark.slow),
                                    pytest.param("feature_ablation", marks=pytest.mark.slow)]
                         + [pytest.param(m, marks=pytest.mark.slow) for m in (
                             "deeplift", "deeplift_shap", "gradient_shap", "lrp_epsilon", "lrp_alphabeta",
                             "shapley_sampling", "kernel_shap", "lime", "blur_ig", "guided_ig", "xrai")])
def test_detection_methods(setup, tmp_path, method):
    """Per detection: the map (.npy, float32, the image's size) named in results.jsonl beside the
    detection's rank, box, label and score, and the ground-truth box with its pointing metrics."""
    out = tmp_path / method
    run_module("experiments.saliency", "--params", str(setup / "ssd.safetensors"), "--image", str(setup / "a.png"),
               "--detection", "0,1", "--method", method, *{"drise": ["--masks", "16"], "smoothgrad": ["--samples", "2"],
                                                               "occlusion": ["--window", "30", "--stride", "30"],
                                                               "feature_ablation": ["--cell", "30"],
                                                               "gradient_shap": ["--samples", "2"],
                                                               "lrp_alphabeta": ["--alpha", "2", "--beta", "1"],
                                                               "shapley_sampling": ["--samples", "1", "--cell", "60"],
                                                               "kernel_shap": ["--samples", "8", "--cell", "60"],
                                                               "lime": ["--samples", "8", "--cell", "60"],
                                                               "blur_ig": ["--steps", "2"], "guided_ig": ["--steps", "2"],
                                                               "xrai": ["--steps", "2"]}.get(
                   method, []), "--gt_box", "10,10,60,50",
               "--metrics", "pointing", "--localize=false", "--out", str(out))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["detection"] for r in records] == [0, 1]
    for r in records:
        assert r["method"] == method and r["kind"] == "detection"
        assert {"image", "target", "score", "map", "png", "box", "label", "det_score", "gt_box", "metrics"} <= set(r)
        assert r["gt_box"] == [10.0, 10.0, 60.0, 50.0] and len(r["box"]) == 4 and r["label"] in "abcd"
        assert set(r["metrics"]) == {"pointing_hit", "energy_pointing"}
        m = np.load(out / r["map"])
        assert m.dtype == np.float32 and m.shape == (90, 120) and np.isfinite(m).all()


def test_every_method_name_makes_its_method_and_reads_its_numbers():
    """Each --method name gives the method of that name, with the numbers METHOD_OPTIONS says it reads."""
    from jaxvis import attribution as at
    from jaxvis import cli

    for name in cli.METHOD_NAMES:
        method = cli.attribution_method(name, layer="conv5_2" if name in ("gradcam", "guided_gradcam") else None)
        assert isinstance(method, at.Method) and method.name in (name, "lrp"), name
    assert cli.attribution_method("kernel_shap", samples=40, cell=8) == at.kernel_shap(samples=40, cell=8)
    assert cli.attribution_method("lrp_alphabeta", alpha=2.0, beta=1.0) == at.lrp_alphabeta(2.0, 1.0)
    assert cli.attribution_method("lrp_epsilon", epsilon=0.25) == at.lrp_epsilon(0.25)
    assert cli.attribution_method("lime").lasso == 0.01 and cli.attribution_method("lime", lasso=0.0).lasso == 0.0
    assert cli.attribution_method("smoothgrad").samples == 25 and cli.attribution_method("lime").samples == 500
    assert cli.attribution_method("xrai", steps=6).steps == 6
    assert cli.attribution_method("xrai", algorithm="fast") == at.xrai(steps=64, algorithm="fast") != at.xrai(steps=64)
    assert set(cli.METHOD_OPTIONS) <= set(cli.METHOD_NAMES)
    with pytest.raises(cli.TextError, match="unknown attribution method 'saliency'; methods: gradient"):
        cli.attribution_method("saliency")
