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
- **planted leak**: the demo's leak-control clips (:mod:`dfpipe.demo.leakctl`) carry a per-clip
  signature and a class drawn per clip, so only memorising training clips beats chance. One
  recipe trained on a frame-level split of them (frames of one clip on both sides) and on the
  clip-level twin: leak measure (a) (the leaky run's test frames of its training clips minus those
  of clips it never saw) and measure (b) (leaky-trained minus leak-free-trained on the twin's test
  frames of clips the leaky run trained on) must have intervals above 0; measure (b) on the twin's
  test clips the leaky run never saw, and between the leak-free run and its reseeded copy, must
  include 0. The first null is the one measure (b) needs: the same two models, whose training
  sets differ in every item, on items neither trained on, so a difference there would come from
  the training sets differing, not from the leak; the second is its seed-only counterpart. Each
  side must hold at least :data:`MIN_VIDEOS` clips from :data:`MIN_GROUPS` identity groups,
  else the control does not hold: a null that passes because its interval is wide says nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.evaluation.cells import interval, pct
from dfpipe.evaluation.compare import compare, load_scores
from dfpipe.evaluation.leakage import LEAK_METRICS, leak_gap, read_flags
from dfpipe.evaluation.reports import (
    SETTINGS,
    ControlError,
    ControlsConfig,
    FamilyControl,
    LeakControl,
    Reader,
    Table,
    lookup,
    units,
)
from dfpipe.evaluation.unseen import GeneratorCells
from dfpipe.scoring import metrics as M
from dfpipe.scoring import stats

COLUMNS = ["Control", "Planted", "Expected", "Measured", "Holds"]
#: Fewest clips, and identity groups, on each side of a planted-leak measure: the issue's "at least
#: 20 videos from at least 10 groups"; below it an interval of a difference of two accuracies is so
#: wide that a null holds and a leak fails for want of data, not because of the measure.
MIN_VIDEOS, MIN_GROUPS = 20, 10
_ACC = {"acc": LEAK_METRICS["acc"]}


def seeds_only(reader: Reader, where: str, a: str, b: str) -> tuple[dict, dict]:
    """The ``run`` summaries of evaluations ``a`` and ``b``; :class:`ControlError` (``where``
    names the control) unless their runs differ in their seeds only, with 2+ seeds a side."""
    (_, det_a, _, pa), (_, det_b, _, pb) = reader.evaluation(a), reader.evaluation(b)
    run_a, run_b = lookup(det_a, "run", pa), lookup(det_b, "run", pb)
    differs = [k for k in SETTINGS if k != "seeds" and run_a.get(k) != run_b.get(k)]
    if differs:
        raise ControlError(
            f"{where}: {a} and {b} differ in {differs}, not only in their seeds; a null needs identical settings"
        )
    for name, run in ((a, run_a), (b, run_b)):
        if len(str(run.get("seeds", "")).split(",")) < 2:
            raise ControlError(
                f"{where}: {name} has one seed ({run.get('seeds')}); "
                "with one seed a side the interval cannot see seed-to-seed noise, so a null "
                "would fail for the wrong reason: give each side at least 2 seeds"
            )
    if run_a.get("seeds") == run_b.get("seeds"):
        raise ControlError(f"{where}: {a} and {b} share seeds {run_a.get('seeds')}; a null compares different seeds")
    return run_a, run_b


def null_ablation_row(reader: Reader, label: str, a: str, b: str, n_boot: int, seed: int, level: float) -> tuple:
    """One null-ablation row and whether it holds."""
    run_a, run_b = seeds_only(reader, f"report.controls.null_ablation.{label}", a, b)
    d = compare(reader.predictions(a), reader.predictions(b), n_boot, seed, level)
    if "note" in d:
        raise ControlError(f"report.controls.null_ablation.{label}: {d['note']}")
    m = d["metrics"]["macro_f1"]
    holds = m["low"] is not None and m["high"] is not None and m["low"] <= 0.0 <= m["high"]
    measured = f"{100 * m['diff']:+.2f} {interval(m['low'], m['high'])} ({units(d['n_units'], d['unit'])})"
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

    Both APs share the test split's real items, so the gap is resampled in pairs: one draw of
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
                    f"{interval(g['low'], g['high'])} ({units(g['n_units'], 'identity group')})",
                    "yes" if holds else "NO",
                ],
                holds,
            )
        )
    return out


