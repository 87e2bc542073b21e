"""DVC stage ``audit@<name>``: leakage + shortcut audit of one materialised variant (see dfpipe.splits.audit).

Writes ``<out_dir>/<name>.json``, ``<out_dir>/<name>.md``, ``<out_dir>/<name>.card.md`` (the
variant's dataset card completed with the audit's figures, dfpipe.splits.card) and
``<out_dir>/<name>/test_items.parquet`` first, then either the gate ``<out_dir>/<name>/gate.json``
or, when a check fails, no gate and a non-zero exit (``train@`` runs depend on the gate, so they
cannot start). The gate records the fingerprint of the variant folder taken before the audit reads
it (``dfpipe.splits.gate``): training refuses a variant whose bytes differ from it.
"""

from dfpipe.core.cli import run_stage, stage_args
from dfpipe.core.config import load_section
from dfpipe.core.io import resolve_inside, write_bytes, write_json
from dfpipe.core.manifest import write_table
from dfpipe.splits.audit import TEST_ITEMS_SCHEMA, AuditConfig, GateError, audit_variant, check_gate
from dfpipe.splits.card import write_completed_card
from dfpipe.splits.celebdf import read_celebdf_list
from dfpipe.splits.gate import gate_record, variant_fingerprint
from dfpipe.splits.poison import audited_variant
from dfpipe.splits.variants import SplitConfig


def main() -> None:
    (name,) = stage_args("audit", "variant")
    split = load_section("split", SplitConfig)
    variant = audited_variant(name)  # variants.<name>, or a poisoned variant's base's declared checks
    cfg = load_section("audit", AuditConfig)
    gate = resolve_inside(cfg.out_dir, f"{name}/gate.json")
    gate.unlink(missing_ok=True)  # a gate from an earlier passing run must not survive a failing one
    variant_dir = resolve_inside(split.out_dir, name)
    test_list = read_celebdf_list(split.celebdf_test_list)
    fingerprint = variant_fingerprint(variant_dir)  # before reading: a variant rewritten meanwhile fails its gate
    metrics, report, flags = audit_variant(name, variant_dir, variant.leak_free, cfg, variant.shortcut_free, test_list)
    metrics["data_fingerprint"] = fingerprint["digest"][:12]  # sha256 over every file of the variant
    write_json(resolve_inside(cfg.out_dir, f"{name}.json"), metrics)
    write_bytes(resolve_inside(cfg.out_dir, f"{name}.md"), report.encode("utf-8"))
    # the dataset card + the audit's figures: this stage cannot write into variant@'s folder
    write_completed_card(variant_dir, metrics, resolve_inside(cfg.out_dir, f"{name}.card.md"))
    write_table(flags, resolve_inside(cfg.out_dir, f"{name}/test_items.parquet"), TEST_ITEMS_SCHEMA)
    print(
        f"audit {name}: group leaks {metrics['group_leaks']}, video leaks {metrics['video_leaks']}, "
        f"exact duplicates {metrics['exact_duplicates']}, near-duplicate pairs {metrics['near_duplicate_pairs']}; "
        f"shortcut probe max AUC {metrics['shortcut']['max_auc']}; Celeb-DF test list "
        f"{metrics['celebdf_test_list']['check']} ({metrics['celebdf_test_list']['identities_shared']} identities "
        f"shared with train/val); gate {metrics['gate']}"
    )
    try:
        record = check_gate(metrics)
    except GateError as exc:
        raise SystemExit(f"audit@{name} FAILED (no gate written): {exc}") from None
    write_json(gate, gate_record(record, fingerprint))


if __name__ == "__main__":
    run_stage(main)
