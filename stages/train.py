"""train@<run>: fit ``runs.<run>`` of params.yaml -> models/<run>/{best,last}.pt, metrics/train/<run>/.

Usage (from the repository root): ``python stages/train.py <run>``. With ``train.gpus`` (or
``train.nodes``) > 1 the script re-executes itself under torchrun (``dfpipe.training.launch``).
"""

import sys

from dfpipe.core.config import load_entry, load_section
from dfpipe.training.launch import relaunch
from dfpipe.training.train import RunConfig, RunPaths, TrainConfig, fit


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python stages/train.py <run name from params.yaml runs:>")
    run_name = sys.argv[1]
    run_cfg = load_entry("runs", run_name, RunConfig)
    train_cfg = load_section("train", TrainConfig)
    relaunch(train_cfg.gpus, train_cfg.nodes, train_cfg.rdzv_endpoint, run_name)
    fit(run_name, run_cfg, train_cfg, RunPaths.for_run(run_name, run_cfg, train_cfg))


if __name__ == "__main__":
    main()
