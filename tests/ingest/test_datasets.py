"""Real dataset layouts on generated trees with the exact names of each download.

FaceForensics++ (youtube + actors originals, six methods, raw/c23/c40, masks where they exist),
DeepFakeDetection at its real size (28 actors, 363 originals, 3,068 fakes: placeholder files) with
v1/v2's DFD counts at ``split.scale: 1.0`` and the bridging fakes counted, Celeb-DF v2 with its
official test list, DFDC training parts and the public test set's labels.csv.
"""

from __future__ import annotations

import json
import string

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from dfpipe.core.config import ConfigError, build
from dfpipe.core.manifest import FACE_SCHEMA
from dfpipe.ingest.datasets import bridge_keys, read_celebdf_test_list
from dfpipe.ingest.sources import SourceConfig, list_items
from dfpipe.splits.groups import SplitError, canonical_groups
from dfpipe.splits.variants import SplitConfig, VariantConfig, select_variant

DFD_SCENES = [  # the 16 DeepFakeDetection scenes
    "exit_phone_room", "hugging_happy", "kitchen_pan", "kitchen_still", "meeting_serious",
    "outside_talking_pan_laughing", "outside_talking_still_laughing", "podium_speech_happy",
    "punching_bag", "secret_conversation", "talking_against_wall", "talking_angry_couch",
    "walk_down_hall_angry", "walking_and_outside_surprised", "walking_down_indoor_hall_disgust",
    "walking_down_street_outside_angry",
]
FFPP_METHODS = ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter", "DeepFakeDetection"]


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def src(**kw) -> SourceConfig:
    base = dict(kind="ffpp", path="x", label=2, method="m", mode="crop", sampling="per_video")
    base.update(kw)
    return build(SourceConfig, base)


def face_table(source: str, label: int, method: str, items, frames: int = 1) -> pd.DataFrame:
    """FACE_SCHEMA rows (no pixels) for ``frames`` frames of each listed video."""
    defaults = {pa.string(): "", pa.int8(): 0, pa.int32(): 0, pa.float32(): 0.0, pa.bool_(): False}
    rows = []
    for it in items:
        for f in range(frames):
            row = {n: defaults.get(FACE_SCHEMA.field(n).type, None) for n in FACE_SCHEMA.names}
            row.update(id=f"{source}/{it.path}#f{f:05d}", source=source, label=label, method=method,
                       video_id=it.video_id, group_keys=list(it.group_keys), path=it.path, frame_index=f)
            rows.append(row)
    return pd.DataFrame(rows, columns=FACE_SCHEMA.names)


def split_cfg(**kw) -> SplitConfig:
    base = dict(salt="dfpipe-split-v1", scale=1.0, val_fraction=0.1, on_shortfall="error", ffpp_official=None,
                faces_dir="data/faces", out_dir="data/variants", shard_size=64, bridging="drop")
    base.update(kw)
    return build(SplitConfig, base)


# ---- FaceForensics++ as downloaded -----------------------------------------------------------


def make_dfd_tree(root, seed: int = 7) -> tuple[int, int]:
    """DFD names at the real counts: 28 actors, 363 originals (27 x 13 scenes + 1 x 12), 3,068 fakes."""
    rng = np.random.default_rng(seed)
    scenes = {}
    for a in range(1, 29):
        n = 12 if a == 28 else 13
        scenes[a] = sorted(rng.choice(len(DFD_SCENES), n, replace=False).tolist())
        for s in scenes[a]:
            touch(root / "original_sequences/actors/c23/videos" / f"{a:02d}__{DFD_SCENES[s]}.mp4")
    alphabet = np.array(list(string.ascii_uppercase + string.digits))
    names = set()
    while len(names) < 3068:
        t = int(rng.integers(1, 29))
        s = int(rng.integers(1, 28))
        s = s + 1 if s >= t else s
        scene = DFD_SCENES[int(rng.choice(scenes[t]))]
        names.add(f"{t:02d}_{s:02d}__{scene}__{''.join(rng.choice(alphabet, 8))}")
    vdir = root / "manipulated_sequences/DeepFakeDetection/c23/videos"
    for n in sorted(names):
        touch(vdir / f"{n}.mp4")
        touch(root / "manipulated_sequences/DeepFakeDetection/masks/videos" / f"{n}.mp4")
    return 363, 3068


