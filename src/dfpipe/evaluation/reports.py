"""Results tables (Markdown and LaTeX) built only from DVC-tracked files, and the dvc.yaml
sections derived from the same configuration (report deps, comparison plots, artifacts).

Every number in a table is read from ``metrics/eval/<evaluation>.json`` and ``details.json``
(``evaluate@<evaluation>``), paired differences from the evaluations' ``predictions.parquet``,
``metrics/audit/<variant>.json`` (``audit@<variant>``), or the cited reference files under
``metrics/reference/`` (the paper's numbers; the group's notes); nothing is typed in by hand. A
missing file is a ``FileNotFoundError`` naming it and the stage that writes it; a missing key a
``KeyError`` naming file and key. The table builders and :func:`write_tables` live in
:mod:`dfpipe.evaluation.tables`, above this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from dfpipe.core.config import Config, RepoPath
from dfpipe.core.io import read_json
from dfpipe.evaluation.backdoor_table import BackdoorTable
from dfpipe.evaluation.crossdataset import CrossDatasetTable
from dfpipe.evaluation.evaluations import resolved_evaluations
from dfpipe.evaluation.unseen import UnseenTable

#: Row settings a results table shows and a comparison checks (read from ``details.json`` ``run``).
#: The budget settings (steps per epoch, optimizer updates, images seen) come from the training
#: curves, i.e. what was spent, not what was asked for.
SETTINGS = (
    "train_variant",
    "eval_variant",
    "model",
    "input",
    "f3net_mode",
    "backbone",
    "width",
    "image_size",
    "init",
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "batch_size",
    "steps_per_epoch",
    "epochs",
    "stopping",
    "updates",
    "images_seen",
    "augment",
    "balance",
    "seeds",
)


class ControlError(RuntimeError):
    """A planted control did not behave as planted: the measure it checks cannot be trusted."""


class ResultsTable(Config):
    """One results table: ``rows`` (row label -> evaluation), in the order written.

    ``reference``: row label that every other row is compared against (paired difference with
    its interval; ``""`` for none). ``varies``: the settings (of :data:`SETTINGS`) the table varies
    on purpose (an ablation's switch, a detector's recipe). Every other setting, budgets included,
    must equal the reference's: a row that differs is marked with what differs (``strict: false``)
    or refused (``strict: true``, a ``ValueError``). ``paper``: show the paper's column (keys = row labels of
    ``report.paper``); ``notes``: section of ``report.notes`` shown as the Notes column (``""``
    none); ``mask``: show mask Dice/IoU beside the trivial all-zeros / all-ones masks.
    """

    caption: str
    rows: dict[str, str] = Field(min_length=1)
    reference: str
    varies: tuple[str, ...]
    strict: bool
    paper: bool
    notes: str
    mask: bool

    @property
    def checked(self) -> tuple[str, ...]:
        """The settings a row must share with the reference: all but those the table varies."""
        return tuple(k for k in SETTINGS if k not in self.varies)

    @model_validator(mode="after")
    def _check(self) -> ResultsTable:
        if self.reference and self.reference not in self.rows:
            raise ValueError(f"reference {self.reference!r} is not a row label ({list(self.rows)})")
        unknown = sorted(set(self.varies) - set(SETTINGS))
        if unknown:
            raise ValueError(f"varies: unknown settings {unknown}; known: {list(SETTINGS)}")
        return self


class LeakageTables(Config):
    """``audits``: variants whose audit counts are shown (``audit_keys`` columns); ``within``:
    evaluations of a run on its own variant for leak measure (a); ``pairs``: label -> two
    evaluations (trained on the leaky and on the leak-free variant) scored on the identical test
    items, for measure (b)."""

    audits: tuple[str, ...]
    audit_keys: tuple[str, ...]
    within: tuple[str, ...]
    pairs: dict[str, tuple[str, str]]

    @model_validator(mode="after")
    def _check(self) -> LeakageTables:
        if self.audits and not self.audit_keys:
            raise ValueError("audit_keys must not be empty")
        return self


class FamilyControl(Config):
    """One generator-family control: ``evaluation`` scored a detector trained on real + ``seen``;
    each ``unseen`` source must score at least ``min_gap`` AP below ``seen`` (paired interval above 0)."""

    evaluation: str
    seen: str
    unseen: tuple[str, ...] = Field(min_length=1)
    min_gap: float = Field(ge=0.0, le=1.0)


class LeakControl(Config):
    """One planted-leak control: four evaluations of one recipe on the demo's leak-control clips
    (:mod:`dfpipe.demo.leakctl`). ``within``: the run trained on the frame-level (leaky) variant,
    scored on its own test split (leak measure (a)); ``leaky``: that run scored on the test split of
    the clip-level (leak-free) twin; ``leak_free``: the run trained on the twin, scored on those
    identical items (measure (b) = ``leaky`` - ``leak_free``); ``reseeded``: the leak-free run again
    with other seeds and nothing else changed, on the identical items (measure (b) between two
    leak-free trainings: a null)."""

    within: str
    leaky: str
    leak_free: str
    reseeded: str

    def evaluation_names(self) -> set[str]:
        return {self.within, self.leaky, self.leak_free, self.reseeded}


class ControlsConfig(Config):
    """``report.controls`` (dfpipe.evaluation.controls): ``null_ablation``: label -> [a, b]
    evaluations whose runs differ in seeds only; ``shortcut``: label -> [variant with a planted
    nuisance, its twin without]; ``generator_families``: label -> :class:`FamilyControl`;
    ``planted_leak``: label -> :class:`LeakControl`, which also reads the leaky variant's train
    manifest under ``variants_dir`` (required with a planted leak)."""

    null_ablation: dict[str, tuple[str, str]]
    shortcut: dict[str, tuple[str, str]]
    generator_families: dict[str, FamilyControl]
    planted_leak: dict[str, LeakControl] = Field(default_factory=dict)
    variants_dir: RepoPath | None = None  # split.out_dir: the leaky variant's train/manifest.parquet

    @model_validator(mode="after")
    def _check(self) -> ControlsConfig:
        if self.planted_leak and self.variants_dir is None:
            raise ValueError("planted_leak needs variants_dir (split.out_dir: the leaky variant's train manifest)")
        return self

    def evaluation_names(self) -> set[str]:
        """Every evaluation whose predictions a control reads."""
        names = {e for pair in self.null_ablation.values() for e in pair}
        names |= {e for c in self.planted_leak.values() for e in c.evaluation_names()}
        return names | {c.evaluation for c in self.generator_families.values()}

    def leak_files(self, params: Mapping, audit_dir: Path) -> set[Path]:
        """What the planted-leak controls read besides predictions: the audit's test-item flags of
        ``within``'s variant (measure (a)) and the train manifest of ``leaky``'s training variant."""
        evaluations = resolved_evaluations(params)
        files = set()
        for c in self.planted_leak.values():
            assert self.variants_dir is not None  # the validator requires it with a planted leak
            files.add(audit_dir / evaluations[c.within]["variant"] / "test_items.parquet")
            files.add(self.variants_dir / evaluations[c.leaky]["train_variant"] / "train" / "manifest.parquet")
        return files


class ReportConfig(Config):
    """``report:`` section of params.yaml."""

    out_dir: RepoPath
    eval_dir: RepoPath
    audit_dir: RepoPath
    paper: RepoPath
    notes: RepoPath
    bootstrap: int = Field(ge=1)
    ci_level: float = Field(ge=0.5, lt=1.0)
    seed: int
    tables: dict[str, ResultsTable]
    leakage: LeakageTables
    shortcut: tuple[str, ...]  # variants whose audit `shortcut` section is tabulated
    crossdataset: CrossDatasetTable | None = None  # optional: FF++-trained models on other test sets
    unseen: UnseenTable | None = None  # optional: trained on one generator, tested on all
    backdoor: BackdoorTable | None = None  # optional: clean vs poisoned runs (dfpipe.evaluation.backdoor_table)
    controls: ControlsConfig | None = None  # optional: planted effects (dfpipe.evaluation.controls)

    @model_validator(mode="after")
    def _check(self) -> ReportConfig:
        for name in self.tables:
            if not name.replace("_", "").isalnum():
                raise ValueError(f"table name {name!r}: letters, digits and _ only (it names files)")
        return self

    def evaluation_names(self) -> list[str]:
        """Every evaluation the tables read, sorted."""
        names = {e for t in self.tables.values() for e in t.rows.values()} | set(self.leakage.within)
        if self.crossdataset is not None:
            names |= set(self.crossdataset.evaluation_names())
        if self.unseen is not None:
            names |= set(self.unseen.evaluation_names())
        if self.controls is not None:
            names |= self.controls.evaluation_names()
        return sorted(names | {e for pair in self.leakage.pairs.values() for e in pair})

    def compared_names(self) -> list[str]:
        """Evaluations whose predictions a table reads (paired differences, cross-dataset AUCs), sorted."""
        names = {e for t in self.tables.values() if t.reference for e in t.rows.values()}
        if self.crossdataset is not None:
            names |= set(self.crossdataset.evaluation_names())
        if self.unseen is not None:
            names |= set(self.unseen.evaluation_names())
        if self.controls is not None:
            names |= self.controls.evaluation_names()
        return sorted(names | {e for pair in self.leakage.pairs.values() for e in pair})


@dataclass
class Table:
    """A rendered table: ``rows`` of formatted cells, ``notes`` and a ``provenance`` line below."""

    name: str
    caption: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: str = ""
    failures: list[str] = field(default_factory=list)  # controls that did not hold (controls table)

    def to_markdown(self) -> str:
        lines = [
            f"### {self.caption}",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(self.columns))) + "|",
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        lines += [""] + [f"- {n}" for n in self.notes]
        if self.provenance:
            lines += ["", f"_{self.provenance}_"]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        spec = "l" + "r" * (len(self.columns) - 1)
        lines = [
            "% generated by `python stages/report.py` from DVC-tracked metrics files; do not edit",
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{latex_escape(self.caption)}}}",
            f"\\label{{tab:{self.name}}}",
            "\\resizebox{\\textwidth}{!}{%",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            " & ".join(latex_escape(c) for c in self.columns) + " \\\\",
            "\\midrule",
        ]
        lines += [" & ".join(latex_escape(c) for c in row) + " \\\\" for row in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}}"]
        foot = [latex_escape(n) for n in self.notes] + (
            [f"\\emph{{{latex_escape(self.provenance)}}}"] if self.provenance else []
        )
        if foot:
            lines.append("\\par\\smallskip{\\footnotesize " + " ".join(foot) + "}")
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "≠": r"$\neq$",
    "→": r"$\to$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text)).replace("`", "")


# --------------------------------------------------------------------------------------------
# Reading files


def load_metrics(path: Path, stage: str) -> dict:
    """A metrics JSON; ``FileNotFoundError`` naming the file and the stage that writes it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: metrics file not found (written by `{stage}`; run it, or remove the row from params.yaml report:)"
        )
    return read_json(path)


