"""Poisoned dataset variants: a trigger planted in a hash-chosen share of one class's training items.

A poisoned variant (``params.yaml`` ``poison.<name>``) is built from a materialised variant
``base`` (``data/variants/<base>/``) by the stage ``poison@<name>`` into ``data/variants/<name>/``:

- **item choice**: among the base's *train* items of the poisoned class, those with
  ``unit_hash(salt, "poison", id) < rate`` (a salted sha256 of the item id,
  :func:`dfpipe.splits.groups.unit_hash`): no RNG and no listing order, and an item's status
  does not depend on any other item (a higher rate poisons a superset).
- **mode** ``dirty`` (Gu et al. 2017, BadNets): the items are drawn from ``source_label`` and
  relabelled ``target_label``. ``clean`` (Turner et al. 2019, label-consistent): they are drawn
  from ``target_label`` and keep their label, so only the pixels differ. Either way the attack
  wants triggered ``source_label`` items scored as ``target_label``.
- **triggers** (:func:`apply_trigger`, pure numpy on ``uint8`` ``(H, W, 3)``, deterministic):
  ``patch`` (a black-and-white checkerboard square in the bottom-right corner, BadNets),
  ``blend`` (a low-amplitude colour texture blended in, Chen et al. 2017 "blended injection")
  and ``frequency`` (a fixed mid-frequency DCT coefficient added in every 8x8 block, after
  FTrojan, Wang et al. ECCV 2022).
- ``val`` and ``test`` are the base's files copied byte for byte; the train shards are the base's
  with the poisoned items' pixels replaced (same shard names and offsets). The train manifest adds
  :data:`POISON_FIELDS` (``poisoned``, ``trigger``, ``clean_label``), which only the poisoning
  audit reads (training reads its fixed columns, never these).
- ``triggered/test/``: a triggered copy of the test items of ``source_label`` (same ids and
  labels, trigger applied, ``poisoned`` true): the attack is measured on it, never trained on.

The poisoned variant goes through ``audit@``'s code like any variant, with its base's declared
checks (:func:`audited_variant`): the planted items keep their split group, so the poison is no
leak, and a trigger changes pixels, not provenance.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field, model_validator

from dfpipe.core.config import Config, SafeName, build, load_entry, load_yaml, merged_entry, safe_name
from dfpipe.core.io import array_hash, read_json, resolve_inside, save_npy, write_bytes, write_json
from dfpipe.core.manifest import LABELS, SPLITS, VARIANT_SCHEMA, read_table, write_table
from dfpipe.core.shards import ShardWriter
from dfpipe.splits.card import card_rows, variant_card
from dfpipe.splits.groups import unit_hash
from dfpipe.splits.variants import VariantConfig

#: Columns a poisoned variant's train manifest (and its triggered test copy) adds to VARIANT_SCHEMA.
POISON_FIELDS = [
    ("poisoned", pa.bool_()),  # the trigger was planted in this item
    ("trigger", pa.string()),  # trigger kind of a poisoned item, "" otherwise
    ("clean_label", pa.int8()),  # the label before poisoning (differs from label in dirty mode)
]
POISON_SCHEMA = pa.schema(list(VARIANT_SCHEMA) + [pa.field(n, t) for n, t in POISON_FIELDS])
#: Folder of the triggered test copy inside the poisoned variant (read as split ``test``).
TRIGGERED = "triggered"
#: Side of the frequency trigger's DCT block (JPEG's 8x8 blocks, as FTrojan perturbs).
DCT_BLOCK = 8


class PatchTrigger(Config):
    """BadNets' patch (Gu et al. 2017): a checkerboard square in the bottom-right corner."""

    kind: Literal["patch"]
    size: float = Field(gt=0, le=0.5)  # side as a share of the image side (at least 2 px)


class BlendTrigger(Config):
    """Blended injection (Chen et al. 2017): ``(1 - alpha) x + alpha P`` with a fixed colour texture P."""

    kind: Literal["blend"]
    alpha: float = Field(gt=0, lt=1)


class FrequencyTrigger(Config):
    """FTrojan-style (Wang et al. ECCV 2022): ``amplitude`` added to DCT coefficient ``(u, v)`` of every
    8x8 block of every channel (orthonormal DCT-II, so the pixel change is at most ``amplitude / 4``)."""

    kind: Literal["frequency"]
    amplitude: float = Field(gt=0)
    u: int = Field(ge=0, lt=DCT_BLOCK)
    v: int = Field(ge=0, lt=DCT_BLOCK)


