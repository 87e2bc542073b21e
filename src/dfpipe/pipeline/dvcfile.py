"""The one writer of dvc.yaml's derived parts, from params.yaml and the stages' import closures.

Derived (never edited by hand; ``--write`` rewrites them in place, comments and the hand-written
rest of the file stay):

- every Python stage's **code deps** (its import closure) and **data deps** (the reads declared
  in :data:`dfpipe.core.stagedeps.DATA_DEPS`);
- the ``evaluate`` stage's **foreach**: every run on its own variant plus params.yaml's
  ``evaluations:`` (:func:`dfpipe.evaluation.evaluations.resolved_evaluations`);
- the ``report`` stage's data deps: exactly the files the tables read
  (:func:`dfpipe.evaluation.reports.report_deps`);
- the top-level ``plots:`` and ``artifacts:`` (:func:`dfpipe.evaluation.reports.dvc_sections`);
- the ``assets`` stage's ``outs:``: every pinned model of :data:`dfpipe.core.assets.ASSETS`.

Usage (repository root): ``python -m dfpipe.pipeline.dvcfile --write`` after editing params.yaml's
runs, evaluations or report tables, or the imports of a stage; ``--check`` (CI) exits 1 naming
every part that differs, and on params that are not narrow (:func:`~dfpipe.core.stagedeps.param_problems`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dfpipe.core import stagedeps
from dfpipe.core.assets import ASSETS, DEFAULT_DEST
from dfpipe.core.config import ConfigError, build, load_yaml
from dfpipe.evaluation.evaluations import decisive_key, resolved_evaluations
from dfpipe.evaluation.reports import ReportConfig, dvc_sections, report_deps

FOREACH_NOTE = "# written by python -m dfpipe.pipeline.dvcfile from params.yaml runs: + evaluations:"
TAIL_KEYS = ("plots", "artifacts")


def foreach_lines(evaluations: Mapping[str, Mapping[str, str]], indent: int) -> list[str]:
    """The evaluate stage's ``foreach:`` block: one flow mapping per evaluation. ``param`` is the
    params.yaml key that decides which run the evaluation scores on which variant
    (:func:`~dfpipe.evaluation.evaluations.decisive_key`): the stage's params list it, so a changed
    entry reruns that evaluation alone (and stops it with a message when dvc.yaml is stale) without
    listing every evaluation in every dvc.lock entry."""
    pad = " " * (indent + 2)
    body = [
        f"{pad}{name}: {{run: {e['run']}, variant: {e['variant']}, train_variant: {e['train_variant']}, "
        f"param: {decisive_key(name, e)}}}\n"
        for name, e in evaluations.items()
    ]
    return [f"{' ' * indent}foreach:  {FOREACH_NOTE}\n", *body]


def with_foreach(text: str, stage: str, evaluations: Mapping[str, Mapping[str, str]]) -> str:
    """``text`` with ``stage``'s ``foreach:`` (a template or a literal block) replaced."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    in_stage, stage_indent, i = False, 0, 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if stripped == f"{stage}:" and indent == 2:
            in_stage, stage_indent = True, indent
        elif in_stage and stripped and not stripped.startswith("#") and indent <= stage_indent:
            in_stage = False
        if in_stage and stripped.startswith("foreach:"):
            i += 1
            while i < len(lines) and (len(lines[i]) - len(lines[i].lstrip(" "))) > indent and lines[i].strip():
                i += 1
            out.extend(foreach_lines(evaluations, indent))
            continue
        out.append(line)
        i += 1
    return "".join(out)


