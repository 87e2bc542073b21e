"""Copies the figures README.md quotes from the committed metrics files, and checks they match.

``python -m dfpipe.pipeline.readme --write`` rewrites them, ``--check`` (``make test``:
tests/pipeline/test_readme.py) lists every figure that differs from its file and exits 1. Two
places of README.md are governed, each after a marker comment:

* ``<!-- figures:table -->``: a Markdown table ``| Figure | Value | Source |`` whose Source cell names
  where the value comes from, in backticks separated by `` · ``: a results table cell
  (`` `metrics/tables/<t>.md` · `<row>` · `<column>` ``) or a JSON value
  (`` `metrics/eval/<e>.json` · `<dotted.key>` ``). ``<row>`` is the row's first cell, or
  ``Column=value & Column=value`` when the first cell is not unique. A Markdown cell is copied as
  written; a JSON number as ``dvc exp show`` prints it (5 significant digits).
* ``<!-- figures:exp-show -->``: the ``dvc exp show`` output in the code block that follows; its
  ``main`` row shows the committed workspace, so each ``<file>.json:<key>`` column of that row must
  equal the file's value and each params column ``params.yaml``'s. The other rows come from an
  experiment run, which no file keeps: rerun the README's ``-S`` command to refresh them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfpipe.core.config import load_yaml
from dfpipe.evaluation import reports

TABLE_MARK = "<!-- figures:table -->"
EXP_SHOW_MARK = "<!-- figures:exp-show -->"
SEP = " · "


class FigureError(ValueError):
    """A source that names no file, row, column or key."""


@dataclass(frozen=True)
class Difference:
    figure: str
    readme: str
    source: str
    value: str

    def __str__(self) -> str:
        return f"{self.figure}: README says {self.readme!r}, {self.source} has {self.value!r}"


def dvc_number(value: Any) -> str:
    """A value as ``dvc exp show`` prints it (floats: ``.5g``, dvc.compare._format_field)."""
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def md_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every pipe table of a Markdown text as (header, rows)."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|$", lines[i + 1].strip()):
            header, rows = _cells(lines[i]), []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            tables.append((header, rows))
        else:
            i += 1
    return tables


def _matches(header: list[str], row: list[str], selector: str) -> bool:
    parts = [p.split("=", 1) for p in selector.split(" & ")]
    if all(len(p) == 2 and p[0] in header for p in parts):
        return all(row[header.index(col)] == value for col, value in parts)
    return row[0] == selector


def table_cell(path: Path, row: str, column: str) -> str:
    """The cell at ``row`` (first cell, or ``Col=value & ...``) and ``column`` of a Markdown table file."""
    found = [
        r[header.index(column)]
        for header, rows in md_tables(path.read_text(encoding="utf-8"))
        if column in header
        for r in rows
        if len(r) == len(header) and _matches(header, r, row)
    ]
    if len(found) != 1:
        raise FigureError(f"{path}: {len(found)} rows match {row!r} with a column {column!r} (need exactly 1)")
    return found[0]


def lookup(data: Any, key: str, where: str) -> Any:
    """``data[k1][k2]...`` for the dotted ``key`` (the tables' own lookup); FigureError naming
    ``where`` if a part is missing."""
    try:
        return reports.lookup(data, key, Path(where))
    except KeyError:
        raise FigureError(f"{where}: no key {key!r}") from None


def json_value(path: Path, key: str) -> Any:
    return lookup(json.loads(path.read_text(encoding="utf-8")), key, str(path))


def source_value(root: Path, source: str) -> str:
    """The value a Source cell names (see the module docstring)."""
    parts = [p.strip().strip("`") for p in source.split(SEP)]
    path = root / parts[0]
    if not path.is_file():
        raise FigureError(f"{parts[0]}: no such file")
    if path.suffix == ".md" and len(parts) == 3:
        return table_cell(path, parts[1], parts[2])
    if path.suffix == ".json" and len(parts) == 2:
        return dvc_number(json_value(path, parts[1]))
    raise FigureError(f"source {source!r}: want `<table>.md` · `<row>` · `<column>` or `<file>.json` · `<key>`")


def _after(lines: list[str], mark: str) -> int:
    """Index of the first line after the marker comment; FigureError if README lacks it."""
    for i, line in enumerate(lines):
        if line.strip() == mark:
            return i + 1
    raise FigureError(f"README has no {mark} marker")


def _figure_table(lines: list[str], root: Path) -> list[Difference]:
    """Check and rewrite (in ``lines``) the figures table after :data:`TABLE_MARK`."""
    i = _after(lines, TABLE_MARK)
    while i < len(lines) and not lines[i].startswith("|"):
        i += 1
    header = _cells(lines[i])
    if header[:3] != ["Figure", "Value", "Source"]:
        raise FigureError(f"the table after {TABLE_MARK} must start | Figure | Value | Source |, not {header}")
    diffs, first, i = [], i + 2, i + 2
    while i < len(lines) and lines[i].startswith("|"):
        figure, value, source = _cells(lines[i])[:3]
        want = source_value(root, source)
        if value != want:
            diffs.append(Difference(figure, value, source.replace("`", ""), want))
            lines[i] = f"| {figure} | {want} | {source} |"
        i += 1
    if i == first:
        raise FigureError(f"the table after {TABLE_MARK} has no figures")
    return diffs


def _exp_show(lines: list[str], root: Path, params: Path) -> list[Difference]:
    """Check and rewrite the ``main`` row of the ``dvc exp show`` block after :data:`EXP_SHOW_MARK`."""
    i = _after(lines, EXP_SHOW_MARK)
    start = next(j for j in range(i, len(lines)) if lines[j].startswith("```"))
    end = next(j for j in range(start + 1, len(lines)) if lines[j].startswith("```"))
    block = lines[start + 1 : end]
    header = next((ln for ln in block if ln.strip().startswith("Experiment")), None)
    main = next((j for j in range(start + 1, end) if lines[j].split()[:1] == ["main"]), None)
    if header is None or main is None:
        raise FigureError(f"the block after {EXP_SHOW_MARK} has no Experiment header or no main row")
    columns = re.split(r"\s{2,}", header.strip())[1:]
    line = lines[main]
    tokens = list(re.finditer(r"\S+", line))[1:]
    if len(tokens) != len(columns):
        raise FigureError(f"exp show main row has {len(tokens)} values for {len(columns)} columns")
    diffs = []
    for col, tok in reversed(list(zip(columns, tokens, strict=True))):
        if ":" in col:
            file, key = col.split(":", 1)
            want, source = dvc_number(json_value(root / file, key)), f"{file} {key}"
        else:
            want, source = dvc_number(lookup(load_yaml(params), col, params.name)), f"{params.name} {col}"
        if tok.group() != want:
            diffs.append(Difference(f"dvc exp show, main, {col}", tok.group(), source, want))
            pad = max(0, len(tok.group()) - len(want))  # keep the column right-aligned
            line = line[: tok.start()] + " " * pad + want + line[tok.end() :]
    lines[main] = line
    return diffs[::-1]


def refresh(text: str, root: Path, params: Path | None = None) -> tuple[str, list[Difference]]:
    """README text with every governed figure copied from its file, and the figures that differed."""
    lines = text.split("\n")
    diffs = _figure_table(lines, root) + _exp_show(lines, root, params or root / "params.yaml")
    return "\n".join(lines), diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfpipe.pipeline.readme", description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="list figures that differ from their files; exit 1 if any")
    mode.add_argument("--write", action="store_true", help="copy every governed figure from its file into README.md")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args(argv)
    root = args.readme.resolve().parent
    try:
        text, diffs = refresh(args.readme.read_text(encoding="utf-8"), root)
    except FigureError as exc:
        print(f"[readme] error: {exc}", file=sys.stderr)
        return 2
    for d in diffs:
        print(f"[readme] {d}")
    if args.write:
        if diffs:
            args.readme.write_text(text, encoding="utf-8")
        print(f"[readme] {args.readme}: {len(diffs)} figure(s) rewritten")
        return 0
    print(f"[readme] {args.readme}: {len(diffs)} figure(s) differ from their files")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
