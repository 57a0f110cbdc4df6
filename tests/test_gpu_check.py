"""experiments/gpu_check.sh as a dry run on the CPU: every stage of the GPU run in miniature (the
accelerator tests skip, the benchmark runs tiny on the CPU, the sharded stage over two host devices)."""

import os
import re
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_gpu_check_dry_run_completes_every_stage(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path))
    proc = subprocess.run(["bash", "experiments/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    for stage in ("versions", "jax sees a GPU", "tests that need an accelerator",
                  "benchmark against PyTorch on the same device", "sharded sweep over every device",
                  "benchmark table"):
        assert f"=== {stage} ===" in out
    assert "dry run finished: 0 failed stage(s)" in out
    # The table has a float32 and a bfloat16 row of VGG16, and the sharded stage compared 2 devices to 1.
    table = out.split("=== benchmark table ===")[1]
    assert re.search(r"^vgg16 +float32 ", table, re.M) and re.search(r"^vgg16 +bfloat16 ", table, re.M)
    assert "sharded over 2 vs one device" in out
    assert (tmp_path / "bench.jsonl").read_text().count('"workload": "vgg16"') == 2
