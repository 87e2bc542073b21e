"""DVC stage ``audit@<name>``: leakage + shortcut audit of one materialised variant (see dfpipe.splits.audit).

Writes ``<out_dir>/<name>.json``, ``<out_dir>/<name>.md`` and ``<out_dir>/<name>/eval_items.parquet``
first, then either the gate ``<out_dir>/<name>/gate.json`` or, when a declared check fails, no
gate and a non-zero exit (``train@`` runs depend on the gate, so they cannot start).
"""

from dfpipe.core.cli import stage_args
from dfpipe.core.config import load_entry, load_section
from dfpipe.core.io import resolve_inside, write_bytes, write_json
from dfpipe.core.manifest import write_table
from dfpipe.splits.audit import EVAL_ITEMS_SCHEMA, AuditConfig, GateError, audit_variant, check_gate
from dfpipe.splits.variants import SplitConfig, VariantConfig


def main() -> None:
    (name,) = stage_args("audit", "variant")
    split = load_section("split", SplitConfig)
    variant = load_entry("variants", name, VariantConfig)
    cfg = load_section("audit", AuditConfig)
    gate = resolve_inside(cfg.out_dir, f"{name}/gate.json")
    gate.unlink(missing_ok=True)  # a gate from an earlier passing run must not survive a failing one
    metrics, report, flags = audit_variant(name, resolve_inside(split.out_dir, name), variant.leak_free, cfg,
                                           variant.shortcut_free)
    write_json(resolve_inside(cfg.out_dir, f"{name}.json"), metrics)
    write_bytes(resolve_inside(cfg.out_dir, f"{name}.md"), report.encode("utf-8"))
    write_table(flags, resolve_inside(cfg.out_dir, f"{name}/eval_items.parquet"), EVAL_ITEMS_SCHEMA)
    print(f"audit {name}: group leaks {metrics['group_leaks']}, video leaks {metrics['video_leaks']}, "
          f"exact duplicates {metrics['exact_duplicates']}, near-duplicate pairs {metrics['near_duplicate_pairs']}; "
          f"shortcut probe max AUC {metrics['shortcut']['max_auc']}; gate {metrics['gate']}")
    try:
        record = check_gate(metrics)
    except GateError as exc:
        raise SystemExit(f"audit@{name} FAILED (no gate written): {exc}") from None
    write_json(gate, record)


if __name__ == "__main__":
    main()
