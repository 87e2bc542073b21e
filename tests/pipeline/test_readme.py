"""README.md against the outputs: the figures it quotes equal the committed metrics files (read now,
never copied into this test), and the files and folders it describes exist.

The figures are governed by dfpipe.pipeline.readme (``--write`` copies them, ``--check`` is this
test): the Headline figures table, each row naming its file, row and column, and the ``main`` row
of the ``dvc exp show`` output.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dfpipe.pipeline import readme

REPO = Path(__file__).resolve().parents[2]
TEXT = (REPO / "README.md").read_text(encoding="utf-8")


def figure_rows(text: str) -> list[str]:
    block = text.split(readme.TABLE_MARK, 1)[1].lstrip("\n").split("\n\n", 1)[0]
    return [line for line in block.splitlines()[2:] if line.startswith("|")]


def test_quoted_figures_equal_their_files():
    _, diffs = readme.refresh(TEXT, REPO)
    assert not diffs, "README figures differ from the metrics files; run `python -m dfpipe.pipeline.readme " \
        "--write`:\n" + "\n".join(map(str, diffs))
    rows = figure_rows(TEXT)
    assert len(rows) >= 10
    sources = {r.split("|")[3].split("·")[0].strip(" `") for r in rows}
    assert {"metrics/tables/leak_within.md", "metrics/tables/leak_cross.md",
            "metrics/tables/leakage_audit.md", "metrics/tables/controls.md"} <= sources


def test_check_is_the_cli_and_clean():
    assert readme.main(["--check", "--readme", str(REPO / "README.md")]) == 0


@pytest.mark.parametrize("kind", [".md", ".json"])  # a results-table cell; a JSON value
def test_control_a_changed_figure_is_found_and_rewritten(kind):
    """The check fires on a figure that no longer matches its file, names it, and --write restores it.
    The control takes the README's first figure of that kind, so regenerated outputs keep it valid."""
    row = next(r for r in figure_rows(TEXT) if kind in r.split("|")[3])
    value = row.split("|")[2].strip()
    assert readme.source_value(REPO, row.split("|")[3].strip()) == value
    changed = value[:-1] + ("1" if value[-1] != "1" else "2")  # its last digit changed
    tampered = TEXT.replace(row, row.replace(f"| {value} |", f"| {changed} |"))
    text, diffs = readme.refresh(tampered, REPO)
    assert [(d.readme, d.value) for d in diffs] == [(changed, value)]
    assert text == TEXT


def test_control_exp_show_main_row():
    """The `main` row of the exp show block is the committed metrics: a changed value is found, and the
    rewrite keeps the column right-aligned."""
    main = next(line for line in TEXT.split(readme.EXP_SHOW_MARK, 1)[1].splitlines() if line.split()[:1] == ["main"])
    first = main.split()[1]
    tampered = TEXT.replace(main, main.replace(first, "0.12345", 1))
    text, diffs = readme.refresh(tampered, REPO)
    assert [(d.figure.split(", ")[-1], d.readme, d.value) for d in diffs] == [
        ("metrics/eval/resnet_5.json:macro_f1.mean", "0.12345", first)]
    assert text == TEXT


@pytest.mark.parametrize("source, error", [
    ("`metrics/tables/nothing.md` · `resnet_5` · `Acc`", "no such file"),
    ("`metrics/tables/resnet.md` · `resnet_99` · `Acc`", "0 rows match"),
    ("`metrics/tables/shortcut_audit.md` · `v3` · `AUC [CI]`", "4 rows match"),  # not unique: needs Col=value
    ("`metrics/eval/resnet_5.json` · `macro_f1.median`", "no key"),
])
def test_control_a_source_that_names_nothing_is_an_error(source, error):
    with pytest.raises(readme.FigureError, match=re.escape(error)):
        readme.source_value(REPO, source)


def _layout() -> str:
    return TEXT.split("## Layout", 1)[1].split("```", 2)[1]


def test_layout_lists_what_exists():
    """Every metrics/ folder and docs/ page of the repository appears in the README's Layout block."""
    layout = _layout()
    for folder in sorted(p.name for p in (REPO / "metrics").iterdir() if p.is_dir()):
        assert f"{folder}/" in layout, f"Layout does not list metrics/{folder}/"
    for page in sorted(p.name for p in (REPO / "docs").glob("*.md")):
        assert page in layout, f"Layout does not list docs/{page}"


def test_files_the_readme_names_exist():
    named = set(re.findall(r"\b((?:metrics/tables|docs|benchmarks|tests/\w+)/[\w./-]+\.(?:md|py|sh))", TEXT))
    assert len(named) > 10
    assert not sorted(n for n in named if not (REPO / n).exists())
    # the leak paragraph names the three leak tables (audit counts, measure a, measure b)
    leak = TEXT.split("## Dataset variants and the leak", 1)[1].split("\n## ", 1)[0]
    for table in ("leakage_audit.md", "leak_within.md", "leak_cross.md"):
        assert table in leak and (REPO / "metrics/tables" / table).is_file(), table
    assert "reported by the audit, not gated" in leak


def test_near_duplicates_are_reported_not_gated_in_the_outputs():
    """The README's statement, on the committed audit table: a variant whose leak check passed while
    its near-duplicate count is above 0."""
    header, rows = readme.md_tables((REPO / "metrics/tables/leakage_audit.md").read_text(encoding="utf-8"))[0]
    col = {name: i for i, name in enumerate(header)}
    passed_with_near = [r[0] for r in rows
                        if r[col["leak_check"]] == "passed" and int(r[col["near_duplicate_pairs"]]) > 0]
    assert passed_with_near, rows
