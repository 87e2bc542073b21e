"""Reading a variant split's face crops in manifest order, in batches: the input of every feature cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dfpipe.core.io import sha256_bytes
from dfpipe.core.manifest import VARIANT_SCHEMA, read_table
from dfpipe.core.shards import ShardReader, ShardWriter


def ids_digest(ids: Sequence[str]) -> str:
    """Hash of the ordered manifest ids: ties a cache to the exact manifest rows it mirrors."""
    return sha256_bytes("\n".join(ids).encode("utf-8"))


def read_split_manifest(split_dir: Path) -> pd.DataFrame:
    """A variant split's manifest; rows of another split are an error naming the file."""
    df = read_table(split_dir / "manifest.parquet", VARIANT_SCHEMA)
    bad = sorted(set(df["split"]) - {split_dir.name})
    if bad:
        raise ValueError(f"{split_dir / 'manifest.parquet'}: rows with split {bad} in the {split_dir.name} manifest")
    return df


def iter_image_batches(split_dir: Path, df: pd.DataFrame, batch_size: int, desc: str):
    """Yield ``(start, images)`` in manifest order; ``images`` ``(n, S, S, 3)`` uint8.

    A shard that is missing, not uint8 RGB, or too short is an error naming the file.
    """
    reader = ShardReader(split_dir)
    shape = None
    for start in tqdm(range(0, len(df), batch_size), desc=desc, unit="batch", leave=False):
        rows = df.iloc[start : start + batch_size]
        for name in sorted(set(rows["shard"])):
            try:
                arr = reader.shard(name)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{split_dir / name}: cannot read image shard: {exc}") from exc
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                raise ValueError(f"{split_dir / name}: expected uint8 (N, S, S, 3) RGB, got {arr.dtype} {arr.shape}")
            top = int(rows.loc[rows["shard"] == name, "offset"].max())
            if top >= arr.shape[0]:
                raise ValueError(f"{split_dir / name}: offset {top} out of range ({arr.shape[0]} items)")
            if shape is None:
                shape = arr.shape[1:]
            elif arr.shape[1:] != shape:
                raise ValueError(f"{split_dir / name}: crop shape {arr.shape[1:]} differs from {shape}")
        yield start, reader.gather(list(rows["shard"]), rows["offset"].to_numpy())


def open_cache(
    split_dir: Path, out_dir: Path, prefix: str, shard_size: int
) -> tuple[pd.DataFrame, list[str], ShardWriter]:
    """Start a feature cache that mirrors one variant split row for row: ``(manifest, ids, writer)``.

    Refuses duplicate ids (cache rows are matched to the manifest by position and id) and removes
    the ``<prefix>-*.npy`` shards of an earlier build (a smaller rebuild must not leave stale ones).
    """
    df = read_split_manifest(split_dir)
    ids = df["id"].tolist()
    if len(set(ids)) != len(ids):
        raise ValueError(f"{split_dir / 'manifest.parquet'}: duplicate ids")
    for old in sorted(out_dir.glob(f"{prefix}-*.npy")):
        old.unlink()
    return df, ids, ShardWriter(out_dir, prefix=prefix, shard_size=shard_size)