def test_ffpp_download_layout_all_methods_compressions_and_masks(tmp_path):
    root = tmp_path / "ffpp"
    for comp in ("raw", "c23", "c40"):
        for vid in ("000", "001", "002", "003"):
            touch(root / f"original_sequences/youtube/{comp}/videos/{vid}.mp4")
        touch(root / f"original_sequences/actors/{comp}/videos/01__exit_phone_room.mp4")
        for m in FFPP_METHODS[:-1]:
            for pair in ("000_001", "001_000", "002_003", "003_002"):
                touch(root / f"manipulated_sequences/{m}/{comp}/videos/{pair}.mp4")
        touch(root / f"manipulated_sequences/DeepFakeDetection/{comp}/videos/01_02__exit_phone_room__YVGY8LOK.mp4")
    for m in FFPP_METHODS:
        if m != "FaceShifter":  # FF++ ships no FaceShifter masks
            for pair in ("000_001", "001_000", "002_003", "003_002"):
                touch(root / f"manipulated_sequences/{m}/masks/videos/{pair}.mp4")
    for comp in ("raw", "c40"):
        items, rej = list_items("yt", src(path="x", label=0, compression=comp), root / "original_sequences/youtube")
        assert [it.path for it in items] == [f"{comp}/videos/{v}.mp4" for v in ("000", "001", "002", "003")]
        assert [it.video_id for it in items] == ["000", "001", "002", "003"] and not rej
    items, _ = list_items("act", src(label=0), root / "original_sequences/actors")
    assert [(it.video_id, it.group_keys) for it in items] == [("01__exit_phone_room", ("dfd_actor:01",))]
    items, _ = list_items("dfd", src(), root / "manipulated_sequences/DeepFakeDetection")
    # grouped by the target actor only; the source actor is read back by bridge_keys
    assert items[0].group_keys == ("dfd_actor:01",)
    assert bridge_keys(items[0].video_id) == ("dfd_actor:01", "dfd_actor:02")
    for m in ("Deepfakes", "NeuralTextures"):
        items, _ = list_items(m, src(masks=True), root / f"manipulated_sequences/{m}")
        assert items[0].group_keys == ("ffpp:000", "ffpp:001")
        assert items[0].mask_path == "masks/videos/000_001.mp4"
    items, _ = list_items("fsh", src(masks=False), root / "manipulated_sequences/FaceShifter")
    assert len(items) == 4 and all(it.mask_path is None for it in items)
    with pytest.raises(FileNotFoundError, match="FaceShifter has no masks"):
        list_items("fsh", src(masks=True), root / "manipulated_sequences/FaceShifter")
    with pytest.raises(ConfigError, match="compression"):
        src(compression="c99")