def _provenance(reader: Reader, name: str) -> dict:
    _, det, _, dpath = reader.evaluation(name)
    return lookup(det, "provenance", dpath)


def _size(items: pd.DataFrame, sel: np.ndarray) -> tuple[int, int, int]:
    """``(frames, clips, identity groups)`` of the items ``sel``."""
    sub = items.loc[sel]
    clips = {M.video_key(m, v) for m, v in zip(sub["method"].astype(str), sub["video_id"].astype(str)) if v}
    return int(sel.sum()), len(clips), len(set(M.item_groups(sub).astype(str)))


def _sizes_text(*sizes: tuple[int, int, int]) -> str:
    clips = " vs ".join(str(c) for _, c, _ in sizes)
    groups = " vs ".join(str(g) for _, _, g in sizes)
    frames = " vs ".join(str(f) for f, _, _ in sizes)
    return f"{clips} clips in {groups} identity groups, {frames} frames"


def _enough(*sizes: tuple[int, int, int]) -> bool:
    return all(c >= MIN_VIDEOS and g >= MIN_GROUPS for _, c, g in sizes)


def _leak_row(control: str, planted: str, fire: bool, d: dict | None, sizes: tuple, unit: str, note: str = "") -> tuple:
    """A planted-leak row: ``d`` = ``{"a", "b", "diff", "low", "high"}`` of accuracy (``None``:
    undefined, ``note`` says why); it holds when the interval is above 0 (``fire``) or includes 0."""
    expected = "Δ acc interval above 0" if fire else "Δ acc interval includes 0"
    enough = _enough(*sizes)
    if d is None or d["low"] is None or d["high"] is None:
        return [control, planted, expected, note or "undefined", "NO"], False
    fired = d["low"] > 0.0
    holds = enough and (fired if fire else d["low"] <= 0.0 <= d["high"])
    measured = (
        f"{pct(d['a'])} - {pct(d['b'])} = {100 * d['diff']:+.2f} {interval(d['low'], d['high'])} "
        f"({unit}: {_sizes_text(*sizes)})"
    )
    if not enough:
        measured += f"; n too small (< {MIN_VIDEOS} clips or < {MIN_GROUPS} groups a side)"
    return [control, planted, expected, measured, "yes" if holds else "NO"], holds


def _paired_acc(items: pd.DataFrame, pa: np.ndarray, pb: np.ndarray, sel: np.ndarray, n_boot, seed, level) -> dict:
    """Accuracy of ``a`` minus ``b`` on the items ``sel``, paired bootstrap over identity groups and seeds."""
    groups = M.item_groups(items)[sel]
    labels = items["label"].to_numpy(np.int64)[sel]
    return M.nan_to_none(stats.paired_bootstrap(labels, pa[:, sel], pb[:, sel], groups, n_boot, seed, level, _ACC))[
        "acc"
    ]


