"""experiments.attribution_study end to end on a few images: the table, the json entries, the pictures."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_module


@pytest.mark.slow
def test_the_study_writes_each_models_entry_and_keeps_the_others(tmp_path):
    common = ["--images", "4", "--batch", "4", "--curve_steps", "4", "--infidelity_samples", "2",
              "--sensitivity_samples", "2", "--sensitivity_images", "1", "--out", str(tmp_path)]
    run_module("experiments.attribution_study", "--models", "classifier", "--methods", "gradient,lrp_epsilon",
               *common)
    run_module("experiments.attribution_study", "--models", "detector", "--methods", "gradient,drise", "--images", "8",
               *common[2:])
    result = json.loads((tmp_path / "attribution_study.json").read_text())
    assert list(result["models"]) == ["classifier", "detector"]
    assert list(result["models"]["classifier"]["methods"]) == ["gradient", "lrp_epsilon"]
    assert list(result["models"]["detector"]["methods"]) == ["gradient", "drise"]
    for part in result["models"].values():
        for row in part["methods"].values():
            assert set(row) == {"pointing", "energy", "deletion", "insertion", "road_morf", "road_lerf",
                                "infidelity", "sensitivity", "ms_per_map"}
            assert all(np.isfinite(v) for v in row.values())
    table = (tmp_path / "attribution_study.md").read_text()
    assert "| lrp_epsilon |" in table and "| drise |" in table and "ROAD MoRF" in table
    for name in ("classifier", "detector"):
        with Image.open(tmp_path / f"attribution_study_{name}.png") as picture:
            assert picture.size[0] > 3 * 96
    proc = run_module("experiments.attribution_study", "--methods", "saliency", "--out", str(tmp_path), check=False)
    assert proc.returncode == 1 and "unknown --methods saliency" in proc.stderr
