"""Run directories that know what they hold, interrupts and bad settings that end in one line, and
divergence that is counted: chunk files carry their run's digest and range and are checked
before a run continues; Ctrl-C inside a progress callback exits 130; a misspelt config field, a missing
config file, an out-of-range seed, a file that is not image statistics and boxes on a classifier are
refused before anything is written; points whose images blow up are reported as diverged."""

import json
import shutil

import numpy as np
import pytest

from conftest import run_module
from test_reliability import model_file  # noqa: F401  (the tiny VGG's params file, a fixture)
from tiny import tiny_vgg


def _settings(params, **changes):
    from jaxvis.settings import SweepSettings

    values = dict(params=str(params), categories="0,1,2", lrs="0.5", steps=3, init="0.3", seeds="1",
                  penalty=["sq=1"], chunk_size=1)
    return SweepSettings.create(**{**values, **changes})


def _outputs(run):
    return {name: (run / name).read_bytes() for name in ("images.npy", "snapshots.npy", "results.jsonl")}


@pytest.fixture(scope="module")
def finished(model_file, tmp_path_factory):
    """A finished three-chunk run, copied by each test that spoils it."""
    from jaxvis import sweeps

    run = tmp_path_factory.mktemp("finished") / "run"
    sweeps.run(_settings(model_file), run, progress=False)
    return run


def _copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def one_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# A. Chunk files that carry their run's identity and range.