def test_dfd_real_counts_split_at_full_scale_with_bridging(tmp_path):
    """v1/v2's DFD 100 (train + val) / 46 (test) at split.scale 1.0 on DFD's real name counts."""
    n_orig, n_fake = make_dfd_tree(tmp_path)
    fakes, rej = list_items("ff_dfd_n20", src(masks=True), tmp_path / "manipulated_sequences/DeepFakeDetection")
    origs, rej2 = list_items("ff_dfd_orig", src(label=0), tmp_path / "original_sequences/actors")
    assert (len(origs), len(fakes), rej, rej2) == (n_orig, n_fake, [], [])
    faces = pd.concat([face_table("ff_dfd_n20", 2, "DeepFakeDetection", fakes, frames=2),
                       face_table("ff_dfd_orig", 0, "actors", origs)], ignore_index=True)
    v1 = build(VariantConfig, dict(description="v1 DFD part", level="group", leak_free=True, shortcut_free=False, masks=False,
                                   test_fraction=0.25, train={"ff_dfd_n20": 100}, test={"ff_dfd_n20": 46}))
    rows, summary = select_variant(faces, "v1", v1, split_cfg())
    counts = summary["counts"]
    assert counts["train"]["items"] + counts["val"]["items"] == 100 and counts["test"]["items"] == 46
    # one actor per group: test actors and train actors are disjoint
    ev = set(rows.loc[rows.split == "test", "split_group"])
    tr = set(rows.loc[rows.split != "test", "split_group"])
    assert ev and tr and not ev & tr and all(g.startswith("dfd_actor:") for g in ev | tr)
    b = summary["bridging"]
    assert b["policy"] == "drop" and b["videos"] > 100 and b["items"] == 2 * b["videos"] and b["selected"] == 0
    # target policy: the same fakes stay, on their target's side, and some are selected
    rows_t, sum_t = select_variant(faces, "v1", v1, split_cfg(bridging="target"))
    assert sum_t["bridging"]["items"] == b["items"] and sum_t["bridging"]["selected"] > 0
    assert sum_t["counts"]["test"]["items"] == 46
    for _, r in rows_t.iterrows():  # every row sits on its target actor's side
        assert r.split_group == bridge_keys(r.video_id)[0]
    # the old pair grouping (both actors as keys) joins all 28 actors: no group-level split exists
    pair_keys = [list(bridge_keys(v)) if bridge_keys(v) else k for v, k in zip(faces.video_id, faces.group_keys)]
    assert len(set(canonical_groups(faces["id"].tolist(), pair_keys))) == 1
    old = faces.assign(group_keys=pair_keys)
    with pytest.raises(SplitError, match="pool of source 'ff_dfd_n20'"):
        select_variant(old, "v1", v1, split_cfg())


def test_bridging_counts_on_a_hand_made_case():
    """Actors 01 and 02 on different sides: 01_02 and 02_01 bridge; 01_01-style self swaps never."""
    items = []
    from dfpipe.ingest.items import Item
    for name in ("01_02__kitchen_pan__AAAAAAAA", "02_01__kitchen_pan__BBBBBBBB", "01_03__hugging_happy__CCCCCCCC"):
        items.append(Item(f"c23/videos/{name}.mp4", True, name, (f"dfd_actor:{name[:2]}",)))
    faces = face_table("dfd", 2, "DeepFakeDetection", items)
    cfg = build(VariantConfig, dict(description="d", level="group", leak_free=True, shortcut_free=False, masks=False,
                                    test_fraction=0.5, train={"dfd": 3}, test={"dfd": 3}))
    from dfpipe.splits.groups import unit_hash
    side = {a: unit_hash("dfpipe-split-v1", "split", [f"dfd_actor:{a}"])[0] < 0.5 for a in ("01", "02", "03")}
    want = sum(side[n[:2]] != side[n[3:5]] for n in ("01_02", "02_01", "01_03"))
    _, summary = select_variant(faces, "d", cfg, split_cfg(on_shortfall="cap", bridging="target"))
    assert summary["bridging"]["videos"] == want
    assert summary["bridging"]["selected"] == want


# ---- Celeb-DF v2 -----------------------------------------------------------------------------


def make_celebdf(root):
    real = ["id0_0000", "id0_0001", "id1_0000", "id2_0003", "id16_0002"]
    synth = ["id0_id1_0000", "id0_id16_0001", "id1_id0_0000", "id2_id0_0003", "id16_id2_0002"]
    yt = ["00000", "00001", "00170"]
    for n in real:
        touch(root / "Celeb-real" / f"{n}.mp4")
    for n in synth:
        touch(root / "Celeb-synthesis" / f"{n}.mp4")
    for n in yt:
        touch(root / "YouTube-real" / f"{n}.mp4")
    touch(root / "Celeb-synthesis" / "notes.txt")
    # official convention: 1 = real, 0 = synthesized; id2_0003 is listed but absent on disk
    lines = ["1 YouTube-real/00170.mp4", "1 Celeb-real/id0_0000.mp4", "1 Celeb-real/id9_0009.mp4",
             "0 Celeb-synthesis/id0_id16_0001.mp4", "0 Celeb-synthesis/id2_id0_0003.mp4",
             "1 Celeb-synthesis/id16_id2_0002.mp4"]
    (root / "List_of_testing_videos.txt").write_text("\n".join(lines) + "\n")