def with_asset_outs(text: str, stage: str = "assets") -> str:
    """``text`` with ``stage``'s ``outs:`` list replaced by the pinned assets under ``models/mediapipe``."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    in_stage, i = False, 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if stripped == f"{stage}:" and indent == 2:
            in_stage = True
        elif in_stage and stripped and not stripped.startswith("#") and indent <= 2:
            in_stage = False
        out.append(line)
        i += 1
        if in_stage and stripped == "outs:":
            while (
                i < len(lines) and lines[i].strip().startswith("- ") and len(lines[i]) - len(lines[i].lstrip()) > indent
            ):
                i += 1
            out.extend(f"{' ' * (indent + 2)}- {(DEFAULT_DEST / a.name).as_posix()}\n" for a in ASSETS)
    return "".join(out)


def with_tail(text: str, sections: Mapping[str, Any]) -> str:
    """``text`` with the top-level ``plots:``/``artifacts:`` (the file's last sections, after their
    comment) replaced by ``sections`` dumped as YAML."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n").rstrip() in {f"{k}:" for k in TAIL_KEYS}]
    if starts:
        later = [i for i, line in enumerate(lines) if i > starts[0] and line[:1].isalpha()]
        if any(not lines[i].startswith(TAIL_KEYS) for i in later):
            raise stagedeps.StageDepsError("dvc.yaml: plots: and artifacts: must be its last top-level sections")
        lines = lines[: starts[0]]
    dumped = yaml.safe_dump(
        {k: sections[k] for k in TAIL_KEYS if sections.get(k)}, sort_keys=False, width=120, allow_unicode=True
    )
    return "".join(lines) + dumped


def derived(dvc_yaml: Path, params_yaml: Path | None = None) -> str:
    """The text dvc.yaml should have: the file as it is with every derived part regenerated."""
    params_yaml = params_yaml or dvc_yaml.parent / "params.yaml"
    params = load_yaml(params_yaml) if params_yaml.is_file() else {}
    text = dvc_yaml.read_text(encoding="utf-8")
    spec = yaml.safe_load(text) or {}
    stages = spec.get("stages") or {}
    data = stagedeps.expected_data_deps(dvc_yaml, params_yaml=params_yaml)
    report_cfg = None
    if "report" in params:
        report_cfg = build(ReportConfig, params["report"], where="report", root=dvc_yaml.parent)
        if "report" in stages:
            data["report"] = [stagedeps.DataDep(p) for p in report_deps(report_cfg, params)]
    text = stagedeps.rewrite(text, stagedeps.derived_code_deps(dvc_yaml), data)
    if "assets" in stages:
        text = with_asset_outs(text)
    if "evaluate" in stages and "runs" in params:
        text = with_foreach(text, "evaluate", resolved_evaluations(params, where=str(params_yaml)))
    if report_cfg is not None:
        text = with_tail(text, dvc_sections(report_cfg, params))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a derived part of dvc.yaml is out of date")
    mode.add_argument("--write", action="store_true", help="rewrite every derived part of dvc.yaml")
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    args = parser.parse_args(argv)
    try:
        text = args.dvc_yaml.read_text(encoding="utf-8")
        new = derived(args.dvc_yaml)
        if args.write and new != text:
            args.dvc_yaml.write_text(new, encoding="utf-8")
            print(f"[dvcfile] {args.dvc_yaml}: derived parts rewritten")
        problems = [] if args.write or new == text else _stale_parts(text, new)
        problems += stagedeps.differences(args.dvc_yaml) + stagedeps.data_differences(args.dvc_yaml)
        problems += stagedeps.param_problems(args.dvc_yaml)
    except (ConfigError, stagedeps.StageDepsError, OSError, SyntaxError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in problems:
        print(line)
    if problems:
        print(
            f"{args.dvc_yaml}: out of date (fix: `python -m dfpipe.pipeline.dvcfile --write`, or declare the read "
            "in dfpipe.core.stagedeps.DATA_DEPS) or params not narrow (edit the stage's params: in dvc.yaml)",
            file=sys.stderr,
        )
        return 1
    print(f"[dvcfile] {args.dvc_yaml}: every derived part is up to date; params narrow")
    return 0


def _stale_parts(have_text: str, want_text: str) -> list[str]:
    """One line per stage or top-level section whose derived text differs."""
    have, want = yaml.safe_load(have_text) or {}, yaml.safe_load(want_text) or {}
    lines = [
        f"stages.{name}: differs from the derived deps / foreach"
        for name in sorted(set(have.get("stages") or {}) | set(want.get("stages") or {}))
        if (have.get("stages") or {}).get(name) != (want.get("stages") or {}).get(name)
    ]
    lines += [f"{key}: differs from the report tables" for key in TAIL_KEYS if have.get(key) != want.get(key)]
    return lines or ["dvc.yaml: layout differs from the generated text"]


if __name__ == "__main__":
    raise SystemExit(main())
