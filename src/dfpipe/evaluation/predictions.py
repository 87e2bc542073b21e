"""Predictions files: one Parquet per evaluation with a ``seed`` column and one ``p_<class>``
column per class, written deterministically and read back as per-seed frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dfpipe.core.io import atomic_path


def prob_columns(frame: pd.DataFrame) -> np.ndarray:
    """``(N, K)`` float64 probabilities from the ``p_<class>`` columns of a predictions frame."""
    return frame[[c for c in frame.columns if c.startswith("p_")]].to_numpy(np.float64)


def stack_seeds(frames: dict[int, pd.DataFrame]) -> tuple[pd.DataFrame, np.ndarray]:
    """``(items, (S, N, K) probs)`` of per-seed aligned frames; every seed must score the same items."""
    if not frames:
        raise ValueError("no seed to evaluate")
    seeds = sorted(frames)
    first = frames[seeds[0]]
    for s in seeds[1:]:
        if not frames[s]["id"].equals(first["id"]):
            raise ValueError(f"seed {s} scored other items than seed {seeds[0]}")
    cols = ["id", "source", "method", "video_id", "label"] + (["group"] if "group" in first.columns else [])
    items = first[cols].reset_index(drop=True)
    return items, np.stack([prob_columns(frames[s]) for s in seeds])


def write_predictions(frames: dict[int, pd.DataFrame], path: str | Path) -> None:
    """Predictions Parquet with an int ``seed`` column (one row per trained seed and item),
    deterministic (no pandas metadata)."""
    table = pd.concat([f.assign(seed=np.int64(s)) for s, f in sorted(frames.items())], ignore_index=True)
    write_frame(table[["seed"] + [c for c in table.columns if c != "seed"]], path)


def write_frame(frame: pd.DataFrame, path: str | Path) -> None:
    """``frame`` as deterministic Parquet: no pandas metadata or index, zstd, written atomically."""
    arrow = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp, compression="zstd")


def read_predictions(path: str | Path) -> dict[int, pd.DataFrame]:
    """``{seed: frame}`` from :func:`write_predictions`' file."""
    table = pd.read_parquet(path)
    return {int(s): g.drop(columns="seed").reset_index(drop=True) for s, g in table.groupby("seed", sort=True)}
