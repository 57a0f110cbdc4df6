# The two commands: `make test` (set-up and the whole test suite) and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test test-fast clean

$(VENV)/.installed: pyproject.toml jaxvis/native/conv_onednn.cc
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[onednn]'
	# oneDNN convolutions for CPUs; without them (no compiler, another platform) XLA's are used.
	$(PY) -m jaxvis.native.build || echo "jaxvis: oneDNN kernels not built; convolutions run through XLA"
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PIP) install --quiet -e '.[test]'
	# The report's browser tests drive Debian's chromium; without it (no apt, no root) they are skipped.
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  ( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver ) >/dev/null 2>&1 \
	    || echo "jaxvis: chromium not installed; the report's browser tests will be skipped"; \
	else echo "jaxvis: no apt-get; the report's browser tests will be skipped without chromium"; fi
	touch $@

# The main job on the shipped shapes models: class models, detector objectives, saliency -> runs/demo
# (made afresh on each call).
demo: $(VENV)/.installed
	rm -rf runs/demo
	$(PY) -m experiments.demo --out runs/demo

# The whole suite, the slow marker included.
test: $(VENV)/.test-installed
	$(PY) -m pytest -m '' -q

# The default (fast) suite.
test-fast: $(VENV)/.test-installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache jaxvis/native/_conv_onednn.so