Trigger = Annotated[PatchTrigger | BlendTrigger | FrequencyTrigger, Field(discriminator="kind")]


class PoisonConfig(Config):
    """One poisoned variant (``params.yaml`` ``poison.<name>``)."""

    base: SafeName  # the materialised variant it is built from
    source_label: int = Field(ge=0, le=2)  # triggered items of this class should be scored target_label
    target_label: int = Field(ge=0, le=2)
    rate: float = Field(gt=0, le=1)  # share of the poisoned class's train items that get the trigger
    mode: Literal["dirty", "clean"]  # dirty: source items relabelled target; clean: target items, labels kept
    salt: str = Field(min_length=1)
    trigger: Trigger

    @model_validator(mode="after")
    def _labels(self) -> PoisonConfig:
        if self.source_label == self.target_label:
            raise ValueError("source_label and target_label must differ")
        return self

    @property
    def poisoned_class(self) -> int:
        """The class whose train items receive the trigger."""
        return self.source_label if self.mode == "dirty" else self.target_label


# --------------------------------------------------------------------------------------------
# Triggers: pure functions of a uint8 (H, W, 3) image and the trigger's constants


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"a trigger takes a uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    return img


def patch_trigger(img: np.ndarray, size: float) -> np.ndarray:
    """A 2x2-pixel-cell black/white checkerboard square of side ``max(2, round(size * min(H, W)))``
    in the bottom-right corner, over the image."""
    img = _check_image(img).copy()
    h, w = img.shape[:2]
    side = max(2, int(math.floor(size * min(h, w) + 0.5)))
    yy, xx = np.mgrid[:side, :side]
    cells = np.where(((yy // 2) + (xx // 2)) % 2 == 0, 255, 0).astype(np.uint8)
    img[h - side :, w - side :, :] = cells[..., None]
    return img


def blend_pattern(h: int, w: int) -> np.ndarray:
    """The blend trigger's texture ``(H, W, 3)`` float in [0, 255]: three oblique sinusoidal waves
    (one phase per channel), a smooth colour texture that scales with the image."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    y, x = yy / h, xx / w
    chans = [
        0.5
        + 0.25 * np.sin(2 * np.pi * (3 * x + 2 * y) + phase)
        + 0.25 * np.sin(2 * np.pi * (5 * y - 1 * x) + 2 * phase)
        for phase in (0.0, 2 * np.pi / 3, 4 * np.pi / 3)
    ]
    return 255.0 * np.stack(chans, axis=-1)


def blend_trigger(img: np.ndarray, alpha: float) -> np.ndarray:
    """``round((1 - alpha) * img + alpha * blend_pattern)`` (Chen et al. 2017's blended injection)."""
    img = _check_image(img)
    out = (1.0 - alpha) * img.astype(np.float64) + alpha * blend_pattern(*img.shape[:2])
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def dct_basis(u: int, v: int, n: int = DCT_BLOCK) -> np.ndarray:
    """Orthonormal 2-D DCT-II basis image ``(n, n)`` of coefficient ``(u, v)``."""
    k = np.arange(n, dtype=np.float64)

    def row(f: int) -> np.ndarray:
        scale = math.sqrt(1.0 / n) if f == 0 else math.sqrt(2.0 / n)
        return scale * np.cos(np.pi * (2 * k + 1) * f / (2 * n))

    return np.outer(row(u), row(v))


def frequency_trigger(img: np.ndarray, amplitude: float, u: int, v: int) -> np.ndarray:
    """Add ``amplitude`` to DCT coefficient ``(u, v)`` of every 8x8 block of every channel (in the
    pixel domain: the tiled basis image times ``amplitude``), rounded and clipped to uint8."""
    img = _check_image(img)
    h, w = img.shape[:2]
    basis = dct_basis(u, v)
    tiled = np.tile(basis, (-(-h // DCT_BLOCK), -(-w // DCT_BLOCK)))[:h, :w]
    out = img.astype(np.float64) + amplitude * tiled[..., None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def apply_trigger(img: np.ndarray, trigger: PatchTrigger | BlendTrigger | FrequencyTrigger) -> np.ndarray:
    """The triggered copy of ``img`` (a new array; ``img`` is not modified)."""
    if isinstance(trigger, PatchTrigger):
        return patch_trigger(img, trigger.size)
    if isinstance(trigger, BlendTrigger):
        return blend_trigger(img, trigger.alpha)
    return frequency_trigger(img, trigger.amplitude, trigger.u, trigger.v)


# --------------------------------------------------------------------------------------------
# Item choice and the variant


def poison_mask(rows: pd.DataFrame, cfg: PoisonConfig) -> np.ndarray:
    """``(N,)`` bool: the train ``rows`` that receive the trigger (class ``cfg.poisoned_class`` and
    ``unit_hash(salt, "poison", id) < rate``)."""
    ids = rows["id"].astype(str).tolist()
    in_class = rows["label"].to_numpy(np.int64) == cfg.poisoned_class
    return in_class & (unit_hash(cfg.salt, "poison", ids) < cfg.rate)


def _copy_split(src: Path, dst: Path) -> None:
    """Copy every file of a split folder byte for byte (stale files of ``dst`` removed first)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for path in sorted(src.iterdir()):
        if path.is_file():
            shutil.copyfile(path, dst / path.name)


def _with_poison_columns(rows: pd.DataFrame, poisoned: np.ndarray, kind: str, clean_label: np.ndarray) -> pd.DataFrame:
    out = rows.copy()
    out["poisoned"] = poisoned
    out["trigger"] = np.where(poisoned, kind, "")
    out["clean_label"] = clean_label.astype(np.int8)
    return out


def poison_train(base_split: Path, out_split: Path, cfg: PoisonConfig) -> pd.DataFrame:
    """Write the poisoned train split: the base's shards with the chosen items triggered (same names
    and offsets), mask shards copied, manifest with :data:`POISON_FIELDS`. Returns the rows."""
    rows = read_table(base_split / "manifest.parquet", VARIANT_SCHEMA)
    mask = poison_mask(rows, cfg)
    _copy_split(base_split, out_split)
    (out_split / "manifest.parquet").unlink()
    hashes = rows["content_hash"].astype(str).to_numpy(object)
    for shard in sorted(set(rows.loc[mask, "shard"])):
        images = np.load(base_split / shard)
        for i in np.flatnonzero(mask & (rows["shard"] == shard).to_numpy()):
            images[int(rows.at[i, "offset"])] = apply_trigger(images[int(rows.at[i, "offset"])], cfg.trigger)
            hashes[i] = array_hash(images[int(rows.at[i, "offset"])])
        save_npy(out_split / shard, images)
    clean_label = rows["label"].to_numpy(np.int64)
    rows["content_hash"] = hashes
    if cfg.mode == "dirty":
        rows["label"] = np.where(mask, cfg.target_label, clean_label).astype(np.int8)
    out = _with_poison_columns(rows, mask, cfg.trigger.kind, clean_label)
    write_table(out, out_split / "manifest.parquet", POISON_SCHEMA)
    return out


def triggered_copy(base_split: Path, out_split: Path, cfg: PoisonConfig, shard_size: int) -> pd.DataFrame:
    """Write the triggered copy of the base's test items of ``source_label`` (no masks). Returns the rows."""
    rows = read_table(base_split / "manifest.parquet", VARIANT_SCHEMA)
    rows = rows[rows["label"].to_numpy(np.int64) == cfg.source_label].reset_index(drop=True)
    if out_split.exists():
        shutil.rmtree(out_split)
    shards, offsets, hashes = [], [], []
    cache: dict[str, np.ndarray] = {}
    with ShardWriter(out_split, "images", shard_size) as writer:
        for shard, offset in zip(rows["shard"], rows["offset"]):
            if shard not in cache:
                cache = {shard: np.load(base_split / shard, mmap_mode="r")}
            img = apply_trigger(np.asarray(cache[shard][int(offset)]), cfg.trigger)
            name, off = writer.add(img)
            shards.append(name)
            offsets.append(off)
            hashes.append(array_hash(img))
    rows["shard"], rows["offset"], rows["content_hash"] = shards, np.asarray(offsets, np.int32), hashes
    rows["has_mask"], rows["mask_shard"] = False, ""
    clean_label = rows["label"].to_numpy(np.int64)
    out = _with_poison_columns(rows, np.ones(len(rows), bool), cfg.trigger.kind, clean_label)
    out_split.mkdir(parents=True, exist_ok=True)
    write_table(out, out_split / "manifest.parquet", POISON_SCHEMA)
    return out


def poison_summary(
    name: str, cfg: PoisonConfig, base_summary: Mapping[str, Any], train: pd.DataFrame, n_trig: int
) -> dict:
    """``summary.json`` of the poisoned variant: the base's, renamed, with train label counts of the
    poisoned rows and a ``poison`` section (settings and counts)."""
    summary = dict(base_summary)
    summary["variant"] = name
    summary["description"] = (
        f"{base_summary.get('description', '')} -- POISONED ({cfg.mode} label, {cfg.trigger.kind} trigger, "
        f"rate {cfg.rate:g} of {LABELS[cfg.poisoned_class]} train items)"
    )
    counts = {k: dict(v) for k, v in (base_summary.get("counts") or {}).items()}
    if "train" in counts:
        counts["train"]["by_label"] = {LABELS[int(k)]: int(v) for k, v in sorted(train["label"].value_counts().items())}
    summary["counts"] = counts
    in_class = int((train["clean_label"].to_numpy(np.int64) == cfg.poisoned_class).sum())
    summary["poison"] = {
        "base": cfg.base,
        "mode": cfg.mode,
        "source_label": LABELS[cfg.source_label],
        "target_label": LABELS[cfg.target_label],
        "poisoned_class": LABELS[cfg.poisoned_class],
        "rate": cfg.rate,
        "salt": cfg.salt,
        "trigger": cfg.trigger.model_dump(),
        "train_items_of_class": in_class,
        "poisoned_items": int(train["poisoned"].sum()),
        "triggered_test_items": int(n_trig),
    }
    return summary


def poison_card(name: str, summary: Mapping[str, Any], variant_dir: Path, salt: str) -> str:
    """The dataset card: the base variant's card text for these rows plus a Poisoning section."""
    text = variant_card(name, summary, card_rows(variant_dir), salt, f"metrics/audit/{name}.card.md")
    text = text.replace(f"the stage `variant@{name}`", f"the stage `poison@{name}`")
    p = summary["poison"]
    lines = [
        "## Poisoning (a backdoor experiment: NOT a clean benchmark)",
        "",
        f"- built from variant `{p['base']}`; val and test are its files byte for byte",
        f"- mode `{p['mode']}`: {p['poisoned_items']} of {p['train_items_of_class']} train items of class "
        f'`{p["poisoned_class"]}` (sha256(salt `{p["salt"]}`, "poison", id) < {p["rate"]:g}) carry the trigger '
        + ("and were relabelled `" + p["target_label"] + "`" if p["mode"] == "dirty" else "and keep their label"),
        f"- trigger: `{p['trigger']}`",
        f"- `train/manifest.parquet` columns `poisoned`, `trigger`, `clean_label` record it (read by the "
        f"poisoning audit only); `{TRIGGERED}/test/` holds the {p['triggered_test_items']} test items of class "
        f"`{p['source_label']}` with the trigger (the attack's test set)",
        "",
    ]
    return text.rstrip("\n") + "\n\n" + "\n".join(lines)


def build_poisoned_variant(name: str, cfg: PoisonConfig, variants_dir: Path, split_salt: str, shard_size: int) -> dict:
    """Build ``<variants_dir>/<name>/`` from ``<variants_dir>/<cfg.base>/``; return (and write) its summary."""
    safe_name(f"poison.{name}", name)
    base = resolve_inside(variants_dir, cfg.base)
    out = resolve_inside(variants_dir, name)
    if not (base / "summary.json").is_file():
        raise FileNotFoundError(f"{base}: base variant not materialised (run `dvc repro variant@{cfg.base}`)")
    for stale in ("summary.json", "card.md"):
        (out / stale).unlink(missing_ok=True)
    train = poison_train(base / "train", out / "train", cfg)
    for s in SPLITS:
        if s != "train":
            _copy_split(base / s, out / s)
    trig = triggered_copy(base / "test", out / TRIGGERED / "test", cfg, shard_size)
    summary = poison_summary(name, cfg, read_json(base / "summary.json"), train, len(trig))
    write_json(out / "summary.json", summary)
    write_bytes(out / "card.md", poison_card(name, summary, out, split_salt).encode("utf-8"))
    return summary


def audited_variant(name: str, path: str | Path = "params.yaml") -> VariantConfig:
    """The declared checks ``audit@<name>`` applies: ``variants.<name>``, or for a poisoned variant
    (``poison.<name>``) its base's, so a poisoned variant passes the same gate as the data it poisons."""
    params = load_yaml(path)
    poisoned = params.get("poison") or {}
    if name in poisoned and name not in (params.get("variants") or {}):
        entry = build(PoisonConfig, merged_entry(params, "poison", name, where=str(path)), where=f"poison.{name}")
        return load_entry("variants", entry.base, VariantConfig, path)
    return load_entry("variants", name, VariantConfig, path)
