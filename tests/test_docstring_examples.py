"""The examples in the library's docstrings (the API reference shows them) run as a reader would paste
them: each ```python block of a docstring under jaxvis/, alone in a fresh interpreter, from an empty
folder, on the models that ship with the package."""

import ast
import os

import pytest

from conftest import ROOT, python_blocks, run_alone


def docstring_examples() -> list[tuple[str, str]]:
    """(where, code) of every ```python block in a docstring of the package."""
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, "jaxvis")):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                    doc = ast.get_docstring(node)
                    for code in python_blocks(doc or ""):
                        where = f"{os.path.relpath(path, ROOT)}:{getattr(node, 'name', 'module')}"
                        found.append((where, code))
    return sorted(found)


EXAMPLES = docstring_examples()


def test_the_api_values_have_examples_that_compile():
    assert len(EXAMPLES) >= 9, [w for w, _ in EXAMPLES]
    for where, code in EXAMPLES:
        compile(code, where, "exec")


@pytest.mark.slow
@pytest.mark.parametrize("where, code", EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_a_docstring_example_runs_alone(where, code, tmp_path):
    done = run_alone(code, tmp_path)
    assert done.returncode == 0, f"the example of {where} failed:\n{code}\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), "an example prints what it made"
