# Two commands do all the set-up on a fresh machine:
#   make run   - create .venv, install, fetch model assets, run the whole pipeline on the demo data
#   make test  - create .venv, install, fetch model assets, run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha256sum requirements.txt pyproject.toml | sha256sum | cut -c1-12)
ASSETS := models/mediapipe/face_detection_short_range.tflite models/mediapipe/selfie_segmentation.tflite
PYTEST_ARGS ?=
# Stage commands call `python`: put the venv first on PATH so DVC runs them with it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test clean-venv

setup: $(STAMP) $(ASSETS)

$(STAMP): requirements.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

$(ASSETS): $(STAMP)
	$(PY) -m dfpipe.core.assets

run: setup
	dvc repro
	@echo "Results tables: metrics/tables/ ; compare runs with: $(VENV)/bin/dvc exp show"

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
