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


def test_every_name_the_gpu_check_imports_exists():
    """The script's Python stages import from the project's modules; a name renamed there would only fail on
    the GPU machine (or in the slow dry run), so the default suite checks each import resolves."""
    import importlib

    with open(os.path.join(ROOT, "experiments", "gpu_check.sh")) as f:
        script = f.read()
    imports = re.findall(r"^from ((?:experiments|jaxvis)[\w.]*) import (.+)$", script, re.M)
    assert imports, "gpu_check.sh imports nothing from the project: the pattern above is stale"
    for module, names in imports:
        mod = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(mod, name), f"gpu_check.sh imports {name} from {module}, which has no such name"
