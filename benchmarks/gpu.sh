#!/usr/bin/env bash
# The GPU figures of README.md (Speed) in one run: loader, ResNet-18 at 224 and F3Net-Mix at 299
# with bf16 AMP + channels-last + cuDNN autotuning (the full-scale settings). Run from the repo root
# with the project's Python on PATH; OUT (optional) is where the logs go.
#   bash benchmarks/gpu.sh
set -euo pipefail
out="${OUT:-.}"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_card.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu_card.txt"
common=(--device cuda --amp bf16 --channels-last --workers 2 --steps 40 --warmup 8)
python3 benchmarks/bench_train.py "${common[@]}" --size 224 --batch 128 --models resnet18 2>&1 | tee "$out/gpu_resnet18_224.txt"
python3 benchmarks/bench_train.py "${common[@]}" --size 299 --batch 64 \
    --models f3net_mix f3net_mix_full f3net_mix_seg 2>&1 | tee "$out/gpu_f3net_299.txt"
python3 benchmarks/bench_loader.py --sizes 224 299 --n 3072 --batch 128 2>&1 | tee "$out/gpu_loader.txt"
