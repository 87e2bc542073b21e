"""DVC stage ``evaluate@<name>``: score a trained run on a variant's eval split.

Usage (from the repository root): ``python stages/evaluate.py <evaluation name>``.
Reads ``evaluate:``, ``evaluations.<name>``, ``train:``/``runs:`` (where the run's checkpoint and
dvclive logs and the variants are) from params.yaml; see dfpipe.evaluation.evaluate.
"""

from dfpipe.core.cli import stage_args
from dfpipe.core.config import ConfigError, load_entry, load_section, load_yaml
from dfpipe.evaluation.evaluate import EvaluateConfig, Evaluation, run_evaluation
from dfpipe.training.train import load_runs


def main() -> None:
    (name,) = stage_args("evaluate", "evaluation")
    ev = load_entry("evaluations", name, Evaluation)
    train_cfg, runs = load_runs(load_yaml())
    if ev.run not in runs:
        raise ConfigError(f"evaluations.{name}.run: no run {ev.run!r} under runs: ({sorted(runs)})")
    if runs[ev.run].variant != ev.train_variant:
        raise ConfigError(f"evaluations.{name}.train_variant is {ev.train_variant!r} but "
                          f"runs.{ev.run}.variant is {runs[ev.run].variant!r}")
    cfg = load_section("evaluate", EvaluateConfig)
    headline = run_evaluation(name, ev, cfg, models_dir=train_cfg.models_dir,
                              variants_dir=train_cfg.variants_dir,
                              train_metrics_dir=train_cfg.metrics_dir, features_dir=train_cfg.features_dir)
    print(f"evaluate@{name}: macro_f1 {headline['macro_f1']}, acc {headline['acc']}, "
          f"auc_real_vs_fake {headline['auc_real_vs_fake']}, eer {headline['eer']}")


if __name__ == "__main__":
    main()
