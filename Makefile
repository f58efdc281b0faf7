# dlfleet: `make run` (the main job, offline) and `make test` (every test).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
TVENV := .venv-train
BIN := $(CURDIR)/$(VENV)/bin
TBIN := $(CURDIR)/$(TVENV)/bin
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: run test venv lint test-unit test-training test-molecule os-deps bench clean

venv: $(VENV)/.installed $(TVENV)/.installed

$(VENV)/.installed: requirements/controller.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) -r requirements/controller.txt
	touch $@

$(TVENV)/.installed: training/requirements.txt requirements/training-test.txt
	$(PYTHON) -m venv $(TVENV)
	$(TBIN)/pip install $(PIP_FLAGS) -r requirements/training-test.txt
	touch $@

# The main job: emulator up, site.yml on inventory/local, emulator down.
run: venv
	PATH="$(BIN):$$PATH" scripts/run-local $(ARGS)

os-deps:
	scripts/os-deps

lint: $(VENV)/.installed
	$(BIN)/ruff check library module_utils scripts tests training benchmarks
	PATH="$(BIN):$$PATH" $(BIN)/ansible-lint --profile production -q
	@for m in library/*.py; do n=$$(basename $$m .py); \
	  PATH="$(BIN):$$PATH" $(BIN)/ansible-doc -M library $$n >/dev/null || { echo "ansible-doc failed: $$n"; exit 1; }; done
	@echo "lint: ok"

test-unit: venv
	PATH="$(BIN):$$PATH" $(BIN)/pytest -q --durations=15 tests --ignore=tests/training

test-training: $(TVENV)/.installed
	$(TBIN)/pytest -q tests/training

test-molecule: venv os-deps
	@for r in roles/*/; do if [ -d $$r/molecule/default ]; then \
	  (cd $$r && PATH="$(BIN):$$PATH" $(BIN)/molecule test) || exit 1; fi; done

test: venv os-deps lint test-training test-unit test-molecule

bench: venv
	PATH="$(BIN):$$PATH" BENCH="$(BENCH)" scripts/run-benchmarks

clean:
	-scripts/aws-emulator stop
	rm -rf .run artifacts
