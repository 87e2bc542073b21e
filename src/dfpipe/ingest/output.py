"""Writing one source's outputs from its per-item results, in item order: shards, manifest,
rejects, metrics (with the file/frame accounting check) and the face-size plot.

Outputs in ``out_dir``: ``images-NNNNN.npy`` ``(N, size, size, 3)`` uint8, ``masks-NNNNN.npy``
``(N, size, size)`` uint8 0/255 (sources with masks), ``manifest.parquet`` (``FACE_SCHEMA``, sorted
by id), ``rejects.parquet`` (``REJECT_SCHEMA``, sorted); a metrics JSON (no timings: it is a
tracked output) and, beside it, ``<name>/face_size.csv`` + ``face_size.png`` (native face side and
scale histogram, a DVC plot). Shard bytes depend only on the order results are collected in,
which is item order whatever executor produced them.
"""

from __future__ import annotations

import dataclasses
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from dfpipe.core.config import safe_name
from dfpipe.core.io import array_hash, clean_stale_temps, write_bytes, write_json
from dfpipe.core.manifest import FACE_SCHEMA, REJECT_SCHEMA, write_faces, write_rejects
from dfpipe.core.shards import ShardWriter
from dfpipe.ingest.config import PreprocessConfig
from dfpipe.ingest.items import Item, Reject
from dfpipe.ingest.sources import SourceConfig
from dfpipe.ingest.worker import ItemResult


def prepare_outputs(out_dir: Path, metrics_path: str | Path | None = None, name: str | None = None) -> Path | None:
    """Create ``out_dir``; remove temporaries of a killed run (in it, and of the metrics file and
    its plot folder) and the shards and manifests of a previous run (a smaller run must not leave
    stale shards). Returns the plot folder (``metrics_path`` without suffix) or None.

    This deletes files, so it first refuses a source ``name`` (the source whose outputs these are;
    callers build ``out_dir`` from it) that is not a plain name: a
    :class:`~dfpipe.core.config.ConfigError` from :func:`~dfpipe.core.config.safe_name`, before
    anything is created or removed, so a key such as ``../../x`` cannot clear another folder.
    """
    if name is not None:
        safe_name(f"sources.{name}", name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out_dir)
    plot_dir = Path(metrics_path).with_suffix("") if metrics_path is not None else None
    if metrics_path is not None:
        clean_stale_temps(Path(metrics_path).parent, recursive=False, prefix=Path(metrics_path).name)
        assert plot_dir is not None  # set from metrics_path above
        clean_stale_temps(plot_dir)
    for pattern in ("images-*.npy", "masks-*.npy", "manifest.parquet", "rejects.parquet"):
        for p in sorted(out_dir.glob(pattern)):
            p.unlink()
    return plot_dir


class SourceOutput:
    """Shards, manifest rows, rejects and accounting of one source, collected in item order.

    ``listed_rejects``: files the listing rejected (``bad_name``, ``not_image``, ...), counted as
    offered files. ``plot``: write the face-size plot beside ``metrics_path`` (not for a part of a
    source: its merge writes the plot of the whole).
    """

    def __init__(
        self,
        name: str,
        spec: SourceConfig,
        cfg: PreprocessConfig,
        out_dir: str | Path,
        metrics_path: str | Path | None,
        listed_rejects: list[Reject],
        plot: bool = True,
    ):
        self.name, self.spec, self.cfg = name, spec, cfg
        self.out_dir, self.metrics_path = Path(out_dir), metrics_path
        plot_dir = prepare_outputs(self.out_dir, metrics_path, name=name)
        self.plot_dir = plot_dir if plot else None
        self.listed_rejects = list(listed_rejects)
        self.rows: list[dict] = []
        self.rejects: list[Reject] = list(listed_rejects)
        self.per_item: list[tuple[Item, ItemResult]] = []
        self.images = ShardWriter(self.out_dir, "images", cfg.shard_size)
        self.masks = ShardWriter(self.out_dir, "masks", cfg.shard_size) if spec.masks else None

    def collect(self, item: Item, res: ItemResult) -> None:
        """Append one item's crops to the shards and manifest rows (call in item order)."""
        self.rejects.extend(res.rejects)
        for c in res.crops:
            shard, offset = self.images.add(c.image)
            mask_shard = ""
            if self.masks is not None:
                # a masks source gives every item a mask video; a frame without its mask is rejected
                assert c.mask is not None
                mask_shard, moffset = self.masks.add(c.mask)
                assert moffset == offset, "mask shard out of lock-step with image shard"
            self.rows.append(_row(self.name, self.spec, self.cfg.size, item, res, c, shard, offset, mask_shard))
        # pixels freed: account() only counts the crops (None placeholders, not Crop objects)
        self.per_item.append((item, dataclasses.replace(res, crops=[None] * len(res.crops))))  # type: ignore[list-item]

    def finish(self, items: list[Item], root: Path, allow_empty: bool = False) -> dict:
        """Close the shards, write rejects, check the accounting, write manifest, metrics and plot.

        Raises ``RuntimeError`` naming the source when it yields no face at all (unless
        ``allow_empty``: a part of a source; rejects.parquet is written first, to see why), or
        when the accounting check fails (:func:`account`).
        """
        self.images.close()
        if self.masks is not None:
            self.masks.close()
        write_rejects(reject_frame(self.name, self.rejects), self.out_dir / "rejects.parquet")
        counts = account(self.name, self.listed_rejects, self.per_item)
        if not self.rows and not allow_empty:
            raise RuntimeError(
                f"source {self.name} ({root}) yielded no face crops from {len(items)} items; "
                f"rejects by reason: {counts['files']['rejected_by_reason']} (files), "
                f"{counts['frames']['rejected_by_reason']} (frames) (see {self.out_dir / 'rejects.parquet'})"
            )
        df = face_frame(self.name, self.rows)
        write_faces(df, self.out_dir / "manifest.parquet")
        metrics = source_metrics(self.name, len(items), sum(it.is_video for it in items), counts, df)
        if self.metrics_path is not None:
            write_json(self.metrics_path, metrics)
            if self.plot_dir is not None:
                write_face_size_plot(df, self.cfg.size, self.plot_dir, self.name)
        return metrics


