# QLoRA Memory Lab — everyday commands. `make lab` to open the lessons, `make test` to check everything.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
PY         := $(BIN)/python
# torch goes in first, alone, so that resolving the kit's other requirements never picks a torch build for you.
# TORCH_SPEC is the torch the tests run at, at both ends (`make test`, `make test-lowest`): CI and laptops use its
# CPU wheel (macOS and Windows get one from PyPI; on Linux add TORCH_INDEX=https://download.pytorch.org/whl/cpu,
# or PyPI's default CUDA build of several GB comes instead). With a CUDA GPU, keep the torch you have:
# `make install TORCH_SPEC='torch>=2.4'`. On Colab none of this runs: the notebooks' setup cell leaves Colab's own
# CUDA torch untouched and installs the rest at the versions constraints/colab.txt pins.
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
PIP_ARGS    := --disable-pip-version-check --no-input install $(if $(CI),--progress-bar off,)
PIP_INSTALL := $(PY) -m pip $(PIP_ARGS)
TORCH_FROM  := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
STAMP      := $(VENV)/.installed-test
LAB_STAMP  := $(VENV)/.installed-dev
BROWSER_STAMP := $(VENV)/.installed-browser
# The browser test needs Chromium and chromedriver (Debian: apt-get install chromium chromium-driver). Where both
# are found, `make test` installs the browser extra and runs it too; elsewhere pytest says in one line why not.
CHROMIUM   := $(shell command -v chromium chromium-browser google-chrome 2>/dev/null)
HAVE_CHROMIUM := $(and $(CHROMIUM),$(shell command -v chromedriver 2>/dev/null))
VENV_LOWEST ?= .venv-lowest
LOW_PY     := $(VENV_LOWEST)/bin/python
LOW_STAMP  := $(VENV_LOWEST)/.installed-lowest
UV_SPEC    ?= uv>=0.5

NB_DIRS    := $(wildcard notebooks solutions exercises)
SANITIZE   := $(wildcard tests/nbval_sanitize.cfg)
NBVAL_ARGS := $(if $(NB_DIRS),--nbval-lax --nbval-current-env $(if $(SANITIZE),--nbval-sanitize-with $(SANITIZE),),)
DEMO_ARGS  ?= sweep --out runs/demo.jsonl --plot runs/demo.png

.PHONY: help install lab test test-browser test-lowest test-timing demo clean distclean

help:
	@echo "make lab        install (first time only) and open the lessons in JupyterLab"
	@echo "make test       install (first time only) and run the tests and every notebook"
	@echo "make test-browser  the lab in headless Chromium only (JupyterLab, Notebook 7); screenshots in runs/browser/"
	@echo "make test-timing  the time theory against step times measured here (wants a quiet machine)"
	@echo "make test-lowest  the unit tests at the lowest versions pyproject.toml admits (own venv: $(VENV_LOWEST))"
	@echo "make demo       headless sweep on the tiny model: runs/demo.jsonl and runs/demo.png"
	@echo "make install    create $(VENV) and install the kit with its test tools"
	@echo "make clean      remove caches and build files (distclean also removes $(VENV))"

install: $(STAMP)

# Reruns are instant: the stamp is newer than pyproject.toml until the dependencies change.
$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PIP_INSTALL) $(TORCH_FROM) "$(TORCH_SPEC)"
	$(PIP_INSTALL) -e ".[test]"
	@touch $@

# The low end of pyproject.toml's ranges, in a venv of its own: uv's lowest-direct resolution installs every direct
# dependency at the lowest version its range admits (transitive ones at their newest), with torch held at the one
# TORCH_SPEC installed (an override, so uv never fetches another). Unit tests only, no notebooks: they show the
# lower bounds are true. The venv is made anew whenever pyproject.toml changes, or a lowered bound would go untested.
$(LOW_STAMP): pyproject.toml
	rm -rf $(VENV_LOWEST)
	$(PYTHON) -m venv $(VENV_LOWEST)
	$(LOW_PY) -m pip $(PIP_ARGS) $(TORCH_FROM) "$(TORCH_SPEC)"
	$(LOW_PY) -m pip $(PIP_ARGS) "$(UV_SPEC)"
	$(LOW_PY) -c 'from importlib.metadata import version; print("torch==" + version("torch").split("+")[0])' \
		> $(VENV_LOWEST)/torch-override.txt
	$(VENV_LOWEST)/bin/uv pip install --python $(LOW_PY) --resolution lowest-direct \
		--override $(VENV_LOWEST)/torch-override.txt -e ".[test]"
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
	$(PY) -m pytest tests $(NB_DIRS) $(NBVAL_ARGS) -m "not timing"

# The time theory against step times measured on this machine: needs a quiet machine (a loaded one stretches the
# small ops more than the big ones), so it is not part of `make test`.
test-timing: $(STAMP)
	$(PY) -m pytest tests -m timing -s

test-browser: $(BROWSER_STAMP)
	$(PY) -m pytest tests/browser -m browser

test-lowest: $(LOW_STAMP)
	$(LOW_PY) -m pytest tests --ignore=tests/browser -m "not timing"

demo: $(STAMP)
	@mkdir -p runs
	$(PY) -m labkit $(DEMO_ARGS)

clean:
	rm -rf build dist *.egg-info labkit.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -type d -name .ipynb_checkpoints -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(VENV_LOWEST) runs
