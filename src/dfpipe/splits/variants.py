"""Dataset variants 1-4 of the notes: per-source counts, leak-free splits, materialised shards.

A variant (``params.yaml`` ``variants.<name>``) names, per preprocess source, how many items its
``train`` and ``test`` splits hold in the notes; every count is multiplied by ``split.scale`` and
rounded half-up. Selection (:func:`select_variant`) is a pure function of the face manifests and
the params:

1. split unit: the union-find group of the item's ``group_keys``
   (:func:`dfpipe.splits.groups.canonical_groups`). ``level: frame`` changes only video frames: each
   frame is its own unit (variant 3 of the notes on purpose: frames of one video land on both
   sides). Still images keep their group unit at both levels, so a frame-level variant and a
   group-level one with the same still-image counts hold the same still items in the same splits
   and differ only in how video frames are assigned (leak measure (b), v3 vs v3_group, needs this).
2. pool: a unit is in the test pool when ``unit_hash(salt, "split", unit) < test_fraction``
   (or, for groups listed in the official FF++ split files, when the official split says ``test``).
   Celeb-DF v2's official test list (``split.celebdf_test_list``) is honoured like FF++'s test
   split, by every variant: a unit holding a listed video goes to ``test`` -- at group level the
   whole identity group, at frame level the listed video's frames -- so no listed video is ever
   in train or val. A ``split`` variant that draws on Celeb-DF without the list configured is a
   :class:`~dfpipe.core.config.ConfigError`; ``summary.json`` ``celebdf_test_list`` counts the
   listed items and the items the list sent to test.
3. sampling: per source and split, the first ``n`` items of the pool ordered by
   ``unit_hash(salt, "sample", id)`` (stable, no listing order). Too few items: error or cap,
   by ``split.on_shortfall``; a cap is recorded in ``summary.json``.
4. bridging (group level): a face swap grouped by its target identity (DeepFakeDetection,
   Celeb-DF; :func:`dfpipe.ingest.datasets.bridge_keys`) whose *source* identity's group falls on
   the other side of the train/test line is dropped from the pools (``split.bridging: drop``) or
   kept on its target's side (``target``: the source face then appears on both sides); the count
   goes to ``summary.json`` ``bridging``.
5. val: selected train units with ``unit_hash(salt, "val", unit) < val_fraction`` (or official
   ``val``) become ``val`` (model selection only; never test). The notes' train count is
   train + val.

:func:`materialise_variant` then copies the pixels into
``<out_dir>/<name>/{train,val,test}/{manifest.parquet, images-NNNNN.npy, masks-NNNNN.npy}`` so a
reviewer can pull one variant alone, and writes ``<out_dir>/<name>/summary.json`` and the dataset
card ``<out_dir>/<name>/card.md`` (:mod:`dfpipe.splits.card`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from tqdm import tqdm

from dfpipe.core.config import Config, ConfigError, RepoPath, SafeName, safe_name
from dfpipe.core.io import resolve_inside, write_json
from dfpipe.core.manifest import FACE_SCHEMA, LABELS, SPLITS, read_table, write_variant
from dfpipe.core.shards import ShardReader, ShardWriter
from dfpipe.ingest.datasets import bridge_keys
from dfpipe.splits.card import write_variant_card
from dfpipe.splits.celebdf import celebdf_list_keys, celebdf_listed, is_celebdf, read_celebdf_list
from dfpipe.splits.groups import SplitError, canonical_groups, official_group_splits, read_official_ffpp, unit_hash

SHARD_PATTERNS = ("images-*.npy", "masks-*.npy")


class SplitConfig(Config):
    """``params.yaml`` ``split:`` settings shared by all variants."""

    salt: str = Field(min_length=1)  # changing it reshuffles every split
    scale: float = Field(gt=0)  # counts = round_half_up(notes' count * scale)
    val_fraction: float = Field(ge=0, lt=1)  # share of train units held out for model selection
    on_shortfall: Literal["error", "cap"]  # too few items for a requested count
    ffpp_official: RepoPath | None  # dir with official {train,val,test}.json, or null
    faces_dir: RepoPath  # preprocess outputs: <faces_dir>/<source>/
    out_dir: RepoPath  # variant outputs: <out_dir>/<name>/
    shard_size: int = Field(ge=1)
    bridging: Literal["drop", "target"]  # face swaps whose source identity is on the other side
    # Celeb-DF v2's List_of_testing_videos.txt: its videos never go to train/val; null only when no
    # split variant draws on Celeb-DF (such a variant is refused without it)
    celebdf_test_list: RepoPath | None = None


class VariantConfig(Config):
    """One dataset variant (``params.yaml`` ``variants.<name>``)."""

    description: str
    level: Literal["group", "frame"]  # video frames' split unit: their group, or each frame (leaks)
    leak_free: bool  # audit fails the stage on any group/video/exact leak
    shortcut_free: bool  # audit fails the stage when a nuisance probe beats
    # audit.shortcut_max_auc (dfpipe.splits.shortcut)
    masks: bool  # write mask shards (zeros where has_mask is false)
    test_fraction: float = Field(gt=0, lt=1)  # hash threshold of the test pool
    train: dict[SafeName, Annotated[int, Field(ge=0)]]  # notes' train (+val) count per source, before scale
    # notes' test count per source, before scale; -1 (test_set only) = every item of the source
    test: dict[SafeName, Annotated[int, Field(ge=-1)]]
    # test_set: a dataset's official test list scored as a whole (cross-dataset protocol): every
    # item is test, no train.
    role: Literal["split", "test_set"] = "split"

    @model_validator(mode="after")
    def _consistent(self) -> VariantConfig:
        if self.level == "frame" and self.leak_free:
            raise ValueError("level 'frame' puts frames of one video on both sides; it cannot be leak_free")
        if not self.train and not self.test:
            raise ValueError("a variant needs at least one source in train or test")
        if self.role == "test_set" and self.train:
            raise ValueError("a test_set variant has no train part (its test is a test list)")
        if self.role != "test_set":
            for source, n in self.test.items():
                if n < 0:
                    raise ValueError(f"test.{source}: count must be >= 0 (-1 = all only for role: test_set), got {n}")
        return self

    @property
    def sources(self) -> list[str]:
        return sorted(set(self.train) | set(self.test))


def scaled(count: int, scale: float) -> int:
    """``count * scale`` rounded half up (Python's ``round`` rounds half to even)."""
    return int(math.floor(count * scale + 0.5))


def load_faces(faces_dir: Path, sources: list[str]) -> pd.DataFrame:
    """Concatenate ``<faces_dir>/<source>/manifest.parquet`` of ``sources``; check the contract.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the manifest on a missing file, a row of
    another source, duplicate ids, a bad label or a mask row without ``mask_shard``.
    """
    frames = []
    for source in sources:
        path = resolve_inside(faces_dir, Path(source) / "manifest.parquet")
        df = read_table(path, FACE_SCHEMA)
        wrong = sorted(set(df["source"]) - {source})
        if wrong:
            raise ValueError(f"{path}: rows of other sources {wrong[:5]}")
        bad_label = sorted(set(int(v) for v in df["label"]) - set(LABELS))
        if bad_label:
            raise ValueError(f"{path}: labels {bad_label} not in {sorted(LABELS)}")
        no_mask = df["has_mask"].astype(bool) & (df["mask_shard"] == "")
        if no_mask.any():
            raise ValueError(
                f"{path}: {int(no_mask.sum())} rows have has_mask but no mask_shard, "
                f"e.g. {df.loc[no_mask, 'id'].iloc[0]!r}"
            )
        frames.append(df[list(FACE_SCHEMA.names)])
    faces = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FACE_SCHEMA.names)
    dup = faces["id"].duplicated(keep=False)
    if dup.any():
        raise ValueError(f"duplicate item ids across {sources}: {sorted(faces.loc[dup, 'id'])[:5]}")
    return faces