def account(name: str, listed_rejects: list[Reject], per_item: list[tuple[Item, ItemResult]]) -> dict:
    """File-level and frame-level counts, checked: every offered file is kept or rejected (once),
    and every sampled frame of a video is kept or rejected (once).

    ``per_item``: the ``(item, result)`` pairs in item order. ``offered`` = files the listing saw
    (items + files rejected by the listing). A file is ``kept`` when it gave at least one crop;
    ``rejected`` when the file itself was rejected (``frame_index`` -1, reason in
    ``rejected_by_reason``) or when every sampled frame was (``all_frames_rejected``). Raises
    ``RuntimeError`` naming the source and the item on a violation (a bug that would otherwise
    lose items silently). Counts add up over disjoint parts of a source.
    """
    file_reasons: Counter = Counter(r.reason for r in listed_rejects)
    frame_reasons: Counter = Counter()
    kept = sampled = frames_kept = 0
    for item, res in per_item:
        whole = [r for r in res.rejects if r.frame_index < 0]
        frame = [r for r in res.rejects if r.frame_index >= 0]
        if whole:
            if len(whole) != 1 or res.crops or frame:
                raise RuntimeError(
                    f"source {name}: accounting: {item.path} rejected as a file and also "
                    f"has {len(res.crops)} crops / {len(frame)} frame rejects / {len(whole)} file rejects"
                )
            file_reasons[whole[0].reason] += 1
            continue
        units = res.frames_sampled if item.is_video else 1
        if len(res.crops) + len(frame) != units or units == 0:
            raise RuntimeError(
                f"source {name}: accounting: {item.path}: {units} frames sampled != "
                f"{len(res.crops)} kept + {len(frame)} rejected"
            )
        if item.is_video:
            sampled += units
            frames_kept += len(res.crops)
            frame_reasons.update(r.reason for r in frame)
        if res.crops:
            kept += 1
        else:
            file_reasons["all_frames_rejected"] += 1
    offered = len(per_item) + len(listed_rejects)
    return check_counts(name, offered, kept, file_reasons, sampled, frames_kept, frame_reasons)


def check_counts(
    name: str, offered: int, kept: int, file_reasons: Counter, sampled: int, frames_kept: int, frame_reasons: Counter
) -> dict:
    """The ``files`` / ``frames`` metrics blocks, after checking that each adds up."""
    rejected = sum(file_reasons.values())
    if offered != kept + rejected:
        raise RuntimeError(f"source {name}: accounting: {offered} files offered != {kept} kept + {rejected} rejected")
    frames_rejected = sum(frame_reasons.values())
    if sampled != frames_kept + frames_rejected:
        raise RuntimeError(
            f"source {name}: accounting: {sampled} frames sampled != {frames_kept} kept + {frames_rejected} rejected"
        )
    return {
        "files": {
            "offered": offered,
            "kept": kept,
            "rejected": rejected,
            "rejected_by_reason": dict(sorted(file_reasons.items())),
        },
        "frames": {
            "sampled": sampled,
            "kept": frames_kept,
            "rejected": frames_rejected,
            "rejected_by_reason": dict(sorted(frame_reasons.items())),
        },
    }


def no_face_share(items: int, videos: int, counts: dict) -> dict:
    """``no_face`` rejects (still images and video frames) among the images and sampled frames of
    a source: a detector that misses the faces of a data set (small faces in wide shots) shows
    here at a glance, not only as a smaller class. ``share`` is 0 when nothing was sampled."""
    n = counts["files"]["rejected_by_reason"].get("no_face", 0) + counts["frames"]["rejected_by_reason"].get(
        "no_face", 0
    )
    units = items - videos + counts["frames"]["sampled"]
    return {"rejected": n, "of": units, "share": round(n / units, 4) if units else 0.0}


