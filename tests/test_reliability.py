"""Sweeps that survive SIGKILL and Ctrl-C, run bit-identically, spread over processes with
jax.distributed, and never write outside their run directory."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, run_module
from jaxvis import params as params_io
from tiny import tiny_vgg


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rel") / "vgg.safetensors"
    model = tiny_vgg(0)
    params_io.save(path, model.params, model.spec)
    return path


def sweep_args(model_file, out, steps=120):
    return ["--params", str(model_file), "--categories", "0,1,2,3,4,5", "--lrs", "0.5", "--penalty", "sq=1",
            "--init", "0.3", "--seeds", "4", "--steps", str(steps), "--snapshots", str(steps // 4), "--chunk_size", "1",
            "--out", str(out), "--noprogress"]


def outputs(run):
    return {name: (run / name).read_bytes() for name in ("images.npy", "snapshots.npy", "results.jsonl")}


def start(args, restore_sigint=False):
    """The launcher in a child process. ``restore_sigint``: the child gets SIGINT's default disposition even
    when this process ignores it (a handler, unlike SIG_IGN, is reset to the default across exec)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if restore_sigint else None
    try:
        return subprocess.Popen([sys.executable, "-m", "experiments.class_model", *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        if restore_sigint:
            signal.signal(signal.SIGINT, previous)


def wait_for(path, proc, timeout=300):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow  # three launcher runs; the injected-ENOSPC resume test checks byte-identical resumes in the default suite
def test_sigkill_then_resume_equals_an_uninterrupted_run(model_file, tmp_path):
    whole = tmp_path / "whole"
    run_module("experiments.class_model", *sweep_args(model_file, whole))
    killed = tmp_path / "killed"
    proc = start(sweep_args(model_file, killed))
    wait_for(killed / "chunks" / "00002.npz", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p.name for p in (killed / "chunks").iterdir() if p.suffix == ".npz")
    assert 3 <= len(done) < 6 and not (killed / "results.jsonl").exists()
    resumed = run_module("experiments.class_model", *sweep_args(model_file, killed), "--resume")
    assert f"{len(done)} chunk(s) already done" in resumed.stdout
    assert outputs(killed) == outputs(whole)


@pytest.mark.slow  # a fault test: interrupts a launcher
def test_ctrl_c_stops_cleanly_and_keeps_finished_chunks(model_file, tmp_path):
    run = tmp_path / "int"
    args = sweep_args(model_file, run)
    # Ctrl-C as a terminal delivers it: the child gets the default SIGINT disposition (a suite started in
    # the background by a non-interactive shell runs with SIGINT ignored, which children inherit)
    proc = start(args, restore_sigint=True)
    wait_for(run / "chunks" / "00001.npz", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "chunks are saved" in err and "continue with --resume" in err
    assert (run / "chunks" / "00000.npz").exists()
    run_module("experiments.class_model", *args, "--resume")
    assert len((run / "results.jsonl").read_text().splitlines()) == 6


@pytest.mark.slow  # two launcher runs; tests/test_transforms.py checks bit-identical reruns in-process
def test_same_configuration_gives_bit_identical_results(model_file, tmp_path):
    run_module("experiments.class_model", *sweep_args(model_file, tmp_path / "a", steps=20))
    run_module("experiments.class_model", *sweep_args(model_file, tmp_path / "b", steps=20))
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # three processes under jax.distributed
def test_two_processes_with_jax_distributed_equal_one_process(model_file, tmp_path):
    one = tmp_path / "one"
    run_module("experiments.class_model", *sweep_args(model_file, one, steps=20))
    two = tmp_path / "two"
    address = f"localhost:{_free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.class_model", *sweep_args(model_file, two, steps=20),
                               "--coordinator_address", address, "--num_processes", "2", "--process_id", str(i)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    logs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, logs):
        assert p.returncode == 0, err
    assert "process 0 of 2: 3 chunk(s)" in logs[0][0] and "process 1 of 2: 3 chunk(s)" in logs[1][0]
    assert "process 0 writes the outputs" in logs[1][0]
    assert outputs(two) == outputs(one)


def test_labels_and_names_cannot_escape_the_run_directory(tmp_path):
    model = tiny_vgg(0)
    labels = ("traffic light", "N/A", "../x", "/etc/passwd", "..", "a\\b", "ok", "c:d", ".hidden", "")
    spec = model.spec.replace(labels=labels)
    path = tmp_path / "weird.safetensors"
    params_io.save(path, model.params, spec)
    parent = tmp_path / "sandbox"
    run = parent / "run"
    run_module("experiments.class_model", "--params", str(path), "--categories", ",".join(map(str, range(10))),
               "--steps", "2", "--out", str(run), "--noprogress")
    files = [os.path.join(d, f) for d, _, fs in os.walk(parent) for f in fs]
    assert files and all(os.path.realpath(f).startswith(os.path.realpath(run) + os.sep) for f in files)
    names = sorted(os.listdir(run / "points"))
    assert "00000_traffic_light.png" in names and "00001_N_A.png" in names and "00002_x.png" in names
    assert not any(n.startswith(".") or "/" in n for n in names)
    proc = run_module("experiments.class_model", "--params", str(path), "--categories", "../x/../y", "--steps", "2",
                      "--out", str(tmp_path / "r2"), "--noprogress", check=False)
    assert proc.returncode == 1 and "unknown category '../x/../y'" in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--categories", ""], "--categories is required"),
    (["--categories", "1", "--objective", "score", "--penalty", "sq=nan"], "must be finite"),
    (["--categories", "1", "--init", "-1"], "initialisation scales must be >= 0"),
])
def test_more_bad_sweeps(model_file, tmp_path, args, message):
    proc = run_module("experiments.class_model", "--params", str(model_file), "--out", str(tmp_path / "x"),
                      "--noprogress", *args, check=False)
    assert proc.returncode == 1 and message in proc.stderr.strip().splitlines()[-1], proc.stderr
