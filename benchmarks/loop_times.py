"""Time the research loop's fixed costs: Python start-up of each stage script and a no-op `dvc status`.

Usage (repository root, after `make setup`; on a quiet machine):
    python benchmarks/loop_times.py [--repeat 5] [--no-dvc] [--only numpy report]

Start-up = a fresh interpreter that imports a stage script's module-level imports (the script is
run with a name other than ``__main__``, so ``main()`` does not start) and, for the model-building
stages, the model modules a run of each kind imports when its config is validated: the time every
`dvc repro` of that stage pays before any work. Prints min / median over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (label, Python code run in a fresh interpreter from the repository root)
PROBES = (
    ("interpreter + numpy", "import numpy"),
    ("torch alone", "import torch"),
    ("stages/train.py, ResNet-18 run",
     "import runpy; runpy.run_path('stages/train.py', run_name='probe'); import dfpipe.models.resnet"),
    ("stages/train.py, Xception/F3Net run",
     "import runpy; runpy.run_path('stages/train.py', run_name='probe'); import dfpipe.models.f3net"),
    ("stages/evaluate.py, ResNet-18 run",
     "import runpy; runpy.run_path('stages/evaluate.py', run_name='probe'); import dfpipe.models.resnet"),
    ("stages/report.py", "import runpy; runpy.run_path('stages/report.py', run_name='probe')"),
    ("stages/variant.py", "import runpy; runpy.run_path('stages/variant.py', run_name='probe')"),
)


def timed(cmd: list[str], repeat: int, check: bool = True) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-dvc", action="store_true", help="skip the `dvc status` timing")
    parser.add_argument("--only", nargs="*", help="probes whose label contains one of these (default: all)")
    args = parser.parse_args()
    probes = [(label, code) for label, code in PROBES if not args.only or any(w in label for w in args.only)]
    rows = [(label, timed([sys.executable, "-c", code], args.repeat)) for label, code in probes]
    if not args.no_dvc:
        dvc = str(Path(sys.executable).with_name("dvc"))
        # exit status 1 means "changed stages": still a full status walk
        rows.append(("no-op `dvc status`", timed([dvc, "status", "-q"], args.repeat, check=False)))
    print(f"| what | min (s) | median (s) |   ({args.repeat} runs each)\n|---|---|---|")
    for label, secs in rows:
        print(f"| {label} | {min(secs):.2f} | {statistics.median(secs):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