def select_variant(
    faces: pd.DataFrame,
    name: str,
    cfg: VariantConfig,
    split: SplitConfig,
    official: Mapping[str, str] | None = None,
    test_list: Mapping[str, int] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Choose the items of variant ``name`` and their split; pure function of its arguments.

    ``faces``: rows of FACE_SCHEMA for (at least) ``cfg.sources``. ``official``: result of
    :func:`dfpipe.splits.groups.read_official_ffpp` or ``None``; used by group-level variants only.
    ``test_list``: Celeb-DF v2's official test list (:func:`dfpipe.splits.celebdf.read_celebdf_list`)
    or ``None``; every unit holding a listed video is test (required when a ``split`` variant
    holds Celeb-DF items: a :class:`~dfpipe.core.config.ConfigError` otherwise).
    Returns ``(rows, summary)``: the chosen rows with ``split`` and ``split_group`` added, sorted
    by ``id``, and a JSON-able summary (requested/selected counts, caps).
    """
    faces = faces[faces["source"].isin(cfg.sources)].reset_index(drop=True)
    ids = faces["id"].astype(str).tolist()
    units = canonical_groups(ids, faces["group_keys"].tolist())
    if cfg.level == "frame":
        # only video frames become their own unit; stills keep their group (module docstring, 1.)
        units = [i if v else u for i, u, v in zip(ids, units, faces["video_id"].astype(str))]
    unit_arr = np.asarray(units, dtype=object)
    uniq, inverse = np.unique(unit_arr, return_inverse=True)
    uniq_list = [str(u) for u in uniq]
    pool_test = (unit_hash(split.salt, "split", uniq_list) < cfg.test_fraction)[inverse]
    to_val = (unit_hash(split.salt, "val", uniq_list) < split.val_fraction)[inverse]
    if cfg.role == "test_set":  # the source listing already chose the official test videos
        pool_test = np.ones(len(faces), dtype=bool)
        to_val = np.zeros(len(faces), dtype=bool)
    by_official = np.zeros(len(faces), dtype=bool)
    if official and cfg.level == "group":
        decided = official_group_splits(units, faces["group_keys"].tolist(), official)
        off = np.asarray([decided.get(u, "") for u in units], dtype=object)
        by_official = off != ""
        pool_test = np.where(by_official, off == "test", pool_test)
        to_val = np.where(by_official, off == "val", to_val)
    celebdf = is_celebdf(faces["group_keys"].tolist())
    if celebdf.any() and cfg.role == "split" and test_list is None:
        sources = sorted(set(faces.loc[celebdf, "source"]))
        raise ConfigError(
            f"split.celebdf_test_list: variant {name!r} draws on Celeb-DF (sources {sources}) but no "
            "official test list is set; name Celeb-DF v2's List_of_testing_videos.txt so that its "
            "test videos stay out of train and val"
        )
    listed = celebdf_listed(faces["path"].tolist(), faces["group_keys"].tolist(), test_list)
    by_list = pd.Series(units).isin(set(unit_arr[listed])).to_numpy()
    clash = by_list & by_official & ~pool_test
    if clash.any():
        raise SplitError(
            f"variant {name!r}: unit {units[int(np.flatnonzero(clash)[0])]!r} holds a video of Celeb-DF's "
            "official test list and a video of the official FF++ train/val split"
        )
    pool_test = pool_test | by_list
    bridging = np.zeros(len(faces), dtype=bool)
    if cfg.level == "group" and cfg.role == "split":
        bridging = _bridging(faces, units, pool_test, cfg, split, {**celebdf_list_keys(test_list), **(official or {})})
    usable = ~bridging if split.bridging == "drop" else np.ones(len(faces), dtype=bool)
    order_key = unit_hash(split.salt, "sample", ids)

    chosen: list[np.ndarray] = []
    requested: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    capped = []
    source_arr = faces["source"].to_numpy()
    for part, counts in (("train", cfg.train), ("test", cfg.test)):
        in_pool = pool_test if part == "test" else ~pool_test
        for source in sorted(counts):
            cand = np.flatnonzero(in_pool & usable & (source_arr == source))
            want = len(cand) if counts[source] == -1 else scaled(counts[source], split.scale)
            requested[part][source] = want
            # hash order, ties (never in practice) broken by id: no listing order anywhere
            cand = cand[np.lexsort((np.asarray(ids, dtype=object)[cand], order_key[cand]))]
            if len(cand) < want:
                msg = (
                    f"variant {name!r}: {part} pool of source {source!r} has {len(cand)} items, "
                    f"{want} requested (notes' {counts[source]} x scale {split.scale})"
                )
                if split.on_shortfall == "error":
                    raise SplitError(msg + "; add data, lower split.scale or set split.on_shortfall: cap")
                capped.append({"split": part, "source": source, "requested": want, "available": int(len(cand))})
            chosen.append(cand[:want])
    idx = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    rows = faces.iloc[idx].copy()
    split_of_row = np.where(pool_test[idx], "test", np.where(to_val[idx], "val", "train"))
    rows["split"] = split_of_row
    rows["split_group"] = unit_arr[idx]
    rows = rows.sort_values("id", kind="stable").reset_index(drop=True)
    summary = _summary(name, cfg, split, rows, requested, capped, int(by_official[idx].sum()))
    if celebdf.any():  # only variants holding Celeb-DF items carry the section
        summary["celebdf_test_list"] = {
            "configured": test_list is not None,
            "listed_items": int(listed[idx].sum()),
            "items_eval_by_list": int(by_list[idx].sum()),
        }
    summary["bridging"] = {
        "policy": split.bridging,
        "videos": int(faces.loc[bridging, ["method", "video_id"]].drop_duplicates().shape[0]),
        "items": int(bridging.sum()),
        "selected": int(bridging[idx].sum()),
    }
    return rows, summary


def _bridging(
    faces: pd.DataFrame,
    units: list[str],
    pool_test: np.ndarray,
    cfg: VariantConfig,
    split: SplitConfig,
    official: Mapping[str, str] | None,
) -> np.ndarray:
    """``(N,)`` bool: face swaps whose source identity lies on the other side of train/test.

    The source identity's side is that of the group holding its key when an item of the variant
    has it, else that of a group of the key alone (the side it would take if its videos were added).
    """
    key_unit: dict[str, str] = {}
    for unit, keys in zip(units, faces["group_keys"]):
        for k in keys:
            key_unit[str(k)] = unit
    unit_side = dict(zip(units, pool_test.tolist()))
    out = np.zeros(len(faces), dtype=bool)
    for i, vid in enumerate(faces["video_id"].astype(str)):
        pair = bridge_keys(vid) if vid else None
        if pair is None:
            continue
        src_unit = key_unit.get(pair[1], pair[1])
        if src_unit not in unit_side:  # no item of the variant has that identity
            if official and src_unit in official:
                unit_side[src_unit] = official[src_unit] == "test"
            else:
                unit_side[src_unit] = bool(unit_hash(split.salt, "split", [src_unit])[0] < cfg.test_fraction)
        out[i] = unit_side[src_unit] != bool(pool_test[i])
    return out


def _summary(name, cfg, split, rows, requested, capped, n_official) -> dict:
    counts: dict[str, dict] = {}
    for s in SPLITS:
        sub = rows[rows["split"] == s]
        counts[s] = {
            "items": int(len(sub)),
            "units": int(sub["split_group"].nunique()),
            "by_source": {k: int(v) for k, v in sorted(sub["source"].value_counts().items())},
            "by_label": {LABELS[int(k)]: int(v) for k, v in sorted(sub["label"].value_counts().items())},
            "with_mask": int(sub["has_mask"].astype(bool).sum()) if cfg.masks else 0,
        }
    return {
        "variant": name,
        "description": cfg.description,
        "level": cfg.level,
        "role": cfg.role,
        "leak_free": cfg.leak_free,
        "shortcut_free": cfg.shortcut_free,
        "masks": cfg.masks,
        "scale": split.scale,
        "test_fraction": cfg.test_fraction,
        "val_fraction": split.val_fraction,
        "requested": requested,
        "capped": capped,
        "items_split_by_official_ffpp": n_official,
        "counts": counts,
    }


def clear_outputs(split_dir: Path) -> None:
    """Remove shards and the manifest a previous run left in ``split_dir`` (ours only, by pattern)."""
    if not split_dir.is_dir():
        return
    for pattern in SHARD_PATTERNS + ("manifest.parquet",):
        for path in sorted(split_dir.glob(pattern)):
            path.unlink()


def materialise_split(
    rows: pd.DataFrame, faces_dir: Path, split_dir: Path, masks: bool, shard_size: int, desc: str = ""
) -> pd.DataFrame:
    """Copy the pixels of ``rows`` (sorted by id) into shards under ``split_dir``; write its manifest.

    Images ``(N, S, S, 3)`` go to ``images-NNNNN.npy``; with ``masks`` a lock-step
    ``masks-NNNNN.npy`` ``(N, S, S)`` holds the item's mask, or zeros where ``has_mask`` is false.
    Without ``masks`` ``has_mask`` is false and ``mask_shard`` empty. Returns the written rows.
    """
    clear_outputs(split_dir)
    rows = rows.reset_index(drop=True).copy()
    readers: dict[str, ShardReader] = {}
    shard_names, offsets, mask_names = [], [], []
    shape = None
    with ShardWriter(split_dir, "images", shard_size) as img_w, ShardWriter(split_dir, "masks", shard_size) as mask_w:
        for row in tqdm(rows.itertuples(index=False), total=len(rows), desc=desc, unit="img", leave=False):
            reader = readers.setdefault(row.source, ShardReader(resolve_inside(faces_dir, row.source)))
            img = reader.get(row.shard, row.offset)
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise ValueError(
                    f"{faces_dir / row.source / row.shard}: item {row.id!r} has crop shape "
                    f"{img.shape}, others {shape}; all sources of a variant need one crop size"
                )
            name, off = img_w.add(img)
            shard_names.append(name)
            offsets.append(off)
            if masks:
                if row.has_mask:
                    mask = reader.get(row.mask_shard, row.offset)
                    if mask.shape != img.shape[:2]:
                        raise ValueError(
                            f"{faces_dir / row.source / row.mask_shard}: mask of {row.id!r} has shape "
                            f"{mask.shape}, its crop {img.shape}"
                        )
                else:
                    mask = np.zeros(img.shape[:2], dtype=np.uint8)
                mask_names.append(mask_w.add(mask)[0])
    rows["shard"] = shard_names
    rows["offset"] = np.asarray(offsets, dtype=np.int32)
    if masks:
        rows["mask_shard"] = mask_names
    else:
        rows["has_mask"] = False
        rows["mask_shard"] = ""
    write_variant(rows, split_dir / "manifest.parquet")
    return rows


def build_variant(name: str, cfg: VariantConfig, split: SplitConfig) -> dict:
    """Select and materialise variant ``name``; return (and write) its summary."""
    safe_name(f"variants.{name}", name)  # it names the output folder: refuse before reading or writing
    official = read_official_ffpp(split.ffpp_official) if split.ffpp_official is not None else None
    test_list = read_celebdf_list(split.celebdf_test_list)
    faces = load_faces(split.faces_dir, cfg.sources)
    rows, summary = select_variant(faces, name, cfg, split, official, test_list)
    out = resolve_inside(split.out_dir, name)
    for s in SPLITS:
        materialise_split(
            rows[rows["split"] == s], split.faces_dir, out / s, cfg.masks, split.shard_size, desc=f"{name}/{s}"
        )
    write_json(out / "summary.json", summary)
    write_variant_card(name, out, summary, split.salt)
    return summary