def test_celebdf_test_list_labels_and_identities(tmp_path):
    make_celebdf(tmp_path)
    assert read_celebdf_test_list(tmp_path / "List_of_testing_videos.txt")["YouTube-real/00170.mp4"] == 0
    real, rej = list_items("cd_real", src(kind="celebdf", label=0, subset="test"), tmp_path)
    assert [(i.path, i.video_id, i.group_keys) for i in real] == [
        ("Celeb-real/id0_0000.mp4", "Celeb-real/id0_0000", ("celebdf:id0",)),
        ("YouTube-real/00170.mp4", "YouTube-real/00170", ("celebdf_yt:00170",))]
    assert [(r.path, r.reason) for r in rej] == [("Celeb-real/id9_0009.mp4", "missing_file")]
    fake, rej = list_items("cd_fake", src(kind="celebdf", label=2, subset="test"), tmp_path)
    assert [(i.video_id, i.group_keys) for i in fake] == [
        ("Celeb-synthesis/id0_id16_0001", ("celebdf:id0",)), ("Celeb-synthesis/id2_id0_0003", ("celebdf:id2",))]
    assert bridge_keys(fake[0].video_id) == ("celebdf:id0", "celebdf:id16")
    assert sorted((r.path, r.reason) for r in rej) == [
        ("Celeb-synthesis/id16_id2_0002.mp4", "label_mismatch"), ("Celeb-synthesis/notes.txt", "not_video")]
    train, _ = list_items("cd_fake_tr", src(kind="celebdf", label=2, subset="train"), tmp_path)
    assert [i.video_id for i in train] == ["Celeb-synthesis/id0_id1_0000", "Celeb-synthesis/id1_id0_0000"]
    every, _ = list_items("cd_real_all", src(kind="celebdf", label=0), tmp_path)
    assert len(every) == 8
    with pytest.raises(ConfigError, match="subset"):
        src(kind="dfdc", label=0, subset="test")
    with pytest.raises(ConfigError, match="group_pattern"):
        src(kind="celebdf", label=0, group_pattern="^(id\\d+)")


# ---- DFDC --------------------------------------------------------------------------------------


