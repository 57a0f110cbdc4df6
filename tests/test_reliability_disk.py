"""The edges of the machine and of shared use: grids too large for the disk, a disk that fills up
mid-run, two runs on one directory, output paths that cannot be written, and launchers that speak
before JAX's logs do.

A full disk is a small tmpfs mounted by the test where that is allowed (root); the fast suite injects
``OSError(ENOSPC)`` into the chunk writes instead."""

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_module
from jaxvis import fileio
from jaxvis.fileio import DirLock, OutputError

SHIPPED = os.path.join(ROOT, "jaxvis", "assets", "shapes_vgg.safetensors")
TEN_MILLION = ["--categories", "0,1,2,3,4,5,0,1,2,3", "--lrs", ",".join(f"{0.001 * (i + 1):g}" for i in range(1000)),
               "--init", "0.3", "--seeds", ",".join(str(i) for i in range(1000))]
ABSL_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d", re.M)  # absl's log prefix, e.g. "I1130 14:43:30.1 ..."


def outputs(run):
    return {name: (run / name).read_bytes() for name in ("images.npy", "snapshots.npy", "results.jsonl")}


def one_line_error(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@contextlib.contextmanager
def mounted_tmpfs(path, options):
    """A tmpfs at ``path`` (made and removed here), or a skip where this process cannot mount."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}); the injected-ENOSPC test "
                    "covers the write path")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def tmp_files_vgg(tiny_files):
    return tiny_files[0]


# ---------------------------------------------------------------------------------------------------
# Size before work.

def test_ten_million_point_grid_is_refused_within_seconds_with_its_size_and_the_free_space(tmp_path):
    out = tmp_path / "huge"
    t0 = time.monotonic()
    proc = run_module("experiments.class_model", "--params", SHIPPED, *TEN_MILLION, "--out", str(out),
                      "--noprogress", check=False)
    elapsed = time.monotonic() - t0
    line = one_line_error(proc)
    assert elapsed < 10, f"refused after {elapsed:.1f} s"
    m = re.search(r"has ([\d.]+) (kB|MB|GB|TB) free, but this run would write about ([\d.]+) TB there "
                  r"\(10,000,000 points:", line)
    assert m, line
    free = float(m.group(1)) * {"kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[m.group(2)]
    assert abs(free - fileio.free_bytes(tmp_path)) < 0.02 * free + 1e8
    # images.npy alone is 10M x 64 x 64 x 3 float32 = 491.5 GB, snapshots.npy as much, chunk files more.
    assert float(m.group(3)) > 2 * 0.4915
    assert "--nopngs (saves" in line and "--nocheck_space" in line and "disk with more room" in line
    assert "10000000 grid points x 200 steps in 625000 chunk(s)" in proc.stdout
    assert "3 compiled program(s)" in proc.stdout or "1 compiled program(s)" in proc.stdout
    assert not out.exists()  # a refused run leaves nothing behind


def test_stated_size_matches_what_a_run_writes_and_the_run_prints_no_jax_log_line(tmp_path):
    out = tmp_path / "r"
    proc = run_module("experiments.class_model", "--params", SHIPPED, "--categories", "0,1,2,3,4,5,0,1,2,3",
                      "--lrs", "0.1,1", "--init", "0.3", "--seeds", "0,1", "--steps", "8", "--snapshots", "4",
                      "--out", str(out), "--noprogress")
    m = re.search(r"40 points in (\d+) chunk\(s\) of (\d+), (\d) compiled program\(s\); writes about ([\d.]+) MB", proc.stdout)
    assert m, proc.stdout
    written = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    stated = float(m.group(4)) * 1e6
    assert 0.9 * stated < written < 1.1 * stated, (written, stated)
    assert not ABSL_LINE.search(proc.stderr) and "Unable to initialize backend" not in proc.stderr, proc.stderr
    assert proc.stderr == "", proc.stderr


@pytest.mark.slow
def test_nopngs_writes_the_arrays_and_results_without_any_png(tmp_files_vgg, tmp_path):
    out = tmp_path / "n"
    run_module("experiments.class_model", "--params", str(tmp_files_vgg), "--categories", "0,1", "--steps", "2",
               "--nopngs", "--out", str(out), "--noprogress")
    assert not list(out.rglob("*.png"))
    assert np.load(out / "images.npy").shape == (2, 64, 64, 3)
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    assert "<img" not in (out / "index.html").read_text()


# ---------------------------------------------------------------------------------------------------
# Output paths that cannot be written.

def test_out_on_an_existing_file_is_one_line(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("not a directory")
    proc = run_module("experiments.class_model", "--params", SHIPPED, "--categories", "0", "--out", str(target),
                      check=False)
    assert f"--out {target} is an existing file, not a directory" in one_line_error(proc)
    proc = run_module("experiments.saliency", "--params", SHIPPED, "--image", "x.png", "--category", "circle",
                      "--out", str(target / "sub"), check=False)
    assert f"lies under {target}, which is a file" in one_line_error(proc)
    assert target.read_text() == "not a directory"


def test_out_on_a_read_only_file_system_is_one_line(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        for module, args in (("experiments.class_model", ["--categories", "0"]),
                             ("experiments.saliency", ["--image", "x.png", "--category", "circle"])):
            proc = run_module(module, "--params", SHIPPED, *args, "--out", str(ro / "run"), check=False)
            assert f"--out {ro / 'run'} is on a read-only file system" in one_line_error(proc)


def test_out_in_an_unwritable_directory_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits; an immutable directory stops it too
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(locked)]).returncode != 0:
            pytest.skip("running as root on a file system without chattr +i: no directory is unwritable")
        undo = ["chattr", "-i", str(locked)]
    else:
        locked.chmod(0o555)
        undo = ["chmod", "755", str(locked)]
    try:
        proc = run_module("experiments.class_model", "--params", SHIPPED, "--categories", "0",
                          "--out", str(locked / "run"), check=False)
        assert f"--out {locked / 'run'}: {locked} is not writable by this user" in one_line_error(proc)
    finally:
        subprocess.run(undo, check=True)


# ---------------------------------------------------------------------------------------------------
# One writer per run directory.

def test_a_second_lock_on_a_directory_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    first = DirLock(run)
    with pytest.raises(OutputError, match=rf"is in use by another run \(process {os.getpid()} on host "):
        DirLock(run)
    first.release()
    with DirLock(run):  # released: the next writer takes it
        pass
    made = DirLock(tmp_path / "made")
    made.release(remove=True)  # a directory made for a run that never wrote leaves nothing behind
    assert not (tmp_path / "made").exists()


# ---------------------------------------------------------------------------------------------------
# Full disk mid-run.

def _settings(params, steps=3):
    from jaxvis.settings import SweepSettings

    return SweepSettings.create(params=str(params), categories="0,1,2,3", lrs="0.5", steps=steps, init="0.3",
                                seeds="1", penalty=["sq=1"], snapshots="2", chunk_size=1)


def test_injected_enospc_stops_the_run_keeps_chunks_and_resume_matches(tmp_files_vgg, tmp_path, monkeypatch, capsys):
    from jaxvis import rundir, sweeps

    sweeps.run(_settings(tmp_files_vgg), tmp_path / "whole", progress=False)
    real, calls = rundir.atomic_write, []

    def full_after_two(path, write, sync=True):
        if "chunks" in str(path):
            calls.append(path)
            if len(calls) > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, write, sync)

    monkeypatch.setattr(rundir, "atomic_write", full_after_two)
    out = tmp_path / "full"
    with pytest.raises(rundir.DiskFullError) as e:
        sweeps.run(_settings(tmp_files_vgg), out, progress=False)
    message = str(e.value)
    assert f"no space left on the disk of {out} while writing a chunk file" in message
    assert "more are needed to finish" in message and "The 2 of 4 chunks saved so far are intact" in message
    assert "--resume" in message
    monkeypatch.setattr(rundir, "atomic_write", real)
    assert sorted(p.name for p in (out / "chunks").iterdir()) == ["00000.npz", "00001.npz"]
    config = json.loads((out / "config.json").read_text())
    part, whole = (rundir.RunDir(d, config, resume=True) for d in (out, tmp_path / "whole"))
    for i in (0, 1):  # the chunks written before the failure load, and equal the uninterrupted run's
        (sl, got), (_, want) = part.load_chunk(i), whole.load_chunk(i)
        assert sl == slice(i, i + 1)
        np.testing.assert_array_equal(got.images, want.images)
    sweeps.run(_settings(tmp_files_vgg), out, resume=True, progress=False)
    assert "2 chunk(s) already done" in capsys.readouterr().out
    assert outputs(out) == outputs(tmp_path / "whole")


@pytest.mark.slow
def test_full_tmpfs_stops_the_run_and_resume_after_freeing_space_is_byte_identical(tmp_path):
    args = ["--params", SHIPPED, "--categories", "0,1,2,3,4,5", "--steps", "30", "--chunk_size", "1", "--noprogress"]
    run_module("experiments.class_model", *args, "--out", str(tmp_path / "whole"))
    with mounted_tmpfs(tmp_path / "small", "size=256k") as disk:
        out = disk / "run"
        refused = run_module("experiments.class_model", *args, "--out", str(out), check=False)
        assert "this run would write about" in one_line_error(refused) and not out.exists()
        proc = run_module("experiments.class_model", *args, "--out", str(out), "--nocheck_space", check=False)
        line = one_line_error(proc)
        assert f"no space left on the disk of {out} while writing a chunk file" in line
        done = sorted(p.name for p in (out / "chunks").iterdir())
        assert 1 <= len(done) < 6 and f"The {len(done)} of 6 chunks saved so far are intact" in line
        assert not [p for p in out.rglob(".tmp-*")]  # the failed write left no partial file
        for name in done:
            with np.load(out / "chunks" / name) as z:
                assert z["images"].shape == (1, 64, 64, 3)
        # Room for every chunk and the arrays (about 1.2 MB), not for the PNGs: the assembly stops too.
        subprocess.run(["mount", "-o", "remount,size=1300k", str(disk)], check=True)
        proc = run_module("experiments.class_model", *args, "--out", str(out), "--resume", check=False)
        assert "this run would write about" in one_line_error(proc)  # the check knows
        proc = run_module("experiments.class_model", *args, "--out", str(out), "--resume", "--nocheck_space",
                          check=False)
        line = one_line_error(proc)
        # The pages and each chunk's PNGs are written as the run goes, so what is left for the arrays may be
        # found too little before assembly (the exact check) or run out while writing them.
        assert ("while writing the assembled outputs" in line and "The 6 of 6 chunks saved so far are intact" in line) \
            or ("too little for the run's assembled arrays" in line and "All 6 chunks are saved" in line), line
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        resumed = run_module("experiments.class_model", *args, "--out", str(out), "--resume")
        assert "6 chunk(s) already done" in resumed.stdout
        assert outputs(out) == outputs(tmp_path / "whole")


# ---------------------------------------------------------------------------------------------------
# Two processes on one directory, and a SIGKILL'd holder.

def _start(args):
    return subprocess.Popen([sys.executable, "-m", "experiments.class_model", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_processes_on_one_out_then_sigkill_then_a_third(tmp_path):
    out = tmp_path / "shared"
    args = ["--params", SHIPPED, "--categories", "0,1,2,3,4,5", "--steps", "400", "--chunk_size", "1",
            "--noprogress", "--out", str(out)]
    first = _start(args)
    try:
        deadline = time.time() + 120
        while not (out / "config.json").exists():  # the first process holds the lock and has begun its work
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline
            time.sleep(0.05)
        # The second process refuses before it loads the model or touches a device: under a JAX platform
        # that does not exist, any backend use would fail with JAX's own error instead of the lock's line.
        second = subprocess.run([sys.executable, "-m", "experiments.class_model", *args, "--resume"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "JAX_PLATFORMS": "no_such_platform"})
        line = one_line_error(second)
        assert f"--out {out} is in use by another run (process {first.pid} on host " in line
        assert first.poll() is None  # the first one runs on
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
        first.communicate()
    third = run_module("experiments.class_model", *args, "--resume")  # no stale lock
    assert "done in" in third.stdout
    assert len((out / "results.jsonl").read_text().splitlines()) == 6


@pytest.mark.slow
def test_verbosity_brings_the_logs_back(tmp_path):
    """The contrast to the quiet default (test_stated_size_matches_...): with --verbosity=0 JAX's INFO
    lines reach the terminal again."""
    proc = run_module("experiments.class_model", "--params", SHIPPED, "--categories", "0", "--steps", "2",
                      "--out", str(tmp_path / "v"), "--noprogress", "--verbosity=0")
    assert ABSL_LINE.search(proc.stderr), proc.stderr
