# DistroFace: the two commands are `make run` and `make test`.
# Everything runs with the virtual environment's Python in .venv.

PYTHON = python3
VENV = .venv
VPY = $(VENV)/bin/python
PIP = $(VPY) -m pip --disable-pip-version-check
VENV_PATH = $(CURDIR)/$(VENV)/bin:$$PATH

.PHONY: run test pyz bench clean

$(VPY):
	$(PYTHON) -m venv $(VENV)

# Serve on http://0.0.0.0:8668 with data in ./data (the embedded defaults).
run: $(VPY)
	$(PIP) install --quiet -e .
	$(VPY) distroface.py serve

# As root, install the Debian packages the client tests use (skopeo, docker, ...).
test: $(VPY)
	if [ -f scripts/install-test-deps.sh ] && [ "$$(id -u)" = 0 ]; then bash scripts/install-test-deps.sh; fi
	$(PIP) install --quiet -e '.[test]'
	PATH="$(VENV_PATH)" $(VPY) -m pytest -q -ra

# dist/distroface-<python>-<platform>.pyz and its copy dist/distroface.pyz
pyz: $(VPY)
	$(PIP) install --quiet -e '.[zipapp]'
	$(VPY) zipapp/build.py

bench: $(VPY)
	$(PIP) install --quiet -e '.[test]'
	if [ -x bench/compare ]; then PATH="$(VENV_PATH)" bench/compare; else echo "bench/compare is not there yet"; fi

# Build outputs and caches only: ./data (registry content) and .venv stay.
clean:
	rm -rf dist build *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
