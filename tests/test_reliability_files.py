"""Issue 38, third round: the files jaxvis reads and writes. A bad model file, converter output place,
run folder or run directory gets one line saying what was expected and what to do; nothing already
computed is lost; and what used to pass in silence (an unreadable run in a folder report, NaN images
read as a class) is said on the terminal and in the outputs."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxvis
from conftest import run_module
from jaxvis import evaluate as ev
from jaxvis import params as params_io
from jaxvis import report
from jaxvis.params import ParamsFileError


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def _rewrite(src, dst, spec_changes=None, tensor_changes=None):
    """A copy of the params file ``src`` with spec fields and tensors replaced (written as a third party
    would: through safetensors directly, so nothing in jaxvis checks the values on the way)."""
    _, metadata = params_io.read_header(src)
    spec = json.loads(metadata["spec"])
    spec.update(spec_changes or {})
    tensors = dict(load_file(src))
    tensors.update(tensor_changes or {})
    save_file(tensors, dst, metadata={**metadata, "spec": json.dumps(spec)})
    return dst


# ---------------------------------------------------------------------------------------------------
# 1. Every spec field is checked when a model file is read.

BAD_SPECS = [
    ("input_size", [0, 64], "two whole numbers from 1 to 4096"),
    ("input_size", [-64, 64], "two whole numbers from 1 to 4096"),
    ("input_size", [100000, 100000], "two whole numbers from 1 to 4096"),
    ("input_size", 64, "two whole numbers from 1 to 4096"),
    ("std", [0.25, 0.0, 0.25], "3 finite numbers above 0"),
    ("std", [0.25, float("inf"), 0.25], "3 finite numbers above 0"),
    ("mean", [float("nan"), 0.5, 0.5], "3 finite numbers"),
    ("value_range", [1.0, 0.0], "low < high"),
    ("resize_size", 0, "a whole number from 1 to 4096"),
    ("family", "resnet", "family must be one of vgg, ssd"),
    ("labels", "abc", "a list of class names"),
    ("labels", ["a", "b"], "one name per class output: 10 (config num_classes), not 2"),
]


@pytest.mark.parametrize("field, value, expected", BAD_SPECS, ids=[f"{f}={v}" for f, v, _ in BAD_SPECS])
def test_a_spec_field_with_an_unusable_value_is_refused_on_load(tiny_files, tmp_path, field, value, expected):
    bad = _rewrite(tiny_files[0], tmp_path / "bad.safetensors", {field: value})
    with pytest.raises(ParamsFileError) as e:
        jaxvis.load(bad)
    line = _one_line(str(e.value))
    assert str(bad) in line and field in line and expected in line
    assert "got " in line and ("write the file again" in line or "upgrade jaxvis" in line)


def test_a_launcher_turns_a_bad_spec_into_one_error_line(tiny_files, tmp_path):
    bad = _rewrite(tiny_files[0], tmp_path / "bad.safetensors", {"input_size": [0, 64]})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    proc = run_module("experiments.evaluate", "--run", str(run), "--params", str(bad), "--judge", str(bad),
                      "--out", str(tmp_path / "eval"), check=False)
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert line.startswith("error: ") and "input_size must be two whole numbers from 1 to 4096" in line
    assert "got (0, 64)" in line


# ---------------------------------------------------------------------------------------------------
# 2. Integer tensors are refused, named with their dtype (the converter writes float32 only).

def test_integer_tensors_are_refused_with_their_names(tiny_files, tmp_path):
    flat = load_file(tiny_files[0])
    kernel = flat["params/fc8/kernel"]
    assert {str(a.dtype) for a in flat.values()} == {"float32"}
    bad = _rewrite(tiny_files[0], tmp_path / "int.safetensors",
                   tensor_changes={"params/fc8/kernel": (kernel * 100).astype(np.int32),
                                   "params/fc8/bias": np.zeros(flat["params/fc8/bias"].shape, np.int64)})
    with pytest.raises(ParamsFileError) as e:
        jaxvis.load(bad)
    line = _one_line(str(e.value))
    assert "2 tensor(s) that are not floating-point: params/fc8/bias (I64), params/fc8/kernel (I32)" in line
    assert "write the file again (python -m converters.torchvision" in line


# ---------------------------------------------------------------------------------------------------
# 3. The converter checks its output place before reading or converting anything.

def test_converter_refuses_a_directory_as_out_before_any_work(tmp_path):
    # the checkpoint does not exist: the refusal of --out comes first, so nothing was read
    proc = run_module("converters.torchvision", "--arch", "vgg11", "--checkpoint", str(tmp_path / "none.pth"),
                      "--out", str(tmp_path), check=False)
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert line.startswith(f"error: --out {str(tmp_path)!r} is a directory; give the path of the file to write")


def test_converter_refuses_an_unwritable_folder_before_any_work(tmp_path, monkeypatch):
    from converters import checkpoint as ckpt
    from converters import torchvision as tv

    def no_work(*args, **kwargs):
        raise AssertionError("the checkpoint was looked for before --out was checked")

    monkeypatch.setattr(ckpt, "locate", no_work)
    monkeypatch.setattr(ckpt, "read_state_dict", no_work)
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "vgg11.safetensors"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(folder) else real_access(p, mode))
    with pytest.raises(ckpt.CheckpointError) as e:
        tv.convert("vgg11", None, str(out), log=lambda *_: None)
    line = _one_line(str(e.value))
    assert line == (f"--out {str(out)!r} cannot be written: the folder {str(folder)!r} is not writable by this user; "
                    "give a path in a folder you can write, or change its permissions.")
    # a file where a folder should be, and a folder that does not exist yet (made when writing) is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(ckpt.CheckpointError, match="which is a file, not a folder"):
        tv.check_out(str(tmp_path / "file" / "sub" / "m.safetensors"))
    tv.check_out(str(tmp_path / "new" / "m.safetensors"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_converter_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        proc = run_module("converters.torchvision", "--arch", "vgg11", "--checkpoint", str(tmp_path / "none.pth"),
                          "--out", str(folder / "m.safetensors"), check=False)
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 1 and "is not writable by this user" in _one_line(proc.stderr)


# ---------------------------------------------------------------------------------------------------
# 4. A folder report with an unreadable run: the page is written for the others and names it.

def _sweep_run(path, n_points=2):
    """A minimal finished sweep's run directory: axes.json and results.jsonl."""
    os.makedirs(path, exist_ok=True)
    axes = {"format": 1, "kind": "sweep", "arch": "toy_vgg", "n_points": n_points, "input_size": [32, 32],
            "axes": [{"name": "target", "values": list(range(n_points)), "labels": [str(i) for i in range(n_points)]}],
            "varying": ["target"], "term_names": ["score"], "settings": {}, "created": "2024-01-01T00:00:00+00:00"}
    (path / "axes.json").write_text(json.dumps(axes))
    with open(path / "results.jsonl", "w") as f:
        for i in range(n_points):
            f.write(json.dumps({"index": i, "target": i, "at": {"target": i}, "diverged": False}) + "\n")


