"""The ``backdoor`` table: clean accuracy / AUC, attack success rate and the poisoning audit per run.

One row per detector trained on the clean variant, then one per poisoned variant of it (each
``backdoor.experiments`` entry: a rate, mode and trigger). Cells, all in %:

- **Clean acc / AUC**: the run's own ``evaluate@<run>`` predictions on the untouched test split
  (3-class accuracy; real-vs-fake AUC of ``1 - p(real)``).
- **Missed without trigger**: the test items of the attacked class scored as the target class
  (argmax), the base rate the attack is read against.
- **ASR**: attack success rate, the triggered copies of those items (``backdoor@``'s
  ``triggered.parquet``) scored as the target class (argmax) -- for the clean row, what the
  trigger alone does without a backdoor.

Each is the seed mean ± seed sd with a percentile bootstrap interval that resamples identity
groups and seeds (:func:`dfpipe.scoring.stats.bootstrap_ci`); below
:data:`dfpipe.evaluation.protocol.MIN_UNITS` groups the cell says "n too small" instead. The audit
columns are ``backdoor@``'s per-seed figures (mean over seeds) of spectral signatures and activation
clustering in the target class, where the planted items carry their training label.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import model_validator

from dfpipe.core.config import RepoPath
from dfpipe.core.io import read_json
from dfpipe.core.manifest import LABELS
from dfpipe.evaluation.cells import interval, value_cell
from dfpipe.evaluation.crossdataset import IntervalSettings, _per_seed
from dfpipe.evaluation.protocol import MIN_UNITS
from dfpipe.scoring import metrics as M
from dfpipe.scoring import stats

AUDITS = (("spectral_signatures", "Spectral signatures"), ("activation_clustering", "Activation clustering"))


class BackdoorTable(IntervalSettings):
    """``report.backdoor``: ``rows`` detector label -> ``backdoor.experiments`` names (one row each,
    after the detector's clean row); ``dir``: ``backdoor.out_dir``; ``demo``: the caption and a
    note say the numbers are the demo's."""

    caption: str
    dir: RepoPath
    rows: dict[str, tuple[str, ...]]
    demo: bool

    @model_validator(mode="after")
    def _check(self) -> BackdoorTable:
        if not self.rows or not all(self.rows.values()):
            raise ValueError("backdoor needs rows, each with at least one experiment")
        return self

    def files(self, params: Mapping[str, Any], eval_dir: Path) -> list[Path]:
        """Every file the table reads (the report stage's deps): each experiment's record and
        triggered predictions, both runs' evaluate@ predictions and details."""
        experiments = (params.get("backdoor") or {}).get("experiments") or {}
        out = []
        for exp in sorted({e for es in self.rows.values() for e in es}):
            if exp not in experiments:
                raise KeyError(f"report.backdoor: experiment {exp!r} is not in backdoor.experiments")
            out += [self.dir / f"{exp}.json", self.dir / exp / "triggered.parquet"]
            for role in ("clean", "poisoned"):
                run = experiments[exp][role]
                out += [eval_dir / run / "predictions.parquet", eval_dir / run / "details.json"]
        return sorted(set(out))


Metric = Callable[[np.ndarray, np.ndarray], float]


def scored_as(target: int) -> Metric:
    """Share of items whose argmax is ``target`` (the attack success rate on triggered items)."""
    return lambda y, p: float(np.mean(p.argmax(1) == target))


def _units(groups: np.ndarray) -> int:
    return len(np.unique(np.asarray(groups).astype(str)))


def _cell(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, fn: Metric, cfg: BackdoorTable) -> str:
    """``"mean ± sd [low, high]"`` in %, or ``[n too small: k groups]`` below the unit minimum."""
    values = [fn(labels, p) for p in probs]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    n_units = _units(groups)
    if n_units < MIN_UNITS:
        ci = interval(None, None, n_units)
    else:
        low, high = stats.bootstrap_ci(labels, probs, groups, cfg.bootstrap, cfg.seed, cfg.ci_level, {"m": fn})["m"]
        ci = interval(low, high)
    return value_cell(float(np.mean(values)), sd, ci)


def _audit_cell(record: Mapping, role: str, method: str) -> str:
    """``"P 91.2 / R 95.0 (33 flagged)"`` in the target class, mean over seeds; P/R n/a on clean data."""
    per_seed = [a[method]["target_class"] for a in record["roles"][role]["audit"].values()]
    flagged = np.mean([a["flagged"] for a in per_seed])
    share = 100 * np.mean([a["flagged_share"] for a in per_seed])

    def mean(key: str) -> str:
        vals = [a[key] for a in per_seed if a[key] is not None]
        return "n/a" if not vals else f"{100 * float(np.mean(vals)):.1f}"

    if all(a["planted"] == 0 for a in per_seed):
        return f"{flagged:g} flagged (all false positives; {share:.1f}% of the class)"
    return f"P {mean('precision')} / R {mean('recall')} ({flagged:g} flagged)"


def backdoor_rows(
    cfg: BackdoorTable, eval_dir: Path, read: set[Path]
) -> tuple[list[str], list[list[str]], list[str], list[str]]:
    """``(columns, rows, notes, evaluations)`` of the table; ``read`` collects the files opened."""
    columns = [
        "Detector",
        "Training data",
        "Clean acc [CI]",
        "Clean AUC [CI]",
        "Missed without trigger [CI]",
        "ASR: triggered scored target [CI]",
        "Units",
    ] + [f"{label} (target class)" for _, label in AUDITS]
    rows: list[list[str]] = []
    evaluations: list[str] = []
    settings = set()
    all_records: list[dict] = []
    for detector, experiments in cfg.rows.items():
        records = {}
        for exp in experiments:
            path = cfg.dir / f"{exp}.json"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: not found (written by `backdoor@{exp}`)")
            read.add(path)
            records[exp] = read_json(path)
            all_records.append(records[exp])
        clean_done: set[str] = set()
        for exp, rec in records.items():
            poison = rec["poison"]
            source, target = int(poison["source_label"]), int(poison["target_label"])
            settings.add((LABELS[source], LABELS[target]))
            trig_path = cfg.dir / exp / "triggered.parquet"
            read.add(trig_path)
            trig = pd.read_parquet(trig_path)
            roles = [("clean", rec["clean_run"])] if rec["clean_run"] not in clean_done else []
            clean_done.add(rec["clean_run"])
            for role, run in roles + [("poisoned", rec["poisoned_run"])]:
                evaluations.append(run)
                pred_path = eval_dir / run / "predictions.parquet"
                if not pred_path.is_file():
                    raise FileNotFoundError(f"{pred_path}: predictions not found (written by `evaluate@{run}`)")
                read.add(pred_path)
                items, probs, _ = _per_seed(pd.read_parquet(pred_path), pred_path)
                labels, groups = items["label"].to_numpy(np.int64), M.item_groups(items)
                attacked = labels == source
                t_items, t_probs, _ = _per_seed(trig[trig["role"] == role].drop(columns="role"), trig_path)
                t_groups = M.item_groups(t_items)
                if role == "clean":
                    data = f"{rec['clean_variant']} (clean)"
                else:
                    trig_cfg = poison["trigger"]
                    data = (
                        f"{rec['poisoned_variant']}: {poison['mode']} label, {trig_cfg['kind']} trigger, "
                        f"rate {100 * poison['rate']:g}% of {LABELS[source if poison['mode'] == 'dirty' else target]}"
                    )
                rows.append(
                    [
                        detector if role == "clean" or not rows or rows[-1][0] != detector else "",
                        data,
                        _cell(labels, probs, groups, stats.HEADLINE["acc"], cfg),
                        _cell(labels, probs, groups, stats.HEADLINE["auc_real_fake"], cfg),
                        _cell(labels[attacked], probs[:, attacked], groups[attacked], scored_as(target), cfg),
                        _cell(t_items["label"].to_numpy(np.int64), t_probs, t_groups, scored_as(target), cfg),
                        f"{_units(groups)} / {_units(t_groups)} identity groups",
                    ]
                    + [_audit_cell(rec, role, method) for method, _ in AUDITS]
                )
    pairs = ", ".join(f"{s} -> {t}" for s, t in sorted(settings))

    def audit_set(key: str) -> str:
        return ", ".join(dict.fromkeys(f"{r['audit'][key]:g}" for r in all_records))

    notes = [
        f"Attack ({pairs}): ASR = share of the test items of the attacked class, trigger added, scored (argmax) "
        "as the target class; 'Missed without trigger' = the same items without it. On the clean row the ASR "
        "shows what the trigger does to a detector that was never poisoned.",
        f"In %: seed mean ± seed sd [{100 * cfg.ci_level:g}% CI]: percentile bootstrap over identity groups and seeds, "
        f"{cfg.bootstrap} resamples; 'n too small' below {MIN_UNITS} groups. Units: identity groups of the "
        "test split / of the triggered items.",
        "Audit (no clean reference set; the run's penultimate features of its own training items, per training "
        f"label): spectral signatures (Tran et al., NeurIPS 2018) flag {audit_set('ss_factor')} x rate of each "
        f"class; activation clustering (Chen et al., 2018) flags the smaller of two k-means clusters (PCA to "
        f"{audit_set('ac_dims')} dims) when it holds at most {audit_set('ac_max_share')} of the class. P / R: "
        "precision / recall against the planted items in the target class (where they carry their training "
        "label), mean over seeds. On a clean row every flag is a false positive: spectral signatures' expected "
        "share is that multiple of the rate by construction, activation clustering's at most its share threshold.",
    ]
    if cfg.demo:
        notes.insert(
            0,
            "DEMO NUMBERS: tiny generated data (split.scale 0.04), 64 px crops, a few optimizer updates; they "
            "exercise every path of the experiment and say nothing about real detectors.",
        )
    return columns, rows, notes, list(dict.fromkeys(evaluations))


def caption(cfg: BackdoorTable) -> str:
    return f"{cfg.caption} (demo numbers)" if cfg.demo else cfg.caption
