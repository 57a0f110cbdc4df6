"""experiments/bench_attribution.py: the smoke run times jaxvis and Captum and checks that their maps agree."""

import json
import math

import pytest
from conftest import run_module


@pytest.mark.slow  # the shipped classifier through jaxvis and Captum, about half a minute with the start-up
def test_the_smoke_run_reports_each_method_with_agreeing_maps(tmp_path):
    out = tmp_path / "rows.jsonl"
    proc = run_module("experiments.bench_attribution", "--tiny", "--model", "classifier", "--methods",
                      "gradient,deeplift,occlusion", "--reps", "1", "--json_out", str(out))
    lines = proc.stdout.splitlines()
    header = lines.index("| method | jaxvis s | Captum s | ratio | jaxvis maps/s | Captum maps/s | Captum calls "
                         "| agreement |")
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:-1]] for row in lines[header + 2:]
             if row.startswith("|")}
    assert list(cells) == ["gradient", "deeplift", "occlusion"]
    for name, (jx, cap, ratio, _, _, calls, agreement) in cells.items():
        assert float(jx) > 0 and float(cap) > 0 and math.isfinite(float(ratio)) and calls == "batched", name
        assert float(agreement) < 1e-3, (name, agreement)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["method"] for r in rows] == ["gradient", "deeplift", "occlusion"]
    for r in rows:
        assert (r["images"], r["targets"]) == (2, 2)
        assert r["captum_ref_max"] > 0                                  # a non-trivial reference
        assert math.isfinite(r["ratio"]) and r["ratio"] == pytest.approx(r["captum_s"] / r["jaxvis_s"])
        assert r["agreement"] < 1e-3, r