def _folder_data(folder):
    text = (folder / "report" / "runs_data.js").read_text()
    return json.loads(text[len("window.JAXVIS_DATA = "):].rstrip().rstrip(";"))


def test_folder_report_lists_an_unreadable_run_with_the_reason(tmp_path):
    runs = tmp_path / "runs"
    _sweep_run(runs / "good")
    _sweep_run(runs / "broken")
    (runs / "broken" / "axes.json").write_text('{"n_points": 2, "axes": [')      # torn
    (runs / "empty").mkdir()
    (runs / "empty" / "results.jsonl").write_text("")                           # used to be dropped in silence
    proc = run_module("experiments.report", str(runs), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "good: class models, toy_vgg" in proc.stdout and "3 run(s), 2 of them unreadable" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, proc.stderr
    broken = next(w for w in warnings if "broken" in w)
    assert broken.startswith(f"warning: {runs / 'broken'} could not be read: axes.json is not valid JSON (")
    assert "rerun the sweep into it with --resume" in broken
    assert any(f"{runs / 'empty'} could not be read: results.jsonl holds no records" in w for w in warnings)
    # the page: written, the good run linked, the others named with the reason and no link
    assert (runs / "runs.html").exists() and (runs / "good" / "index.html").exists()
    rows = {r["path"]: r for r in _folder_data(runs)["runs"]}
    assert set(rows) == {"good", "broken", "empty"}
    assert rows["good"]["link"] == "good/index.html" and rows["good"]["status"]["finished"]
    assert rows["broken"]["link"] is None and rows["broken"]["status"]["unreadable"]
    assert rows["broken"]["status"]["text"].startswith("not read: axes.json is not valid JSON")
    assert "results.jsonl holds no records" in rows["empty"]["error"]


def test_folder_page_names_the_unreadable_run(tmp_path):
    """The page as a reader sees it (headless Chromium, as tests/test_report.py's browser tests)."""
    import shutil

    from conftest import docs_module
    from test_report import CHROMIUM_ARGS, errors, open_page

    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    site = docs_module("check_site")
    if site.chromium_paths() is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them)")
    _sweep_run(tmp_path / "good")
    _sweep_run(tmp_path / "broken")
    (tmp_path / "broken" / "axes.json").write_text("{torn")
    page = report.write_folder(str(tmp_path))
    driver, profile = site.browser(CHROMIUM_ARGS)
    try:
        open_page(driver, page)
        assert errors(driver) == []
        notice = driver.find_element("id", "unreadable").text
        rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('#runs tr.run')).map(r => [r.dataset.path, r.className,"
            " r.querySelectorAll('a').length, r.cells[6].textContent])")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    assert notice.startswith("1 run(s) could not be read:\nbroken: axes.json is not valid JSON")
    table = {path: (cls, links, status) for path, cls, links, status in rows}
    assert table["good"] == ("run finished", 1, "finished")
    assert table["broken"][:2] == ("run unreadable", 0) and table["broken"][2].startswith("not read: axes.json")


def test_list_runs_keeps_going_past_a_run_whose_axes_lack_fields(tmp_path):
    _sweep_run(tmp_path / "a")
    _sweep_run(tmp_path / "b")
    (tmp_path / "b" / "axes.json").write_text(json.dumps({"arch": "x"}))
    runs = {r["path"]: r for r in report.list_runs(str(tmp_path))}
    assert runs["a"]["kind"] == "class models"
    assert runs["b"]["kind"] == "unreadable" and "axes.json has no valid n_points (got None)" in runs["b"]["error"]


# ---------------------------------------------------------------------------------------------------
# 5. experiments.evaluate: images and records that disagree; images with non-finite pixels.

def _write_run(folder, images, records, params_file=None):
    from jaxvis.fileio import sha256

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", np.asarray(images, np.float32))
    with open(folder / "results.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    if params_file is not None:
        (folder / "config.json").write_text(json.dumps({"params_sha256": sha256(params_file)}))
    return folder


@pytest.mark.parametrize("n_images", [2, 4])
def test_images_and_records_that_disagree_are_refused(tmp_path, n_images):
    images = np.zeros((n_images, 8, 8, 3), np.float32)
    run = _write_run(tmp_path / "run", images, [{"index": i, "target": 0} for i in range(3)])
    with pytest.raises(ev.EvaluationError) as e:
        ev.read_run(str(run))
    line = _one_line(str(e.value))
    assert f"images.npy holds {n_images} image(s) but results.jsonl 3 record(s)" in line
    assert "must come from the same finished run" in line


def test_non_finite_images_are_not_judged(tiny_files):
    vgg = jaxvis.load(tiny_files[0])
    images = np.array(vgg.preprocess(np.random.default_rng(0).random((3, 64, 64, 3)).astype(np.float32)))
    images[1, 5, 5, 0] = np.nan
    images[2, 0, 0, 2] = np.inf
    verdicts = ev.classifier_verdicts(vgg, vgg, images, [0, 1, 2], [0, 1, 2])
    assert [v.index for v in verdicts] == [0, 1, 2] and [v.seed for v in verdicts] == [0, 1, 2]
    assert verdicts[0].judged and verdicts[0].judge_says in vgg.labels
    for v in verdicts[1:]:
        assert not v.judged and v.judge_says == "not judged: non-finite pixels" and not v.agrees
        assert np.isnan(v.own_prob) and np.isnan(v.judge_prob)
    # the finite image's verdict is the one it gets alone
    alone = ev.classifier_verdicts(vgg, vgg, images[:1], [0], [0])[0]
    assert alone == verdicts[0]
    s = ev.summary(verdicts)
    assert (s.total, s.not_judged, s.agree) == (3, 2, int(verdicts[0].agrees))
    assert s.min_own_prob == verdicts[0].own_prob and s.per_class["class1"] == (0, 1, 1.0, 0)
    assert "| r (2 not judged: non-finite pixels) |" in ev.table({"r": s})


def _run_images(vgg):
    return np.array(vgg.preprocess(np.random.default_rng(1).random((4, 64, 64, 3)).astype(np.float32)))


def test_evaluate_launcher_refuses_a_mismatch_before_judging(tiny_files, tmp_path):
    vgg_file = tiny_files[0]
    images = _run_images(jaxvis.load(vgg_file))
    records = [{"index": i, "target": i, "seed": 0} for i in range(4)]
    out = tmp_path / "eval"
    # images.npy of 4 points beside 3 records: one line, before anything is judged or written
    short = _write_run(tmp_path / "short", images, records[:3], vgg_file)
    good = _write_run(tmp_path / "good", images, records, vgg_file)
    proc = run_module("experiments.evaluate", "--run", f"good={good}", "--run", f"short={short}", "--params",
                      str(vgg_file), "--judge", str(vgg_file), "--out", str(out), check=False)
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert line.startswith("error: ") and "images.npy holds 4 image(s) but results.jsonl 3 record(s)" in line
    assert not (out / "table.md").exists()


def test_evaluate_launcher_marks_nan_images(tiny_files, tmp_path):
    vgg_file = tiny_files[0]
    vgg = jaxvis.load(vgg_file)
    images = _run_images(vgg)
    records = [{"index": i, "target": i, "seed": 0} for i in range(4)]
    out = tmp_path / "eval"
    # a NaN image: marked in verdicts.jsonl and the table, and said on the terminal
    images[2] = np.nan
    nan_run = _write_run(tmp_path / "nan", images, records, vgg_file)
    proc = run_module("experiments.evaluate", "--run", f"nan={nan_run}", "--params", str(vgg_file), "--judge",
                      str(vgg_file), "--out", str(out), check=False)
    assert proc.returncode == 0, proc.stderr
    warning = _one_line(proc.stderr)
    assert warning.startswith("warning: nan: 1 of 4 image(s) have NaN or infinite pixels (diverged points: 2)")
    lines = [json.loads(x) for x in (out / "verdicts.jsonl").read_text().splitlines()]
    assert lines[2]["judge_says"] == "not judged: non-finite pixels" and lines[2]["own_prob"] is None
    assert all(x["judge_says"] in vgg.labels for k, x in enumerate(lines) if k != 2)
    assert "| nan (1 not judged: non-finite pixels) |" in (out / "table.md").read_text()
    # the verdict lines read back (recipe_search's seed blocks): the image's class is not sure
    assert ev.block_counts(lines, 0.0)[0] == 3


# ---------------------------------------------------------------------------------------------------
# Outputs that would destroy an input or an earlier result are refused.

def test_the_converter_refuses_to_write_over_its_own_checkpoint(tmp_path, monkeypatch):
    from converters import checkpoint as ckpt
    from converters import torchvision as tv

    pth = tmp_path / "vgg11.pth"
    pth.write_bytes(b"a checkpoint")
    monkeypatch.setattr(ckpt, "locate", lambda arch, checkpoint, allow_download=True: checkpoint)
    monkeypatch.setattr(ckpt, "read_state_dict", lambda *a, **k: pytest.fail("the checkpoint was read"))
    with pytest.raises(ckpt.CheckpointError, match="is the checkpoint being converted; writing it would destroy"):
        tv.convert("vgg11", str(pth), str(pth), overwrite=True, log=lambda *_: None)
    assert pth.read_bytes() == b"a checkpoint"


@pytest.mark.parametrize("held, what", [("table.md", "an earlier evaluation"), ("config.json", "a run directory")])
def test_evaluate_never_writes_over_an_earlier_evaluation_or_a_run(tmp_path, held, what):
    out = tmp_path / "e"
    out.mkdir()
    (out / held).write_text("kept")
    proc = run_module("experiments.evaluate", "--run", str(tmp_path / "r"), "--out", str(out), check=False)
    assert proc.returncode == 1
    assert _one_line(proc.stderr).startswith(f"error: --out {out} holds {what} ({held})")
    assert (out / held).read_text() == "kept" and os.listdir(out) == [held]
