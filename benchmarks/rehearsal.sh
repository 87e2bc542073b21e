#!/usr/bin/env bash
# Full-scale dress rehearsal on one GPU machine (16 cores, one GPU): the full profile at a small
# scale on generated data (299 px crops, K = 30), Ray preprocessing on every core, one ResNet-18 and
# one F3Net-Mix run on the GPU, their evaluations and the report, by `dvc repro` in a temporary copy
# of the repository (deleted at the end). Prints one row per stage: wall time, throughput, peak GPU
# memory, peak host RSS and the stage extrapolated to split.scale 1.0 (benchmarks/rehearsal.py).
# Sized to finish within 8 minutes. Run from anywhere; OUT (optional) receives the log and a JSON.
#   bash benchmarks/rehearsal.sh
#   REHEARSAL_DEVICE=cpu REHEARSAL_TINY=1 bash benchmarks/rehearsal.sh   # tiny CPU mode (a slow test)
#   REHEARSAL_COMPILE=false bash benchmarks/rehearsal.sh                 # train.compile off
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then py="$repo/.venv/bin/python"; else py="$(command -v python3)"; fi
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-}"
if [[ -n "$out" ]]; then
    mkdir -p "$out"
    "$py" "$repo/benchmarks/rehearsal.py" --json "$out/rehearsal.json" "$@" 2>&1 | tee "$out/rehearsal.txt"
else
    "$py" "$repo/benchmarks/rehearsal.py" "$@"
fi
