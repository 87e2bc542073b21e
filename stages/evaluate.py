"""DVC stage ``evaluate@<name>``: score every seed of a trained run on a variant's eval split.

Usage (from the repository root): ``python stages/evaluate.py <evaluation name>``.
Reads ``evaluate:``, ``evaluations.<name>``, ``train:``/``runs:`` (checkpoints, curves, variants),
``split.scale`` (provenance) and ``audit.out_dir`` (leak flags) from params.yaml; see
dfpipe.evaluation.evaluate.
"""

from pathlib import Path

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import ConfigError, load_entry, load_section, load_yaml
from dfpipe.evaluation.evaluate import EvaluateConfig, Evaluation, run_evaluation
from dfpipe.training.train import RunConfig, TrainConfig


def main() -> None:
    (name,) = stage_args("evaluate", "evaluation")
    ev = load_entry("evaluations", name, Evaluation)
    params = load_yaml()
    runs = params.get("runs") or {}
    if ev.run not in runs:
        raise ConfigError(f"evaluations.{name}.run: no run {ev.run!r} under runs: ({sorted(runs)})")
    # only this run's config: validating every run would import every model family (timm, ...)
    run_cfg = load_entry("runs", ev.run, RunConfig)
    train_cfg = load_section("train", TrainConfig)
    if run_cfg.variant != ev.train_variant:
        raise ConfigError(f"evaluations.{name}.train_variant is {ev.train_variant!r} but "
                          f"runs.{ev.run}.variant is {run_cfg.variant!r}")
    for section, key in (("split", "scale"), ("audit", "out_dir")):
        if key not in params.get(section, {}):
            raise ConfigError(f"{section}.{key}: missing (read by evaluate@{name})")
    cfg = load_section("evaluate", EvaluateConfig)
    headline = run_evaluation(name, ev, cfg, scale=float(params["split"]["scale"]),
                              models_dir=train_cfg.models_dir, variants_dir=train_cfg.variants_dir,
                              train_metrics_dir=train_cfg.metrics_dir,
                              audit_dir=Path(params["audit"]["out_dir"]), features_dir=train_cfg.features_dir)
    print(f"evaluate@{name}: " + ", ".join(f"{k} {v['mean']}" for k, v in headline.items()))


if __name__ == "__main__":
    run_stage(main)
