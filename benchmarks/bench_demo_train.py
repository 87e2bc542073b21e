"""Wall time of every demo ``train@<run>`` stage (all its seeds), on synthetic variants of demo size.

    python benchmarks/bench_demo_train.py [--runs resnet_1 f3net_mix] [--params params.yaml] [--native]

For each variant the runs use, writes a synthetic variant (random crops, the demo's per-source
counts x ``split.scale``, labels from ``sources``, masks for edited items, 10 % val) and the
spectrum statistics dct/dft runs read, into a temporary folder with a copy of params.yaml whose
``train:`` paths point there. Then runs ``python stages/train.py <run>`` there, one process per run
as DVC does (so torch/timm start-up is included), and prints one line per run and the total:
wall seconds and CPU seconds (user + sys of the stage process; on a shared machine CPU seconds
are the steadier figure, and on an idle 2-core box wall ~ CPU / 2 or more).
Speed only: synthetic crops do not say anything about accuracy.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import write_split  # noqa: E402 - the benchmarks' shared split writer

from dfpipe.core.config import load_yaml, merged_entry  # noqa: E402
from dfpipe.core.io import write_json  # noqa: E402
from dfpipe.features.moments import RunningMoments, save_stats  # noqa: E402
from dfpipe.features.spectra import KINDS, log_spectrum_np, stats_path  # noqa: E402
from dfpipe.splits.gate import gate_path, gate_record, variant_fingerprint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def synthetic_variant(root: Path, counts: dict[int, int], size: int, seed: int = 0) -> None:
    """``root/{train,val}`` with ``counts[label]`` items per label (val = every 10th)."""
    items = [label for label, n in sorted(counts.items()) for _ in range(n)]
    write_split(root, "train", [lab for i, lab in enumerate(items) if i % 10], size, seed)
    write_split(root, "val", [lab for i, lab in enumerate(items) if i % 10 == 0], size, seed + 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--runs", nargs="*", help="default: every run")
    ap.add_argument("--native", action="store_true",
                    help="also run each stage with DFPIPE_NATIVE_CPU=1 (unpinned kernels) and print the ratio")
    args = ap.parse_args()
    params = load_yaml(args.params)  # YAML 1.2, as the stages read it
    runs = args.runs or sorted(params["runs"])
    merged = {r: merged_entry(params, "runs", r) for r in runs}  # over run_defaults
    scale = params["split"]["scale"]
    size = params["preprocess"]["size"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for variant in sorted({merged[r]["variant"] for r in runs}):
            counts: dict[int, int] = {}
            for source, n in params["variants"][variant]["train"].items():
                label = params["sources"][source]["label"]
                counts[label] = counts.get(label, 0) + math.floor(n * scale + 0.5)
            synthetic_variant(tmp / "variants" / variant, counts, size)
            images = np.random.default_rng(1).integers(0, 256, (64, size, size, 3), dtype=np.uint8)
            for kind in KINDS:
                acc = RunningMoments()
                acc.update(log_spectrum_np(images, kind, "per_channel", 1e-12))
                mean, std = acc.result()
                save_stats(stats_path(tmp / "spectra" / variant, kind), mean, std, acc.count, kind,
                           "per_channel", 1e-12, variant)
            # the benchmark times training, not the audit: its synthetic variant gets the gate the
            # audit writes for a variant that declares no check, bound to the variant's bytes
            write_json(gate_path(tmp / "audit", variant),
                       gate_record({"variant": variant, "leak_free": False, "status": "not_required"},
                                   variant_fingerprint(tmp / "variants" / variant)))
            print(f"variant {variant}: train+val counts by label {counts}", flush=True)
        params["audit"]["out_dir"] = "audit"
        params["train"].update(variants_dir="variants", spectra_dir="spectra", models_dir="models",
                               metrics_dir="metrics")
        params["runtime"]["train"].update(scratch_dir="scratch", log_dir="logs", progress=False)
        (tmp / "params.yaml").write_text(yaml.safe_dump(params))
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        total = total_cpu = total_native = 0.0
        if args.native:
            print("| run | seeds | wall s | CPU s | unpinned wall s | pinned / unpinned |\n|---|---|---|---|---|---|")
        else:
            print("| run | seeds | wall s | CPU s |\n|---|---|---|---|")
        for run in runs:
            sec, cpu = _train(run, tmp, env)
            total += sec
            total_cpu += cpu
            row = f"| {run} | {len(merged[run]['seeds'])} | {sec:.1f} | {cpu:.1f} |"
            if args.native:  # the same stage with the CPU kernels unpinned (dfpipe.core.numerics)
                native, _ = _train(run, tmp, {**env, "DFPIPE_NATIVE_CPU": "1"})
                total_native += native
                row += f" {native:.1f} | {sec / native:.2f}x |"
            print(row, flush=True)
        tail = f" {total_native:.1f} | {total / total_native:.2f}x |" if args.native else ""
        print(f"| **total** | | {total:.1f} | {total_cpu:.1f} |{tail}")
    return 0


def _train(run: str, tmp: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + sys) of one ``python stages/train.py <run>`` in ``tmp``."""
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, str(REPO / "stages/train.py"), run], cwd=tmp, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"train@{run} failed:\n{proc.stderr[-3000:]}")
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
