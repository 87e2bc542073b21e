"""DVC stage ``variant@<name>``: select and materialise one dataset variant (see dfpipe.splits.variants)."""

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import load_entry, load_section
from dfpipe.splits.variants import SplitConfig, VariantConfig, build_variant


def main() -> None:
    (name,) = stage_args("variant", "variant")
    split = load_section("split", SplitConfig)
    summary = build_variant(name, load_entry("variants", name, VariantConfig), split)
    counts = ", ".join(f"{s} {c['items']}" for s, c in summary["counts"].items())
    print(f"variant {name}: {counts}; capped: {len(summary['capped'])}")


if __name__ == "__main__":
    run_stage(main)
