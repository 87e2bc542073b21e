"""Parquet manifests: one row per face crop, with an explicit, checked schema.

Written by the preprocess stage (one manifest per source) and rewritten, with ``split`` and
``split_group`` added, by the variant stage. Every row points at its pixels by ``(shard, offset)``
relative to the manifest's directory; ``mask_shard`` is ``""`` when the item has no mask.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dfpipe.core.io import atomic_path

LABELS = {0: "real", 1: "fake", 2: "edited"}
#: A variant's splits, in order: ``train`` (fitting), ``val`` (model selection), ``test`` (reported).
SPLITS = ("train", "val", "test")


def is_fake(label):
    """The binary real/fake view of a manifest label (scalar or array): every label but 0 (real) is fake.

    ``1`` (generated) and ``2`` (edited) are both fake; used for AUC, EER and binary-model checks.
    """
    return label != 0


#: Columns every face manifest has, in this order.
FACE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # unique, stable: "<source>/<relative path>[#f<frame>]"
        ("source", pa.string()),  # source name from params.yaml
        ("label", pa.int8()),  # 0 real, 1 fake (generated), 2 edited
        ("method", pa.string()),  # generator / manipulation method / "ffhq" / "youtube"
        ("video_id", pa.string()),  # path under the source root without extension; FF++ keeps
        # "071_054" (fakes) / "071" (originals); "" for images
        ("group_keys", pa.list_(pa.string())),  # identity keys joined by union-find in splits
        ("path", pa.string()),  # source file, relative to the source root
        ("frame_index", pa.int32()),  # decoded frame index, -1 for still images
        ("n_frames", pa.int32()),  # frames in the video, -1 for still images
        ("box_x", pa.int32()),  # square crop box in source pixels (may pass the border)
        ("box_y", pa.int32()),
        ("box_w", pa.int32()),
        ("box_h", pa.int32()),
        ("det_score", pa.float32()),  # face-detector score, NaN in `raw` mode
        ("content_hash", pa.string()),  # sha256 of the stored crop (dtype, shape, bytes)
        ("has_mask", pa.bool_()),
        ("shard", pa.string()),
        ("offset", pa.int32()),
        ("mask_shard", pa.string()),  # "" when has_mask is false
        # provenance of the pixels: nuisance features the shortcut audit probes
        ("file_format", pa.string()),  # source container/codec: png, jpeg, h264, ...
        ("native_face", pa.float32()),  # side in source pixels of the square crop region
        ("scale", pa.float32()),  # stored side / native_face (< 1: down-sampled)
        ("resize_kernel", pa.string()),  # interpolation used: "area", "cubic", "none" (same size)
        ("codec", pa.string()),  # codec control applied before detection, "" if none
        ("exif_transposed", pa.bool_()),  # EXIF orientation applied to a still image
        ("face_rule", pa.string()),  # "only", "largest", "mask_overlap"; "none" in raw mode
    ]
)

#: The provenance columns above (file_format .. face_rule) with their "not recorded" values: a manifest built by
#: hand (test fixtures, adapters of precomputed crops) states explicitly that it has no
#: provenance through :func:`add_provenance`; the preprocess stage always records real values.
PROVENANCE_UNKNOWN = {
    "file_format": "",
    "native_face": float("nan"),
    "scale": float("nan"),
    "resize_kernel": "",
    "codec": "",
    "exif_transposed": False,
    "face_rule": "",
}


def add_provenance(df: pd.DataFrame, **values) -> pd.DataFrame:
    """A copy of ``df`` with the provenance columns it lacks set to ``values`` (by name) or to
    :data:`PROVENANCE_UNKNOWN`; columns already present are kept."""
    unknown = sorted(set(values) - set(PROVENANCE_UNKNOWN))
    if unknown:
        raise ManifestError(f"not provenance columns: {unknown}")
    out = df.copy()
    for name, default in PROVENANCE_UNKNOWN.items():
        if name not in out.columns:
            out[name] = values.get(name, default)
    return out


#: Extra columns of a variant manifest.
SPLIT_FIELDS = [
    ("split", pa.string()),  # train / val / test
    ("split_group", pa.string()),  # union-find root key the split was decided on
]
VARIANT_SCHEMA = pa.schema(list(FACE_SCHEMA) + [pa.field(n, t) for n, t in SPLIT_FIELDS])

REJECT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("path", pa.string()),
        ("frame_index", pa.int32()),  # -1 when the whole file is rejected
        ("reason", pa.string()),  # short code: unreadable, no_face, small_face, mask_missing, ...
        ("detail", pa.string()),  # human-readable detail (exception text, sizes)
    ]
)


class ManifestError(ValueError):
    pass


def write_table(df: pd.DataFrame, path: str | Path, schema: pa.Schema) -> None:
    """Write ``df`` with exactly ``schema`` (column order and types), atomically and deterministically."""
    missing = [n for n in schema.names if n not in df.columns]
    if missing:
        raise ManifestError(f"{path}: missing columns {missing}")
    extra = [c for c in df.columns if c not in schema.names]
    if extra:
        raise ManifestError(f"{path}: unexpected columns {extra}")
    table = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    table = table.replace_schema_metadata(None)  # pandas metadata varies with versions/index
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=1 << 16)


def read_table(path: str | Path, schema: pa.Schema | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (did the stage that writes it run?)")
    table = pq.read_table(path)
    if schema is not None:
        missing = [n for n in schema.names if n not in table.column_names]
        if missing:
            raise ManifestError(f"{path}: missing columns {missing}")
    return table.to_pandas()


def write_faces(df: pd.DataFrame, path: str | Path) -> None:
    write_table(df, path, FACE_SCHEMA)


def write_variant(df: pd.DataFrame, path: str | Path) -> None:
    write_table(df, path, VARIANT_SCHEMA)


def write_rejects(df: pd.DataFrame, path: str | Path) -> None:
    if df.empty:
        df = pd.DataFrame({n: pd.Series([], dtype=object) for n in REJECT_SCHEMA.names})
    write_table(df, path, REJECT_SCHEMA)
