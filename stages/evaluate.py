"""DVC stage ``evaluate@<name>``: score every seed of a trained run on a variant's test split.

Usage (from the repository root): ``python stages/evaluate.py <evaluation> <run> <variant>``, the
last two as dvc.yaml's evaluate foreach says (checked against params.yaml, so a stale dvc.yaml
stops the stage). Reads ``evaluate:``, ``runs:``/``evaluations:`` (which run on which variant),
``train:`` (checkpoints, curves, variants, CPU threads), ``split.scale`` (provenance) and ``audit.out_dir``
(leak flags) from params.yaml; see dfpipe.evaluation.evaluate.
"""

from pathlib import Path

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import ConfigError, load_entry, load_section, load_yaml
from dfpipe.core.numerics import set_torch_threads
from dfpipe.evaluation.evaluate import EvaluateConfig, run_evaluation
from dfpipe.evaluation.evaluations import load_evaluation
from dfpipe.training.config import RunConfig, TrainConfig


def main() -> None:
    name, run, variant = stage_args("evaluate", "evaluation", "run", "variant")
    ev = load_evaluation(name)
    if (ev.run, ev.variant) != (run, variant):
        raise ConfigError(
            f"evaluations.{name}: dvc.yaml scores run {run!r} on {variant!r}, params.yaml run {ev.run!r} on "
            f"{ev.variant!r}; regenerate dvc.yaml: python -m dfpipe.pipeline.dvcfile --write"
        )
    params = load_yaml()
    # validate only this run's config (its model's knobs): every run would import every model module
    load_entry("runs", ev.run, RunConfig)
    train_cfg = load_section("train", TrainConfig)
    set_torch_threads(train_cfg.threads)  # the same count as training (dfpipe.core.numerics)
    for section, key in (("split", "scale"), ("audit", "out_dir")):
        if key not in params.get(section, {}):
            raise ConfigError(f"{section}.{key}: missing (read by evaluate@{name})")
    cfg = load_section("evaluate", EvaluateConfig)
    headline = run_evaluation(
        name,
        ev,
        cfg,
        scale=float(params["split"]["scale"]),
        models_dir=train_cfg.models_dir,
        variants_dir=train_cfg.variants_dir,
        train_metrics_dir=train_cfg.metrics_dir,
        audit_dir=Path(params["audit"]["out_dir"]),
        features_dir=train_cfg.features_dir,
    )
    print(f"evaluate@{name}: " + ", ".join(f"{k} {v['mean']}" for k, v in headline.items()))


if __name__ == "__main__":
    run_stage(main)
