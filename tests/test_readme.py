"""README's Python runs as a reader would paste it: every ```python block of README.md, each alone in a
fresh interpreter, from an empty folder, on the models that ship with the package."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), flags=re.M | re.S)


BLOCKS = python_blocks(os.path.join(ROOT, "README.md"))


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_block_runs_alone(index, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONWARNINGS": "error::DeprecationWarning"}
    done = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), "a README block prints what it made"
