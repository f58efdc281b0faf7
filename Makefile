# dlfleet: `make run` (the main job, offline) and `make test` (every test).
SHELL := /bin/bash
# The interpreters the venvs are made from (scripts/find-python): a CPython 3.11 whose executable holds the
# interpreter (a distribution's build) before one that loads a shared libpython (a source build such as pyenv's):
# 0.84x the CPU for Ansible's runs (benchmarks/python_build). The training venv (the trainer, and SageMaker local
# mode, which unpack archives) also needs tarfile's data filter (3.11.4+). `make PYTHON=/path/to/python3.11 ...`
# names one for both, TRAIN_PYTHON=... one for the training venv.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell scripts/find-python)
ifeq ($(origin TRAIN_PYTHON),undefined)
TRAIN_PYTHON := $(shell scripts/find-python --tar-filter)
endif
endif
TRAIN_PYTHON ?= $(PYTHON)
VENV := .venv
TVENV := .venv-train
BIN := $(CURDIR)/$(VENV)/bin
TBIN := $(CURDIR)/$(TVENV)/bin
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: run test venv lint test-unit test-emulator test-e2e test-e2e-pytest test-controller test-training \
        test-molecule test-molecule-dlami test-molecule-mxnet_train test-conformance test-parallel os-deps bench clean \
        collection collection-sanity

venv: $(VENV)/.installed $(TVENV)/.installed

# pip bootstraps uv into the controller venv; uv installs the pinned requirements of both venvs (the same
# packages from the same index, in a fraction of pip's time: most of a fresh clone's setup was pip).
# --compile-bytecode: uv, unlike pip, writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set (CI sets
# it) no process ever writes one, so every ansible-playbook, module run, emulator and trainer compiled ansible,
# botocore, moto or numpy from source again: twice the CPU for each import (benchmarks/make_test/RESULTS.md).
UV := $(BIN)/uv
UV_FLAGS ?= -q --compile-bytecode

$(VENV)/.bootstrap: requirements/bootstrap.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -r requirements/bootstrap.txt
	touch $@

# Ansible is ansible-core plus the collections pinned in requirements.yml (scripts/install-collections; by default from
# the wheel of the `ansible` release that bundles them, since only PyPI may be reachable: COLLECTIONS_SOURCE=galaxy
# for ansible-galaxy), not the whole `ansible` package (benchmarks/collections_install).
COLLECTIONS_SOURCE ?= pypi
$(VENV)/.installed: requirements/controller.txt requirements.yml $(VENV)/.bootstrap $(VENV)/.ansiballz-caches
	$(UV) pip install $(UV_FLAGS) --python $(BIN)/python -r requirements/controller.txt
	$(UV) pip uninstall -q --python $(BIN)/python ansible 2>/dev/null || true   # a venv made before requirements.yml
	$(BIN)/python scripts/install-collections --python $(BIN)/python --source $(COLLECTIONS_SOURCE)
	$(BIN)/python -m compileall -q \
	  "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ansible_collections"
	touch $@

# The controller venv keeps three caches between runs, each a module imported by a .pth file:
# scripts/ansiballz_bytecode.py (zipimport compiles a payload's module_utils from source at every module run, a
# third of a localhost task's CPU), scripts/ansiballz_deps.py (every playbook run parses each module_utils file a
# module reaches to find its imports, three quarters of its task workers' CPU) and scripts/botocore_data_cache.py
# (every boto3 session parses botocore's endpoint data and each service's model again); what they share is
# scripts/dlfleet_venv_cache.py.
ANSIBALLZ_CACHES := ansiballz_bytecode ansiballz_deps botocore_data_cache
$(VENV)/.ansiballz-caches: $(ANSIBALLZ_CACHES:%=scripts/%.py) scripts/dlfleet_venv_cache.py $(VENV)/.bootstrap
	site=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  cp scripts/dlfleet_venv_cache.py "$$site/" && \
	  for m in $(ANSIBALLZ_CACHES); do \
	    cp scripts/$$m.py "$$site/dlfleet_$$m.py" && \
	    echo "import dlfleet_$$m" > "$$site/dlfleet_$$m.pth" || exit 1; done && \
	  $(BIN)/python -m compileall -q "$$site"/dlfleet_*.py
	touch $@