def source_metrics(name: str, items: int, videos: int, counts: dict, df: pd.DataFrame) -> dict:
    """The metrics JSON of a source: item counts, accounting ``counts`` (:func:`account`) and
    summaries of the manifest ``df`` (an empty ``df``, a part without faces: no face sizes)."""
    native = {}
    if len(df):
        native = {
            q: round(float(df["native_face"].quantile(v)), 2) for q, v in (("min", 0.0), ("median", 0.5), ("max", 1.0))
        }
    return {
        "source": name,
        "items": items,
        "videos": videos,
        "faces": len(df),
        "with_mask": int(df["has_mask"].sum()),
        **counts,
        "no_face": no_face_share(items, videos, counts),
        "resize_kernels": dict(sorted(Counter(df["resize_kernel"]).items())),
        "face_rules": dict(sorted(Counter(df["face_rule"]).items())),
        "native_face": native,
    }


def reject_frame(name: str, rejects: list[Reject]) -> pd.DataFrame:
    """Rejects as a ``REJECT_SCHEMA`` frame sorted by (path, frame_index, reason)."""
    return (
        pd.DataFrame(
            [
                {"source": name, "path": r.path, "frame_index": r.frame_index, "reason": r.reason, "detail": r.detail}
                for r in rejects
            ],
            columns=REJECT_SCHEMA.names,
        )
        .sort_values(["path", "frame_index", "reason"], kind="stable")
        .reset_index(drop=True)
    )


def face_frame(name: str, rows: list[dict]) -> pd.DataFrame:
    """Manifest rows as a ``FACE_SCHEMA`` frame sorted by id; duplicate ids are an error."""
    df = pd.DataFrame(rows, columns=FACE_SCHEMA.names).sort_values("id", kind="stable").reset_index(drop=True)
    if df["id"].duplicated().any():
        raise RuntimeError(f"source {name}: duplicate ids {df['id'][df['id'].duplicated()].tolist()[:5]}")
    return df


def write_face_size_plot(df: pd.DataFrame, size: int, out: Path, name: str) -> None:
    """``out/face_size.csv`` (histogram of ``native_face``, with the scale range of each bin) and
    ``out/face_size.png`` (the same as a bar chart), for ``dvc plots``. Bins are
    ``ceil(max / 64)`` px wide: about 64 bins up to the largest face, whatever the source."""
    native = df["native_face"].to_numpy(np.float64)
    width = max(1, int(np.ceil(native.max() / 64)))
    edges = np.arange(0, (int(native.max()) // width + 2) * width, width)
    counts, _ = np.histogram(native, bins=edges)
    keep = counts > 0
    lo, hi = edges[:-1][keep], edges[1:][keep]
    table = pd.DataFrame(
        {
            "native_face_lo": lo,
            "native_face_hi": hi,
            "scale_max": np.round(size / np.maximum(lo, 1), 4),
            "scale_min": np.round(size / hi, 4),
            "count": counts[keep],
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / "face_size.csv", table.to_csv(index=False, lineterminator="\n").encode())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.bar(lo, counts[keep], width=width, align="edge", color="#4477aa")
    ax.axvline(size, color="#cc3311", lw=1, label=f"stored size {size} px (scale 1)")
    ax.set_xlabel("native face region side (source px)")
    ax.set_ylabel("crops")
    ax.set_title(f"{name}: native face size (scale = {size} / side)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version string: same bytes
    plt.close(fig)
    write_bytes(out / "face_size.png", buf.getvalue())


def _row(
    name: str, spec: SourceConfig, size: int, item: Item, res: ItemResult, c, shard: str, offset: int, mask_shard: str
) -> dict:
    """The manifest row of crop ``c`` of ``item`` (``FACE_SCHEMA`` columns)."""
    suffix = f"#f{c.frame_index:05d}" if c.frame_index >= 0 else ""
    return {
        "id": f"{name}/{item.path}{suffix}",
        "source": name,
        "label": spec.label,
        "method": spec.method,
        "video_id": item.video_id,
        "group_keys": list(item.group_keys),
        "path": item.path,
        "frame_index": c.frame_index,
        "n_frames": c.n_frames,
        "box_x": c.box.x,
        "box_y": c.box.y,
        "box_w": c.box.side,
        "box_h": c.box.side,
        "det_score": c.det_score,
        "content_hash": array_hash(c.image),
        "has_mask": c.mask is not None,
        "shard": shard,
        "offset": offset,
        "mask_shard": mask_shard,
        "file_format": res.file_format,
        "native_face": float(c.box.side),
        "scale": size / c.box.side,
        "resize_kernel": c.resize_kernel,
        "codec": res.codec,
        "exif_transposed": res.exif_transposed,
        "face_rule": c.face_rule,
    }
