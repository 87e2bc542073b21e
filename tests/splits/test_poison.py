"""Poisoned variants: deterministic item choice, exactly the expected items touched, val/test untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dfpipe.core.config import ConfigError, build
from dfpipe.core.io import array_hash, sha256_file, write_json
from dfpipe.core.manifest import read_table, write_variant
from dfpipe.splits.audit import audit_variant, check_gate
from dfpipe.splits.poison import (
    TRIGGERED,
    PoisonConfig,
    apply_trigger,
    audited_variant,
    blend_trigger,
    build_poisoned_variant,
    frequency_trigger,
    patch_trigger,
    poison_mask,
)
from dfpipe.training.data import VariantDataset
from helpers import AUDIT, REPO, make_variant

SIZE = 32


def poison_cfg(**kw) -> PoisonConfig:
    base = dict(base="base", source_label=1, target_label=0, rate=0.3, mode="dirty", salt="poison-salt",
                trigger={"kind": "patch", "size": 0.125})
    base.update(kw)
    return build(PoisonConfig, base)


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("variants")
    make_variant(root / "base", {"train": 40, "val": 4, "test": 6}, size=SIZE)
    for split in ("train", "val", "test"):  # the audit checks each item's pixels against content_hash
        rows = read_table(root / "base" / split / "manifest.parquet")
        rows["content_hash"] = [array_hash(img) for img in _images(root / "base" / split, rows)]
        write_variant(rows, root / "base" / split / "manifest.parquet")
    write_json(root / "base/summary.json", {"variant": "base", "description": "toy", "level": "group",
                                             "masks": True, "counts": {"train": {"items": 120}}})
    return root


def expected_choice(ids, salt: str, rate: float) -> np.ndarray:
    """The rule written out independently: sha256(salt NUL "poison" NUL id), top 53 bits / 2^53 < rate."""
    out = []
    for i in ids:
        d = hashlib.sha256(f"{salt}\0poison\0{i}".encode()).digest()
        out.append((int.from_bytes(d[:8], "big") >> 11) / float(1 << 53) < rate)
    return np.asarray(out)


def _images(split_dir: Path, rows: pd.DataFrame) -> np.ndarray:
    shards = {s: np.load(split_dir / s) for s in sorted(set(rows["shard"]))}
    return np.stack([shards[s][o] for s, o in zip(rows["shard"], rows["offset"])])


def test_triggers_are_deterministic_pure_and_bounded():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    before = img.copy()
    patched = patch_trigger(img, 0.125)
    assert np.array_equal(img, before)  # the input is not modified
    changed = np.any(patched != img, axis=2)
    assert changed[:-4, :].sum() == 0 and changed[:, :-4].sum() == 0  # only the 4x4 corner
    assert set(np.unique(patched[-4:, -4:])) <= {0, 255}
    blended = blend_trigger(img, 0.1)
    assert np.abs(blended.astype(int) - img.astype(int)).max() <= 26  # alpha * 255 + rounding
    freq = frequency_trigger(np.full((SIZE, SIZE, 3), 128, np.uint8), 12.0, 3, 4)
    diff = freq.astype(int) - 128
    assert 0 < np.abs(diff).max() <= 12.0 / 4 + 1  # orthonormal 8x8 DCT: |basis| <= 2/8
    assert np.array_equal(diff[:8], diff[8:16])  # the same pattern in every 8x8 block
    for trig in ({"kind": "patch", "size": 0.125}, {"kind": "blend", "alpha": 0.1},
                 {"kind": "frequency", "amplitude": 12.0, "u": 3, "v": 4}):
        t = poison_cfg(trigger=trig).trigger
        assert np.array_equal(apply_trigger(img, t), apply_trigger(img.copy(), t))
        assert not np.array_equal(apply_trigger(img, t), img)
    with pytest.raises(ValueError, match="uint8"):
        patch_trigger(img.astype(np.float32), 0.125)


def test_item_choice_is_a_salted_hash_of_the_id(variants):
    rows = read_table(variants / "base/train/manifest.parquet")
    cfg = poison_cfg()
    mask = poison_mask(rows, cfg)
    want = (rows["label"].to_numpy() == 1) & expected_choice(rows["id"], "poison-salt", 0.3)
    assert np.array_equal(mask, want) and 0 < mask.sum() < 40
    shuffled = rows.sample(frac=1.0, random_state=1)
    assert np.array_equal(poison_mask(shuffled, cfg), want[shuffled.index])  # no listing order
    assert np.all(poison_mask(rows, poison_cfg(rate=0.6)) >= mask)  # a higher rate poisons a superset
    assert not np.array_equal(poison_mask(rows, poison_cfg(salt="other")), mask)  # control: the salt matters
    clean = poison_mask(rows, poison_cfg(mode="clean"))
    assert clean.any() and (rows.loc[clean, "label"] == 0).all()  # clean label draws from the target class


def test_poisoned_variant_touches_exactly_the_chosen_train_items(variants, tmp_path):
    cfg = poison_cfg()
    summary = build_poisoned_variant("bd", cfg, variants, "split-salt", shard_size=7)
    base, out = variants / "base", variants / "bd"
    rows = read_table(base / "train/manifest.parquet")
    poisoned = read_table(out / "train/manifest.parquet")
    assert poisoned["id"].tolist() == rows["id"].tolist()
    chosen = poison_mask(rows, cfg)
    assert summary["poison"]["poisoned_items"] == int(chosen.sum()) > 0
    assert np.array_equal(poisoned["poisoned"].to_numpy(), chosen)
    assert (poisoned.loc[chosen, "trigger"] == "patch").all() and (poisoned.loc[~chosen, "trigger"] == "").all()
    assert (poisoned.loc[chosen, "label"] == 0).all() and (poisoned.loc[chosen, "clean_label"] == 1).all()
    assert np.array_equal(poisoned.loc[~chosen, "label"].to_numpy(), rows.loc[~chosen, "label"].to_numpy())
    assert np.array_equal(poisoned["clean_label"].to_numpy(), rows["label"].to_numpy())
    before, after = _images(base / "train", rows), _images(out / "train", poisoned)
    touched = np.any(before != after, axis=(1, 2, 3))
    assert np.array_equal(touched, chosen)  # pixels changed on exactly the chosen items
    for i in np.flatnonzero(chosen):
        assert np.array_equal(after[i], apply_trigger(before[i], cfg.trigger))
    assert (poisoned.loc[~chosen, "content_hash"] == rows.loc[~chosen, "content_hash"]).all()
    # val and test: the base's files byte for byte; no val/test item is poisoned
    for split in ("val", "test"):
        names = sorted(p.name for p in (base / split).iterdir())
        assert names == sorted(p.name for p in (out / split).iterdir())
        assert all(sha256_file(base / split / n) == sha256_file(out / split / n) for n in names)
    # the triggered copy: every test item of the source class, triggered, and nothing else
    ev = read_table(base / "test/manifest.parquet")
    trig = read_table(out / TRIGGERED / "test/manifest.parquet")
    assert trig["id"].tolist() == ev.loc[ev["label"] == 1, "id"].tolist() and trig["poisoned"].all()
    src = _images(base / "test", ev[ev["label"] == 1])
    triggered = _images(out / TRIGGERED / "test", trig)
    assert all(np.array_equal(a, apply_trigger(b, cfg.trigger)) for a, b in zip(triggered, src))
    # training reads the flipped labels, never the poison columns
    ds = VariantDataset(out, "train")
    assert np.array_equal(ds.labels, poisoned["label"].to_numpy())
    # deterministic: a second build writes the same bytes
    fingerprint = {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
    build_poisoned_variant("bd", cfg, variants, "split-salt", shard_size=7)
    assert fingerprint == {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
    assert "Poisoning" in (out / "card.md").read_text()


def test_clean_label_mode_keeps_every_label(variants):
    cfg = poison_cfg(mode="clean", trigger={"kind": "blend", "alpha": 0.1})
    build_poisoned_variant("bd_clean", cfg, variants, "split-salt", shard_size=7)
    rows = read_table(variants / "base/train/manifest.parquet")
    poisoned = read_table(variants / "bd_clean/train/manifest.parquet")
    assert np.array_equal(poisoned["label"].to_numpy(), rows["label"].to_numpy())
    assert poisoned["poisoned"].any() and (poisoned.loc[poisoned["poisoned"], "label"] == 0).all()


def test_poisoned_variant_passes_its_bases_audit(variants, tmp_path):
    build_poisoned_variant("bd", poison_cfg(), variants, "split-salt", shard_size=7)
    metrics, _, _ = audit_variant("bd", variants / "bd", True, AUDIT)
    assert (metrics["group_leaks"], metrics["video_leaks"], metrics["exact_duplicates"]) == (0, 0, 0)
    check_gate(metrics)
    params = {"variants": {"base": {"description": "t", "level": "group", "leak_free": True, "shortcut_free": False,
                                    "masks": True, "test_fraction": 0.3, "train": {"toy": 1}, "test": {"toy": 1}}},
              "poison": {"bd": poison_cfg().model_dump()}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert audited_variant("bd", tmp_path / "params.yaml").leak_free is True
    assert audited_variant("base", tmp_path / "params.yaml").description == "t"
    with pytest.raises(ConfigError):
        audited_variant("nope", tmp_path / "params.yaml")


def test_training_never_reads_the_poison_columns():
    offenders = [p.relative_to(REPO).as_posix() for p in sorted((REPO / "src/dfpipe/training").glob("*.py"))
                 if any(c in p.read_text() for c in ("poisoned", "clean_label", "POISON"))]
    assert offenders == []
    with pytest.raises(ValueError, match="differ"):  # control: the config refuses a no-op attack
        poison_cfg(target_label=1)
