"""train@<run>: fit every seed of ``runs.<run>`` -> models/<run>/seed<s>.pt, metrics/train/<run>/.

Usage (from the repository root): ``python stages/train.py <run>``; under DDP:
``torchrun --nproc_per_node N stages/train.py <run>``.
"""

from dfpipe.core.cli import stage_args
from dfpipe.core.config import load_entry, load_section
from dfpipe.training.train import RunConfig, RunPaths, TrainConfig, fit


def main() -> None:
    (run_name,) = stage_args("train", "run")
    run_cfg = load_entry("runs", run_name, RunConfig)
    train_cfg = load_section("train", TrainConfig)
    fit(run_name, run_cfg, train_cfg, RunPaths.for_run(run_name, run_cfg, train_cfg))


if __name__ == "__main__":
    main()
