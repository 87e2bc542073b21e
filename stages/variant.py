"""DVC stage ``variant@<name>``: select and materialise one dataset variant (see dfpipe.variants)."""

import sys

from dfpipe.config import load_section
from dfpipe.variants import SplitConfig, VariantConfig, build_variant


def main() -> None:
    name = sys.argv[1]
    split = load_section("split", SplitConfig)
    variants = load_section("variants", dict[str, VariantConfig])
    if name not in variants:
        raise SystemExit(f"params.yaml: no variant {name!r} under 'variants' (have {sorted(variants)})")
    summary = build_variant(name, variants[name], split)
    counts = ", ".join(f"{s} {c['items']}" for s, c in summary["counts"].items())
    print(f"variant {name}: {counts}; capped: {len(summary['capped'])}")


if __name__ == "__main__":
    main()
