"""Cross-dataset table: detectors trained on FF++ scored on other datasets' official test lists.

Layout as DeepfakeBench's generalisation tables (Yan et al., NeurIPS 2023 D&B, arXiv 2307.01426):
one row per detector, one column group per test set, frame-level AUC and video-level AUC, both
binary real vs fake. For the 3-class models the fake score is ``p(fake) + p(edited) = 1 - p(real)``
(:func:`dfpipe.scoring.metrics.real_vs_fake`); video scores are the mean frame probability of
each ``(method, video_id)`` (:func:`dfpipe.scoring.metrics.video_level`).

Each cell is read from ``metrics/eval/<evaluation>/predictions.parquet`` (an ``evaluate@`` out):
the mean over seeds (column ``seed`` when present) and a percentile cluster-bootstrap interval
that resamples whole videos and recomputes the seed-mean AUC on each draw, so the interval covers
test-set sampling, not seed noise (the seed sd is printed beside it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from dfpipe.core.config import Config
from dfpipe.evaluation.cells import interval, value_cell
from dfpipe.scoring import metrics as M
from dfpipe.scoring import stats


class IntervalSettings(Config):
    """The bootstrap interval of a binary-score table (``binary_with_ci``): resamples, level, seed."""

    bootstrap: int = Field(ge=1)
    ci_level: float = Field(gt=0, lt=1)
    seed: int = Field(ge=0)


class CrossDatasetTable(IntervalSettings):
    """``report.crossdataset`` of params.yaml.

    ``test_sets``: column label -> test-set variant (e.g. ``Celeb-DF v2: celebdf_test``);
    ``detectors``: row label -> {column label: evaluation name} (an evaluate@ of the row's model
    on that column's variant); ``bootstrap``/``ci_level``/``seed``: the interval's settings.
    """

    test_sets: dict[str, str]
    detectors: dict[str, dict[str, str]]

    @model_validator(mode="after")
    def _check(self) -> CrossDatasetTable:
        if not self.test_sets or not self.detectors:
            raise ValueError("crossdataset needs test_sets and detectors")
        for row, cells in self.detectors.items():
            unknown = sorted(set(cells) - set(self.test_sets))
            if unknown:
                raise ValueError(f"detectors.{row}: columns {unknown} not in test_sets {sorted(self.test_sets)}")
        return self

    def evaluation_names(self) -> list[str]:
        return sorted({e for cells in self.detectors.values() for e in cells.values()})


def _per_seed(pred: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, np.ndarray, list[int]]:
    """Rows of the first seed (ids sorted) and ``(S, N, K)`` probabilities of every seed, aligned by id."""
    seeds = sorted(int(s) for s in pred["seed"].unique()) if "seed" in pred.columns else [0]
    cols = [c for c in pred.columns if c.startswith("p_")]
    if not cols:
        raise KeyError(f"{path}: no p_<class> probability columns")
    frames = [pred[pred["seed"] == s] if "seed" in pred.columns else pred for s in seeds]
    frames = [f.sort_values("id", kind="stable").reset_index(drop=True) for f in frames]
    for s, f in zip(seeds, frames):
        if not f["id"].equals(frames[0]["id"]):
            raise ValueError(f"{path}: seed {s} scored other items than seed {seeds[0]}")
    order = [c for c in ("p_real", "p_fake", "p_edited") if c in cols] + [
        c for c in cols if c not in ("p_real", "p_fake", "p_edited")
    ]
    if order[0] != "p_real":
        raise KeyError(f"{path}: no p_real column (binary score = 1 - p_real)")
    probs = np.stack([f[order].to_numpy(np.float64) for f in frames])
    return frames[0], probs, seeds


def binary_with_ci(
    y: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, level: float, metric=M.binary_auc
) -> dict:
    """Seed-mean ``metric(y, score)`` of ``scores`` ``(S, N)`` for binary ``y`` ``(N,)``, seed sd,
    cluster-bootstrap CI of the seed mean.

    ``groups`` ``(N,)``: resampling unit (video key of frames; each item for video-level rows).
    Returns ``{"value", "sd", "low", "high", "n", "seeds"}``; ``None`` values where undefined
    (one class absent).
    """
    per_seed = np.array([metric(y, s) for s in scores])
    boot = np.asarray(
        [np.mean([metric(y[idx], s[idx]) for s in scores]) for idx in stats.draw_resamples(groups, n_boot, seed)]
    )
    ok = boot[np.isfinite(boot)]
    alpha = (1.0 - level) / 2.0

    def val(x):
        return None if not np.isfinite(x) else float(x)

    return {
        "value": val(per_seed.mean()) if len(per_seed) else None,
        "sd": val(per_seed.std(ddof=1)) if len(per_seed) > 1 else None,
        "low": val(np.quantile(ok, alpha)) if ok.size else None,
        "high": val(np.quantile(ok, 1.0 - alpha)) if ok.size else None,
        "n": int(len(y)),
        "seeds": int(len(scores)),
    }


def auc_with_ci(y: np.ndarray, scores: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, level: float) -> dict:
    """:func:`binary_with_ci` of the binary AUC, the value under ``"auc"``."""
    res = binary_with_ci(y, scores, groups, n_boot, seed, level, M.binary_auc)
    return {"auc": res.pop("value"), **res}


def score_predictions(pred: pd.DataFrame, path: Path, n_boot: int, seed: int, level: float) -> dict:
    """``{"frame": auc_with_ci(...), "video": auc_with_ci(...) or None}`` of one predictions table."""
    rows, probs, _ = _per_seed(pred, path)
    y, _ = M.real_vs_fake(rows["label"].to_numpy(np.int64), probs[0])
    scores = 1.0 - probs[:, :, 0]
    out = {"frame": auc_with_ci(y, scores, M.item_groups(rows), n_boot, seed, level), "video": None}
    vids = [M.video_level(rows, p) for p in probs]
    if len(vids[0][0]):
        vy, _ = M.real_vs_fake(vids[0][0]["label"].to_numpy(np.int64), vids[0][1])
        vscores = np.stack([1.0 - vp[:, 0] for _, vp in vids])
        out["video"] = auc_with_ci(vy, vscores, vids[0][0]["key"].to_numpy(), n_boot, seed, level)
    return out


def fmt_cell(res: dict | None) -> str:
    """``"71.23 [65.10, 77.02]"`` (percent), ``"± sd"`` added for several seeds; ``"n/a"`` if undefined."""
    return fmt_value(None if res is None else {**res, "value": res["auc"]})


def fmt_value(res: dict | None) -> str:
    """:func:`fmt_cell` of a :func:`binary_with_ci` result."""
    if res is None or res["value"] is None:
        return "n/a"
    return value_cell(res["value"], res.get("sd"), None if res["low"] is None else interval(res["low"], res["high"]))


def crossdataset_rows(
    cfg: CrossDatasetTable, eval_dir: Path, read: set[Path] | None = None
) -> tuple[list[str], list[list[str]], dict]:
    """Columns, formatted rows and the raw numbers ``{row: {column: score_predictions(...)}}``.

    ``read`` collects the files opened (the report lists them). The ``init`` column is the run's
    ``init`` (pretrained weights key) from ``metrics/eval/<evaluation>/details.json`` ``run.init``,
    ``scratch`` when the run has none.
    """
    from dfpipe.core.io import read_json

    read = read if read is not None else set()
    columns = ["Detector", "init"]
    for col in cfg.test_sets:
        columns += [f"{col} frame AUC", f"{col} video AUC"]
    rows, raw = [], {}
    for label, cells in cfg.detectors.items():
        inits = set()
        row_raw = {}
        cells_txt = []
        for col in cfg.test_sets:
            name = cells.get(col)
            if name is None:
                cells_txt += ["", ""]
                continue
            path = eval_dir / name / "predictions.parquet"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: predictions not found (written by `evaluate@{name}`)")
            head = eval_dir / name / "details.json"
            if head.is_file():
                inits.add(str((read_json(head).get("run") or {}).get("init", "scratch")))
                read.add(head)
            read.add(path)
            res = score_predictions(pd.read_parquet(path), path, cfg.bootstrap, cfg.seed, cfg.ci_level)
            row_raw[col] = res
            cells_txt += [fmt_cell(res["frame"]), fmt_cell(res["video"])]
        raw[label] = row_raw
        rows.append([label, "/".join(sorted(inits)) or "scratch"] + cells_txt)
    return columns, rows, raw


def notes(cfg: CrossDatasetTable) -> list[str]:
    sets = ", ".join(f"{k}: variant {v}" for k, v in cfg.test_sets.items())
    return [
        f"Test sets (official test lists as test_set variants): {sets}.",
        "AUC of real vs fake (fake score 1 - p(real)) in %; video AUC on the mean frame probability per video.",
        f"Mean over seeds (± sd when several); [{100 * cfg.ci_level:g}% CI]: percentile bootstrap over videos, "
        f"{cfg.bootstrap} resamples, seed {cfg.seed}.",
    ]
