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
# CPU wheel (macOS and Windows get one from PyPI; Linux without a GPU from PyTorch's CPU index, chosen below). A
# CUDA torch already in the venv is kept. On Colab none of this runs: the notebooks' setup cell leaves Colab's own
# CUDA torch untouched and installs the rest at the versions constraints/colab.txt pins.
TORCH_SPEC  ?= torch==2.13.0
# Jupyter refuses to start as root without --allow-root; containers and many cloud machines run as root.
USER_ID     ?= $(shell id -u)
TORCH_INDEX ?=
PIP_ARGS    := --disable-pip-version-check --no-input install $(if $(CI),--progress-bar off,)
PIP_INSTALL := $(PY) -m pip $(PIP_ARGS)
# Which torch build goes in is decided for this machine by tools/torch_install.py: a CUDA torch already in the venv
# stays; TORCH_INDEX, when given, is used as asked; on Linux without an NVIDIA GPU, PyTorch's CPU index comes first.
# --no-compile: pip would byte-compile all of torch, sympy and networkx (30 s → 12 s without, measured here); as
# with what uv installs, the first import writes the bytecode of what is used (WRITE_PYC below).
# $(call install_torch,VENV_PYTHON,EXTRA_PIP_ARGS)
install_torch = args=$$($(PYTHON) tools/torch_install.py $(1) "$(TORCH_SPEC)" "$(TORCH_INDEX)") && rc=0 || rc=$$?; \
	if [ $$rc = 0 ]; then $(1) -m pip $(PIP_ARGS) --no-compile $$args $(2); elif [ $$rc != 3 ]; then exit $$rc; fi
# The newest end is installed from a lock (every package at an exact version, `make lock` writes it), so what passed
# yesterday passes today: a release upstream changes nothing until the lock is refreshed on purpose.
LOCK       := constraints/newest.txt
LOCKED     := $(if $(wildcard $(LOCK)),-c $(LOCK),)
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
# uv installs everything but torch, writes the lock and resolves the lowest end; held at one version like the lock.
UV_SPEC    ?= uv==0.13.10
UV_INSTALL := $(BIN)/uv pip install --python $(PY) $(if $(CI),--no-progress,)
VENV_NEWEST ?= .venv-newest
NEW_PY     := $(VENV_NEWEST)/bin/python

# The lessons run in a Jupyter kernel each (nbval). solutions/ and exercises/ are not among them:
# tests/checkers/test_exercises_run.py runs each one in the test process, without a kernel per notebook (their
# cells print plain text only; a kernel would add nothing but another import of torch, transformers and peft).
NB_DIRS    := $(wildcard notebooks)
SANITIZE   := $(wildcard tests/nbval_sanitize.cfg)
NBVAL_ARGS := $(if $(NB_DIRS),--nbval-lax --nbval-current-env $(if $(SANITIZE),--nbval-sanitize-with $(SANITIZE),),)
DEMO_ARGS  ?= sweep --out runs/demo.jsonl --plot runs/demo.png
# One pytest-xdist worker per core; a test file (a notebook is one) stays on one worker, in order. Files start in
# the order tests/conftest.py sorts them (the longest first), not in pytest-xdist's (the most tests first), so no
# worker is left with a long one at the end.
TEST_WORKERS ?= auto
PARALLEL   := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# The tests start ~40 Python processes (notebook kernels, ranks, command lines), each importing torch, transformers
# and peft, and the lab a kernel per lesson. The installs do not byte-compile, and where PYTHONDONTWRITEBYTECODE is
# set (many container images set it) every one of them would compile those modules from source again: ~3 s each.
# The test, lab and demo commands let the first one write the bytecode, and the rest read it (an empty value is
# "unset" to Python).
WRITE_PYC  := env PYTHONDONTWRITEBYTECODE=

.PHONY: help install lab lock test test-browser test-lowest test-newest test-timing demo clean distclean

help:
	@echo "make lab        install (first time only) and open the lessons in JupyterLab"
	@echo "make test       install (first time only) and run the tests and every notebook"
	@echo "make test-browser  the lab in headless Chromium only (JupyterLab, Notebook 7); screenshots in runs/browser/"
	@echo "make test-timing  the time theory against step times measured here (wants a quiet machine)"
	@echo "make test-lowest  the unit tests at the lowest versions pyproject.toml admits (own venv: $(VENV_LOWEST))"
	@echo "make test-newest  everything at today's newest releases, unlocked (own venv: $(VENV_NEWEST)); not in CI"
	@echo "make lock       write $(LOCK) anew: the newest versions pyproject.toml admits"
	@echo "make demo       headless sweep on the tiny model: runs/demo.jsonl and runs/demo.png"
	@echo "make install    create $(VENV) and install the kit with its test tools"
	@echo "make clean      remove caches and build files (distclean also removes $(VENV))"

install: $(STAMP)

# Reruns are instant: the stamp is newer than pyproject.toml until the dependencies change.
# Torch goes in with pip (it finds the local wheel sources pip is configured with); everything else with uv, from
# its cache in seconds where pip takes a minute.
$(STAMP): pyproject.toml $(wildcard $(LOCK))
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(call install_torch,$(PY),$(LOCKED))
	$(PIP_INSTALL) "$(UV_SPEC)"
	$(UV_INSTALL) -e ".[test]" $(LOCKED)
	@touch $@

