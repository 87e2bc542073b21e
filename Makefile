# Two commands do all the set-up on a fresh machine:
#   make run   - create .venv, install, fetch model assets, run the whole pipeline on the demo data
#   make test  - create .venv, install, fetch model assets, run the test suite (minutes)
#   make lint     - ruff and mypy on src/ and stages/ (CI runs it)
#   make test-e2e - the slow tests (real DVC, processes) and the end-to-end suite: the real dvc.yaml on
#                   tiny data, experiments, a second folder (~30 min)
# Reviewers who only want the data of one variant (no torch, ~100 MB instead of ~5 GB):
#   make pull VARIANT=v4   - create .venv-pull with DVC only and `dvc pull variant@v4`
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha256sum requirements.txt pyproject.toml | sha256sum | cut -c1-12)
ASSET_NAMES := face_detection_short_range.tflite selfie_segmentation.tflite
# Prefetch (git- and dvc-ignored): the DVC stage `assets` copies from it into models/mediapipe/
# (cached DVC outs), so the pipeline also runs offline after set-up.
PREFETCH := $(addprefix .scratch/assets/,$(ASSET_NAMES))
ASSETS   := $(addprefix models/mediapipe/,$(ASSET_NAMES))
PULL_VENV := .venv-pull
DVC_PIN   := $(shell grep -E '^dvc==' requirements.txt)
VARIANT   ?= v4
# two workers (CI has 2 cores); loadfile keeps a file's session fixtures on one worker
PYTEST_ARGS ?= -n 2 --dist loadfile -m "not e2e and not slow"
# Stage commands call `python`: put the venv first on PATH so DVC runs them with it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test test-e2e lint pull clean-venv

setup: $(STAMP) $(ASSETS)

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

$(PREFETCH) &: $(STAMP)
	$(PY) -m dfpipe.core.assets --dest .scratch/assets

# checkout from the DVC cache when present, else the stage copies from the prefetch
$(ASSETS) &: $(PREFETCH)
	$(VENV)/bin/dvc repro -q assets

run: setup
	dvc repro
	@echo "Results tables: metrics/tables/ ; compare experiments: the dvc exp show command of README.md (Experiments)"

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# ruff (lint, format) and mypy on src/ and stages/ at zero findings; settings in pyproject.toml
lint: setup
	$(VENV)/bin/ruff check src stages
	$(VENV)/bin/ruff format --check src stages
	$(VENV)/bin/mypy

# one `dvc repro` of the whole pipeline on tiny data, then the README's promises on it (sequential)
test-e2e: setup
	$(PY) -m pytest -q -n 2 --dist loadfile -m "slow and not e2e"
	$(PY) -m pytest -q -m e2e tests/pipeline/test_pipeline_e2e.py

# DVC only (same pin as requirements.txt), no torch: enough to pull any stage's outputs.
$(PULL_VENV)/bin/dvc: requirements.txt
	test -d $(PULL_VENV) || $(PYTHON) -m venv $(PULL_VENV)
	$(PULL_VENV)/bin/python -m pip install -q "$(DVC_PIN)"
	touch $@

# PULL_DVC=/path/to/dvc uses an existing DVC instead of creating .venv-pull (tests, offline)
PULL_DVC ?= $(PULL_VENV)/bin/dvc
pull: $(PULL_DVC)
	$(PULL_DVC) pull variant@$(VARIANT)
	@echo "data/variants/$(VARIANT) pulled; check with: $(PULL_DVC) status variant@$(VARIANT)"

clean-venv:
	rm -rf $(VENV) $(PULL_VENV)
