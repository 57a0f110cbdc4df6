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
