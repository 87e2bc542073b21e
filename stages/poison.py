"""DVC stage ``poison@<name>``: build a poisoned variant from a materialised one (see dfpipe.splits.poison)."""

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import load_entry, load_section
from dfpipe.splits.poison import PoisonConfig, build_poisoned_variant
from dfpipe.splits.variants import SplitConfig


def main() -> None:
    (name,) = stage_args("poison", "variant")
    split = load_section("split", SplitConfig)
    cfg = load_entry("poison", name, PoisonConfig)
    summary = build_poisoned_variant(name, cfg, split.out_dir, split.salt, split.shard_size)
    p = summary["poison"]
    print(
        f"poison {name}: {p['poisoned_items']} of {p['train_items_of_class']} train items of class "
        f"{p['poisoned_class']} triggered ({cfg.mode} label, {cfg.trigger.kind}); "
        f"{p['triggered_test_items']} triggered test items"
    )


if __name__ == "__main__":
    run_stage(main)
