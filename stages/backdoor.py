"""DVC stage ``backdoor@<experiment>``: attack success and poisoning audit of a clean/poisoned run pair.

Usage (from the repository root): ``python stages/backdoor.py <experiment>``; see dfpipe.evaluation.backdoor.
"""

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import ConfigError, load_entry, load_section
from dfpipe.evaluation.backdoor import BackdoorConfig, BackdoorPaths, run_backdoor
from dfpipe.splits.poison import PoisonConfig


def main() -> None:
    (name,) = stage_args("backdoor", "experiment")
    cfg = load_section("backdoor", BackdoorConfig)
    if name not in cfg.experiments:
        raise ConfigError(f"backdoor.experiments.{name}: no such experiment ({sorted(cfg.experiments)})")
    exp = cfg.experiments[name]
    poison = load_entry("poison", exp.poisoned_variant, PoisonConfig)
    paths = load_section("train", BackdoorPaths)
    record = run_backdoor(name, exp, cfg, poison, paths.models_dir, paths.variants_dir)
    for role, r in record["roles"].items():
        ss = [a["spectral_signatures"]["target_class"] for a in r["audit"].values()]
        ac = [a["activation_clustering"]["target_class"] for a in r["audit"].values()]
        print(
            f"backdoor@{name} {role} ({r['run']}): spectral signatures flag {[x['flagged'] for x in ss]} "
            f"(recall {[x['recall'] for x in ss]}), activation clustering flag {[x['flagged'] for x in ac]} "
            f"(recall {[x['recall'] for x in ac]}) of the target class per seed"
        )


if __name__ == "__main__":
    run_stage(main)