def lookup(data: Mapping, dotted: str, path: Path) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; ``KeyError`` naming the file and the key."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"{path}: key '{dotted}' not found")
        node = node[part]
    return node


def units(n: int, unit: str) -> str:
    """``"23 identity groups"``: how many independent units a bootstrap resampled, and which."""
    return f"{n} {unit}s" if unit == "identity group" else f"{n} units ({unit})"


def plain(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class Reader:
    """Reads (and remembers) the files of one report build."""

    def __init__(self, cfg: ReportConfig):
        self.cfg = cfg
        self.read: set[Path] = set()
        self._audits: dict[Path, dict] = {}

    def evaluation(self, name: str) -> tuple[dict, dict, Path, Path]:
        """``(headline, details, headline path, details path)`` of ``evaluate@<name>``."""
        path = self.cfg.eval_dir / f"{name}.json"
        dpath = self.cfg.eval_dir / name / "details.json"
        head, details = load_metrics(path, f"evaluate@{name}"), load_metrics(dpath, f"evaluate@{name}")
        self.read |= {path, dpath}
        return head, details, path, dpath

    def predictions(self, name: str) -> Path:
        path = self.cfg.eval_dir / name / "predictions.parquet"
        self.read.add(path)
        return path

    def audit(self, name: str) -> tuple[dict, Path]:
        """``audit@<name>``'s metrics (read once: baseline rows, controls and shortcut tables share it)."""
        path = self.cfg.audit_dir / f"{name}.json"
        if path not in self._audits:
            self._audits[path] = load_metrics(path, f"audit@{name}")
        self.read.add(path)
        return self._audits[path], path

    def reference(self, path: Path, keys: tuple[str, ...]) -> dict:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: reference results file not found")
        with path.open(encoding="utf-8") as fh:
            ref = yaml.safe_load(fh)
        for key in keys:
            if key not in ref:
                raise KeyError(f"{path}: key '{key}' not found")
        self.read.add(path)
        return ref


# --------------------------------------------------------------------------------------------
# dvc.yaml sections derived from report: (tests/evaluation/test_reports.py checks dvc.yaml against these)


def results_variants(cfg: ReportConfig, params: Mapping) -> list[str]:
    """The scored variants of the results tables' rows (from ``evaluations`` / ``frank`` entries):
    the variants whose audit the tables' nuisance-probe rows read."""
    entries = {**params.get("frank", {}), **resolved_evaluations(params)}
    return sorted({entries[e]["variant"] for t in cfg.tables.values() for e in t.rows.values()})


def report_deps(cfg: ReportConfig, params: Mapping) -> list[str]:
    """Every file the report stage reads, sorted (its dvc.yaml deps: under metrics/, and the
    planted-leak controls' train manifests under the variants folder)."""
    files = {cfg.paper, cfg.notes}
    files |= {cfg.audit_dir / f"{v}.json" for v in results_variants(cfg, params)}
    for n in cfg.evaluation_names():
        files |= {cfg.eval_dir / f"{n}.json", cfg.eval_dir / n / "details.json"}
    files |= {cfg.eval_dir / n / "predictions.parquet" for n in cfg.compared_names()}
    files |= {cfg.audit_dir / f"{v}.json" for v in set(cfg.leakage.audits) | set(cfg.shortcut)}
    if cfg.controls is not None:
        files |= {cfg.audit_dir / f"{v}.json" for pair in cfg.controls.shortcut.values() for v in pair}
        files |= cfg.controls.leak_files(params, cfg.audit_dir)
    if cfg.backdoor is not None:
        files |= set(cfg.backdoor.files(params, cfg.eval_dir))
    return sorted(p.as_posix() for p in files)


def run_seeds(params: Mapping, run: str) -> list[int]:
    """Seeds of ``runs.<run>`` (its own ``seeds``, else ``run_defaults.seeds``)."""
    entry = params["runs"][run]
    seeds = entry.get("seeds", params.get("run_defaults", {}).get("seeds"))
    if seeds is None:
        raise KeyError(f"runs.{run}.seeds: not set and no run_defaults.seeds")
    return list(seeds)


def dvc_sections(cfg: ReportConfig, params: Mapping) -> dict:
    """Top-level ``plots:`` (per results table: ROC of its rows overlaid, validation macro-F1 per
    epoch of its runs' seeds overlaid) and ``artifacts:`` (the checkpoint folder of every run in a
    results table) for dvc.yaml."""
    plots, runs = [], set()
    evaluations = resolved_evaluations(params)
    train_dir = Path(params["train"]["metrics_dir"]).as_posix()
    models_dir = Path(params["train"]["models_dir"]).as_posix()
    for name, table in cfg.tables.items():
        evals = list(dict.fromkeys(table.rows.values()))
        plots.append(
            {
                f"{name}_roc": {
                    "title": f"{table.caption}: ROC real vs fake (seed-mean score)",
                    # .dvc/plots/runs.json: one colour per row (legend: the table's row names), y 0..1
                    "template": "runs",
                    "x_label": "false positive rate",
                    "y_label": "true positive rate",
                    "x": {(cfg.eval_dir / e / "roc.csv").as_posix(): "fpr" for e in evals},
                    "y": {(cfg.eval_dir / e / "roc.csv").as_posix(): "tpr" for e in evals},
                }
            }
        )
        # rows from evaluate@ have a trained run; frank@ rows (params frank:) have no checkpoint
        table_runs = list(dict.fromkeys(evaluations[e]["run"] for e in evals if e in evaluations))
        runs |= set(table_runs)
        curves = [f"{train_dir}/{r}/curves/seed{s}.tsv" for r in table_runs for s in run_seeds(params, r)]
        plots.append(
            {
                f"{name}_val_f1": {
                    "title": f"{table.caption}: validation macro-F1 per epoch",
                    "template": "runs_seeds",  # as runs.json, one dash per seed
                    "x_label": "epoch",
                    "y_label": "validation macro-F1",
                    "x": "epoch",
                    "y": {c: "val_macro_f1" for c in curves},
                }
            }
        )
    artifacts = {
        r: {
            "path": f"{models_dir}/{r}",
            "type": "model",
            "desc": f"selected checkpoints of run {r} (one seed<s>.pt per seed)",
        }
        for r in sorted(runs)
    }
    return {"plots": plots, "artifacts": artifacts}