def test_spoilt_chunks_are_set_aside_recomputed_and_the_run_matches(finished, model_file, tmp_path, capsys):
    from jaxvis import rundir, sweeps

    run = _copy(finished, tmp_path)
    config = json.loads((run / "config.json").read_text())
    with np.load(run / "chunks" / "00001.npz") as z:  # each chunk says whose it is and which points it holds
        assert str(z["run_digest"]) == rundir.run_digest(config) and (int(z["start"]), int(z["stop"])) == (1, 2)
    chunks = run / "chunks"
    shutil.copy(chunks / "00001.npz", chunks / "00002.npz")  # a chunk copied over another: the wrong range
    data = (chunks / "00000.npz").read_bytes()
    (chunks / "00000.npz").write_bytes(data[: len(data) // 2])  # truncated
    flipped = bytearray((chunks / "00001.npz").read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # one flipped byte: the zip's CRC
    (chunks / "00001.npz").write_bytes(bytes(flipped))
    capsys.readouterr()
    sweeps.run(_settings(model_file), run, resume=True, progress=False)
    out, err = capsys.readouterr()
    assert "0 chunk(s) already done" in out
    for i, why in ((0, "cannot be read (BadZipFile"), (1, "cannot be read (BadZipFile: Bad CRC-32"),
                   (2, "holds points 1..1, but chunk 2 is points 2..2")):
        line = next(x for x in err.splitlines() if f"{i:05d}.npz " in x)
        assert line.startswith(f"warning: chunk file {chunks / f'{i:05d}.npz'} {why}") and "computed again" in line
        assert (chunks / f"{i:05d}.npz.rejected").exists()  # kept, never read
    recorded = [json.loads(x)["warning"] for x in (run / "warnings.jsonl").read_text().splitlines()]
    assert len(recorded) == 3 and all("computed again" in w for w in recorded)
    assert _outputs(run) == _outputs(finished)
    assert not [p for p in run.iterdir() if p.name.endswith(".part")]


def test_chunks_without_config_are_refused_by_another_run_and_continued_by_theirs(finished, model_file, tmp_path,
                                                                                  capsys):
    from jaxvis import rundir, sweeps

    run = _copy(finished, tmp_path)
    (run / "config.json").unlink()
    before = sorted(p.name for p in (run / "chunks").iterdir())
    for resume in (False, True):
        with pytest.raises(rundir.RunDirError) as e:
            sweeps.run(_settings(model_file, steps=4), run, resume=resume, progress=False)
        assert (f"{run / 'chunks'} holds chunk files that do not carry this run's digest (00000.npz, 00001.npz, "
                f"00002.npz), and {run} has no config.json to say whose they are") in str(e.value)
    assert sorted(p.name for p in (run / "chunks").iterdir()) == before and not (run / "config.json").exists()
    with pytest.raises(rundir.RunDirError, match="already holds 3 chunk file"):
        sweeps.run(_settings(model_file), run, progress=False)
    capsys.readouterr()
    sweeps.run(_settings(model_file), run, resume=True, progress=False)
    out, err = capsys.readouterr()
    assert "3 chunk(s) already done" in out and "had no config.json; its 3 chunk file(s) carry this run's digest" in err
    assert _outputs(run) == _outputs(finished) and (run / "config.json").exists()


def test_an_unreadable_chunk_at_assembly_is_one_line_naming_it(finished, tmp_path):
    from jaxvis import rundir

    run = _copy(finished, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "chunks" / "00001.npz").write_bytes(b"not a zip")
    reader = rundir.RunDir.__new__(rundir.RunDir)  # the assembly's reader, past the checks of a resume
    reader.path, reader.config = str(run), config
    with pytest.raises(rundir.RunDirError) as e:
        list(reader.chunks(3))
    assert f"chunk file {run / 'chunks' / '00001.npz'} cannot be read" in str(e.value)
    assert "delete it and run again with --resume" in str(e.value)


def test_a_run_dir_whose_run_finished_no_chunk_is_taken_over(tmp_path):
    from jaxvis import rundir

    rundir.RunDir(tmp_path / "r", {"steps": 3})  # a refused or stopped run: config.json, no chunk
    assert rundir.RunDir.check(tmp_path / "r", {"steps": 4}) == set()
    made = rundir.RunDir(tmp_path / "r", {"steps": 4})
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == {"steps": 4}
    assert "finished no chunk" in made.warnings[0]


# ---------------------------------------------------------------------------------------------------
# B. A line where there was a traceback.

def test_ctrl_c_in_the_progress_callback_exits_130_keeping_finished_chunks(model_file, tmp_path, capsys):
    from jaxvis import sweeps

    def progress(event):  # Ctrl-C arriving while the device calls back, in the second chunk
        if event.chunks_done == 1 and event.step > 0:
            raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        sweeps.run(_settings(model_file, loop="scan"), tmp_path / "r", progress=progress)
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted: 1 of 3 chunks are saved" in err and "continue with --resume" in err
    assert "Traceback" not in err and "callback failed" not in err
    assert sorted(p.name for p in (tmp_path / "r" / "chunks").iterdir()) == ["00000.npz"]


@pytest.mark.parametrize("args,message", [
    (["--config", "/nonexistent/study.py"], "error: --config /nonexistent/study.py does not exist; give a config "
                                            "file such as experiments/configs/default.py"),
    (["--config.stepz=3"], "unknown setting(s) ['--config.stepz']; the settings are: model, params"),
    (["--config.stepz=3"], "did you mean --config.steps?"),
])
def test_config_mistakes_are_one_line(model_file, tmp_path, args, message):
    proc = run_module("experiments.class_model", "--params", str(model_file), "--categories", "0",
                      "--out", str(tmp_path / "x"), "--noprogress", *args, check=False)
    assert message in one_line(proc)
    assert not (tmp_path / "x").exists()


BROKEN_CONFIGS = [
    ("def get_config(:\n", "", "line 1 is not Python"),
    ("SETTINGS = {}\n", "", "the file defines no get_config() function"),
    ("from experiments.configs.default import get_config as base\n\n\ndef get_config():\n    c = base()\n"
     "    c.stepz = 3\n    return c\n", "", "get_config() raised AttributeError"),
    ("def get_config(arg):\n    raise ValueError(f'no variant {arg!r}; variants: a, b')\n", ":nosuch",
     "get_config('nosuch') raised ValueError: no variant 'nosuch'; variants: a, b"),
]


@pytest.mark.parametrize("text,variant,message", BROKEN_CONFIGS, ids=["syntax", "no-get_config", "locked", "variant"])
def test_a_config_file_that_cannot_give_settings_is_one_line(tmp_path, text, variant, message):
    from experiments import _launch

    config = tmp_path / "study.py"
    config.write_text(text)
    assert message in _launch.config_problem(str(config), variant.lstrip(":"))
    assert _launch.config_problem("experiments/configs/feature_vis.py") is None


def test_a_broken_config_file_ends_the_launcher_in_one_line(model_file, tmp_path):
    config = tmp_path / "study.py"
    config.write_text(BROKEN_CONFIGS[2][0])
    proc = run_module("experiments.class_model", "--config", str(config), "--params", str(model_file),
                      "--categories", "0", "--out", str(tmp_path / "x"), "--noprogress", check=False)
    assert proc.returncode == 1
    assert one_line(proc).startswith(f"error: --config {config}: get_config() raised AttributeError")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("module, args, message", [
    ("experiments.class_model", ["--steps", "abc"], "error: flag --steps=abc: invalid literal for int()"),
    ("experiments.saliency", ["--samplez", "3"], "error: Unknown command line flag 'samplez'"),
    ("converters.torchvision", ["--arch", "vgg11"], "error: flag --out=None: Flag --out must have a value"),
])
def test_flags_of_the_wrong_type_unknown_or_missing_are_one_line(module, args, message):
    proc = run_module(module, *args, check=False)
    assert one_line(proc).startswith(message) and proc.stderr.strip().endswith("--helpshort lists the flags.")


def test_a_misspelt_field_in_a_config_file_is_one_line_naming_it(model_file, tmp_path):
    config = tmp_path / "study.py"
    config.write_text("from experiments.configs.default import get_config as base\n\n\ndef get_config():\n"
                      "    c = base()\n    c.unlock()\n    c.stepz = 3\n    return c\n")
    proc = run_module("experiments.class_model", "--config", str(config), "--params", str(model_file),
                      "--categories", "0", "--out", str(tmp_path / "x"), "--noprogress", check=False)
    line = one_line(proc)
    assert f"--config {config}: unknown setting(s) ['stepz']" in line and "did you mean steps?" in line


@pytest.mark.parametrize("args,message", [
    (["--seeds", "-1"], "seeds must be whole numbers from 0 to 4294967295"),
    (["--seeds", "4294967296"], "seeds must be whole numbers from 0 to 4294967295"),
    (["--parameterization", "fourier+decorrelated+sigmoid", "--image_stats", "MODEL"], "is not a .npz file of arrays"),
    (["--boxes", "whole"], "tiny_vgg is a classifier and this run has no boxstart, so the boxes would do nothing"),
])
def test_bad_settings_are_refused_before_anything_is_written(model_file, tmp_path, args, message):
    out = tmp_path / "x"
    args = [str(model_file) if a == "MODEL" else a for a in args]
    proc = run_module("experiments.class_model", "--params", str(model_file), "--categories", "0", "--steps", "2",
                      "--out", str(out), "--noprogress", *args, check=False)
    assert message in one_line(proc)
    assert not out.exists()  # nothing left that would block the corrected rerun


def test_a_file_that_is_not_image_statistics_is_named(tmp_path):
    from jaxvis import cli
    from jaxvis import parameterizations as par

    np.savez(tmp_path / "other.npz", images=np.zeros((2, 3)))
    with pytest.raises(par.ParameterizationError, match=r"other.npz' is not an image statistics file: it lacks a "
                                                        r"finite 3x3 colour_sqrt \(it holds images\)"):
        cli.parameterization("fourier+decorrelated+sigmoid", tiny_vgg(0), str(tmp_path / "other.npz"))


# ---------------------------------------------------------------------------------------------------
# C. Divergence that is counted.

def test_points_whose_images_blow_up_are_counted_as_diverged(model_file, tmp_path, capsys):
    from jaxvis import sweeps

    run = tmp_path / "r"
    sweeps.run(_settings(model_file, categories="0", lrs="1,1e30", penalty=[], init="0"), run, progress=False)
    out, err = capsys.readouterr()
    records = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    assert [r["diverged"] for r in records] == [False, True] and records[1]["diverged_step"] == 0
    assert "done in" in out and "; 1 diverged." in out
    assert "warning: 1 of 2 points diverged" in err and "Lower their learning rates" in err
    assert "1 of 2 points diverged" in (run / "warnings.jsonl").read_text()
    from jaxvis import report

    assert any("1 of 2 points diverged" in w for w in report.run_warnings(str(run)))
    assert "1 of 2 points diverged" in (run / "report" / "data.js").read_text()  # shown on the run's page
    images = np.load(run / "images.npy")
    assert np.all(np.isfinite(images)) and np.abs(images).max() < 1e3  # the diverged point keeps its last image
