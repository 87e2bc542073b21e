# Two commands do all the set-up on a fresh machine:
#   make run   - create .venv, install, fetch model assets, run the whole pipeline on the demo data
#   make test  - create .venv, install, fetch model assets, run the test suite (minutes)
#   make lint     - ruff and mypy on src/ and stages/ (CI runs it)
#   make dashboard - the results page dvc_plots/index.html (offline; one section per results table)
#   make test-e2e - the slow tests (real DVC, processes) and the end-to-end suite: the real dvc.yaml on
#                   tiny data, experiments, a second folder (~30 min)
# Reviewers who only want the data of one variant (no torch, ~550 MB instead of ~7 GB):
#   make pull VARIANT=v4   - create .venv-pull (DVC + its ssh/s3 plugins, numpy/pandas/pyarrow), check the
#                            remote is reachable, `dvc pull variant@v4`
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha256sum requirements.txt pyproject.toml | sha256sum | cut -c1-12)
ASSET_NAMES := face_detection_short_range.tflite face_detection_full_range_sparse.tflite selfie_segmentation.tflite face_landmark.tflite
# Prefetch (git- and dvc-ignored): the DVC stage `assets` copies from it into models/mediapipe/
# (cached DVC outs), so the pipeline also runs offline after set-up.
PREFETCH := $(addprefix .scratch/assets/,$(ASSET_NAMES))
ASSETS   := $(addprefix models/mediapipe/,$(ASSET_NAMES))
PULL_VENV := .venv-pull
# Vega, Vega-Lite and Vega-Embed for the offline dashboard (`make dashboard`): pinned tarballs from the
# npm registry (npm checks their integrity), only the standalone builds kept, in git-ignored .scratch/js/
VEGA_PINS := vega@5.30.0 vega-lite@5.21.0 vega-embed@6.26.0
VEGA_STAMP := .scratch/js/.installed-$(shell echo $(VEGA_PINS) | sha256sum | cut -c1-12)
# dvc and its SSH / S3 remote plugins, and what reading a pulled shard needs (numpy, pandas,
# pyarrow), at the pins of requirements.txt (nothing else: no torch)
DVC_PIN   := $(shell grep -E '^(dvc(-ssh|-s3)?|numpy|pandas|pyarrow)==' requirements.txt)
VARIANT   ?= v4
# two workers (CI has 2 cores); loadfile keeps a file's session fixtures on one worker
PYTEST_ARGS ?= -n 2 --dist loadfile -m "not e2e and not slow"
# Stage commands call `python`: put the venv first on PATH so DVC runs them with it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup run test test-e2e lint pull clean-venv dashboard

setup: $(STAMP) $(ASSETS) $(VEGA_STAMP)

$(VEGA_STAMP):
	@command -v npm >/dev/null || { echo "make setup: npm is needed for the dashboard's Vega scripts (apt-get install npm)"; exit 1; }
	rm -rf .scratch/js.tmp && mkdir -p .scratch/js.tmp .scratch/js
	cd .scratch/js.tmp && npm pack -q --silent $(VEGA_PINS) >/dev/null && for t in *.tgz; do tar xzf $$t package/build; cp package/build/$${t%-*}.min.js ../js/; rm -rf package; done
	rm -rf .scratch/js.tmp
	rm -f .scratch/js/.installed-* && echo "$(VEGA_PINS)" > $@

# the results page (dvc_plots/index.html, offline): one section per results table, see dfpipe.pipeline.dashboard
dashboard: $(STAMP) $(VEGA_STAMP)
	$(PY) -m dfpipe.pipeline.dashboard --out dvc_plots

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

# DVC (+ its ssh/s3 plugins) and numpy/pandas/pyarrow (same pins as requirements.txt), no torch:
# enough to pull any stage's outputs and read them (docs/sharing.md).
$(PULL_VENV)/bin/dvc: requirements.txt
	test -d $(PULL_VENV) || $(PYTHON) -m venv $(PULL_VENV)
	$(PULL_VENV)/bin/python -m pip install -q $(foreach p,$(DVC_PIN),"$(p)")
	touch $@

# PULL_DVC=/path/to/dvc uses an existing DVC instead of creating .venv-pull (tests, offline)
PULL_DVC ?= $(PULL_VENV)/bin/dvc
# Credentials: .dvc/config.local (`dvc remote modify --local`) or the environment (AWS_*); a wrong
# key or secret fails with one "ERROR: failed to connect to <ssh|s3> ..." line (tests/pipeline/test_remotes.py).
# First pullcheck.py (standard library only): a remote that is not reachable (a clone elsewhere
# resolves the committed relative URL next to itself) stops with one message naming the URL tried
# and how to set one (tests/pipeline/test_pull_anywhere.py).
pull: $(PULL_DVC)
	@$(PYTHON) src/dfpipe/pipeline/pullcheck.py --dvc $(PULL_DVC)
	$(PULL_DVC) pull variant@$(VARIANT)
	@echo "data/variants/$(VARIANT) pulled; check with: $(PULL_DVC) status --cloud variant@$(VARIANT)"

clean-venv:
	rm -rf $(VENV) $(PULL_VENV)
