"""The library's layers can be drawn: no import circle between its modules, the image and page writers
know nothing of the engine, and the library imports none of the launchers."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "jaxvis")


def modules() -> dict[str, str]:
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read())


def imports(path: str, known) -> set[str]:
    """Every jaxvis module that ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(parse(path)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def test_no_import_circle_between_the_librarys_modules():
    known = modules()
    graph = {m: {t for t in imports(p, known) if t != m} for m, p in known.items()}

    def related(a, b):  # a package and its own submodules may import each other
        return a.startswith(b + ".") or b.startswith(a + ".")

    circles = []

    def visit(start, node, path):
        for nxt in graph[node]:
            if related(node, nxt):
                continue
            if nxt == start:
                circles.append(path + [start])
            elif nxt not in path and nxt > start:
                visit(start, nxt, path + [nxt])

    for m in known:
        visit(m, m, [m])
    assert not circles, circles


def test_image_and_page_writers_load_no_engine_and_the_library_no_launcher():
    code = ("import sys, jaxvis.images, jaxvis.labels, jaxvis.render, jaxvis.report; "
            "print(sorted(m for m in sys.modules if m.startswith(('jaxvis.engine', 'jaxvis.objectives', 'optax'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    known = modules()
    for name, path in known.items():
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("experiments", "converters")), (name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith(("experiments", "converters")) for a in node.names), name
