"""Leakage audit of a materialised variant: group, video, exact and near-duplicate leaks.

Reads ``<variants_dir>/<name>/{train,val,eval}/manifest.parquet`` and the shards they point at,
and counts, across every pair of splits:

* group leaks: union-find groups of ``group_keys`` (recomputed here, not trusted from
  ``split_group``) with items in more than one split;
* video leaks: non-empty ``video_id`` values in more than one split;
* exact duplicates: identical pixels (content hash recomputed from the shards; a mismatch with the
  manifest's ``content_hash`` is an error) in more than one split;
* near duplicates: pairs of items in different splits whose 64-bit DCT perceptual hashes
  (:func:`phash`) differ in at most ``hamming_threshold`` bits, exact duplicates excluded.

A variant declared ``leak_free`` fails on any group leak, video leak or exact duplicate; near
duplicates are reported (a perceptual hash also matches unrelated look-alikes).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from pydantic import Field
from tqdm import tqdm

from dfpipe.core.config import Config, RepoPath

from dfpipe.core.io import array_hash, resolve_inside
from dfpipe.core.manifest import SPLITS, VARIANT_SCHEMA, read_table
from dfpipe.core.shards import ShardReader
from dfpipe.splits.groups import canonical_groups


class AuditConfig(Config):
    """``params.yaml`` ``audit:`` settings."""

    hamming_threshold: int = Field(ge=0, lt=32)  # near duplicate: pHash Hamming distance <= this (of 64 bits)
    max_examples: int = Field(ge=0)  # examples listed per finding in the markdown report
    out_dir: RepoPath                # metrics/audit


class LeakError(RuntimeError):
    """A variant declared leak-free has a group, video or exact-duplicate leak."""


def phash(image: np.ndarray) -> np.uint64:
    """64-bit DCT perceptual hash of an RGB ``(H, W, 3)`` or gray ``(H, W)`` uint8 image.

    Zauner (2010), "Implementation and Benchmarking of Perceptual Image Hash Functions": gray,
    resize to 32x32, 2-D DCT, keep the 8x8 lowest frequencies, bit = coefficient > median of the
    63 non-DC coefficients. Bit 63 is coefficient (0, 0).
    """
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    block = cv2.dct(small)[:8, :8].ravel()
    bits = block > np.median(block[1:])
    return np.uint64(int.from_bytes(np.packbits(bits).tobytes(), "big"))


def near_pairs(a: np.ndarray, b: np.ndarray, threshold: int, chunk_elems: int = 1 << 23) -> np.ndarray:
    """Index pairs ``(i, j)`` with ``popcount(a[i] ^ b[j]) <= threshold``; shape ``(K, 2)``, sorted.

    ``a``, ``b``: uint64 hash arrays. Memory is bounded by ``chunk_elems`` uint64s per block.
    """
    out = []
    if len(a) and len(b):
        step = max(1, chunk_elems // len(b))
        for start in range(0, len(a), step):
            dist = np.bitwise_count(a[start:start + step, None] ^ b[None, :])
            i, j = np.nonzero(dist <= threshold)
            out.append(np.stack([i + start, j], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def load_variant(variant_dir: Path) -> pd.DataFrame:
    """All rows of the variant's split manifests, with ``root`` (the split directory) added."""
    frames = []
    for s in SPLITS:
        split_dir = resolve_inside(variant_dir, s)
        df = read_table(split_dir / "manifest.parquet", VARIANT_SCHEMA)
        wrong = sorted(set(df["split"]) - {s})
        if wrong:
            raise ValueError(f"{split_dir / 'manifest.parquet'}: rows with split {wrong}, expected {s!r}")
        df["root"] = str(split_dir)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def hash_pixels(rows: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Content hash (:func:`dfpipe.core.io.array_hash`) and pHash of every row's image, in row order."""
    readers: dict[str, ShardReader] = {}
    sha, ph = [], np.empty(len(rows), dtype=np.uint64)
    for k, row in enumerate(tqdm(rows.itertuples(index=False), total=len(rows), desc="hash", unit="img", leave=False)):
        img = readers.setdefault(row.root, ShardReader(row.root)).get(row.shard, row.offset)
        sha.append(array_hash(img))
        ph[k] = phash(img)
    return sha, ph


def _spread(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    """Values of column ``key`` present in more than one split, with per-split item counts."""
    sub = rows[rows[key] != ""]
    table = sub.groupby([key, "split"]).size().unstack(fill_value=0)
    table = table.reindex(columns=[s for s in SPLITS if s in table.columns])
    table = table[(table > 0).sum(axis=1) > 1]
    # largest first (whole videos before single images), then by key: a stable, readable order
    order = sorted(table.index, key=lambda k: (-int(table.loc[k].sum()), str(k)))
    return table.loc[order]


def audit_variant(name: str, variant_dir: Path, leak_free: bool, cfg: AuditConfig) -> tuple[dict, str]:
    """Audit one variant; return ``(metrics, markdown)``. Raises ``ValueError`` on corrupt data.

    ``metrics`` holds counts only (DVC metrics); ``markdown`` lists up to ``cfg.max_examples``
    examples of each finding.
    """
    rows = load_variant(variant_dir)
    rows["group"] = canonical_groups(rows["id"].tolist(), rows["group_keys"].tolist())
    sha, ph = hash_pixels(rows)
    bad = [i for i, (a, b) in enumerate(zip(sha, rows["content_hash"])) if a != b]
    if bad:
        raise ValueError(f"{variant_dir}: {len(bad)} items' pixels do not match their content_hash, "
                         f"e.g. {rows['id'].iloc[bad[0]]!r} in {rows['root'].iloc[bad[0]]}")
    rows["sha"] = sha

    groups = _spread(rows, "group")
    videos = _spread(rows, "video_id")
    exact = _spread(rows, "sha")
    leak_groups_src = rows[rows["group"].isin(groups.index)].groupby("source")["group"].nunique()

    near_rows = []
    pair_counts = {}
    split_arr = rows["split"].to_numpy()
    for a, b in combinations(SPLITS, 2):
        ia, ib = np.flatnonzero(split_arr == a), np.flatnonzero(split_arr == b)
        pairs = near_pairs(ph[ia], ph[ib], cfg.hamming_threshold)
        pa_, pb_ = ia[pairs[:, 0]], ib[pairs[:, 1]]
        keep = rows["sha"].to_numpy()[pa_] != rows["sha"].to_numpy()[pb_]
        pa_, pb_ = pa_[keep], pb_[keep]
        same_group = rows["group"].to_numpy()[pa_] == rows["group"].to_numpy()[pb_]
        pair_counts[f"{a}-{b}"] = {"pairs": int(len(pa_)), "pairs_other_group": int((~same_group).sum())}
        for i, j, g in zip(pa_, pb_, same_group):
            near_rows.append((f"{a}-{b}", rows["id"].iat[i], rows["id"].iat[j],
                              int(np.bitwise_count(ph[i] ^ ph[j])), bool(g)))

    n_items = {s: int((split_arr == s).sum()) for s in SPLITS}
    failed = bool(len(groups) or len(videos) or len(exact))
    metrics = {
        "variant": name,
        "leak_free_declared": leak_free,
        "leak_check": ("failed" if failed else "passed") if leak_free else "not required",
        "items": n_items,
        "groups": int(rows["group"].nunique()),
        "group_leaks": int(len(groups)),
        "items_in_leaking_groups": int(rows["group"].isin(groups.index).sum()),
        "group_leaks_by_source": {k: int(v) for k, v in sorted(leak_groups_src.items())},
        "videos": int(rows.loc[rows["video_id"] != "", "video_id"].nunique()),
        "video_leaks": int(len(videos)),
        "exact_duplicates": int(len(exact)),
        "near_duplicate_pairs": int(sum(v["pairs"] for v in pair_counts.values())),
        "near_duplicate_pairs_other_group": int(sum(v["pairs_other_group"] for v in pair_counts.values())),
        "near_duplicates_by_split_pair": pair_counts,
        "hamming_threshold": cfg.hamming_threshold,
    }
    return metrics, _markdown(metrics, groups, videos, exact, near_rows, cfg.max_examples)


def _table_md(title: str, table: pd.DataFrame, key: str, k: int) -> list[str]:
    lines = [f"## {title}: {len(table)}", ""]
    if len(table) and k:
        cols = list(table.columns)
        lines += [f"| {key} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for idx, r in table.head(k).iterrows():
            lines.append(f"| `{idx}` | " + " | ".join(str(int(r[c])) for c in cols) + " |")
        if len(table) > k:
            lines.append(f"| ... {len(table) - k} more | " + " | ".join("" for _ in cols) + " |")
        lines.append("")
    return lines


def _markdown(m: dict, groups, videos, exact, near_rows, k: int) -> str:
    items = ", ".join(f"{s} {n}" for s, n in m["items"].items())
    lines = [
        f"# Leakage audit: variant `{m['variant']}`",
        "",
        f"Items: {items}. Declared leak-free: {m['leak_free_declared']}. Leak check: **{m['leak_check']}**.",
        "",
        "| finding | count |",
        "|---|---|",
        f"| groups (union-find of group_keys) on more than one split | {m['group_leaks']} of {m['groups']} ({m['items_in_leaking_groups']} items) |",
        f"| videos on more than one split | {m['video_leaks']} of {m['videos']} |",
        f"| exact duplicates (same pixels) across splits | {m['exact_duplicates']} |",
        f"| near-duplicate pairs across splits (pHash distance <= {m['hamming_threshold']}) | {m['near_duplicate_pairs']} ({m['near_duplicate_pairs_other_group']} between different groups) |",
        "",
    ]
    if m["group_leaks_by_source"]:
        lines += ["Leaking groups by source: " + ", ".join(f"{s} {n}" for s, n in m["group_leaks_by_source"].items()), ""]
    lines += _table_md("Groups on more than one split", groups, "group", k)
    lines += _table_md("Videos on more than one split", videos, "video", k)
    lines += _table_md("Exact duplicates across splits", exact, "content sha256", k)
    lines += [f"## Near-duplicate pairs: {len(near_rows)}", ""]
    if near_rows and k:
        lines += ["| splits | item | item | distance | same group |", "|---|---|---|---|---|"]
        for r in sorted(near_rows, key=lambda r: (r[3], r[0], r[1], r[2]))[:k]:
            lines.append(f"| {r[0]} | `{r[1]}` | `{r[2]}` | {r[3]} | {'yes' if r[4] else 'no'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def check_leak_free(metrics: dict) -> None:
    """Raise :class:`LeakError` when a leak-free variant's audit found a leak."""
    if metrics["leak_check"] == "failed":
        raise LeakError(
            f"variant {metrics['variant']!r} is declared leak_free but the audit found "
            f"{metrics['group_leaks']} group leak(s), {metrics['video_leaks']} video leak(s) and "
            f"{metrics['exact_duplicates']} exact duplicate(s) across splits; see the audit report"
        )
