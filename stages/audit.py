"""DVC stage ``audit@<name>``: leakage audit of one materialised variant (see dfpipe.splits.audit).

Writes the report first, then exits non-zero if a variant declared leak_free leaks.
"""

from dfpipe.splits.audit import AuditConfig, LeakError, audit_variant, check_leak_free
from dfpipe.core.cli import stage_args
from dfpipe.core.config import load_entry, load_section
from dfpipe.core.io import resolve_inside, write_bytes, write_json
from dfpipe.splits.variants import SplitConfig, VariantConfig


def main() -> None:
    (name,) = stage_args("audit", "variant")
    split = load_section("split", SplitConfig)
    variant = load_entry("variants", name, VariantConfig)
    cfg = load_section("audit", AuditConfig)
    metrics, report = audit_variant(name, resolve_inside(split.out_dir, name), variant.leak_free, cfg)
    write_json(resolve_inside(cfg.out_dir, f"{name}.json"), metrics)
    write_bytes(resolve_inside(cfg.out_dir, f"{name}.md"), report.encode("utf-8"))
    print(f"audit {name}: group leaks {metrics['group_leaks']}, video leaks {metrics['video_leaks']}, "
          f"exact duplicates {metrics['exact_duplicates']}, near-duplicate pairs {metrics['near_duplicate_pairs']}; "
          f"leak check {metrics['leak_check']}")
    try:
        check_leak_free(metrics)
    except LeakError as exc:
        raise SystemExit(f"audit@{name} FAILED: {exc}") from None


if __name__ == "__main__":
    main()
