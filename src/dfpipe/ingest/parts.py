"""One source in parts: which items a part holds, and the merge of the parts' outputs into the
bytes of one whole run.

A part is a contiguous block of the source's sorted listing (:func:`select_part`), so the whole
run's item order is the parts' concatenation: :func:`merge_parts` re-shards the parts' crops in
that order, recomputes ``(shard, offset)`` of each manifest row, and rebuilds the metrics (the
accounting counts add up over parts) and the face-size plot from the merged manifest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.core.io import read_json, write_json
from dfpipe.core.manifest import FACE_SCHEMA, REJECT_SCHEMA, read_table, write_faces, write_rejects
from dfpipe.core.shards import ShardWriter
from dfpipe.ingest.items import Item, Reject
from dfpipe.ingest.output import check_counts, face_frame, prepare_outputs, source_metrics, write_face_size_plot


def select_part(
    items: list[Item], rejects: list[Reject], part: tuple[int, int] | None
) -> tuple[list[Item], list[Reject]]:
    """Part ``i`` of ``n`` of a source's listing: a contiguous block of items (sizes differ by at
    most one) so that :func:`merge_parts` restores the one-run order by concatenation. Listing
    rejects go to part 0 only. ``None`` is the whole listing.
    """
    if part is None:
        return items, rejects
    i, n = part
    if not 0 <= i < n:
        raise ValueError(f"part {i} of {n}: need 0 <= i < n")
    lo, hi = (len(items) * i) // n, (len(items) * (i + 1)) // n
    return items[lo:hi], (rejects if i == 0 else [])


def merge_parts(
    name: str,
    part_dirs: Sequence[str | Path],
    out_dir: str | Path,
    shard_size: int,
    metrics_paths: Sequence[str | Path],
    metrics_path: str | Path | None = None,
) -> dict:
    """Merge the outputs of ``run_source(part=(i, n))`` for ``i = 0..n-1`` (``part_dirs`` and
    their metrics JSONs ``metrics_paths`` in that order) into ``out_dir`` (and ``metrics_path``
    with its face-size plot), byte-identical to one ``run_source`` over the whole source.

    Crops are concatenated in part order and re-sharded; manifest rows get their new
    ``(shard, offset)``; rejects are concatenated and sorted as ``run_source`` sorts them. The
    parts' file/frame counts are summed and checked again. Raises ``RuntimeError`` when no part
    holds a face, or when the parts' metrics disagree with their manifests.
    """
    if len(metrics_paths) != len(part_dirs):
        raise ValueError(f"merge_parts: {len(part_dirs)} part folders but {len(metrics_paths)} metrics files")
    out_dir = Path(out_dir)
    plot_dir = prepare_outputs(out_dir, metrics_path, name=name)
    frames, rejects = [], []
    images = ShardWriter(out_dir, "images", shard_size)
    masks: ShardWriter | None = None
    base = 0
    size = 0
    for d in map(Path, part_dirs):
        df = read_table(d / "manifest.parquet", FACE_SCHEMA)
        rejects.append(read_table(d / "rejects.parquet", REJECT_SCHEMA))
        part_size = _part_shard_size(d)
        count = 0
        for shard in sorted(d.glob("images-*.npy")):
            block = np.load(shard, mmap_mode="r", allow_pickle=False)
            size = block.shape[1]
            mshard = d / shard.name.replace("images-", "masks-")
            mblock = np.load(mshard, mmap_mode="r", allow_pickle=False) if mshard.is_file() else None
            if mblock is not None and masks is None:
                masks = ShardWriter(out_dir, "masks", shard_size)
            for k in range(len(block)):
                images.add(np.asarray(block[k]))
                if mblock is not None:
                    assert masks is not None  # created above for the first mask block
                    masks.add(np.asarray(mblock[k]))
            count += len(block)
        if len(df):
            position = (
                base + df["shard"].map(_shard_number).to_numpy(np.int64) * part_size + df["offset"].to_numpy(np.int64)
            )
            df["shard"] = [f"images-{p // shard_size:05d}.npy" for p in position]
            df["offset"] = (position % shard_size).astype(np.int32)
            df["mask_shard"] = [
                f"masks-{p // shard_size:05d}.npy" if m else "" for p, m in zip(position, df["mask_shard"] != "")
            ]
        frames.append(df)
        base += count
    images.close()
    if masks is not None:
        masks.close()
    rej = pd.concat(rejects, ignore_index=True).sort_values(["path", "frame_index", "reason"], kind="stable")
    write_rejects(rej.reset_index(drop=True), out_dir / "rejects.parquet")
    parts = [read_json(p) for p in metrics_paths]
    counts = _sum_counts(name, parts)
    df = pd.concat(frames, ignore_index=True)
    if len(df) == 0:
        raise RuntimeError(
            f"source {name}: no face crops in any of {len(part_dirs)} parts; rejects by reason: "
            f"{counts['files']['rejected_by_reason']} (files), {counts['frames']['rejected_by_reason']} (frames)"
        )
    if len(df) != sum(m["faces"] for m in parts) or len(df) != base:
        raise RuntimeError(
            f"source {name}: parts' manifests hold {len(df)} faces, their shards {base}, "
            f"their metrics {sum(m['faces'] for m in parts)}"
        )
    df = face_frame(name, df.to_dict("records"))
    write_faces(df, out_dir / "manifest.parquet")
    metrics = source_metrics(name, sum(m["items"] for m in parts), sum(m["videos"] for m in parts), counts, df)
    if metrics_path is not None:
        write_json(metrics_path, metrics)
        assert plot_dir is not None  # prepare_outputs returns one for a metrics_path
        write_face_size_plot(df, size, plot_dir, name)
    return metrics


def _sum_counts(name: str, parts: list[dict]) -> dict:
    """The ``files`` / ``frames`` blocks of the whole source: the parts' counts added up (each
    part's were checked by its own accounting), checked again."""
    total = {k: 0 for k in ("offered", "kept", "sampled", "frames_kept")}
    file_reasons: Counter = Counter()
    frame_reasons: Counter = Counter()
    for m in parts:
        f, fr = m["files"], m["frames"]
        total["offered"] += f["offered"]
        total["kept"] += f["kept"]
        total["sampled"] += fr["sampled"]
        total["frames_kept"] += fr["kept"]
        file_reasons.update(f["rejected_by_reason"])
        frame_reasons.update(fr["rejected_by_reason"])
    return check_counts(
        name, total["offered"], total["kept"], file_reasons, total["sampled"], total["frames_kept"], frame_reasons
    )


def _shard_number(name: str) -> int:
    return int(name.rsplit("-", 1)[1].split(".")[0])


def _part_shard_size(d: Path) -> int:
    """Rows per full shard of a part (its first shard's length; every shard but the last is full)."""
    first = sorted(d.glob("images-*.npy"))
    return len(np.load(first[0], mmap_mode="r")) if first else 1
