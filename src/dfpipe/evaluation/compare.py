"""Paired comparison of two evaluations scored on the identical test items: the difference of
their headline metrics with a paired bootstrap interval over seeds x video resamples
(:func:`dfpipe.scoring.stats.paired_bootstrap`), read from their ``predictions.parquet``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dfpipe.evaluation.predictions import read_predictions, stack_seeds
from dfpipe.scoring import metrics as M
from dfpipe.scoring import stats


def load_scores(path: Path):
    """``(items, (S, N, K) probs)`` of one evaluation's predictions file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: predictions not found (written by `evaluate@{Path(path).parent.name}`)")
    return stack_seeds(read_predictions(path))


def compare(path_a: Path, path_b: Path, n_boot: int, seed: int, level: float) -> dict:
    """``a - b`` per headline metric with a paired interval, or ``{"note": why not}`` when the two
    evaluations did not score the identical items (a paired difference needs the same items)."""
    items_a, pa = load_scores(path_a)
    items_b, pb = load_scores(path_b)
    if not (items_a["id"].equals(items_b["id"]) and items_a["label"].equals(items_b["label"])):
        return {"note": "not paired: the two evaluations scored different test items"}
    if pa.shape[2] != pb.shape[2]:
        return {"note": f"not paired: {pa.shape[2]} vs {pb.shape[2]} classes"}
    groups = M.item_groups(items_a)
    out = stats.paired_bootstrap(items_a["label"].to_numpy(np.int64), pa, pb, groups, n_boot, seed, level)
    return M.nan_to_none(
        {
            "n": int(len(items_a)),
            "seeds_a": int(pa.shape[0]),
            "seeds_b": int(pb.shape[0]),
            "unit": M.group_unit(items_a),
            "n_units": int(len(np.unique(groups.astype(str)))),
            "metrics": out,
        }
    )
