"""Controls: planted effects whose outcome is known, checked so that each measure proves it fires.

A measure that reports "no effect" is only worth reading when the same measure, on a case built to
have an effect, reports one, and on a case built to have none, does not. The report stage builds a
``controls`` table from these checks and fails when a control does not
behave as planted (:class:`dfpipe.evaluation.reports.ControlError`), so that a broken measure cannot pass
silently as a footnote:

- **null ablation**: two evaluations whose runs differ in their seeds only; the paired difference
  of their macro-F1 must have an interval that includes 0 (the interval is honest about
  run-to-run noise). A pair that differs in any other setting is refused: it is not a null; so is
  a side with one seed (its interval cannot see seed noise: two different single-seed models are
  two different functions, and their difference is real).
- **planted shortcut**: a variant whose classes differ by a nuisance (e.g. stills stored as PNG,
  fakes as H.264 video frames) must make the audit's probe on the gate's nuisance features exceed
  ``audit.shortcut_max_auc``; its codec-matched twin must stay at or below it.
- **generator families**: a detector trained on real + one generator family must score every other
  family at least ``min_gap`` AP below the one it saw, with a paired interval of the gap above 0.
  Otherwise the unseen-generator table cannot tell generalisation from "the test generators are
  the training one": the demo's families differ only in their up-sampling chain
  (:mod:`dfpipe.demo.gan`), so this control shows the chain is what a detector learns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.evaluation.compare import compare
from dfpipe.evaluation.reports import (
    SETTINGS,
    ControlError,
    ControlsConfig,
    FamilyControl,
    Reader,
    Table,
    lookup,
    pct,
    units,
)
from dfpipe.evaluation.unseen import GeneratorCells
from dfpipe.scoring import metrics as M
from dfpipe.scoring import stats

COLUMNS = ["Control", "Planted", "Expected", "Measured", "Holds"]


def null_ablation_row(reader: Reader, label: str, a: str, b: str, n_boot: int, seed: int, level: float) -> tuple:
    """One null-ablation row and whether it holds."""
    (_, det_a, _, pa), (_, det_b, _, pb) = reader.evaluation(a), reader.evaluation(b)
    run_a, run_b = lookup(det_a, "run", pa), lookup(det_b, "run", pb)
    differs = [k for k in SETTINGS if k != "seeds" and run_a.get(k) != run_b.get(k)]
    if differs:
        raise ControlError(
            f"report.controls.null_ablation.{label}: {a} and {b} differ in {differs}, "
            "not only in their seeds; a null ablation needs identical settings"
        )
    for name, run in ((a, run_a), (b, run_b)):
        if len(str(run.get("seeds", "")).split(",")) < 2:
            raise ControlError(
                f"report.controls.null_ablation.{label}: {name} has one seed ({run.get('seeds')}); "
                "with one seed a side the interval cannot see seed-to-seed noise, so a null "
                "ablation would fail for the wrong reason: give each side at least 2 seeds"
            )
    if run_a.get("seeds") == run_b.get("seeds"):
        raise ControlError(
            f"report.controls.null_ablation.{label}: {a} and {b} share seeds "
            f"{run_a.get('seeds')}; a null ablation compares different seeds"
        )
    d = compare(reader.predictions(a), reader.predictions(b), n_boot, seed, level)
    if "note" in d:
        raise ControlError(f"report.controls.null_ablation.{label}: {d['note']}")
    m = d["metrics"]["macro_f1"]
    holds = m["low"] is not None and m["high"] is not None and m["low"] <= 0.0 <= m["high"]
    measured = f"{100 * m['diff']:+.2f} [{pct(m['low'])}, {pct(m['high'])}] ({units(d['n_units'], d['unit'])})"
    return (
        [
            f"Null ablation: {label}",
            f"{a} vs {b}: seeds {run_a['seeds']} vs {run_b['seeds']}, all else equal",
            "Δ macro-F1 interval includes 0",
            measured,
            "yes" if holds else "NO",
        ],
        holds,
    )


def shortcut_rows(reader: Reader, label: str, planted: str, twin: str) -> list[tuple]:
    """Two rows (the planted variant fires, its twin passes) and whether each holds."""
    out = []
    for variant, should_fire in ((planted, True), (twin, False)):
        audit, path = reader.audit(variant)
        s = lookup(audit, "shortcut", path)
        top, threshold = s["max_auc"], s["threshold"]
        fired = top is not None and top > threshold
        holds = fired == should_fire
        out.append(
            (
                [
                    f"Planted shortcut: {label}",
                    f"{variant}: " + ("nuisance differs by class" if should_fire else "twin, nuisance matched"),
                    ("gate probe AUC > " if should_fire else "gate probe AUC <= ") + pct(threshold),
                    f"{pct(top)} (features {', '.join(s['features']['gate'])})",
                    "yes" if holds else "NO",
                ],
                holds,
            )
        )
    return out


def family_gaps(
    pred: pd.DataFrame, where: str, seen: str, unseen: tuple[str, ...], n_boot: int, seed: int, level: float
) -> dict[str, dict]:
    """``{source: {"seen", "unseen", "gap", "low", "high", "n_units"}}``: seed-mean AP of real vs
    ``seen`` and of real vs each ``unseen`` source, and the interval of their gap.

    Both APs share the eval split's real items, so the gap is resampled in pairs: one draw of
    identity groups (:func:`dfpipe.scoring.metrics.item_groups`) gives both APs of a resample.
    Fake score ``1 - p(real)``, as in the unseen-generator table.
    """
    cells = GeneratorCells.read(pred, Path(where))
    try:
        for src in (seen, *unseen):
            cells.cell(src)
    except KeyError as exc:
        raise ControlError(f"{exc.args[0]} (generator_families)") from None
    draws = stats.draw_resamples(cells.groups, n_boot, seed)
    n_units = len(np.unique(cells.groups))

    def ap(src: str, idx: np.ndarray) -> float:
        sel = cells.cell(src, idx)
        return float(np.mean([M.binary_ap(cells.labels(sel), s[sel]) for s in cells.scores]))

    everything = np.arange(len(cells.real))
    base = [ap(seen, idx) for idx in draws]
    seen_ap = ap(seen, everything)
    out = {}
    for src in unseen:
        gaps = np.array([b - ap(src, idx) for b, idx in zip(base, draws)])
        ok = gaps[np.isfinite(gaps)]
        alpha = (1.0 - level) / 2.0
        unseen_ap = ap(src, everything)
        out[src] = {
            "seen": seen_ap,
            "unseen": unseen_ap,
            "gap": seen_ap - unseen_ap,
            "low": float(np.quantile(ok, alpha)) if ok.size else None,
            "high": float(np.quantile(ok, 1.0 - alpha)) if ok.size else None,
            "n_units": n_units,
        }
    return out


def family_rows(reader: Reader, label: str, c: FamilyControl, n_boot: int, seed: int, level: float) -> list[tuple]:
    """One row per unseen family (the gap to the seen family is wide enough) and whether it holds."""
    path = reader.predictions(c.evaluation)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions not found (written by `evaluate@{c.evaluation}`)")
    gaps = family_gaps(pd.read_parquet(path), str(path), c.seen, c.unseen, n_boot, seed, level)
    out = []
    for src, g in gaps.items():
        holds = g["low"] is not None and g["low"] > 0.0 and g["gap"] >= c.min_gap
        out.append(
            (
                [
                    f"Generator families: {label}",
                    f"{c.evaluation}: trained on {c.seen} + real, scored on {src}",
                    f"AP({c.seen}) - AP({src}) >= {100 * c.min_gap:.2f}, interval above 0",
                    f"{pct(g['seen'])} - {pct(g['unseen'])} = {100 * g['gap']:+.2f} "
                    f"[{pct(g['low'])}, {pct(g['high'])}] ({units(g['n_units'], 'identity group')})",
                    "yes" if holds else "NO",
                ],
                holds,
            )
        )
    return out


def controls_table(reader: Reader, cfg: ControlsConfig, n_boot: int, seed: int, level: float) -> Table:
    """The ``controls`` table; a control that did not hold is listed in its ``failures``, which
    :func:`dfpipe.evaluation.tables.write_tables` raises as :class:`ControlError` once every
    table is written (so the failing row can be read)."""
    results = [
        null_ablation_row(reader, label, a, b, n_boot, seed, level) for label, (a, b) in cfg.null_ablation.items()
    ]
    for label, (planted, twin) in cfg.shortcut.items():
        results += shortcut_rows(reader, label, planted, twin)
    for label, family in cfg.generator_families.items():
        results += family_rows(reader, label, family, n_boot, seed, level)
    table = Table(
        "controls",
        "Controls: planted effects each measure must detect (and nulls it must not)",
        COLUMNS,
        [row for row, _ in results],
    )
    table.notes = [
        "A control that does not hold fails the report stage: the measure it checks is broken or "
        "the demo is too small for it. Null ablation: paired bootstrap over seeds x identity groups; "
        "generator families: paired bootstrap over identity groups of the seed-mean AP gap."
    ]
    table.failures = [row[0] for row, ok in results if not ok]
    return table