# The lock: uv resolves pyproject.toml with every extra for CI's Python, at the newest versions the ranges admit,
# with torch at the one TORCH_SPEC names. Torch and its CUDA-only companions are left out of the file: a CUDA
# machine keeps the torch it has. Refresh it on purpose (after `make test-newest` passes), copy the new versions of
# what constraints/colab.txt pins into it (tests/test_installs.py says which differ), and commit both.
LOCK_PYTHON ?= 3.11
lock:
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip $(PIP_ARGS) "$(UV_SPEC)"
	echo "$(TORCH_SPEC)" > $(VENV)/torch-lock-override.txt
	$(BIN)/uv pip compile pyproject.toml --extra test --extra browser --extra dev --python-version $(LOCK_PYTHON) \
	  --override $(VENV)/torch-lock-override.txt --no-header --no-annotate --quiet \
	  -o $(LOCK).uv
	{ echo "# The newest end, locked: \`make test\` and CI install every package at exactly these versions (pip -c)."; \
	  echo "# Written by \`make lock\` on $$(date -u +%Y-%m-%d) for Python $(LOCK_PYTHON): the newest versions pyproject.toml"; \
	  echo "# admits; torch comes from TORCH_SPEC and is not listed. Do not edit by hand."; \
	  grep -v -E '^(torch|triton|nvidia-|cuda-)' $(LOCK).uv; } > $(LOCK)
	rm $(LOCK).uv

# The low end of pyproject.toml's ranges, in a venv of its own: uv's lowest-direct resolution installs every direct
# dependency at the lowest version its range admits (transitive ones at their newest), with torch held at the one
# TORCH_SPEC installed (an override, so uv never fetches another). Unit tests only, no notebooks: they show the
# lower bounds are true. The venv is made anew whenever pyproject.toml changes, or a lowered bound would go untested.
$(LOW_STAMP): pyproject.toml
	rm -rf $(VENV_LOWEST)
	$(PYTHON) -m venv $(VENV_LOWEST)
	@$(call install_torch,$(LOW_PY),)
	$(LOW_PY) -m pip $(PIP_ARGS) "$(UV_SPEC)"
	$(LOW_PY) -c 'from importlib.metadata import version; print("torch==" + version("torch").split("+")[0])' \
		> $(VENV_LOWEST)/torch-override.txt
	$(VENV_LOWEST)/bin/uv pip install --python $(LOW_PY) --resolution lowest-direct \
		--override $(VENV_LOWEST)/torch-override.txt -e ".[test]"
	@touch $@

$(LAB_STAMP): $(STAMP)
	$(UV_INSTALL) -e ".[dev]" $(LOCKED)
	@touch $@

$(BROWSER_STAMP): $(STAMP)
	$(UV_INSTALL) -e ".[browser]" $(LOCKED)
	@touch $@

lab: $(LAB_STAMP)
	$(WRITE_PYC) $(BIN)/jupyter lab $(if $(CI),--no-browser,) $(if $(filter 0,$(USER_ID)),--allow-root,) \
		$(if $(wildcard notebooks),notebooks/,.)

test: $(STAMP) $(if $(HAVE_CHROMIUM),$(BROWSER_STAMP),)
	$(WRITE_PYC) $(PY) -m pytest $(NB_DIRS) tests $(NBVAL_ARGS) -m "not timing" $(PARALLEL)

# The time theory against step times measured on this machine: needs a quiet machine (a loaded one stretches the
# small ops more than the big ones), so it is not part of `make test`.
test-timing: $(STAMP)
	$(WRITE_PYC) $(PY) -m pytest tests -m timing -s

test-browser: $(BROWSER_STAMP)
	$(WRITE_PYC) $(PY) -m pytest tests/browser -m browser

# Tomorrow's break, today: everything at the newest releases the ranges admit, no lock, in a venv made anew. When it
# passes, `make lock` takes those versions; when it fails, the lock keeps CI and learners where they were.
test-newest:
	rm -rf $(VENV_NEWEST)
	$(PYTHON) -m venv $(VENV_NEWEST)
	@$(call install_torch,$(NEW_PY),)
	$(NEW_PY) -m pip $(PIP_ARGS) --upgrade -e ".[browser]"
	$(WRITE_PYC) $(NEW_PY) -m pytest $(NB_DIRS) tests $(NBVAL_ARGS) -m "not timing" $(PARALLEL)

test-lowest: $(LOW_STAMP)
	$(WRITE_PYC) $(LOW_PY) -m pytest tests --ignore=tests/browser -m "not timing and not lessons" $(PARALLEL)

demo: $(STAMP)
	@mkdir -p runs
	$(WRITE_PYC) $(PY) -m labkit $(DEMO_ARGS)

clean:
	rm -rf build dist *.egg-info labkit.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -type d -name .ipynb_checkpoints -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(VENV_LOWEST) $(VENV_NEWEST) runs
