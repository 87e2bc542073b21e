"""frank@<name>: the Frank et al. (2020) linear baseline on cached spectra, as an evaluation row.

Usage (from the repository root): ``python stages/frank.py <name from params.yaml frank:>``.
Fits ``frank.<name>`` (dfpipe.scoring.frank) and writes what ``evaluate@<name>`` writes for a
trained model: metrics/eval/<name>.json, metrics/eval/<name>/{predictions.parquet (with a
``seed`` column), details.json, plot data}, through dfpipe.evaluation.evaluate.
"""

from pathlib import Path

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import ConfigError, load_entry, load_section, load_yaml
from dfpipe.core.manifest import VARIANT_SCHEMA, read_table
from dfpipe.core.stagedeps import code_hash
from dfpipe.evaluation.evaluate import (
    EVAL_DIR,
    EvaluateConfig,
    align_predictions,
    evaluate_seeds,
    split_fingerprints,
    write_outputs,
)
from dfpipe.features.spectra import SpectraConfig
from dfpipe.scoring.frank import FrankConfig, fit_and_score
from dfpipe.training.config import stopping_label


def main() -> None:
    (name,) = stage_args("frank", "name")
    cfg = load_entry("frank", name, FrankConfig)
    spectra = load_section("spectra", SpectraConfig)
    ev_cfg = load_section("evaluate", EvaluateConfig)
    if cfg.variant not in spectra.cache:
        raise ConfigError(f"frank.{name}.variant: {cfg.variant!r} is not in spectra.cache {list(spectra.cache)}")
    out = fit_and_score(cfg, spectra.out_dir, spectra.variants_dir)
    manifest_path = spectra.variants_dir / cfg.variant / "test" / "manifest.parquet"
    frame = align_predictions(
        read_table(manifest_path, VARIANT_SCHEMA), out["ids"], out["labels"], out["probs"], str(manifest_path)
    )
    frame["seed"] = 0  # one deterministic fit: a single "seed"
    frames = {0: frame}
    headline, details = evaluate_seeds(frames, ev_cfg.bootstrap, ev_cfg.seed, ev_cfg.ci_level)
    details["run"] = {
        "name": name,
        "model": "frank_linear",
        "input": cfg.kind,
        "train_variant": cfg.variant,
        "eval_variant": cfg.variant,
        "C": out["selection"]["C"],
        "seeds": "0",
        "init": "scratch",
        "stopping": stopping_label(cfg.patience),
        **out["budget"],
    }
    details["selection"] = out["selection"]
    details["val_threshold"] = {"0": out["val_threshold"]}
    # the code this stage runs (its dvc.yaml code deps), not the evaluate stage's: frank@ does not
    # rerun when only evaluate's code changes, so that fingerprint would go stale here
    # (the checkout this script runs from, whatever the working folder)
    repo = Path(__file__).resolve().parents[1]
    code = code_hash(Path("stages/frank.py"), repo)
    details["provenance"] = {
        "code": code,
        "scale": load_yaml().get("split", {}).get("scale"),
        "variant": cfg.variant,
        "train_variant": cfg.variant,
        "seeds": [0],
        "data": split_fingerprints(spectra.variants_dir, cfg.variant, cfg.variant),
    }
    write_outputs(name, frames, headline, details, EVAL_DIR / f"{name}.json", EVAL_DIR / name)
    print(
        f"frank@{name}: C {out['selection']['C']}, macro_f1 {headline['macro_f1']['mean']}, "
        f"acc {headline['acc']['mean']}"
    )


if __name__ == "__main__":
    run_stage(main)
