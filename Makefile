# The two commands: `make test` (set-up and the default test suite, minutes) and `make demo`;
# `make test-all` adds the heavy cases (the slow marker: full-size VGG16 and SSD300, the fault tests);
# `make test-slow` runs those alone (CI runs it after `make test`, so that each test runs once);
# `make docs` builds the documentation site with its tutorials executed, and checks it in Chromium.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# --no-compile: Python compiles what the tests import when they import it, not every module of PyTorch and its
# CUDA wheels at install time (a third of the test extra's install here).
INSTALL := $(PIP) install --quiet --no-compile
# ... which needs Python to write the bytecode it compiles: the suite and the site's build start hundreds of
# interpreters (workers, launcher runs, notebook kernels), and an environment with PYTHONDONTWRITEBYTECODE set
# would have each of them compile every module it imports again (importing PyTorch: 6 s instead of 2.5 here).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-all test-slow docs clean native

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(INSTALL) -e '.[onednn]'
	touch $@

# oneDNN convolutions for CPUs, built into the per-user cache under a name keyed by jax, oneDNN and the
# source (a second run finds it up to date). Fails when the compiler fails; where it cannot build (no
# compiler, not x86-64 Linux, no oneDNN) it says that it skips, and XLA's convolutions are used.
native: $(VENV)/.installed
	$(PY) -m jaxvis.native.build

$(VENV)/.test-installed: $(VENV)/.installed
	$(INSTALL) -e '.[test]'
	# The report's browser tests drive Debian's chromium; without it (no apt, no root) they are skipped.
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  ( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver ) >/dev/null 2>&1 \
	    || echo "jaxvis: chromium not installed; the report's browser tests will be skipped"; \
	else echo "jaxvis: no apt-get; the report's browser tests will be skipped without chromium"; fi
	touch $@

# The site's build runs the tutorials, which need the test extra's PyTorch (a torchvision checkpoint
# converted) and its browser (the site's check).
$(VENV)/.docs-installed: $(VENV)/.test-installed
	$(INSTALL) -e '.[docs]'
	touch $@

# The main job on the shipped shapes models: class models, detector objectives, saliency -> runs/demo
# (made afresh on each call).
demo: native
	rm -rf runs/demo
	$(PY) -m experiments.demo --out runs/demo

# The default suite: every behaviour, on small models and images, on every core (pytest-xdist), with the
# slowest tests listed at the end. Each test file runs in one worker (--dist loadfile): a file's fixtures and
# the small programs its eager checks compile are made once, not once per worker (back to back here: 277 s
# against 293 s, medians of 2). The slow marker keeps the default spread, its heavy files being few.
test: $(VENV)/.test-installed native
	$(PY) -m pytest -q -n auto --dist loadfile --durations=15

# The whole suite, the slow marker included.
test-all: $(VENV)/.test-installed native
	$(PY) -m pytest -m '' -q -n auto --durations=15

# The heavy cases alone: with `make test`, the whole suite (what CI runs).
test-slow: $(VENV)/.test-installed native
	$(PY) -m pytest -m slow -q -n auto --durations=15

# The documentation site -> docs/_build/html: the API reference from the docstrings and the tutorials,
# executed afresh (a warning fails the build); then every page is opened in Chromium (no console error,
# every image loaded, every link between pages reaching its file and anchor).
docs: $(VENV)/.docs-installed native
	rm -rf docs/_build
	$(PY) -m sphinx -W --keep-going -q -j auto -b html docs docs/_build/html
	$(PY) docs/check_site.py docs/_build/html

# The oneDNN kernels live outside the tree, in a cache shared by every checkout of this user; clear it
# by hand with the command echoed.
clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache docs/_build jaxvis/native/*.so jaxvis/native/*.tmp
	@echo "make clean leaves the oneDNN kernels in the per-user cache; to clear it:" \
	  "rm -rf \"$${JAXVIS_NATIVE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/jaxvis/native}\""
