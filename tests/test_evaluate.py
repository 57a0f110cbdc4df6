"""Evaluation of class models: judge verdicts, own probabilities, box crops and run directories, on tiny
models."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

import jaxvis
from jaxvis import boxes as bx
from jaxvis import evaluate as ev
from tiny import tiny_ssd, tiny_vgg


@pytest.fixture(scope="module")
def vgg():
    return tiny_vgg(seed=0)


@pytest.fixture(scope="module")
def pics():
    return np.random.default_rng(0).random((5, 64, 64, 3)).astype(np.float32)


def relabelled(model, labels):
    return jaxvis.from_spec(dataclasses.replace(model.spec, labels=tuple(labels)), model.params)


def test_crop_equals_torchvision_roi_align_with_one_sample_per_bin():
    rng = np.random.default_rng(1)
    picture = rng.random((40, 50, 3)).astype(np.float32)
    for box in ([3.0, 5.0, 19.0, 21.0], [10.5, 2.25, 30.0, 33.5], [0.0, 0.0, 50.0, 40.0]):
        size = (64, 56)  # larger than every box: no antialiasing
        ours = ev.crop(picture, box, size)
        theirs = roi_align(torch.from_numpy(picture).permute(2, 0, 1)[None].contiguous(), [torch.tensor([box])], size,
                           spatial_scale=1.0, sampling_ratio=1, aligned=True)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_shrinking_crop_keeps_a_uniform_region_and_refuses_a_box_outside():
    picture = np.zeros((128, 128, 3), np.float32)
    picture[20:100, 30:110] = (0.2, 0.5, 0.9)
    out = ev.crop(picture, [30, 20, 110, 100], (16, 16))
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out[2:-2, 2:-2], np.broadcast_to([0.2, 0.5, 0.9], (12, 12, 3)), atol=1e-5)
    with pytest.raises(ev.EvaluationError, match="inside the 128x128 picture"):
        ev.crop(picture, [100, 0, 140, 30], (16, 16))


def test_classifier_verdicts_match_the_networks_read_directly(vgg, pics):
    judge = tiny_vgg(seed=1)
    logits, _ = vgg.apply(vgg.params, vgg.preprocess(pics))
    own = np.asarray(jax.nn.softmax(logits, -1))
    jl, _ = judge.apply(judge.params, judge.preprocess(pics))
    jp = np.asarray(jax.nn.softmax(jl, -1))
    targets = [3, 0, 7, 7, 1]
    images = vgg.preprocess(pics)
    verdicts = ev.classifier_verdicts(vgg, judge, images, targets, seeds=[0, 1, 0, 1, 0])
    for v, t, o, p in zip(verdicts, targets, own, jp):
        assert v.target == f"class{t}" and v.judge_says == f"class{p.argmax()}"
        np.testing.assert_allclose(v.own_prob, o[t], rtol=1e-5)
        np.testing.assert_allclose(v.judge_prob, p[t], rtol=1e-5)
        assert v.agrees == (p.argmax() == t)
    assert [v.seed for v in verdicts] == [0, 1, 0, 1, 0]
    # the model as its own judge agrees exactly where the target is its top class
    self_judged = ev.classifier_verdicts(vgg, vgg, images, list(own.argmax(-1)))
    assert all(v.agrees for v in self_judged)


def test_the_judge_is_matched_by_class_name_not_position(vgg, pics):
    reversed_judge = relabelled(vgg, [f"class{i}" for i in reversed(range(10))])
    images = vgg.preprocess(pics)
    top = np.asarray(vgg.apply(vgg.params, images)[0]).argmax(-1)
    verdicts = ev.classifier_verdicts(vgg, reversed_judge, images, list(top))
    assert [v.judge_says for v in verdicts] == [f"class{9 - t}" for t in top]
    with pytest.raises(ev.EvaluationError, match="no class 'class0'"):
        ev.classifier_verdicts(vgg, relabelled(vgg, [f"other{i}" for i in range(10)]), images[:1], [0])


def test_box_probability_is_the_best_matched_default_box():
    det = tiny_ssd(seed=0)
    x = det.preprocess(np.random.default_rng(2).random((1, 300, 300, 3)).astype(np.float32))
    outputs, _ = det.apply(det.params, x)
    probs = np.asarray(jax.nn.softmax(outputs["cls_logits"][0], -1))
    for box, target in (([75.0, 75.0, 225.0, 225.0], 2), ([10.0, 10.0, 14.0, 14.0], 4)):
        overlap = np.asarray(bx.iou(np.asarray([box], np.float32), det.anchors))[0]
        chosen = overlap >= 0.5 if (overlap >= 0.5).any() else overlap == overlap.max()
        expected = probs[chosen, target].max()
        assert ev.box_probability(det, outputs, target, box) == pytest.approx(float(expected), rel=1e-6)
    assert (np.asarray(bx.iou(np.asarray([[10.0, 10.0, 14.0, 14.0]], np.float32), det.anchors)) < 0.5).all()


def write_run(folder, images, records):
    np.save(folder / "images.npy", np.asarray(images))
    with open(folder / "results.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


@pytest.mark.slow  # a detector sweep, then its judging; the classifier's verdicts stay
def test_a_detector_run_is_judged_on_the_crop_of_its_target_box(tmp_path):
    det = tiny_ssd(seed=0)
    judge = tiny_vgg(seed=3)
    judge = relabelled(judge, ["b", "a", "d", "c"] + [f"x{i}" for i in range(6)])
    rng = np.random.default_rng(4)
    pics = rng.random((2, 300, 300, 3)).astype(np.float32)
    boxes = [[75.0, 75.0, 225.0, 225.0], [0.0, 0.0, 300.0, 300.0]]
    write_run(tmp_path, det.preprocess(pics), [
        {"index": 1, "target": 4, "seed": 1, "boxes": [boxes[1]]},
        {"index": 0, "target": 1, "seed": 0, "boxes": [boxes[0]]}])
    verdicts, records = ev.run_verdicts(str(tmp_path), det, judge)
    assert [r["index"] for r in records] == [0, 1] and [v.target for v in verdicts] == ["a", "d"]
    for v, pic, box, target in zip(verdicts, pics, boxes, [1, 4]):
        crop = ev.crop(np.clip(np.asarray(det.to_image(det.preprocess(pic[None])))[0], 0, 1), box, (64, 64))
        jl, _ = judge.apply(judge.params, judge.preprocess(crop[None]))
        jp = np.asarray(jax.nn.softmax(jl, -1))[0]
        assert v.judge_says == judge.labels[jp.argmax()]
        np.testing.assert_allclose(v.judge_prob, jp[judge.labels.index(v.target)], rtol=1e-4)
        outputs, _ = det.apply(det.params, det.preprocess(pic[None]))
        assert v.own_prob == pytest.approx(ev.box_probability(det, outputs, target, box), rel=1e-5)


def test_a_run_without_its_files_or_boxes_says_what_is_missing(tmp_path):
    with pytest.raises(ev.EvaluationError, match="images.npy does not exist"):
        ev.read_run(str(tmp_path))
    write_run(tmp_path, np.zeros((1, 300, 300, 3), np.float32), [{"index": 0, "target": 1, "boxes": []}])
    with pytest.raises(ev.EvaluationError, match="need target boxes"):
        ev.run_verdicts(str(tmp_path), tiny_ssd(seed=0), tiny_vgg(seed=0))


def test_summary_counts_per_class_and_the_table_shows_them():
    V = ev.Verdict
    verdicts = [V(0, "a", "a", 0.9, 0.95), V(1, "a", "b", 0.1, 0.5), V(2, "b", "b", 0.8, 0.99),
                V(3, "b", "b", 0.7, 0.91)]
    s = ev.summary(verdicts)
    assert (s.agree, s.total, s.confident) == (3, 4, 3)
    assert s.per_class == {"a": (1, 2, 0.5, 1), "b": (2, 2, 0.91, 2)}
    assert s.min_own_prob == 0.5
    text = ev.table({"recipe x": s})
    assert (s.classes_read, s.classes_confident) == (2, 1)
    assert "| recipe x | 3/4 | 1/2 | 2/2 | 0.500 | 3/4 (>= 0.9) | 2/2 / 1/2 |" in text
    with pytest.raises(ev.EvaluationError, match="no verdicts"):
        ev.summary([])


def test_the_launcher_writes_the_table_verdicts_and_grid_of_two_runs(tmp_path, tiny_files):
    from conftest import run_module
    from jaxvis.fileio import sha256

    vgg_file, _ = tiny_files
    vgg = jaxvis.load(vgg_file)
    pics = np.random.default_rng(5).random((4, 64, 64, 3)).astype(np.float32)
    top = np.asarray(vgg.apply(vgg.params, vgg.preprocess(pics))[0]).argmax(-1)
    for name, targets in (("a", top), ("b", (top + 1) % 10)):
        folder = tmp_path / name
        folder.mkdir()
        write_run(folder, vgg.preprocess(pics), [{"index": i, "target": int(t), "seed": i % 2}
                                                 for i, t in enumerate(targets)])
        (folder / "config.json").write_text(json.dumps({"params_sha256": sha256(vgg_file)}))
    out = tmp_path / "eval"
    proc = run_module("experiments.evaluate", "--run", f"self={tmp_path / 'a'}", "--run", f"other={tmp_path / 'b'}",
                      "--params", str(vgg_file), "--judge", str(vgg_file), "--out", str(out))
    # the model judging its own top classes agrees on all four images; on the next class on none
    assert "| self | 4/4 |" in proc.stdout and "| other | 0/4 |" in proc.stdout
    assert (out / "table.md").read_text().strip() == proc.stdout.strip()
    lines = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert [(v["run"], v["agrees"]) for v in lines] == [("self", True)] * 4 + [("other", False)] * 4
    from PIL import Image
    with Image.open(out / "grid.png") as grid:
        assert grid.size[0] > 96
    other = tmp_path / "other.safetensors"
    from jaxvis import params as params_io
    params_io.save(other, tiny_vgg(seed=9).params, vgg.spec)
    refused = run_module("experiments.evaluate", "--run", str(tmp_path / "a"), "--params", str(other),
                         "--out", str(tmp_path / "eval2"), check=False)
    assert refused.returncode != 0 and "another params file" in refused.stderr


def test_points_are_grouped_by_the_axes_other_than_target_and_seed():
    def record(i, loss, box, seed, target):
        return {"index": i, "loss": loss, "boxes": [box], "seed": seed, "target": target, "lr": 0.05,
                "at": {"loss": 0 if "multibox" in loss else 1, "boxes": 0 if box[0] == 0 else 1, "seed": seed,
                       "target": target, "lr": 0}}

    mb, bb = {"multibox": 1.0}, {"biggest_box": 1.0, "box_loc": 0.5}
    records = [record(0, mb, [0, 0, 8, 8], 0, 1), record(1, mb, [2, 2, 6, 6], 0, 1), record(2, bb, [0, 0, 8, 8], 1, 2),
               record(3, mb, [0, 0, 8, 8], 1, 2)]
    assert ev.groups(records) == [("multibox box 0,0,8,8", [0, 3]), ("multibox box 2,2,6,6", [1]),
                                  ("biggest_box+0.5*box_loc box 0,0,8,8", [2])]
    assert ev.groups([r for r in records if r["loss"] is mb and r["boxes"][0][0] == 0]) == [("", [0, 1])]


def _verdict_line(group, target, seed, own_prob, agrees):
    """A line of verdicts.jsonl as experiments.evaluate writes it."""
    return {"run": "r", "group": group, "index": 0, "target": target, "seed": seed,
            "judge_says": target if agrees else "ring", "judge_prob": 0.5, "own_prob": own_prob, "agrees": agrees}


def test_seed_blocks_count_sure_and_read_classes_per_block_of_seeds():
    lines = []
    for seed in range(4):
        for c, target in enumerate(("circle", "square", "star")):
            # seeds 0-1: every image sure and read; seeds 2-3: the square unsure at seed 3, the star unread
            own = 0.5 if (seed == 3 and target == "square") else 0.95
            agrees = not (seed >= 2 and target == "star")
            lines.append(_verdict_line("g", target, seed, own, agrees))
    lines.append(_verdict_line("h", "circle", 0, 0.99, True))
    lines.append(_verdict_line("h", "circle", 1, 0.2, False))
    assert ev.block_counts([r for r in lines if r["group"] == "g" and r["seed"] < 2], 0.9) == (3, 3)
    assert ev.block_counts([r for r in lines if r["group"] == "g" and r["seed"] >= 2], 0.9) == (2, 2)
    # a class is read when the judge agrees on half its images: one of two counts
    assert ev.block_counts([r for r in lines if r["group"] == "h"], 0.9) == (0, 1)
    g, h = ev.seed_blocks(lines, block=2, threshold=0.9, min_sure=3, min_read=3)
    assert g.startswith("g: p>=0.9 11/12, judge 10/12") and "3/3* 2/2: 1/2 met" in g
    assert "circle:4/4 square:3/4 star:4/2" in g
    assert h.startswith("h: p>=0.9 1/2, judge 1/2") and "0/1: 0/1 met" in h
    # a block of four seeds takes them all (the star read on 2 of 4: read); a last block short of seeds is left out
    assert "2/3: 0/1 met" in ev.seed_blocks(lines, block=4, threshold=0.9, min_sure=3, min_read=3)[0]
    assert "3/3* 2/2: 1/2 met" in ev.seed_blocks(lines, block=2, threshold=0.9, min_sure=3, min_read=3)[0]
    three_seeds = [r for r in lines if r["seed"] < 3]
    assert ": 1/1 met" in ev.seed_blocks(three_seeds, block=2, threshold=0.9, min_sure=3, min_read=3)[0]


@pytest.mark.slow
def test_recipe_search_runs_each_variant_and_summarises_it(tmp_path):
    from conftest import run_module

    variants = tmp_path / "variants.json"
    variants.write_text(json.dumps({"plain": ["--plain_views", "1"], "broken": ["--views", "0"]}))
    proc = run_module("experiments.recipe_search", "--variants", str(variants), "--out", str(tmp_path / "s"),
                      "--flags=--steps 2 --snapshots '' --categories circle --seeds 0,1", "--jobs", "2",
                      "--min_sure", "1", "--min_read", "0")
    summary = (tmp_path / "s" / "summary.txt").read_text()
    assert summary.strip() == proc.stdout.strip()
    assert "## plain: exit 0" in summary and "plain box 44,44,84,84: p>=0.9" in summary
    assert "plain box 32,32,96,96: p>=0.9" in summary and "blocks of 2 seeds" in summary
    assert "## broken: exit 1" in summary and "no verdicts: see" in summary
    assert "views" in (tmp_path / "s" / "broken.log").read_text()
