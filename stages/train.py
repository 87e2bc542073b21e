"""train@<run>: fit every seed of ``runs.<run>`` -> models/<run>/seed<s>.pt, metrics/train/<run>/.

Usage (from the repository root): ``python stages/train.py <run>``. With ``runtime.train.gpus`` (or
``runtime.train.nodes``) > 1 the script re-executes itself under torchrun (``dfpipe.training.launch``).
Training refuses to start, with one line and exit status 1, when the run's variant has no audit
gate ``<audit.out_dir>/<variant>/gate.json`` or differs from what the gate approved
(``dfpipe.splits.gate``).
"""

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import load_entry, load_section
from dfpipe.splits.gate import GateConfig, GateRefused
from dfpipe.training.launch import relaunch
from dfpipe.training.train import RunConfig, RunPaths, TrainConfig, fit


def main() -> None:
    (run_name,) = stage_args("train", "run")
    run_cfg = load_entry("runs", run_name, RunConfig)
    train_cfg = load_section("train", TrainConfig)
    audit_dir = load_section("audit", GateConfig).out_dir
    relaunch(train_cfg.gpus, train_cfg.nodes, train_cfg.rdzv_endpoint, run_name)
    try:
        fit(run_name, run_cfg, train_cfg, RunPaths.for_run(run_name, run_cfg, train_cfg, audit_dir))
    except GateRefused as exc:
        raise SystemExit(f"train@{run_name} refused: {exc}") from None


if __name__ == "__main__":
    run_stage(main)
