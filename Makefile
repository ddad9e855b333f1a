# dicomflow: `make up` runs the archive, `make test` runs every test. Both start from nothing
# but Python 3.11 and the package registries.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up down status test fuzz lint typecheck unit install install-dev system-test-deps viewer bench bench-nodes bench-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

## every package at the version the tests ran with (constraints.txt, a pip freeze of the tested venv):
## a fresh clone next month installs what was tested, not whatever was released since
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## the real DICOM clients the tests drive (dcmtk's dcmsend, storescu, echoscu) come from Debian,
## and so does the browser the viewer test drives (chromium); the viewer itself from the npm registry
system-test-deps: viewer
	@command -v dcmsend >/dev/null 2>&1 || { \
	  echo "installing dcmtk (Debian package) for the DIMSE client tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dcmtk >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian package) for the viewer's browser test"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

## the OHIF viewer served at /viewer: OHIF's prebuilt app from the npm registry into .viewer/ (npm from Debian if missing)
viewer: $(VENV)/.installed
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Node.js and npm (Debian packages) to fetch the OHIF viewer"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; }
	$(BIN)/dicomflow viewer install

up: $(VENV)/.installed
	$(BIN)/dicomflow up

down:
	$(BIN)/dicomflow down

status:
	$(BIN)/dicomflow status

## style and types first, then the fast tests that need no running stack, then everything on the real stack
test: $(VENV)/.installed-dev system-test-deps lint typecheck
	$(BIN)/python -m pytest tests/unit
	$(BIN)/python -m pytest --ignore=tests/unit

## the hostile-input suite with a larger budget than make test gives it (FUZZ_SEED=n to replay one)
fuzz: $(VENV)/.installed-dev system-test-deps
	FUZZ_CASES=$${FUZZ_CASES:-2000} $(BIN)/python -m pytest tests/fuzz

## style: the linter, and the formatter in check mode (`ruff format .` applies it)
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## mypy over the packages (disallow_untyped_defs); `make test` runs it right after lint
typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/unit

## Orthanc (with its DICOMweb plugin) and dcmtk, the systems we measure against, from Debian
bench-deps: system-test-deps
	@command -v Orthanc >/dev/null 2>&1 || { \
	  echo "installing Orthanc and its DICOMweb plugin (Debian packages) for the benchmark"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null; \
	  $(SUDO) systemctl disable --now orthanc >/dev/null 2>&1 || $(SUDO) service orthanc stop >/dev/null 2>&1 || true; }

bench: $(VENV)/.installed-dev bench-deps
	$(BIN)/python -m bench.run

## C-STORE and study workflows with 1, 2 and 3 Ray nodes on this machine (issue 12)
bench-nodes: $(VENV)/.installed-dev bench-deps
	$(BIN)/python -m bench.nodes

clean:
	rm -rf $(VENV) var build *.egg-info .viewer