def test_dfdc_training_parts_and_public_test_labels(tmp_path):
    train = tmp_path / "dfdc_train"
    meta = {"aaqaifqrwn.mp4": {"label": "REAL", "split": "train", "original": None},
            "abarnvbtwb.mp4": {"label": "FAKE", "split": "train", "original": "aaqaifqrwn.mp4"},
            "abofeumbvv.mp4": {"label": "FAKE", "split": "train", "original": "aaqaifqrwn.mp4"},
            "acxwigylke.mp4": {"label": "FAKE", "split": "train", "original": "bbbbbbbbbb.mp4"}}
    part = train / "dfdc_train_part_0"
    part.mkdir(parents=True)
    (part / "metadata.json").write_text(json.dumps(meta))
    for name in ("aaqaifqrwn.mp4", "abarnvbtwb.mp4", "abofeumbvv.mp4", "zzzzzzzzzz.mp4"):
        touch(part / name)
    (train / "dfdc_train_part_1").mkdir()
    (train / "dfdc_train_part_1" / "metadata.json").write_text(json.dumps(
        {"bbbbbbbbbb.mp4": {"label": "REAL", "split": "train"}}))
    touch(train / "dfdc_train_part_1" / "bbbbbbbbbb.mp4")
    real, rej = list_items("dfdc_real", src(kind="dfdc", label=0), train)
    assert [(i.video_id, i.group_keys) for i in real] == [
        ("dfdc_train_part_0/aaqaifqrwn", ("dfdc:aaqaifqrwn",)), ("dfdc_train_part_1/bbbbbbbbbb", ("dfdc:bbbbbbbbbb",))]
    fake, rej = list_items("dfdc_fake", src(kind="dfdc", label=2), train)
    # fakes join their original's group; a listed fake missing on disk and an unlisted file are rejects
    assert [(i.video_id, i.group_keys) for i in fake] == [
        ("dfdc_train_part_0/abarnvbtwb", ("dfdc:aaqaifqrwn",)), ("dfdc_train_part_0/abofeumbvv", ("dfdc:aaqaifqrwn",))]
    assert sorted((r.path, r.reason) for r in rej) == [
        ("dfdc_train_part_0/acxwigylke.mp4", "missing_file"), ("dfdc_train_part_0/zzzzzzzzzz.mp4", "unlisted")]
    assert len(set(canonical_groups([i.video_id for i in real + fake], [i.group_keys for i in real + fake]))) == 2

    test = tmp_path / "dfdc_test"
    test.mkdir()
    (test / "labels.csv").write_text("filename,label\naaalmxaqpe.mp4,1\naabqyygbaa.mp4,0\naacmslmypk.mp4,1.0\n")
    for name in ("aaalmxaqpe.mp4", "aabqyygbaa.mp4", "aacmslmypk.mp4"):
        touch(test / name)
    fake, rej = list_items("dfdc_test_fake", src(kind="dfdc", label=2), test)
    assert [(i.path, i.group_keys) for i in fake] == [
        ("aaalmxaqpe.mp4", ("dfdc:aaalmxaqpe",)), ("aacmslmypk.mp4", ("dfdc:aacmslmypk",))] and not rej
    real, _ = list_items("dfdc_test_real", src(kind="dfdc", label=0), test)
    assert [i.video_id for i in real] == ["aabqyygbaa"]
    (test / "labels.csv").write_text("filename,label\naaalmxaqpe.mp4,FAKE\n")
    with pytest.raises(ValueError, match="labels.csv:2"):
        list_items("dfdc_test_fake", src(kind="dfdc", label=2), test)
    with pytest.raises(FileNotFoundError, match="dfdc_train_part"):
        list_items("x", src(kind="dfdc", label=0), tmp_path / "dfdc_train" / "dfdc_train_part_1")


def test_test_set_variant_takes_the_whole_official_list(tmp_path):
    make_celebdf(tmp_path)
    real, _ = list_items("cdf_real_test", src(kind="celebdf", label=0, subset="test"), tmp_path)
    fake, _ = list_items("cdf_fake_test", src(kind="celebdf", label=2, subset="test"), tmp_path)
    faces = pd.concat([face_table("cdf_real_test", 0, "celebdf_real", real, frames=3),
                       face_table("cdf_fake_test", 2, "celebdf_synthesis", fake, frames=3)], ignore_index=True)
    cfg = build(VariantConfig, dict(description="t", role="test_set", level="group", leak_free=True, shortcut_free=False, masks=False,
                                    test_fraction=0.25, train={}, test={"cdf_real_test": -1, "cdf_fake_test": -1}))
    rows, summary = select_variant(faces, "celebdf_test", cfg, split_cfg())
    assert len(rows) == len(faces) == 12 and set(rows.split) == {"test"}
    assert summary["requested"]["test"] == {"cdf_fake_test": 6, "cdf_real_test": 6}
    assert summary["bridging"]["items"] == 0  # a test set is never split, so nothing bridges
    with pytest.raises(ConfigError, match="no train part"):
        build(VariantConfig, dict(description="t", role="test_set", level="group", leak_free=True, shortcut_free=False, masks=False,
                                  test_fraction=0.25, train={"cdf_real_test": 1}, test={}))
    with pytest.raises(ConfigError, match="must be >= 0"):
        build(VariantConfig, dict(description="t", level="group", leak_free=True, shortcut_free=False, masks=False,
                                  test_fraction=0.25, train={}, test={"cdf_real_test": -1}))
