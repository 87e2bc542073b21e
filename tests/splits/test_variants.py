"""Dataset variants: counts of the notes x scale, shortfall policy, masks, determinism.

Also holds the small generators of face manifests + shards that test_splits / test_audit import:
real dfpipe.core.shards / dfpipe.core.manifest files with smooth random crops (frames of one video are the
video's base image plus slight noise, so they are near duplicates as real frames are).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers import LABEL, SIZE, face_rows, frame_image, item_image, smooth_image, split_cfg, variant_cfg, write_source
from dfpipe.core.config import ConfigError, build, load_section
from dfpipe.core.io import array_hash
from dfpipe.core.manifest import FACE_SCHEMA, VARIANT_SCHEMA, read_table, write_faces
from dfpipe.core.shards import ShardReader, ShardWriter
from dfpipe.splits.groups import SplitError, canonical_groups
from dfpipe.splits.variants import SplitConfig, VariantConfig, build_variant, scaled, select_variant

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- counts of the notes x scale

# Sums of the notes' per-source counts. The notes' headline totals differ (8416, 11416, 40500 for
# data 3): their per-source lists, which params.yaml copies, do not add up to them.
NOTES_TOTALS = {"v1": (30500, 8413), "v2": (40500, 11413), "v3": (40600, 11686), "v4": (40579, 11705)}


def test_params_declare_the_notes_counts():
    variants = load_section("variants", dict[str, VariantConfig], REPO / "params.yaml")
    assert set(variants) >= {"v1", "v2", "v3", "v4", "v4_nomask"}
    for name, (train, ev) in NOTES_TOTALS.items():  # FF++ originals are not in the notes
        assert sum(n for s, n in variants[name].train.items() if s != "ff_youtube_k") == train, name
        assert sum(n for s, n in variants[name].test.items() if s != "ff_youtube_k") == ev, name
    v4, v4n = variants["v4"], variants["v4_nomask"]
    assert (v4.train["ff_f2f_k"], v4.train["ff_fs_k"], v4.test["ff_f2f_k"], v4.test["ff_fs_k"]) == (794, 785, 328, 377)
    assert v4n.model_copy(update=dict(masks=True, description=v4.description)) == v4
    assert variants["v3"].level == "frame" and not variants["v3"].leak_free
    assert v4.level == "group" and v4.leak_free and v4.masks and not v4n.masks


@pytest.mark.parametrize("name", ["v1", "v2", "v3", "v3_group", "v4", "v4_ctl"])
def test_selected_counts_equal_notes_times_scale(name):
    variants = load_section("variants", dict[str, VariantConfig], REPO / "params.yaml")
    cfg = variants[name]
    scale = 0.01
    frames = []
    for source in cfg.sources:
        need = scaled(cfg.train.get(source, 0), scale) + scaled(cfg.test.get(source, 0), scale)
        if source.startswith("ff_"):
            frames.append(face_rows(source, videos=[(f"{i:03d}", f"{i + 1:03d}") for i in range(0, 6 * need, 2)], frames=3))
        else:
            frames.append(face_rows(source, n_images=4 * need + 20, per_identity=2))
    faces = pd.concat(frames, ignore_index=True)
    rows, summary = select_variant(faces, name, cfg, split_cfg(scale=scale))
    for source in cfg.sources:
        sub = rows[rows["source"] == source]
        assert int(sub["split"].isin(["train", "val"]).sum()) == scaled(cfg.train.get(source, 0), scale), source
        assert int((sub["split"] == "test").sum()) == scaled(cfg.test.get(source, 0), scale), source
    assert summary["capped"] == []
    assert list(rows["id"]) == sorted(rows["id"])
    if name == "v4":
        twin = cfg.model_copy(update={"masks": False})
        rows2, _ = select_variant(faces, "v4_nomask", twin, split_cfg(scale=scale))
        pd.testing.assert_frame_equal(rows, rows2)


def test_scaled_rounds_half_up():
    assert [scaled(c, 0.04) for c in (15000, 794, 785, 328, 377, 46, 183)] == [600, 32, 31, 13, 15, 2, 7]
    assert scaled(25, 0.1) == 3  # 2.5 -> 3 (Python's round would give 2)


def test_shortfall_error_names_source_and_cap_is_recorded():
    faces = face_rows("gan_x", n_images=10)
    cfg = variant_cfg(train={"gan_x": 50}, test={"gan_x": 2})
    with pytest.raises(SplitError, match=r"'v'.*train pool of source 'gan_x' has \d+ items, 50 requested"):
        select_variant(faces, "v", cfg, split_cfg())
    rows, summary = select_variant(faces, "v", cfg, split_cfg(on_shortfall="cap"))
    cap = summary["capped"]
    assert len(cap) == 1 and cap[0]["split"] == "train" and cap[0]["requested"] == 50
    assert cap[0]["available"] == int(rows["split"].isin(["train", "val"]).sum()) < 50


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="cannot be leak_free"):
        variant_cfg(level="frame", leak_free=True)
    with pytest.raises(ConfigError, match="test_fraction"):
        variant_cfg(test_fraction=1.5)
    with pytest.raises(ConfigError, match="unknown key"):
        variant_cfg(train={"a": 1}, typo=3)
    with pytest.raises(ConfigError, match=r"train\.\w+: must be >= 0"):
        variant_cfg(train={"a": -1})
    with pytest.raises(ConfigError, match="on_shortfall"):
        split_cfg(on_shortfall="ignore")


# ---------------------------------------------------------------- materialised shards

def _tiny_faces(tmp_path: Path) -> Path:
    faces = tmp_path / "faces"
    write_source(faces, face_rows("ffhq", n_images=30, per_identity=3))
    write_source(faces, face_rows("gan_a", n_images=30))
    write_source(faces, face_rows("ff_f2f_k", videos=[(f"{i:03d}", f"{i + 1:03d}") for i in range(0, 16, 2)], frames=4))
    return faces


def _tiny_variant(masks: bool) -> VariantConfig:
    return variant_cfg(masks=masks, train={"ffhq": 12, "gan_a": 12, "ff_f2f_k": 14}, test={"ffhq": 4, "gan_a": 4, "ff_f2f_k": 4})


def test_materialised_variant_masks_pixels_and_determinism(tmp_path):
    _tiny_faces(tmp_path)
    split = split_cfg(tmp_path, on_shortfall="cap")
    build_variant("m", _tiny_variant(True), split)
    build_variant("n", _tiny_variant(False), split)
    first = {p.relative_to(tmp_path / "variants/m"): p.read_bytes() for p in sorted((tmp_path / "variants/m").rglob("*")) if p.is_file()}
    build_variant("m", _tiny_variant(True), split)  # rebuild: byte-identical, no stale files
    again = {p.relative_to(tmp_path / "variants/m"): p.read_bytes() for p in sorted((tmp_path / "variants/m").rglob("*")) if p.is_file()}
    assert first == again
    src_readers = {}
    for split_name in ("train", "val", "test"):
        m = read_table(tmp_path / "variants/m" / split_name / "manifest.parquet", VARIANT_SCHEMA)
        n = read_table(tmp_path / "variants/n" / split_name / "manifest.parquet", VARIANT_SCHEMA)
        assert list(m["id"]) == list(n["id"]) and (m["split"] == split_name).all()
        assert not n["has_mask"].any() and (n["mask_shard"] == "").all()
        assert not list((tmp_path / "variants/n" / split_name).glob("masks-*.npy"))
        assert (m["mask_shard"] != "").all()
        reader = ShardReader(tmp_path / "variants/m" / split_name)
        faces = pd.concat([read_table(tmp_path / "faces" / s / "manifest.parquet") for s in ("ffhq", "gan_a", "ff_f2f_k")]).set_index("id")
        for row in m.itertuples(index=False):
            src = faces.loc[row.id]
            sr = src_readers.setdefault(row.source, ShardReader(tmp_path / "faces" / row.source))
            assert np.array_equal(reader.get(row.shard, row.offset), sr.get(src["shard"], src["offset"]))
            mask = reader.get(row.mask_shard, row.offset)
            if row.has_mask:
                assert np.array_equal(mask, sr.get(src["mask_shard"], src["offset"])) and mask.any()
            else:
                assert mask.shape == (SIZE, SIZE) and not mask.any()
        assert m["has_mask"].tolist() == (m["source"] == "ff_f2f_k").tolist()


def test_missing_manifest_and_bad_crop_size_are_clear_errors(tmp_path):
    faces = _tiny_faces(tmp_path)
    split = split_cfg(tmp_path, on_shortfall="cap")
    with pytest.raises(FileNotFoundError, match="gan_missing"):
        build_variant("x", variant_cfg(train={"gan_missing": 1}), split)
    rows = face_rows("gan_big", n_images=40)
    out = faces / "gan_big"
    with ShardWriter(out, "images", 64) as w:
        for k in range(len(rows)):
            rows.loc[k, ["shard", "offset"]] = list(w.add(np.zeros((SIZE + 2, SIZE + 2, 3), np.uint8)))
    write_faces(rows, out / "manifest.parquet")
    with pytest.raises(ValueError, match="crop shape"):
        build_variant("x", variant_cfg(train={"gan_a": 10, "gan_big": 10}), split)


# ---------------------------------------------------------------- v3 vs v4 stills, FF++ originals

def _params_faces(cfgs, scale: float) -> pd.DataFrame:
    """Generated rows for every source of ``cfgs`` with room for the counts at ``scale``."""
    need: dict[str, int] = {}
    for cfg in cfgs:
        for source in cfg.sources:
            n = scaled(cfg.train.get(source, 0), scale) + scaled(cfg.test.get(source, 0), scale)
            need[source] = max(need.get(source, 0), n)
    pairs = [(f"{i:03d}", f"{i + 1:03d}") for i in range(0, 24, 2)]
    frames = []
    for source, n in sorted(need.items()):
        if source.startswith("ff_"):  # 10 frames of 12 videos, every source on the same FF++ pairs
            assert 12 * 10 >= 4 * n, source
            frames.append(face_rows(source, videos=pairs, frames=10))
        else:
            frames.append(face_rows(source, n_images=4 * n + 20, per_identity=2))
    return pd.concat(frames, ignore_index=True)


def test_v3_and_v4_hold_the_same_stills_and_differ_only_in_video_frames():
    variants = load_section("variants", dict[str, VariantConfig], REPO / "params.yaml")
    v3, v3g, v4 = variants["v3"], variants["v3_group"], variants["v4"]
    scale = 0.01
    faces = _params_faces([v3, v4], scale)
    split = split_cfg(scale=scale)
    rows3, _ = select_variant(faces, "v3", v3, split)
    rows3g, _ = select_variant(faces, "v3_group", v3g, split)
    rows4, _ = select_variant(faces, "v4", v4, split)

    def stills(rows):
        sub = rows[rows["video_id"] == ""]
        return {s: sorted(sub.loc[sub["split"] == s, "id"]) for s in ("train", "val", "test")}

    assert stills(rows3)["test"] and stills(rows3) == stills(rows4) == stills(rows3g)
    # the video frames: v3 splits videos across sides (the leak), v4 and v3_group never do
    for rows, leaks in ((rows3, True), (rows3g, False), (rows4, False)):
        sub = rows[rows["video_id"] != ""]
        vids = sub.groupby(["source", "video_id"])["split"].nunique()
        groups = sub.groupby(canonical_groups(sub["id"].tolist(), sub["group_keys"].tolist()))["split"].nunique()
        assert bool((vids > 1).any()) == bool((groups > 1).any()) == leaks
    ff = lambda r: sorted(r.loc[r["video_id"] != "", "id"] + "@" + r.loc[r["video_id"] != "", "split"])  # noqa: E731
    assert ff(rows3) != ff(rows3g)
    # v3 and its leak-free twin take the same number of frames per source and split
    count = lambda r: r.assign(s=r["split"].replace("val", "train")).groupby(["source", "s"]).size().to_dict()  # noqa: E731
    assert count(rows3) == count(rows3g)


def test_ffpp_originals_are_real_and_share_a_side_with_their_fakes():
    variants = load_section("variants", dict[str, VariantConfig], REPO / "params.yaml")
    for name in ("v4", "v4_nomask", "v4_ctl"):
        cfg = variants[name]
        assert cfg.train["ff_youtube_k"] == 790 and cfg.test["ff_youtube_k"] == 353, name
    assert variants["v4_ctl"].shortcut_free and variants["v4_ctl"].leak_free
    assert all(not variants[v].shortcut_free for v in ("v1", "v2", "v3", "v3_group", "v4", "v4_nomask"))
    assert "ff_youtube_k" not in variants["v3"].sources  # the notes' variants stay as they were
    pairs = [(f"{i:03d}", f"{i + 1:03d}") for i in range(0, 40, 2)]
    faces = pd.concat([face_rows("ff_youtube_k", videos=pairs, frames=2),
                       face_rows("ff_f2f_k", videos=pairs, frames=2),
                       face_rows("ff_fs_k", videos=[(s, t) for t, s in pairs], frames=2)], ignore_index=True)
    big = {"ff_youtube_k": 1000, "ff_f2f_k": 1000, "ff_fs_k": 1000}
    rows, summary = select_variant(faces, "o", variant_cfg(train=big, test=big), split_cfg(on_shortfall="cap"))
    assert (rows.loc[rows["source"] == "ff_youtube_k", "label"] == 0).all()
    side = rows.assign(s=rows["split"].replace("val", "train"))
    for t, s in pairs:  # the originals t, s and every fake made from them: one side
        linked = side[side["video_id"].isin([t, s, f"{t}_{s}", f"{s}_{t}"])]
        assert len(linked) == 8 and linked["s"].nunique() == 1
    assert set(summary["counts"]["test"]["by_label"]) == {"real", "edited"}  # both classes per video