# The training venv also runs the local SageMaker runtime (`python -m sagemaker_local`, the modules' local_python):
# its requirements, and the package linked into site-packages (the project's copy, so an edit takes effect at once),
# byte-compiled (its processes run with PYTHONDONTWRITEBYTECODE, and every local call imports it).
$(TVENV)/.installed: training/requirements.txt requirements/training-test.txt sagemaker_local/requirements.txt \
                     $(VENV)/.bootstrap
	$(TRAIN_PYTHON) -m venv $(TVENV)
	$(UV) pip install $(UV_FLAGS) --python $(TBIN)/python -r requirements/training-test.txt \
	  -r sagemaker_local/requirements.txt
	site=$$($(TBIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  ln -sfn $(CURDIR)/sagemaker_local "$$site/sagemaker_local" && \
	  $(TBIN)/python -m compileall -q sagemaker_local
	touch $@

# .venv-py38: the SageMaker MXNet 1.9 images' Python (3.8) with the real toolkits, for the conformance tier. Python 3.8
# comes from pyenv (`pyenv prefix 3.8`) or from python3.8 on PATH; PY38=/path/to/python3.8 names another one.
P38VENV := .venv-py38
P38BIN := $(CURDIR)/$(P38VENV)/bin
PY38 ?= $(shell { p=$$(pyenv prefix 3.8 2>/dev/null) && [ -x "$$p/bin/python3.8" ] && echo "$$p/bin/python3.8"; } \
          || command -v python3.8 2>/dev/null)

$(P38VENV)/.installed: requirements/conformance.txt requirements/py38-image.txt training/requirements.txt \
                       $(VENV)/.bootstrap
	@if [ -z "$(PY38)" ] || ! "$(PY38)" -c 'import sys; assert sys.version_info[:2] == (3, 8)' 2>/dev/null; then \
	  echo "ERROR: the conformance tier needs Python 3.8 (the SageMaker MXNet 1.9 images' Python) and found none" \
	       "(PY38='$(PY38)')." >&2; \
	  echo "  Install it with pyenv: 'pyenv install 3.8' (then 'pyenv prefix 3.8' finds it), or put python3.8 on" \
	       "PATH (e.g. 'apt-get install python3.8 python3.8-venv' where the distribution has it), or run" \
	       "'make PY38=/path/to/python3.8 ...'." >&2; \
	  exit 1; fi
	$(PY38) -m venv $(P38VENV)
	$(UV) pip install $(UV_FLAGS) --python $(P38BIN)/python -r requirements/conformance.txt
	touch $@

# The main job: emulator up, site.yml on inventory/local, emulator down.
run: venv
	PATH="$(BIN):$$PATH" scripts/run-local $(ARGS)

os-deps:
	scripts/os-deps

lint: $(VENV)/.installed
	$(BIN)/ruff check library module_utils sagemaker_local scripts tests training benchmarks playbooks/filter_plugins \
	  roles/*/library roles/*/action_plugins playbooks/action_plugins doc_fragments
	PATH="$(BIN):$$PATH" $(BIN)/ansible-lint --profile production -q
	@for m in library/*.py roles/*/library/*.py; do n=$$(basename $$m .py); \
	  PATH="$(BIN):$$PATH" $(BIN)/ansible-doc -M $$(dirname $$m) $$n >/dev/null || { echo "ansible-doc failed: $$n"; exit 1; }; done
	@echo "lint: ok"

# Test tiers (README, "Tests"). Each runs alone; `make test` runs them all, side by side where the cores allow.
# PYTEST_WORKERS: pytest-xdist workers for the emulator and end-to-end tiers. More workers than cores overlap the
# files' waits (SSH, retry back-offs, the trainer); on 2 cores the whole suite is CPU-bound all the same
# (benchmarks/make_test/RESULTS.md).
PYTEST_WORKERS ?= 4
# The tests run many MXNet processes at once on few cores. libgomp's threads spin while they wait for work and burn
# the cores the other processes need: four trainers side by side on 2 cores took 2.0x the wall time and 2.1x the
# CPU with the default policy (28.3 s vs 12.6-15.1 s). For the tests only; training hosts run one job each.
test test-%: export OMP_WAIT_POLICY := PASSIVE
PYTEST := PATH="$(BIN):$$PATH" $(BIN)/pytest
XDIST = -n $(PYTEST_WORKERS) --dist loadscope

test-unit: $(VENV)/.installed
	$(PYTEST) -q tests/unit

test-emulator: venv
	$(PYTEST) -q $(XDIST) --durations=15 tests/emulator

test-e2e-pytest: venv os-deps
	$(PYTEST) -q $(XDIST) --durations=15 tests/e2e

test-e2e: test-e2e-pytest test-molecule

# All three controller tiers in one pytest run, so that xdist packs the long tests of every tier together.
test-controller: venv os-deps
	$(PYTEST) -q $(XDIST) --durations=25 tests/unit tests/emulator tests/e2e

test-training: $(TVENV)/.installed
	$(TBIN)/pytest -q tests/training

# Our code under the real SageMaker toolkits (Python 3.8, in .venv-py38), compared with our local mode.
test-conformance: venv $(P38VENV)/.installed
	$(PYTEST) -q --durations=10 tests/conformance

# (explicit rules: make skips pattern rules for .PHONY targets)
test-molecule-dlami test-molecule-mxnet_train: venv os-deps
	cd roles/$(@:test-molecule-%=%) && PATH="$(BIN):$$PATH" $(BIN)/molecule test

test-molecule: test-molecule-dlami test-molecule-mxnet_train

# Everything after the venvs, side by side; each target's output is printed whole when it ends.
test-parallel:
	$(MAKE) -j6 --output-sync=target --no-print-directory lint test-training test-controller \
	  test-molecule-dlami test-molecule-mxnet_train test-conformance

test: venv os-deps
	@start=$$(date +%s); $(MAKE) --no-print-directory test-parallel; rc=$$?; \
	  echo "make test: rc=$$rc in $$(( $$(date +%s) - start )) s after the venvs"; exit $$rc

# The dlfleet.aws collection, built from the project's own sources (scripts/build_collection.py): dist/*.tar.gz, for
# `ansible-galaxy collection install`. Its use from another team's playbook is tests/emulator/test_collection.py.
collection: $(VENV)/.installed
	PATH="$(BIN):$$PATH" $(BIN)/python scripts/build_collection.py --out .run/collection
	mkdir -p dist && cp .run/collection/dist/*.tar.gz dist/ && ls dist/*.tar.gz

# ansible-test sanity on that collection, without containers (scripts/collection-sanity says how), from .venv-sanity:
# ansible-core and ansible-test's own pinned sanity requirements.
SVENV := .venv-sanity
$(SVENV)/.installed: requirements/sanity.txt $(VENV)/.bootstrap
	$(PYTHON) -m venv $(SVENV)
	$(UV) pip install $(UV_FLAGS) --python $(SVENV)/bin/python -r requirements/sanity.txt
	touch $@

collection-sanity: $(VENV)/.installed $(SVENV)/.installed
	scripts/collection-sanity $(ARGS)

bench: venv
	PATH="$(BIN):$$PATH" BENCH="$(BENCH)" scripts/run-benchmarks

clean:
	-scripts/aws-emulator stop
	rm -rf .run artifacts
