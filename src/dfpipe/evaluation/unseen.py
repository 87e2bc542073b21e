"""Unseen-generator tables: detectors trained on one generator (+ real) scored per test generator.

Protocol and layout of Wang et al. (CVPR 2020, CNNDetection), reused by UniversalFakeDetect (Ojha et
al. CVPR 2023) and LGrad (Tan et al. CVPR 2023): one row per detector, one column per test generator,
average precision and accuracy, and the mean over the generators not seen in training. A cell is
binary real vs that generator: the test split's real items plus that generator's items (the
``source`` column), fake score ``1 - p(real)``; accuracy at each seed's threshold chosen on the
training variant's val split (``details.json`` ``val_threshold``, :func:`dfpipe.scoring.metrics.val_threshold`),
never tuned on test -- the original UniversalFakeDetect code's oracle threshold on each test set is a
known flaw; rows without a recorded val threshold use 0.5, the softmax argmax. Numbers come from
``metrics/eval/<evaluation>/predictions.parquet`` as in the
cross-dataset table (:mod:`dfpipe.evaluation.crossdataset`): seed mean, seed sd and a cluster
bootstrap interval of the seed mean. Rows whose features came from a randomly initialised encoder
(``details.json`` ``features.random``) are labelled "random features (demo)".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import model_validator

from dfpipe.core.manifest import is_fake
from dfpipe.evaluation.crossdataset import IntervalSettings, _per_seed, binary_with_ci, fmt_value
from dfpipe.scoring import metrics as M


def binary_acc(y: np.ndarray, score: np.ndarray) -> float:
    """Accuracy of ``score > 0.5`` (= argmax of a 2-class softmax) against binary ``y``."""
    return float(np.mean((np.asarray(score) > 0.5) == np.asarray(y).astype(bool)))


METRICS = {"ap": ("AP", M.binary_ap), "acc": ("Acc", binary_acc)}


class UnseenTable(IntervalSettings):
    """``report.unseen``: ``rows`` label -> evaluation; ``generators`` column label -> test source;
    ``seen``: the sources the rows trained on (marked "(train)", left out of the mean)."""

    rows: dict[str, str]
    generators: dict[str, str]
    seen: tuple[str, ...]

    @model_validator(mode="after")
    def _check(self) -> UnseenTable:
        if not self.rows or not self.generators:
            raise ValueError("unseen needs rows and generators")
        unknown = sorted(set(self.seen) - set(self.generators.values()))
        if unknown:
            raise ValueError(f"seen {unknown} are not generator columns {sorted(self.generators.values())}")
        return self

    def evaluation_names(self) -> list[str]:
        return sorted(set(self.rows.values()))


@dataclass(frozen=True)
class GeneratorCells:
    """One predictions table cut into the protocol's cells: a cell is the test split's real items
    plus one generator's items (``source``), scored by the fake score ``1 - p(real)``.

    ``scores`` ``(S, N)`` per seed (items sorted by id, :func:`dfpipe.evaluation.crossdataset._per_seed`),
    ``real`` ``(N,)``, ``sources`` ``(N,)``, ``groups`` ``(N,)``: the identity groups a bootstrap resamples.
    """

    path: Path
    seeds: list[int]
    scores: np.ndarray
    real: np.ndarray
    sources: np.ndarray
    groups: np.ndarray

    @classmethod
    def read(cls, pred: pd.DataFrame, path: Path) -> GeneratorCells:
        rows, probs, seeds = _per_seed(pred, path)
        real = ~is_fake(rows["label"].to_numpy(np.int64))
        scores = 1.0 - probs[:, :, 0]
        return cls(path, seeds, scores, real, rows["source"].astype(str).to_numpy(), M.item_groups(rows))

    def cell(self, source: str, idx: np.ndarray | None = None) -> np.ndarray:
        """Indices (of ``idx``, default every item, in its order) of the real items and those of
        ``source``; ``KeyError`` when the table holds no item of ``source``."""
        if not (self.sources == source).any():
            raise KeyError(f"{self.path}: no test item of source {source!r} (is it in the variant's test split?)")
        idx = np.arange(len(self.real)) if idx is None else idx
        return idx[self.real[idx] | (self.sources[idx] == source)]

    def labels(self, sel: np.ndarray) -> np.ndarray:
        """Binary labels (1 = generated) of the items ``sel``."""
        return (~self.real[sel]).astype(np.int64)


def score_generators(
    pred: pd.DataFrame, path: Path, cfg: UnseenTable, thresholds: dict[str, float] | None = None
) -> dict:
    """``{source: {metric: binary_with_ci(...)}}`` for every generator column of one predictions table.

    ``thresholds``: seed -> val-chosen threshold of the fake score (missing: 0.5). Accuracy is
    computed on scores shifted per seed by ``0.5 - t``, so ``score > 0.5`` there is ``score > t``;
    AP is rank-based and unaffected by the shift.
    """
    cells = GeneratorCells.read(pred, path)
    shift = np.array([0.5 - (thresholds or {}).get(str(s), 0.5) for s in cells.seeds])[:, None]
    out = {}
    for src in cfg.generators.values():
        sel = cells.cell(src)
        y, scores = cells.labels(sel), cells.scores[:, sel]
        out[src] = {
            m: binary_with_ci(
                y,
                scores + shift if m == "acc" else scores,
                cells.groups[sel],
                cfg.bootstrap,
                cfg.seed,
                cfg.ci_level,
                fn,
            )
            for m, (_, fn) in METRICS.items()
        }
    return out


def unseen_tables(
    cfg: UnseenTable, eval_dir: Path, read: set[Path] | None = None
) -> list[tuple[str, str, list, list, list]]:
    """``[(name, caption, columns, rows, notes)]`` for AP and accuracy; ``read`` collects the files opened."""
    from dfpipe.core.io import read_json

    read = read if read is not None else set()
    scored, labels, budgets, random_rows, no_threshold = {}, {}, {}, [], []
    for label, name in cfg.rows.items():
        path = eval_dir / name / "predictions.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: predictions not found (written by `evaluate@{name}`)")
        details_path = eval_dir / name / "details.json"
        details = read_json(details_path) if details_path.is_file() else {}
        if details:
            read.add(details_path)
        if (details.get("features") or {}).get("random"):
            label = f"{label} [random features (demo)]"
            random_rows.append(name)
        if "val_threshold" not in details:
            no_threshold.append(name)
        read.add(path)
        scored[name] = score_generators(pd.read_parquet(path), path, cfg, details.get("val_threshold"))
        labels[name] = label
        run = details.get("run", {})
        budgets[name] = f"{run.get('stopping', 'n/a')}; {run.get('images_seen', 'n/a')} images seen"
    cols = [f"{c} (train)" if s in cfg.seen else c for c, s in cfg.generators.items()]
    notes = [
        "Binary real vs each generator (the test split's real items + that generator's), fake score 1 - p(real), "
        "in %. Acc at each seed's threshold chosen on the training variant's val split (balanced accuracy; "
        "never tuned on test); AP needs no threshold.",
        f"Seed mean (± sd when several); [{100 * cfg.ci_level:g}% CI]: percentile bootstrap over identity groups, "
        f"{cfg.bootstrap} resamples. Mean: unweighted over the unseen columns' seed means.",
    ]
    rules = sorted({b.split(";")[0] for b in budgets.values()})
    notes.append(
        (
            f"Training: every row stops by one rule ({rules[0]}; the best val epoch is kept). "
            if len(rules) == 1
            else f"Training: ROWS STOP BY DIFFERENT RULES ({', '.join(rules)}): their budgets are not comparable. "
        )
        + "Images seen = what each seed actually trained on (per seed when they differ; Frank et al.: one "
        "L-BFGS objective evaluation = one pass over the training images)."
    )
    if no_threshold:
        notes.append(f"{', '.join(no_threshold)}: no val threshold recorded; Acc at 0.5 (the softmax argmax).")
    if random_rows:
        notes.append(
            f"{', '.join(random_rows)}: the frozen encoder is randomly initialised (no pretrained "
            "checkpoint offline); these rows exercise the code path, not the method."
        )
    out = []
    for metric, (title, _) in METRICS.items():
        rows = []
        for name, res in scored.items():
            unseen = [
                res[s][metric]["value"]
                for s in cfg.generators.values()
                if s not in cfg.seen and res[s][metric]["value"] is not None
            ]
            mean = sum(unseen) / len(unseen) if unseen else None
            rows.append(
                [labels[name], name]
                + [fmt_value(res[s][metric]) for s in cfg.generators.values()]
                + ["n/a" if mean is None else f"{100 * mean:.2f}", budgets[name]]
            )
        out.append(
            (
                f"unseen_{metric}",
                f"Unseen generators: {title} per test generator (trained on {', '.join(cfg.seen)} + real)",
                ["Detector", "Evaluation"] + cols + ["Mean (unseen)", "Training"],
                rows,
                notes,
            )
        )
    return out
