# QLoRA Memory Lab — everyday commands. `make lab` to open the lessons, `make test` to check everything.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
PY         := $(BIN)/python
# torch goes in first, alone. 2.13.0 is the CPU build that lies on this workplace's disk; a bare `torch` would pull
# a CUDA build of several GB. Elsewhere pick your own, e.g. `make install TORCH_SPEC='torch>=2.4'`.
TORCH_SPEC ?= torch==2.13.0
PIP_INSTALL := $(PY) -m pip --disable-pip-version-check --no-input install $(if $(CI),--progress-bar off,)
STAMP      := $(VENV)/.installed-test
LAB_STAMP  := $(VENV)/.installed-dev
BROWSER_STAMP := $(VENV)/.installed-browser
# The browser test needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver). Where both
# are found, `make test` installs the browser extra and runs it too; elsewhere pytest says in one line why not.
CHROMIUM   := $(shell command -v chromium chromium-browser google-chrome 2>/dev/null)
HAVE_CHROMIUM := $(and $(CHROMIUM),$(shell command -v chromedriver 2>/dev/null))

NB_DIRS    := $(wildcard notebooks solutions exercises)
SANITIZE   := $(wildcard tests/nbval_sanitize.cfg)
NBVAL_ARGS := $(if $(NB_DIRS),--nbval-lax --nbval-current-env $(if $(SANITIZE),--nbval-sanitize-with $(SANITIZE),),)
DEMO_ARGS  ?= sweep --out runs/demo.jsonl --plot runs/demo.png

.PHONY: help install lab test test-browser demo clean distclean

help:
	@echo "make lab        install (first time only) and open the lessons in JupyterLab"
	@echo "make test       install (first time only) and run the tests and every notebook"
	@echo "make test-browser  the lab in headless Chromium only (JupyterLab, Notebook 7); screenshots in runs/browser/"
	@echo "make demo       headless sweep on the tiny model: runs/demo.jsonl and runs/demo.png"
	@echo "make install    create $(VENV) and install the kit with its test tools"
	@echo "make clean      remove caches and build files (distclean also removes $(VENV))"

install: $(STAMP)

# Reruns are instant: the stamp is newer than pyproject.toml until the dependencies change.
$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PIP_INSTALL) "$(TORCH_SPEC)"
	$(PIP_INSTALL) -e ".[test]"
	@touch $@

$(LAB_STAMP): $(STAMP)
	$(PIP_INSTALL) -e ".[dev]"
	@touch $@

$(BROWSER_STAMP): $(STAMP)
	$(PIP_INSTALL) -e ".[browser]"
	@touch $@

lab: $(LAB_STAMP)
	$(BIN)/jupyter lab $(if $(CI),--no-browser,) $(if $(wildcard notebooks),notebooks/,.)

test: $(STAMP) $(if $(HAVE_CHROMIUM),$(BROWSER_STAMP),)
	$(PY) -m pytest tests $(NB_DIRS) $(NBVAL_ARGS)

test-browser: $(BROWSER_STAMP)
	$(PY) -m pytest tests/browser -m browser

demo: $(STAMP)
	@mkdir -p runs
	$(PY) -m labkit $(DEMO_ARGS)

clean:
	rm -rf build dist *.egg-info labkit.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -type d -name .ipynb_checkpoints -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) runs
