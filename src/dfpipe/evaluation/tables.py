"""Table builders of the report stage: results tables (settings, Notes and Paper columns, mean
+/- sd over seeds, paired differences to a reference row), the leak tables and the shortcut
audit table, trivial-baseline rows, FF++ protocol columns and the controls table. Reading and
rendering live in :mod:`dfpipe.evaluation.reports`; :func:`write_tables` writes them all."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from dfpipe.core.io import write_bytes
from dfpipe.evaluation.backdoor_table import backdoor_rows
from dfpipe.evaluation.backdoor_table import caption as backdoor_caption
from dfpipe.evaluation.cells import interval, pct, value_cell
from dfpipe.evaluation.compare import compare
from dfpipe.evaluation.controls import controls_table
from dfpipe.evaluation.crossdataset import crossdataset_rows
from dfpipe.evaluation.crossdataset import notes as crossdataset_notes
from dfpipe.evaluation.protocol import MIN_UNITS
from dfpipe.evaluation.reports import (
    SETTINGS,
    ControlError,
    LeakageTables,
    Reader,
    ReportConfig,
    ResultsTable,
    Table,
    load_metrics,
    lookup,
    plain,
    units,
)
from dfpipe.evaluation.unseen import unseen_tables
from dfpipe.models.papers import PAPER_COLUMN, PAPER_NOTE, paper_cell

HEADLINE_COLUMNS = (("macro_f1", "Macro-F1"), ("weighted_f1", "Weighted-F1"), ("acc", "Acc"))
SETTING_COLUMNS = (
    ("variant", "Variant"),
    ("backbone", "Backbone"),
    ("image_size", "Size"),
    ("init", "Init"),
    ("batch_size", "Batch"),
    ("updates", "Updates"),
    ("images_seen", "Images seen"),
    ("seeds", "Seeds"),
)


def mean_sd_ci(head: Mapping, metric: str, path, n_units: int | None = None) -> str:
    """``"63.95 ± 1.20 [60.10, 67.30]"``: seed mean, seed sd, bootstrap interval (all in %)."""
    v = lookup(head, metric, path)
    return value_cell(v["mean"], v["sd"], interval(v["low"], v["high"], n_units))


def mean_sd(summary: Mapping, key: str, path) -> str:
    v = lookup(summary, key, path)
    return value_cell(v["mean"], v["sd"])


#: FF++ protocol columns (``details.json`` ``ffpp``): originals vs all manipulated videos, video
#: items only (dfpipe.evaluation.protocol).
FFPP_COLUMNS = (
    ("frame.all.auc", "FF++ AUC frame [CI]"),
    ("video.all.auc", "FF++ AUC video [CI]"),
    ("frame.all.acc", "FF++ acc frame (val thr.) [CI]"),
)


def protocol_cell(details: Mapping, key: str, path) -> str:
    """An FF++ protocol value ``"mean ± sd [low, high]"`` (%), with "n too small (k groups)" in
    place of the interval below the unit minimum; ``"n/a"`` when the split holds no FF++ videos."""
    if "ffpp" not in details:
        return "n/a"
    level, comparison, metric = key.split(".")
    block = lookup(details, f"ffpp.{level}.{comparison}", path)
    v = block[metric]
    return value_cell(v["mean"], v["sd"], interval(v["low"], v["high"], block["n_units"]))


def diff_cell(d: Mapping, metric: str) -> str:
    """Paired difference in percentage points with its interval, or why there is none."""
    if "note" in d:
        return "n/a (" + d["note"].split(":")[0] + ")"
    m = d["metrics"][metric]
    if m["diff"] is None:
        return "n/a"
    return f"{100 * m['diff']:+.2f} {interval(m['low'], m['high'], d.get('n_units'))}"


def differs_from_paper(details: Mapping) -> str:
    """The "Differs from paper" cell of one evaluation: its run config (``details.json``
    ``run_config``, the checkpoint's own) and encoder config checked against the model's paper
    record (:func:`dfpipe.models.papers.paper_cell`)."""
    return paper_cell(details.get("run_config"), (details.get("features") or {}).get("config"))


def details_of(reader: Reader, name: str) -> tuple[dict, Path]:
    """``metrics/eval/<name>/details.json`` (recorded as read) and its path."""
    path = reader.cfg.eval_dir / name / "details.json"
    reader.read.add(path)
    return load_metrics(path, f"evaluate@{name}"), path


def with_settings(reader: Reader, columns: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """A detector table (evaluation name in the second column, e.g. the unseen-generator tables)
    with the results tables' setting columns after it and the "Differs from paper" column last."""
    out = []
    for row in rows:
        det, det_path = details_of(reader, row[1])
        s = settings(det, det_path)
        out.append(row[:2] + [plain(s[k]) for k, _ in SETTING_COLUMNS] + row[2:] + [differs_from_paper(det)])
    return columns[:2] + [c for _, c in SETTING_COLUMNS] + columns[2:] + [PAPER_COLUMN], out


def settings(details: Mapping, path) -> dict:
    run = lookup(details, "run", path)
    out = {k: run.get(k, "n/a") for k in SETTINGS}
    if out["width"] not in ("n/a", 1, 1.0):  # demo-width nets (run config model.width) say so in the Backbone column
        out["backbone"] = f"{out['backbone']} x{plain(out['width'])}"
    out["variant"] = (
        run["train_variant"]
        if run["train_variant"] == run["eval_variant"]
        else f"{run['train_variant']}→{run['eval_variant']}"
    )
    return out


def provenance(details: Sequence[Mapping], paths: list) -> str:
    """One line: data scale, variants, seeds, code fingerprint(s) of the rows' evaluations."""
    prov = [lookup(d, "provenance", p) for d, p in zip(details, paths)]

    def uniq(key):
        return ", ".join(
            dict.fromkeys(plain(p[key]) if not isinstance(p[key], list) else ",".join(map(str, p[key])) for p in prov)
        )

    variants = ", ".join(
        dict.fromkeys(
            f"{p['train_variant']}→{p['variant']}" if p["train_variant"] != p["variant"] else p["variant"] for p in prov
        )
    )
    data = ", ".join(
        dict.fromkeys(
            f"{p['variant']}/test {p['data']['test']} + {p['train_variant']}/val {p['data']['val']}"
            if "data" in p
            else f"{p['variant']} n/a"
            for p in prov
        )
    )
    return (
        f"Provenance: data split.scale {uniq('scale')} (1 = full counts); variant {variants}; "
        f"data sha256 {data} (over every file of the split folders scored); "
        f"seeds {uniq('seeds')}; evaluation code {uniq('code')} (sha256 of the code deps of the stage "
        f"that scored the row: evaluate@ or frank@)."
    )


def evaluations_provenance(reader: Reader, names: list[str]) -> str:
    """:func:`provenance` of the named evaluations (their ``details.json``)."""
    paths = [reader.cfg.eval_dir / n / "details.json" for n in names]
    reader.read |= set(paths)
    return provenance([load_metrics(p, f"evaluate@{p.parent.name}") for p in paths], paths)


def audit_provenance(reader: Reader, variants: tuple[str, ...] | list[str]) -> str:
    """One line naming the audited bytes: each variant's sha256 over every file of its folder."""
    cells = []
    for v in variants:
        d, p = reader.audit(v)
        cells.append(f"{v} {d.get('data_fingerprint', 'n/a')}")
    return (
        f"Provenance: audit@<variant> of the variants' bytes, sha256 over every file of the variant folder: "
        f"{', '.join(cells)}."
    )


def baseline_rows(reader: Reader, rows: Mapping[str, tuple], cols: list[str]) -> list[list[str]]:
    """Majority-class and nuisance-probe rows for each test variant of ``rows`` (in row order):
    the majority rule from the first row scored on that variant (``details.json`` ``baselines``),
    the probe from the variant's audit (``metrics/audit/<variant>.json`` ``shortcut.probes.all``)."""
    out = []
    seen: dict[str, tuple[dict, Path]] = {}
    for _, det, _, dp in rows.values():
        seen.setdefault(lookup(det, "provenance.variant", dp), (det, dp))
    for variant, (det, _dp) in seen.items():
        blank = dict.fromkeys(cols, "–")
        maj = det.get("baselines", {}).get("majority")
        if maj is not None:
            out.append(
                {
                    **blank,
                    "Row": f"Majority class ({maj['class']}, chosen on val)",
                    "Evaluation": "–",
                    "Variant": variant,
                    next(c for c in cols if c.startswith("Macro-F1")): pct(maj["macro_f1"]),
                    "Weighted-F1": pct(maj["weighted_f1"]),
                    "Acc": pct(maj["acc"]),
                    "AUC real/fake": pct(maj["auc_real_vs_fake"]),
                }
            )
        audit, path = reader.audit(variant)
        probes = lookup(audit, "shortcut.probes.all", path)
        feats = ", ".join(lookup(audit, "shortcut.features.all", path))
        name, best = max(probes.items(), key=lambda kv: kv[1]["auc"] or 0.0)
        out.append(
            {
                **blank,
                "Row": f"Nuisance probe ({name} on {feats})",
                "Evaluation": f"audit@{variant}",
                "Variant": variant,
                next(c for c in cols if c.startswith("Macro-F1")): value_cell(
                    best["macro_f1"], ci=interval(*best["macro_f1_ci"])
                ),
            }
        )
    return [[r[c] for c in cols] for r in out]


def results_table(reader: Reader, name: str, spec: ResultsTable, paper: dict | None, notes: dict | None) -> Table:
    cfg = reader.cfg
    rows = {label: reader.evaluation(e) for label, e in spec.rows.items()}
    class_keys = sorted(
        {k for _, d, _, dp in rows.values() for k in lookup(d, "summary", dp) if k.startswith("f1_")},
        key=lambda k: ["f1_real", "f1_fake", "f1_edited"].index(k) if k in ("f1_real", "f1_fake", "f1_edited") else 9,
    )
    cols = ["Row", "Evaluation"] + [c for _, c in SETTING_COLUMNS] + ["Units", PAPER_COLUMN]
    if notes is not None:
        cols.append(f"Notes {notes['metric']}")
    if paper is not None:
        cols.append(f"Paper {paper['metric']}")
    cols += [f"{c} ± sd [CI]" if m == "macro_f1" else c for m, c in HEADLINE_COLUMNS]
    cols += ["F1 " + k[3:] for k in class_keys] + ["AUC real/fake", "EER", "Video AUC"]
    has_ffpp = any("ffpp" in d for _, d, _, _ in rows.values())
    if has_ffpp:
        cols += [c for _, c in FFPP_COLUMNS]
    if spec.reference:
        cols += [f"ΔMacro-F1 vs {spec.reference} [CI]", f"ΔAUC vs {spec.reference} [CI]", "Differs from reference"]
    if spec.mask:
        cols += [
            "Mask Dice",
            "Dice all-0",
            "Dice all-1",
            "Mask IoU",
            "IoU all-1",
            "Mask PBCA",
            "PBCA all-0",
            "PBCA all-1",
        ]
    table = Table(name, spec.caption, cols)
    ref_settings = settings(rows[spec.reference][1], rows[spec.reference][3]) if spec.reference else {}
    marked = False
    for label, (head, det, p, dp) in rows.items():
        s = settings(det, dp)
        row = [label, spec.rows[label]] + [plain(s[k]) for k, _ in SETTING_COLUMNS]
        resampled = det.get("resampling")
        row.append(units(resampled["n_units"], resampled["unit"]) if resampled else "n/a")
        row.append(differs_from_paper(det))
        if notes is not None:
            row.append(plain(notes["values"].get(label, "–")))
        if paper is not None:
            row.append(plain(paper["values"].get(label, "–")))
        n_units = det.get("resampling", {}).get("n_units")
        row += [mean_sd_ci(head, "macro_f1", p, n_units), mean_sd(head, "weighted_f1", p), mean_sd(head, "acc", p)]
        row += [mean_sd(det["summary"], k, dp) for k in class_keys]
        row += [
            mean_sd(head, "auc_real_fake", p),
            mean_sd(head, "eer", p),
            mean_sd(det["video"]["summary"], "auc_real_vs_fake", dp) if "video" in det else "n/a",
        ]
        if has_ffpp:
            row += [protocol_cell(det, k, dp) for k, _ in FFPP_COLUMNS]
        if spec.reference:
            differs = [k for k in spec.checked if s[k] != ref_settings[k]]
            if differs and spec.strict:
                raise ValueError(
                    f"table {name}: row {label!r} differs from reference {spec.reference!r} "
                    f"in {differs}; it cannot be compared (strict)"
                )
            if label == spec.reference:
                row += ["reference", "reference", ""]
            else:
                d = compare(
                    reader.predictions(spec.rows[label]),
                    reader.predictions(spec.rows[spec.reference]),
                    cfg.bootstrap,
                    cfg.seed,
                    cfg.ci_level,
                )
                mark = "≠ " if differs else ""
                row += [
                    mark + diff_cell(d, "macro_f1"),
                    mark + diff_cell(d, "auc_real_fake"),
                    "≠ " + ", ".join(f"{k} {plain(s[k])}" for k in differs) if differs else "none",
                ]
                marked |= bool(differs)
        if spec.mask:
            m = det.get("mask")
            row += (
                [
                    mean_sd(m, "model.dice", dp),
                    mean_sd(m, "all_zeros.dice", dp),
                    mean_sd(m, "all_ones.dice", dp),
                    mean_sd(m, "model.iou", dp),
                    mean_sd(m, "all_ones.iou", dp),
                    mean_sd(m, "model.pbca", dp),
                    mean_sd(m, "all_zeros.pbca", dp),
                    mean_sd(m, "all_ones.pbca", dp),
                ]
                if m
                else ["n/a"] * 8
            )
        table.rows.append(row)
    table.rows += baseline_rows(reader, rows, cols)
    table.notes = [
        "Scores in % as mean ± sd over seeds; [CI]: percentile cluster bootstrap over seeds x the "
        "unit of independence in the Units column (identity groups: an original video, its fakes and "
        f"every item sharing an identity resample together); fewer than {MIN_UNITS} units: "
        "no interval (n too small). AUC/EER real/fake: both fake classes merged, score 1 - p(real). "
        "Video AUC: real/fake AUC of the mean frame score per (method, video_id); n/a without video items."
    ]
    table.notes.append(
        "Trivial baselines, per scored variant: the majority class of the val split (a constant "
        "score: AUC 0.5), and the audit's nuisance probe (the best classifier on nuisance features "
        "alone: face size, scale, codec, brightness, high-frequency energy; its AUC is the macro "
        "one-vs-rest AUC on the test split). A row that does not beat them learned nothing the "
        "nuisances do not already give."
    )
    if has_ffpp:
        table.notes.append(
            "FF++ columns: the FaceForensics++ protocol, real vs manipulated on the video items "
            "alone (originals against every method; score 1 - p(real)); frame level and video "
            "level (mean frame score per video); accuracy at the threshold chosen on the training "
            "variant's val videos. Intervals: cluster bootstrap over split groups (identity "
            f"groups) x seeds; fewer than {MIN_UNITS} groups: no interval. Per-method values: "
            "details.json ffpp."
        )
    if spec.reference:
        table.notes.append(
            f"Δ: row minus {spec.reference!r} on the identical test items, in percentage points, "
            "with a paired bootstrap interval (the same resampled units for both models)."
        )
    if marked:
        table.notes.append(
            f"≠: the row differs from the reference in a setting other than the ablated one "
            f"(checked: every setting but {', '.join(spec.varies) or 'none'}; budgets included); "
            "its Δ is not a clean comparison."
        )
    table.notes.append(PAPER_NOTE)
    if notes is not None:
        table.notes.append(f"Notes column: {notes['label']} ({notes['citation']}).")
    if paper is not None:
        table.notes.append(
            f"Paper: {paper['citation']}; {paper['table']}; {paper['dataset']}. Compare trends, "
            "not absolute values (other data, binary task)."
        )
    if spec.mask:
        table.notes.append(
            "Mask Dice/IoU: predicted mask >= 0.5 on edited test items with a true mask; all-0 / "
            "all-1: the trivial empty / full masks on the same items. PBCA: pixel-wise binary "
            "classification accuracy (Dang et al., CVPR 2020), the share of pixels classified right."
        )
    table.provenance = provenance([r[1] for r in rows.values()], [r[3] for r in rows.values()])
    return table


def leakage_tables(reader: Reader, cfg: LeakageTables) -> list[Table]:
    audit = Table(
        "leakage_audit", "Leakage audit per variant (counts across train/val/test)", ["Variant"] + list(cfg.audit_keys)
    )
    for name in cfg.audits:
        d, p = reader.audit(name)
        cells = []
        for key in cfg.audit_keys:
            value = lookup(d, key, p)
            if isinstance(value, (dict, list)):
                raise ValueError(f"{p}: key '{key}' is not a single value; name a leaf, e.g. '{key}.<sub-key>'")
            cells.append(plain(value))
        audit.rows.append([name] + cells)
    audit.provenance = audit_provenance(reader, cfg.audits)
    within = Table(
        "leak_within",
        "Leak measure (a): one model, test frames of its training videos vs of unseen videos",
        [
            "Evaluation",
            "Frames (videos) in train",
            "Frames (videos) unseen",
            "Acc in train",
            "Acc unseen",
            "Δ Acc [CI]",
            "Δ p(true class) [CI]",
        ],
    )
    dets, paths = [], []
    for name in cfg.within:
        _, d, _, dp = reader.evaluation(name)
        dets.append(d)
        paths.append(dp)
        leak = lookup(d, "leak", dp)
        row = [name, f"{leak['frames_in']} ({leak['videos_in']})", f"{leak['frames_out']} ({leak['videos_out']})"]
        if "gap" in leak:
            g = leak["gap"]
            row += [
                pct(g["acc"]["a"]),
                pct(g["acc"]["b"]),
                diff_cell({"metrics": g}, "acc"),
                diff_cell({"metrics": g}, "p_true"),
            ]
        else:
            row += ["n/a", "n/a", leak["note"], "n/a"]
        within.rows.append(row)
    within.notes = [
        "Compared: the same model's accuracy (and mean probability of the true class) on test video "
        "frames whose video is in its train split (audit flag video_in_train) minus on frames of "
        "videos it never saw; interval: bootstrap resampling videos within each part and seeds. "
        "Still images are left out. Both parts are test frames scored by the same model; they differ in "
        "which videos they come from (and so possibly in class mix), not in the model or its training."
    ]
    if dets:
        within.provenance = provenance(dets, paths)
    cross = Table(
        "leak_cross",
        "Leak measure (b): model trained on the leaky variant minus model trained on "
        "the leak-free variant, identical test items",
        [
            "Comparison",
            "Leaky-trained",
            "Leak-free-trained",
            "Items",
            "ΔMacro-F1 [CI]",
            "ΔAcc [CI]",
            "ΔAUC real/fake [CI]",
        ],
    )
    dets, paths = [], []
    for label, (a, b) in cfg.pairs.items():
        for e in (a, b):
            _, d, _, dp = reader.evaluation(e)
            dets.append(d)
            paths.append(dp)
        c = compare(
            reader.predictions(a), reader.predictions(b), reader.cfg.bootstrap, reader.cfg.seed, reader.cfg.ci_level
        )
        cross.rows.append(
            [
                label,
                a,
                b,
                plain(c.get("n")),
                diff_cell(c, "macro_f1"),
                diff_cell(c, "acc"),
                diff_cell(c, "auc_real_fake"),
            ]
        )
    cross.notes = [
        "Compared: two training sets (leaky vs leak-free variant) scored on the identical test items, "
        "in percentage points; paired bootstrap (the same resampled videos for both models) over seeds. "
        "The difference includes every way the two training sets differ, not only the leaked videos."
    ]
    if dets:
        cross.provenance = provenance(dets, paths)
    return [t for t in (audit, within, cross) if t.rows]


def _with_ci(value, ci) -> str:
    return value_cell(value, ci=None if not ci or ci[0] is None else interval(*ci))


def shortcut_table(reader: Reader, variants: tuple[str, ...]) -> Table:
    """Probes trained on nuisance features only (the audit's ``shortcut`` section): one row per
    variant, feature set (``gate``: decides ``shortcut_free``; ``all``) and probe."""
    table = Table(
        "shortcut_audit",
        "Shortcut audit: how well nuisance features alone predict the label (test split)",
        ["Variant", "Check", "Features", "Probe", "AUC [CI]", "Macro-F1 [CI]", "Threshold (max AUC)"],
    )
    for v in variants:
        d, p = reader.audit(v)
        short = lookup(d, "shortcut", p)
        check, threshold = plain(lookup(short, "check", p)), pct(lookup(short, "threshold", p))
        probes = lookup(short, "probes", p)
        if not probes:
            table.rows.append([v, check, "–", "not trained", "n/a", "n/a", threshold])
        for fset, by_probe in probes.items():
            for probe, r in by_probe.items():
                table.rows.append(
                    [
                        v,
                        check,
                        fset,
                        probe,
                        _with_ci(r["auc"], r.get("auc_ci")),
                        _with_ci(r["macro_f1"], r.get("macro_f1_ci")),
                        threshold,
                    ]
                )
    table.notes = [
        "Read from metrics/audit/<variant>.json `shortcut` (audit@<variant>); in %. Probes are trained "
        "on the train split's nuisance features (no pixels of the face) and scored on test; AUC one-vs-rest "
        "macro. A variant declared shortcut_free fails its audit when a gate probe's AUC exceeds the threshold."
    ]
    table.provenance = audit_provenance(reader, variants)
    return table


def build_tables(cfg: ReportConfig) -> tuple[list[Table], list]:
    """All configured tables and the files read, sorted."""
    reader = Reader(cfg)
    tables: list[Table] = []
    paper = notes = None
    for name, spec in cfg.tables.items():
        if spec.paper and paper is None:
            paper = reader.reference(cfg.paper, ("citation", "table", "dataset", "metric", "values"))
        if spec.notes and notes is None:
            notes = reader.reference(cfg.notes, ("citation", "label", "sections"))
        section = None
        if spec.notes:
            assert notes is not None  # read above for the first table with notes
            if spec.notes not in notes["sections"]:
                raise KeyError(f"{cfg.notes}: key 'sections.{spec.notes}' not found")
            section = {**notes["sections"][spec.notes], "label": notes["label"], "citation": notes["citation"]}
        tables.append(results_table(reader, name, spec, paper if spec.paper else None, section))
    tables.extend(leakage_tables(reader, cfg.leakage))
    if cfg.shortcut:
        tables.append(shortcut_table(reader, cfg.shortcut))
    if cfg.crossdataset is not None:
        columns, rows, _ = crossdataset_rows(cfg.crossdataset, cfg.eval_dir, reader.read)
        for row, cells in zip(rows, cfg.crossdataset.detectors.values()):  # one run per detector row
            row.append(differs_from_paper(details_of(reader, next(iter(cells.values())))[0]))
        tables.append(
            Table(
                "crossdataset",
                "Cross-dataset generalisation: trained on FF++-based variants, "
                "tested on other datasets' official test lists",
                columns + [PAPER_COLUMN],
                rows,
                crossdataset_notes(cfg.crossdataset) + [PAPER_NOTE],
                evaluations_provenance(reader, cfg.crossdataset.evaluation_names()),
            )
        )
    if cfg.unseen is not None:
        unseen_prov = evaluations_provenance(reader, cfg.unseen.evaluation_names())
        for name, caption, columns, rows, table_notes in unseen_tables(cfg.unseen, cfg.eval_dir, reader.read):
            columns, rows = with_settings(reader, columns, rows)
            tables.append(Table(name, caption, columns, rows, table_notes + [PAPER_NOTE], unseen_prov))
    if cfg.backdoor is not None:
        columns, rows, table_notes, runs = backdoor_rows(cfg.backdoor, cfg.eval_dir, reader.read)
        prov = evaluations_provenance(reader, runs) + " Attack and audit: backdoor@<experiment> (metrics/backdoor/)."
        tables.append(Table("backdoor", backdoor_caption(cfg.backdoor), columns, rows, table_notes, prov))
    if cfg.controls is not None:
        tables.append(controls_table(reader, cfg.controls, cfg.bootstrap, cfg.seed, cfg.ci_level))
    return tables, sorted(reader.read)


def write_tables(cfg: ReportConfig) -> list[Path]:
    """Write ``<out_dir>/<table>.md`` / ``.tex`` and ``<out_dir>/results.md`` (all tables, with
    the list of files read). Returns the paths written."""
    tables, sources = build_tables(cfg)
    written = []
    for t in tables:
        for suffix, text in ((".md", t.to_markdown()), (".tex", t.to_latex())):
            path = cfg.out_dir / f"{t.name}{suffix}"
            write_bytes(path, text.encode("utf-8"))
            written.append(path)
    index = ["# Results tables", "", "Generated by `python stages/report.py` (DVC stage `report`) from:", ""]
    index += [f"- `{p.as_posix()}`" for p in sources] + [""]
    index += [t.to_markdown() for t in tables]
    path = cfg.out_dir / "results.md"
    write_bytes(path, "\n".join(index).encode("utf-8"))
    written.append(path)
    failures = [f for t in tables for f in t.failures]
    if failures:
        raise ControlError(
            f"controls that did not hold: {failures} (see {cfg.out_dir.as_posix()}/controls.md); "
            "the measure each one checks cannot be trusted"
        )
    return written
