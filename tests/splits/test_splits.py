"""Leak-free splits: union-find groups, stability under listing order and added items, official FF++."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dfpipe.splits.groups import SplitError, UnionFind, canonical_groups, read_official_ffpp, unit_hash
from dfpipe.splits.variants import select_variant
from helpers import face_rows, split_cfg, variant_cfg

PAIRS = [(f"{i:03d}", f"{i + 1:03d}") for i in range(0, 60, 2)]


def _faces() -> pd.DataFrame:
    return pd.concat([
        face_rows("ffhq", n_images=60, per_identity=3),
        face_rows("gan_a", n_images=40),
        face_rows("ff_f2f_k", videos=PAIRS, frames=3),
        face_rows("ff_fs_k", videos=[(s, t) for t, s in PAIRS[::2]], frames=3),  # reversed pairs link groups
        face_rows("ff_orig", videos=[], frames=0),
    ], ignore_index=True)


BIG = {"ffhq": 1000, "gan_a": 1000, "ff_f2f_k": 1000, "ff_fs_k": 1000}


def _all_items(level="group"):
    """A variant asking for more than exists, capped: every item is selected, so its split shows."""
    return variant_cfg(level=level, leak_free=level == "group", train=BIG, test=BIG), split_cfg(on_shortfall="cap")


def test_union_find_joins_fake_with_target_and_source_originals():
    ids = ["orig/071", "orig/054", "f2f/071_054", "orig/999", "fs/054_071"]
    keys = [["ffpp:071"], ["ffpp:054"], ["ffpp:071", "ffpp:054"], ["ffpp:999"], ["ffpp:054", "ffpp:071"]]
    assert canonical_groups(ids, keys) == ["ffpp:054", "ffpp:054", "ffpp:054", "ffpp:999", "ffpp:054"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        perm = rng.permutation(len(ids))
        got = canonical_groups([ids[i] for i in perm], [keys[i] for i in perm])
        assert got == ["ffpp:054" if i != 3 else "ffpp:999" for i in perm]
    uf = UnionFind()
    for k in "dcba":
        uf.add(k)
    uf.union("d", "c"), uf.union("b", "a"), uf.union("c", "b")
    assert {uf.find(k) for k in "abcd"} == {"a"}


def test_empty_group_keys_is_an_error():
    with pytest.raises(SplitError, match="'x/1'.*empty group_keys"):
        canonical_groups(["x/1"], [[]])


def test_unit_hash_is_in_unit_interval_and_salted():
    a = unit_hash("s", "split", ["k1", "k2", "k3"])
    assert ((a >= 0) & (a < 1)).all() and len(set(a)) == 3
    assert np.array_equal(a, unit_hash("s", "split", ["k1", "k2", "k3"]))
    assert not np.array_equal(a, unit_hash("t", "split", ["k1", "k2", "k3"]))
    assert not np.array_equal(a, unit_hash("s", "val", ["k1", "k2", "k3"]))


def test_split_independent_of_listing_order():
    faces = _faces()
    cfg = variant_cfg(train={"ffhq": 25, "gan_a": 20, "ff_f2f_k": 30, "ff_fs_k": 12},
                      test={"ffhq": 8, "gan_a": 6, "ff_f2f_k": 10, "ff_fs_k": 4})
    ref, ref_sum = select_variant(faces, "v", cfg, split_cfg())
    for seed in range(3):
        shuffled = faces.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        got, got_sum = select_variant(shuffled, "v", cfg, split_cfg())
        pd.testing.assert_frame_equal(ref, got)
        assert ref_sum == got_sum


def test_no_group_on_two_sides_and_linked_fakes_share_a_split():
    rows, _ = select_variant(_faces(), "v", *_all_items("group"))
    assert set(rows["split"]) == {"train", "val", "test"}
    per_group = rows.groupby("split_group")["split"].nunique()
    assert (per_group == 1).all()
    # fs 001_000 links to f2f 000_001: one group, one split
    f2f = rows.loc[rows["id"] == "ff_f2f_k/000_001.mp4#f0000", ["split", "split_group"]].iloc[0]
    fs = rows.loc[rows["id"] == "ff_fs_k/001_000.mp4#f0001", ["split", "split_group"]].iloc[0]
    assert f2f.tolist() == fs.tolist() and f2f["split_group"] == "ffpp:000"
    # FFHQ identities stay together
    ffhq = rows[rows["source"] == "ffhq"]
    assert (ffhq.groupby(ffhq["group_keys"].map(tuple))["split"].nunique() == 1).all()


def test_frame_level_splits_frames_of_one_video_apart():
    rows, _ = select_variant(_faces(), "v3", *_all_items("frame"))
    videos = rows[rows["video_id"] != ""].groupby(["source", "video_id"])["split"].nunique()
    assert (videos > 1).any()  # the leak variant 3 reproduces on purpose
    frames = rows["video_id"] != ""
    assert (rows.loc[frames, "split_group"] == rows.loc[frames, "id"]).all()
    # still images keep their group unit: identities never straddle splits, as at group level
    ffhq = rows[rows["source"] == "ffhq"]
    assert (ffhq.groupby(ffhq["group_keys"].map(tuple))["split"].nunique() == 1).all()
    assert (ffhq["split_group"] != ffhq["id"]).all()


def test_adding_unrelated_items_moves_no_existing_item():
    faces = _faces()
    ref, _ = select_variant(faces, "v", *_all_items())
    more = pd.concat([faces, face_rows("gan_a", n_images=80).iloc[40:],
                      face_rows("ff_f2f_k", videos=[("500", "501"), ("502", "503")], frames=3)], ignore_index=True)
    got, _ = select_variant(more, "v", *_all_items())
    assert len(got) == len(ref) + 40 + 6
    merged = ref.merge(got, on="id", suffixes=("_ref", "_got"))
    assert len(merged) == len(ref)
    assert (merged["split_ref"] == merged["split_got"]).all()
    # removing items does not move the rest either
    fewer = faces[~faces["source"].eq("gan_a")]
    got2, _ = select_variant(fewer, "v", *_all_items())
    kept = ref[ref["source"] != "gan_a"].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, got2)


def test_only_linked_items_can_move_when_a_new_item_joins_groups():
    faces = _faces()
    ref, _ = select_variant(faces, "v", *_all_items())
    g = dict(zip(ref["id"], ref["split_group"]))
    link = face_rows("ff_fs_k", videos=[("000", "058")], frames=1)  # joins groups ffpp:000 and ffpp:058
    got, _ = select_variant(pd.concat([faces, link], ignore_index=True), "v", *_all_items())
    moved = got.merge(ref, on="id", suffixes=("", "_ref"))
    moved = moved[moved["split"] != moved["split_ref"]]
    assert set(moved["id"].map(g)) <= {"ffpp:000", "ffpp:058"}
    was_058 = got["id"].map(g).eq("ffpp:058")
    assert was_058.any() and (got.loc[was_058, "split_group"] == "ffpp:000").all()


def _write_official(d, train, val, test):
    d.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train", train), ("val", val), ("test", test)):
        (d / f"{name}.json").write_text(json.dumps(pairs))


def test_official_ffpp_split_decides_ffpp_groups(tmp_path):
    pairs = [list(p) for p in PAIRS]
    _write_official(tmp_path, pairs[:20], pairs[20:25], pairs[25:])
    official = read_official_ffpp(tmp_path)
    assert official["ffpp:000"] == "train" and official["ffpp:041"] == "val" and official["ffpp:059"] == "test"
    cfg, split = _all_items()
    rows, summary = select_variant(_faces(), "v", cfg, split, official)
    ff = rows[rows["source"].str.startswith("ff_")]
    first = ff["video_id"].str.slice(0, 3).astype(int)
    expect = np.where(first < 40, "train", np.where(first < 50, "val", "test"))
    assert ff["split"].tolist() == expect.tolist()
    assert summary["items_split_by_official_ffpp"] == len(ff)
    # frame-level variants ignore it (variant 3 reproduces the notes' frame split)
    rows3, _ = select_variant(_faces(), "v3", variant_cfg(level="frame", leak_free=False, train=BIG, test=BIG), split, official)
    assert rows3[rows3["source"] == "ff_f2f_k"].groupby("video_id")["split"].nunique().max() > 1


@pytest.mark.parametrize("content, match", [
    ("not json", "not valid JSON"),
    ('{"a": 1}', "expected a list"),
    ('[["071"]]', "entry 0"),
    ('[["071", 54]]', "entry 0"),
    ('[["071", ""]]', "entry 0"),
])
def test_malformed_official_split_is_a_clear_error(tmp_path, content, match):
    _write_official(tmp_path, [["001", "002"]], [["003", "004"]], [["005", "006"]])
    (tmp_path / "val.json").write_text(content)
    with pytest.raises(SplitError, match=rf"val\.json: .*{match}"):
        read_official_ffpp(tmp_path)


def test_official_split_missing_file_duplicate_and_conflict(tmp_path):
    with pytest.raises(SplitError, match="train.json: official FF\\+\\+ split file not found"):
        read_official_ffpp(tmp_path / "nowhere")
    _write_official(tmp_path, [["001", "002"]], [["002", "004"]], [])
    with pytest.raises(SplitError, match="'002' is also listed in the 'train' split"):
        read_official_ffpp(tmp_path)
    _write_official(tmp_path, [["000", "001"]], [], [["002", "003"]])
    faces = face_rows("ff_f2f_k", videos=[("000", "001"), ("002", "003"), ("001", "002")], frames=1)
    with pytest.raises(SplitError, match="official 'test' and 'train' splits|official 'train' and 'test' splits"):
        select_variant(faces, "v", variant_cfg(train={"ff_f2f_k": 3}), split_cfg(on_shortfall="cap"), read_official_ffpp(tmp_path))
