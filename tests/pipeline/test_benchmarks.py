"""The GPU benchmark scripts still run (on the CPU, tiny sizes): they are the README's source of
GPU figures and are run rarely, on a lent machine, where a broken script wastes the lease."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_bench_train_measures_every_model_on_cpu():
    out = _run("bench_train.py", "--device", "cpu", "--size", "64", "--batch", "4", "--steps", "1",
               "--warmup", "1", "--amp", "bf16", "--channels-last", "--models", "resnet18", "f3net_mix_seg")
    for model in ("resnet18", "f3net_mix_seg"):
        m = re.search(rf"^train {model} \([\d.]+ M params\): ([\d.]+) img/s \(1 steps", out, re.M)
        assert m and float(m.group(1)) > 0, out
    assert re.search(r"^data path \+masks: \d+ img/s", out, re.M), out


@pytest.mark.slow
def test_bench_loader_reports_both_loaders():
    out = _run("bench_loader.py", "--sizes", "32", "--n", "64", "--batch", "16", "--repeat", "1")
    rates = re.findall(r"^32 px .*?:\s+(\d+) img/s$", out, re.M)
    assert len(rates) == 3 and all(int(r) > 0 for r in rates), out


@pytest.mark.slow
def test_bench_models_times_a_registered_model():
    out = _run("bench_models.py", "--iters", "1", "--batch", "2", "--threads", "1", "--skip-paper-size",
               "--models", "npr")
    m = re.search(r"^npr\s+([\d.]+)\s+([\d.]+)\s+-$", out, re.M)  # params (M), img/s at 64 px, no paper size
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, out


@pytest.mark.slow
def test_bench_demo_train_runs_a_demo_train_stage():
    out = _run("bench_demo_train.py", "--runs", "resnet_5")
    m = re.search(r"^\| resnet_5 \| 2 \| ([\d.]+) \| ([\d.]+) \|$", out, re.M)
    assert m and float(m.group(1)) > 0, out