def leak_rows(
    reader: Reader, label: str, c: LeakControl, variants_dir: Path, n_boot: int, seed: int, level: float
) -> list[tuple]:
    """The planted-leak rows (measure (a) fires; measure (b) fires on leaked clips and not on the
    twin's clips the leaky run never saw, nor between two leak-free trainings) and whether each holds."""
    where = f"report.controls.planted_leak.{label}"
    name = f"Planted leak: {label}"
    rows = []
    # measure (a): the leaky run on its own test split, frames of training clips vs of unseen clips
    prov = _provenance(reader, c.within)
    if prov["variant"] != prov["train_variant"]:
        raise ControlError(
            f"{where}.within: {c.within} scored {prov['variant']}, not its training variant "
            f"{prov['train_variant']}; leak measure (a) reads a run on its own test split"
        )
    flags_path = reader.cfg.audit_dir / prov["variant"] / "test_items.parquet"
    flags = read_flags(flags_path)
    reader.read.add(flags_path)
    items, probs = load_scores(reader.predictions(c.within))
    f = flags.set_index(flags["id"].astype(str)).reindex(items["id"].astype(str))
    video = items["video_id"].astype(str).to_numpy() != ""
    seen = f["video_in_train"].fillna(False).to_numpy(bool) & video
    gap = leak_gap(items["id"].to_numpy(), items["label"].to_numpy(), probs, flags, n_boot, seed, level)
    rows.append(
        _leak_row(
            f"{name}, measure (a)",
            f"{c.within} (trained on {prov['train_variant']}): its test frames of training clips vs of unseen clips",
            True,
            M.nan_to_none(gap["gap"]["acc"]) if "gap" in gap else None,
            (_size(items, seen), _size(items, video & ~seen)),
            "clips resampled within each part",
            gap.get("note", ""),
        )
    )
    # measure (b): leaky-trained minus leak-free-trained on the twin's identical test items
    prov_l, prov_f = _provenance(reader, c.leaky), _provenance(reader, c.leak_free)
    if prov_l["train_variant"] != prov["train_variant"] or prov_l["variant"] != prov_f["variant"]:
        raise ControlError(
            f"{where}: {c.leaky} must be {c.within}'s run ({prov['train_variant']}) scored on the variant "
            f"{c.leak_free} scored ({prov_f['variant']}); got {prov_l['train_variant']} on {prov_l['variant']}"
        )
    items, pl = load_scores(reader.predictions(c.leaky))
    items_f, pf = load_scores(reader.predictions(c.leak_free))
    if not (items["id"].equals(items_f["id"]) and items["label"].equals(items_f["label"])):
        raise ControlError(f"{where}: {c.leaky} and {c.leak_free} did not score the identical test items")
    leaky_variant = prov_l["train_variant"]
    manifest = variants_dir / leaky_variant / "train" / "manifest.parquet"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: train manifest not found (written by `variant@{leaky_variant}`)")
    train = pd.read_parquet(manifest, columns=["method", "video_id"])
    reader.read.add(manifest)
    trained = {M.video_key(m, v) for m, v in zip(train["method"].astype(str), train["video_id"].astype(str)) if v}
    video = items["video_id"].astype(str).to_numpy() != ""
    keys = [M.video_key(m, v) for m, v in zip(items["method"].astype(str), items["video_id"].astype(str))]
    leaked = video & np.isin(np.asarray(keys, dtype=object), list(trained))
    pair = f"{c.leaky} - {c.leak_free} (trained on {prov_l['train_variant']} vs {prov_f['train_variant']})"
    for sel, fire, part in (
        (leaked, True, f"on {prov_f['variant']}'s test clips that {prov_l['train_variant']} trained on"),
        (video & ~leaked, False, f"null: on {prov_f['variant']}'s test clips neither run trained on"),
    ):
        d = _paired_acc(items, pl, pf, sel, n_boot, seed, level) if sel.any() else None
        rows.append(
            _leak_row(f"{name}, measure (b)", f"{pair}, {part}", fire, d, (_size(items, sel),), "identity groups")
        )
    # measure (b) between two leak-free trainings that differ in their seeds only
    run_n, run_f = seeds_only(reader, f"{where}.reseeded", c.reseeded, c.leak_free)
    items_n, pn = load_scores(reader.predictions(c.reseeded))
    if not (items_n["id"].equals(items_f["id"]) and items_n["label"].equals(items_f["label"])):
        raise ControlError(f"{where}: {c.reseeded} and {c.leak_free} did not score the identical test items")
    d = _paired_acc(items_f, pn, pf, video, n_boot, seed, level)
    rows.append(
        _leak_row(
            f"{name}, measure (b)",
            f"null: {c.reseeded} - {c.leak_free}, two leak-free trainings (seeds {run_n['seeds']} vs "
            f"{run_f['seeds']}), on all of {prov_f['variant']}'s test clips",
            False,
            d,
            (_size(items_f, video),),
            "identity groups",
        )
    )
    return rows


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
    for label, leak in cfg.planted_leak.items():
        assert cfg.variants_dir is not None  # ControlsConfig requires it with a planted leak
        results += leak_rows(reader, label, leak, cfg.variants_dir, n_boot, seed, level)
    table = Table(
        "controls",
        "Controls: planted effects each measure must detect (and nulls it must not)",
        COLUMNS,
        [row for row, _ in results],
    )
    table.notes = [
        "A control that does not hold fails the report stage: the measure it checks is broken or "
        "the demo is too small for it. Null ablation: paired bootstrap over seeds x identity groups; "
        "generator families: paired bootstrap over identity groups of the seed-mean AP gap. "
        "Planted leak: accuracy in percentage points; measure (a) resamples clips within each part "
        "and seeds, measure (b) identity groups (each clip its own) and seeds, paired."
    ]
    table.failures = [row[0] for row, ok in results if not ok]
    return table
