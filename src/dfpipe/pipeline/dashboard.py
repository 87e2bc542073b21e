"""Writes the offline results dashboard: DVC's plots page arranged as one section per results table.

``python -m dfpipe.pipeline.dashboard [--out dvc_plots]`` (``make dashboard``) runs ``dvc plots show``
on exactly the plots of :func:`plan` with an HTML template built from ``.dvc/dashboard.html`` (local
Vega scripts, never a CDN), then copies the scripts next to the page (``vendor/``), so the folder
opens without network. The page has a table of contents and one section per results table of
params.yaml ``report:`` (title and a line saying what it shows), then the spectra and preprocessing.

Each figure appears once: a table's ROC and validation-macro-F1 overlays are Vega (one colour per
row, legend = the table's row names, y from 0 to 1 so tables compare), an evaluation's confusion
matrix, ROC/PR, training curves and Grad-CAM maps are its PNGs, under the first table that lists it.
``?only=<section id>`` in the page's address shows one section. ``panels.json`` next to the page
lists the panels per section (the browser test counts them).
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfpipe.core.config import load_yaml
from dfpipe.evaluation.evaluations import resolved_evaluations

#: The Vega scripts ``make setup`` installs (pinned versions in the Makefile), and the page's folder for them.
SCRIPTS_DIR = Path(".scratch/js")
SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
TEMPLATE = Path(".dvc/dashboard.html")
#: An evaluation's PNG figures (written by evaluate@ / frank@), in the order shown.
EVAL_FIGURES = ("confusion.png", "roc_pr.png", "training_curves.png", "featuremaps.png")
SPECTRA_FIGURES = ("class_mean.png", "method_mean.png", "profiles.png")


@dataclass
class Section:
    """One part of the page: ``plots`` are DVC plot ids (Vega) or PNG paths, in the order shown."""

    id: str
    title: str
    what: str
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # the results tables (metrics/tables/*.md) shown, as HTML
    open_tables: bool = False  # tables shown unfolded (sections without figures)


#: Results tables without figures (their numbers come from audits and paired comparisons).
TABLE_ONLY = ("controls", "leak_within", "leak_cross", "leakage_audit", "shortcut_audit", "backdoor")


def markdown_table(text: str) -> str:
    """HTML of one report table file (metrics/tables/<name>.md: ``###`` caption, pipe table, bullet
    notes, an italic provenance line); the subset of Markdown the report stage writes."""
    out: list[str] = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if all(line.startswith("|") for line in lines):
            cells = [[html.escape(c.strip()) for c in line.strip().strip("|").split("|")] for line in lines]
            head, body = cells[0], cells[2:]
            out.append(
                "<table><thead><tr>"
                + "".join(f"<th>{c}</th>" for c in head)
                + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
                + "</tbody></table>"
            )
        elif lines[0].startswith("### "):
            out.append(f"<h3>{html.escape(lines[0][4:])}</h3>")
        elif lines[0].startswith("- "):
            out.append("<ul>" + "".join(f"<li>{html.escape(line[2:])}</li>" for line in lines) + "</ul>")
        else:
            out.append(f"<p class='prov'>{html.escape(block.strip('_'))}</p>")
    return "\n".join(out)


def _table_section(name: str, md: Path) -> Section:
    """A section for a results table that has no figures: its caption, first note sentence, the table."""
    text = md.read_text()
    caption = next((line[4:] for line in text.splitlines() if line.startswith("### ")), name)
    note = next((line[2:] for line in text.splitlines() if line.startswith("- ")), "")
    what = note.split(". ")[0].rstrip(".") + "." if note else f"The table {md.name} as the report stage wrote it."
    return Section(name, caption, what, tables=[markdown_table(text)], open_tables=True)


def div_id(name: str) -> str:
    """The element id DVC gives a plot (dvc_render's ``Renderer.remove_special_chars``)."""
    return name.translate({ord(c): "_" for c in r"!@#$%^&*()[]{};,<>?\/:.|`~=_+ "})


def _rows_sections(params: Mapping[str, Any], root: Path) -> tuple[list[Section], dict[str, dict[str, str]]]:
    report = params["report"]
    eval_dir = Path(report["eval_dir"]).as_posix()
    train_dir = Path(params["train"]["metrics_dir"]).as_posix()
    evaluations = resolved_evaluations(params)
    shown: dict[str, str] = {}  # evaluation -> section id where its figures are
    labels: dict[str, dict[str, str]] = {}  # plot id -> {plotted file: row name}

    def figures(sec: Section, rows: Mapping[str, str]) -> None:
        for row, ev in rows.items():
            if ev in shown:
                sec.notes.append(f"{row} ({ev}): figures in section <a href='#{shown[ev]}'>{shown[ev]}</a>")
                continue
            pngs = [
                f"{eval_dir}/{ev}/figures/{f}" for f in EVAL_FIGURES if (root / eval_dir / ev / "figures" / f).is_file()
            ]
            if pngs:
                shown[ev] = sec.id
                sec.plots += pngs

    sections = []
    for name, table in report["tables"].items():
        rows = dict(table["rows"])
        sec = Section(
            name,
            table["caption"],
            f"{len(rows)} rows ({', '.join(rows)}): ROC real vs fake of every row overlaid and validation "
            "macro-F1 per epoch of every seed (one colour per row, one dash per seed), then each evaluation's "
            "confusion matrix (actual on y, counts and row %), ROC/PR, training curves and Grad-CAM maps.",
            [f"{name}_roc", f"{name}_val_f1"],
        )
        roc, curves = labels.setdefault(f"{name}_roc", {}), labels.setdefault(f"{name}_val_f1", {})
        for row, ev in rows.items():
            roc.setdefault(f"{eval_dir}/{ev}/roc.csv", row)
            run = evaluations.get(ev, {}).get("run")
            if run:
                for seed_file in sorted((root / train_dir / run / "curves").glob("seed*.tsv")):
                    curves.setdefault(f"{train_dir}/{run}/curves/{seed_file.name}", row)
        figures(sec, rows)
        sections.append(sec)
    for key, caption in (("crossdataset", "Cross-dataset evaluation"), ("unseen", "Unseen generators")):
        spec = report.get(key) or {}
        if key == "crossdataset":
            rows = {f"{d} on {t}": ev for d, per in (spec.get("detectors") or {}).items() for t, ev in per.items()}
        else:
            rows = {r: ev for r, ev in (spec.get("rows") or {}).items() if isinstance(ev, str)}
        if rows:
            sec = Section(
                key,
                caption,
                f"{len(rows)} detector/test-set pairs: each evaluation's confusion matrix, ROC/PR, training "
                "curves and Grad-CAM maps (figures shown under an earlier table are linked).",
            )
            figures(sec, rows)
            sections.append(sec)
    out_dir = root / report["out_dir"]
    for sec in sections:  # each figure section also shows its table(s), folded
        mds = [out_dir / f"{n}.md" for n in {"unseen": ["unseen_acc", "unseen_ap"]}.get(sec.id, [sec.id])]
        sec.tables = [markdown_table(md.read_text()) for md in mds if md.is_file()]
    sections += [_table_section(n, out_dir / f"{n}.md") for n in TABLE_ONLY if (out_dir / f"{n}.md").is_file()]
    rest = [e for e in [*evaluations, *(params.get("frank") or {})] if e not in shown]
    sec = Section(
        "other", "Other evaluations", "Evaluations in no results table (controls, references): their figures."
    )
    figures(sec, {e: e for e in rest})
    if sec.plots:
        sections.append(sec)
    return sections, labels


def plan(params: Mapping[str, Any], root: Path) -> tuple[list[Section], dict[str, dict[str, str]]]:
    """Sections of the page in order, and ``{plot id: {file: row name}}`` for the legends (a file
    can be a row of several tables, under a different name in each)."""
    sections, labels = _rows_sections(params, root)
    plots_dir = Path(params["spectra"]["plots_dir"]).as_posix()
    spectra = Section(
        "spectra",
        "Spectra of each variant's train split",
        "Per variant: mean log-spectrum per class and per method with the difference to real, and the radial "
        "profiles of every class and method overlaid with their difference to real (Frank et al. 2020, Fig. 2).",
    )
    for v in params["spectra"]["variants"]:
        spectra.plots += [f"{plots_dir}/{v}/{f}" for f in SPECTRA_FIGURES if (root / plots_dir / v / f).is_file()]
    faces = Section(
        "preprocess",
        "Face sizes per source",
        "Per source: native face size of the detected faces (before resizing), from preprocess@<source>.",
    )
    faces.plots = [
        f"metrics/preprocess/{s}/face_size.png"
        for s in params.get("sources") or {}
        if (root / "metrics" / "preprocess" / s / "face_size.png").is_file()
    ]
    return [*sections, *(s for s in (spectra, faces) if s.plots)], labels


def page_template(base: str, sections: list[Section], labels: Mapping[str, Mapping[str, str]]) -> str:
    """``base`` (.dvc/dashboard.html) with the table of contents, the sections' empty slots, the
    legend names and the script that moves each DVC plot div into its slot."""
    toc = "".join(
        f"<li><a href='#{s.id}'>{html.escape(s.title)}</a> ({f'{len(s.plots)} panels' if s.plots else 'table'})</li>"
        for s in sections
    )
    body = [
        "<header id='top'><h1>dfpipe results</h1><p class='what'>One section per results table "
        "(metrics/tables/); each figure once. Hover a curve for its values; drag or scroll to zoom.</p>"
        f"<nav class='toc'><ol>{toc}</ol></nav></header>"
    ]
    for s in sections:
        slots = "".join(f"<div class='slot' data-plot='{div_id(p)}'></div>" for p in s.plots)
        notes = "".join(f"<li>{n}</li>" for n in s.notes)
        tables = "".join(
            f"<details{' open' if s.open_tables else ''}><summary>table</summary>{t}</details>" for t in s.tables
        )
        body.append(
            f"<section id='{s.id}'><h2>{html.escape(s.title)}</h2><p class='what'>{html.escape(s.what)}</p>"
            + tables
            + (f"<ul class='notes'>{notes}</ul>" if notes else "")
            + f"<div class='panels'>{slots}</div></section>"
        )
    mover = """
<div id="unplaced" class="panels">{plot_divs}</div>
<script>
(function () {
  for (const slot of document.querySelectorAll("div.slot")) {
    const el = document.getElementById(slot.dataset.plot);
    if (el) { slot.replaceWith(el); continue; }
    slot.className = "slot-missing";
    slot.textContent = "missing: " + slot.dataset.plot;
  }
  const only = new URLSearchParams(location.search).get("only");
  if (only) for (const s of document.querySelectorAll("header, section")) s.hidden = s.id !== only;
})();
</script>"""
    names = {div_id(plot): sorted(files.items()) for plot, files in labels.items()}
    legend = f"<script>window.DFPIPE_LABELS = {json.dumps(names)};</script>\n"
    out = base.replace("<script>\n// Legends", legend + "<script>\n// Legends", 1)
    return out.replace("{plot_divs}", "\n".join(body) + mover, 1)


def build(root: Path, out: Path, dvc: str = "dvc") -> dict[str, Any]:
    """Write ``out/index.html`` (+ ``vendor/``, ``static/``, ``panels.json``); returns the panel counts."""
    params = load_yaml(root / "params.yaml")  # YAML 1.2, as DVC and every stage read it
    sections, labels = plan(params, root)
    missing = [s for s in SCRIPTS if not (root / SCRIPTS_DIR / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{root / SCRIPTS_DIR}: no {', '.join(missing)} (run `make setup`)")
    out = out if out.is_absolute() else root / out
    out.mkdir(parents=True, exist_ok=True)
    template = out / ".dashboard_template.html"
    template.write_text(page_template((root / TEMPLATE).read_text(), sections, labels))
    targets = [p for s in sections for p in s.plots]
    subprocess.run(
        [dvc, "plots", "show", "-q", "--html-template", str(template), "-o", str(out), *targets], cwd=root, check=True
    )
    template.unlink()
    page = out / "index.html"
    text = page.read_text()
    vendor = out / "vendor"
    vendor.mkdir(exist_ok=True)
    for s in SCRIPTS:
        shutil.copyfile(root / SCRIPTS_DIR / s, vendor / s)
        text = text.replace(f'src="../{SCRIPTS_DIR.as_posix()}/{s}"', f'src="vendor/{s}"')
    page.write_text(text)
    counts = {
        "sections": {s.id: [div_id(p) for p in s.plots] for s in sections},
        "vega": sum(not p.endswith(".png") for s in sections for p in s.plots),
        "image": sum(p.endswith(".png") for s in sections for p in s.plots),
    }
    (out / "panels.json").write_text(json.dumps(counts, indent=1) + "\n")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("dvc_plots"), help="folder of the page (default dvc_plots)")
    parser.add_argument("--dvc", default="dvc", help="the dvc executable")
    args = parser.parse_args(argv)
    counts = build(Path.cwd(), args.out, args.dvc)
    n = len(counts["sections"])
    print(f"{args.out / 'index.html'}: {n} sections, {counts['vega']} Vega + {counts['image']} PNG panels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
