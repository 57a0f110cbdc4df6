"""README's Python runs as a reader would paste it: every ```python block of README.md, each alone in a
fresh interpreter, from an empty folder, on the models that ship with the package."""

import os

import pytest

from conftest import ROOT, python_blocks, run_alone

with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as _f:
    BLOCKS = python_blocks(_f.read())


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_block_runs_alone(index, tmp_path):
    done = run_alone(BLOCKS[index], tmp_path)
    assert done.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), "a README block prints what it made"
