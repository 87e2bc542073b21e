"""train@<run>: fit every seed of ``runs.<run>`` -> models/<run>/seed<s>.pt, metrics/train/<run>/.

Usage (from the repository root): ``python stages/train.py <run>``; under DDP:
``torchrun --nproc_per_node N stages/train.py <run>``.
"""

import sys

from dfpipe.core.config import load_entry, load_section
from dfpipe.training.train import RunConfig, RunPaths, TrainConfig, fit


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python stages/train.py <run name from params.yaml runs:>")
    run_name = sys.argv[1]
    run_cfg = load_entry("runs", run_name, RunConfig)
    train_cfg = load_section("train", TrainConfig)
    fit(run_name, run_cfg, train_cfg, RunPaths.for_run(run_name, run_cfg, train_cfg))


if __name__ == "__main__":
    main()
