"""Leakage audit: finds planted group/video/exact/near-duplicate leaks; leak-free check fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from dfpipe.splits.audit import LeakError, audit_variant, check_gate, near_pairs, phash
from dfpipe.splits.gate import variant_fingerprint
from dfpipe.core.io import array_hash
from dfpipe.core.manifest import write_faces
from dfpipe.core.shards import ShardReader, ShardWriter
from dfpipe.splits.variants import build_variant, materialise_split, select_variant
from helpers import (ALL, AUDIT, SIZE, face_rows, frame_image, run_audit_stage, smooth_image, split_cfg, variant_cfg,
                     write_source, write_stage_params)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def faces_dir(tmp_path):
    faces = tmp_path / "faces"
    write_source(faces, face_rows("ffhq", n_images=24, per_identity=3))
    write_source(faces, face_rows("gan_a", n_images=24))
    write_source(faces, face_rows("ff_f2f_k", videos=[(f"{i:03d}", f"{i + 1:03d}") for i in range(0, 20, 2)], frames=4))
    return faces


def test_phash_distances():
    a = smooth_image("a", 64)
    near = np.clip(a.astype(np.int16) + np.random.default_rng(0).integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    d = lambda x, y: int(np.bitwise_count(phash(x) ^ phash(y)))  # noqa: E731
    assert d(a, a) == 0
    assert d(a, near) <= 4
    assert min(d(a, smooth_image(f"b{k}", 64)) for k in range(20)) > 8
    assert phash(a) == phash(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY))  # gray input accepted
    pairs = near_pairs(np.array([1, 2, 0xFF], np.uint64), np.array([3, 0xFF00], np.uint64), 1, chunk_elems=2)
    assert pairs.tolist() == [[0, 0], [1, 0]]


def test_clean_group_variant_passes(tmp_path, faces_dir):
    split = split_cfg(tmp_path, on_shortfall="cap")
    build_variant("v4", variant_cfg(masks=True, train=ALL, test=ALL), split)
    m, md, flags = audit_variant("v4", tmp_path / "variants/v4", True, AUDIT)
    assert (m["group_leaks"], m["video_leaks"], m["exact_duplicates"]) == (0, 0, 0)
    assert m["leak_check"] == "passed" and m["near_duplicate_pairs"] == 0
    assert sum(m["items"].values()) == 24 + 24 + 40 and m["videos"] == 10
    check_gate(m)
    assert "Leak check: **passed**" in md
    assert len(flags) == m["items"]["test"] and not flags["video_in_train"].any() and not flags["group_in_train"].any()


def test_frame_level_variant_shows_its_leak(tmp_path, faces_dir):
    split = split_cfg(tmp_path, on_shortfall="cap")
    build_variant("v3", variant_cfg(level="frame", leak_free=False, train=ALL, test=ALL), split)
    m, md, flags = audit_variant("v3", tmp_path / "variants/v3", False, AUDIT)
    assert m["group_leaks"] > 0 and m["video_leaks"] > 0 and m["leak_check"] == "not required"
    assert m["group_leaks_by_source"]["ff_f2f_k"] > 0
    assert m["near_duplicate_pairs"] > 0  # frames of one video across splits
    check_gate(m)  # not declared leak-free: reported, not fatal
    assert m["test_items_video_in_train"] == int(flags["video_in_train"].sum()) > 0
    m2, _, _ = audit_variant("v3", tmp_path / "variants/v3", True, AUDIT)
    with pytest.raises(LeakError, match="declared leak_free.*group leak"):
        check_gate(m2)
    assert "Videos on more than one split" in md and "ff_f2f_k" in md


def _planted(tmp_path, faces_dir):
    """A clean group split plus: an exact copy of a train GAN image in test (new group), a noisy
    copy of a train FFHQ image in test (new group), and a new item in test claiming a train video."""
    cfg, split = variant_cfg(train=ALL, test=ALL), split_cfg(tmp_path, on_shortfall="cap")
    faces = pd.concat([pd.read_parquet(faces_dir / s / "manifest.parquet") for s in ALL], ignore_index=True)
    rows, _ = select_variant(faces, "p", cfg, split)
    train = rows[rows["split"] == "train"]
    gan = train[train["source"] == "gan_a"].iloc[0]
    ffhq = train[train["source"] == "ffhq"].iloc[0]
    video = train[train["source"] == "ff_f2f_k"].iloc[0]
    exact = gan.copy()
    exact[["id", "group_keys", "split", "split_group"]] = ["gan_a/copy.png", ["gan_a/copy.png"], "test", "gan_a/copy.png"]

    plant = face_rows("plant", n_images=2)
    base = ShardReader(faces_dir / "ffhq").get(ffhq["shard"], ffhq["offset"])
    near_img = np.clip(base.astype(np.int16) + np.random.default_rng(1).integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
    with ShardWriter(faces_dir / "plant", "images", 8) as w:
        for k, img in enumerate([near_img, frame_image("other", 0)]):
            plant.loc[k, ["shard", "offset", "content_hash"]] = [*w.add(img), array_hash(img)]
    plant.loc[1, ["video_id", "method"]] = [video["video_id"], video["method"]]  # same (method, video)
    write_faces(plant, faces_dir / "plant" / "manifest.parquet")
    plant["split"], plant["split_group"] = "test", plant["id"]
    rows = pd.concat([rows, exact.to_frame().T, plant], ignore_index=True).sort_values("id")
    for s in ("train", "val", "test"):
        materialise_split(rows[rows["split"] == s], faces_dir, tmp_path / "variants/p" / s, False, 5)
    return tmp_path / "variants/p", gan["id"], ffhq["id"]


def test_audit_finds_planted_exact_near_and_video_leaks(tmp_path, faces_dir):
    vdir, gan_id, ffhq_id = _planted(tmp_path, faces_dir)
    m, md, _ = audit_variant("p", vdir, True, AUDIT)
    assert m["group_leaks"] == 0
    assert m["exact_duplicates"] == 1
    assert m["video_leaks"] == 1
    assert m["near_duplicate_pairs_other_group"] >= 1
    assert m["leak_check"] == "failed"
    with pytest.raises(LeakError, match="1 video leak.*1 exact duplicate"):
        check_gate(m)
    assert f"`{ffhq_id}` | `plant/img00000.png`" in md
    # the exact-duplicate table names both items, not just the hash
    assert f"`gan_a/copy.png`, `{gan_id}`" in md


def test_corrupt_pixels_are_an_error(tmp_path, faces_dir):
    build_variant("c", variant_cfg(train=ALL, test=ALL), split_cfg(tmp_path, on_shortfall="cap"))
    shard = sorted((tmp_path / "variants/c/test").glob("images-*.npy"))[0]
    arr = np.load(shard)
    arr[0, 0, 0, 0] ^= 1
    np.save(shard, arr)
    with pytest.raises(ValueError, match="do not match their content_hash"):
        audit_variant("c", tmp_path / "variants/c", True, AUDIT)


def test_audit_stage_writes_report_then_fails_leak_free_variant(tmp_path, faces_dir):
    vdir, _, _ = _planted(tmp_path, faces_dir)
    write_stage_params(tmp_path, "p", leak_free=True)
    proc = run_audit_stage(tmp_path, "p")
    assert proc.returncode != 0
    assert "audit@p FAILED" in proc.stderr and "1 exact duplicate" in proc.stderr
    assert (tmp_path / "metrics/audit/p.json").is_file() and (tmp_path / "metrics/audit/p.md").is_file()
    assert (tmp_path / "metrics/audit/p/test_items.parquet").is_file()
    assert not (tmp_path / "metrics/audit/p/gate.json").exists()  # the gate train@ depends on


@pytest.fixture()
def video_faces(tmp_path):
    """Faces with 20 FF++ fake videos (3 frames each), so several videos land in test."""
    faces = tmp_path / "faces"
    write_source(faces, face_rows("gan_a", n_images=24))
    write_source(faces, face_rows("ff_f2f_k", videos=[(f"{i:03d}", f"{i + 1:03d}") for i in range(0, 40, 2)], frames=3))
    return faces


def _copy_eval_videos_into_train(tmp_path, faces_dir, n_videos: int):
    """Leak-free group split of ALL, then copies of the frames of ``n_videos`` test videos added to
    train (new ids, same method/video/groups, same pixels). Returns (variant dir, leaked video keys)."""
    cfg, split = variant_cfg(train=ALL, test=ALL), split_cfg(tmp_path, on_shortfall="cap")
    faces = pd.concat([pd.read_parquet(p) for p in sorted(faces_dir.glob("*/manifest.parquet"))], ignore_index=True)
    rows, _ = select_variant(faces, "leak", cfg, split)
    ev = rows[(rows["split"] == "test") & (rows["video_id"] != "")]
    videos = sorted(ev["video_id"].unique())[:n_videos]
    copies = ev[ev["video_id"].isin(videos)].copy()
    copies["id"] = copies["id"] + "-copy"
    copies["split"] = "train"
    rows = pd.concat([rows, copies], ignore_index=True).sort_values("id")
    for s in ("train", "val", "test"):
        materialise_split(rows[rows["split"] == s], faces_dir, tmp_path / "variants/leak" / s, False, 5)
    return tmp_path / "variants/leak", {f"ff_f2f_k:{v}" for v in videos}


def test_eval_item_flags_show_a_planted_leak_and_none_in_the_control(tmp_path, video_faces):
    faces_dir = video_faces
    control, _ = _copy_eval_videos_into_train(tmp_path, faces_dir, 0)
    m, _, flags = audit_variant("leak", control, True, AUDIT)
    assert m["leak_check"] == "passed" and len(flags) == m["items"]["test"] > 0
    assert (flags["video_key"] != "").any() and not flags["video_in_train"].any() and not flags["group_in_train"].any()
    assert list(flags["id"]) == sorted(flags["id"])

    leaky, leaked = _copy_eval_videos_into_train(tmp_path, faces_dir, 2)
    m, md, flags = audit_variant("leak", leaky, True, AUDIT)
    assert len(leaked) == 2 and m["video_leaks"] == 2 and m["leak_check"] == "failed"
    expect = flags["video_key"].isin(leaked)
    assert 0 < expect.sum() < (flags["video_key"] != "").sum()  # leaked and clean test frames
    assert (flags["video_in_train"] == expect).all()
    assert (flags["group_in_train"] == expect).all()  # the two videos' groups hold nothing else in test here
    assert m["test_items_video_in_train"] == int(expect.sum())
    with pytest.raises(LeakError, match="2 video leak"):
        check_gate(m)


def test_videos_are_keyed_by_method_and_video_id(tmp_path):
    """Face2Face 000_003 in train and FaceSwap 000_003 in test are two videos, not a leak."""
    faces = tmp_path / "faces"
    f2f = face_rows("ff_f2f_k", videos=[("000", "003")], frames=3)
    fs = face_rows("ff_fs_k", videos=[("000", "003")], frames=3)
    f2f["group_keys"] = [["f2f-only"]] * len(f2f)  # separate groups: only the video key could collide
    fs["group_keys"] = [["fs-only"]] * len(fs)
    f2f, fs = write_source(faces, f2f), write_source(faces, fs)
    assert set(f2f["video_id"]) == set(fs["video_id"]) == {"000_003"}
    rows = pd.concat([f2f.assign(split="train"), fs.assign(split="test")], ignore_index=True)
    rows["split_group"] = [k[0] for k in rows["group_keys"]]
    for s in ("train", "val", "test"):
        materialise_split(rows[rows["split"] == s], faces, tmp_path / "variants/k" / s, False, 5)
    m, md, flags = audit_variant("k", tmp_path / "variants/k", True, AUDIT)
    assert (m["videos"], m["video_leaks"], m["group_leaks"]) == (2, 0, 0)
    assert set(flags["video_key"]) == {"ff_fs_k:000_003"} and not flags["video_in_train"].any()
    # the same method on both sides is a leak
    rows.loc[rows["source"] == "ff_fs_k", "method"] = "ff_f2f_k"
    for s in ("train", "val", "test"):
        materialise_split(rows[rows["split"] == s], faces, tmp_path / "variants/k" / s, False, 5)
    m, md, flags = audit_variant("k", tmp_path / "variants/k", True, AUDIT)
    assert (m["videos"], m["video_leaks"]) == (1, 1) and flags["video_in_train"].all()
    assert "`ff_f2f_k:000_003`" in md


def test_audit_stage_gate_written_only_when_the_declared_checks_pass(tmp_path, video_faces):
    faces_dir = video_faces
    gate = tmp_path / "metrics/audit/leak/gate.json"
    _copy_eval_videos_into_train(tmp_path, faces_dir, 0)
    write_stage_params(tmp_path, "leak", leak_free=True)
    proc = run_audit_stage(tmp_path, "leak")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(gate.read_text())
    assert record == {"variant": "leak", "leak_free": True, "status": "passed",
                      "fingerprint": variant_fingerprint(tmp_path / "variants/leak")}
    vdir = tmp_path / "variants/leak"  # every file of the variant, manifests and shards, is bound to the gate
    files = {p.relative_to(vdir).as_posix() for p in vdir.rglob("*") if p.is_file()}
    assert set(record["fingerprint"]["files"]) == files
    assert {f"{s}/{f}" for s in ("train", "val", "test") for f in ("manifest.parquet", "images-00000.npy")} <= files
    flags = pd.read_parquet(tmp_path / "metrics/audit/leak/test_items.parquet")
    assert list(flags.columns) == ["id", "video_key", "group_in_train", "video_in_train"]

    _copy_eval_videos_into_train(tmp_path, faces_dir, 1)  # planted leak: the earlier gate must go
    proc = run_audit_stage(tmp_path, "leak")
    assert proc.returncode != 0 and "no gate written" in proc.stderr and "1 video leak" in proc.stderr
    assert not gate.exists()
    flags = pd.read_parquet(tmp_path / "metrics/audit/leak/test_items.parquet")
    assert flags["video_in_train"].sum() > 0

    write_stage_params(tmp_path, "leak", leak_free=False)  # same leak, not declared leak-free: reported, gate not_required
    proc = run_audit_stage(tmp_path, "leak")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(gate.read_text())
    assert {k: record[k] for k in ("variant", "leak_free", "status")} == {
        "variant": "leak", "leak_free": False, "status": "not_required"}
    assert record["fingerprint"] == variant_fingerprint(tmp_path / "variants/leak")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is required")
def test_dvc_never_runs_training_on_a_leaking_leak_free_variant(tmp_path, video_faces):
    """Under `dvc repro`, a stage that depends on the gate (as train@ does) cannot run after a
    failed audit; after the leak is removed, it runs."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               DVC_NO_ANALYTICS="1")
    dvc = str(Path(sys.executable).parent / "dvc")
    (tmp_path / "stages").mkdir()
    shutil.copy(REPO / "stages/audit.py", tmp_path / "stages/audit.py")
    _copy_eval_videos_into_train(tmp_path, video_faces, 1)
    write_stage_params(tmp_path, "leak", leak_free=True)
    stages = {"stages": {
        "audit": {"cmd": "python stages/audit.py leak", "deps": ["stages/audit.py", "variants/leak"],
                  "params": ["audit", "variants.leak.leak_free", "variants.leak.shortcut_free"],
                  "outs": [{"metrics/audit/leak/gate.json": {"cache": False}}]},
        "train": {"cmd": "python -c \"open('trained.txt', 'w').write('x')\"",
                  "deps": ["metrics/audit/leak/gate.json"], "outs": [{"trained.txt": {"cache": False}}]},
    }}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    proc = subprocess.run([dvc, "repro"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "video leak" in proc.stdout + proc.stderr
    assert not (tmp_path / "trained.txt").exists() and not (tmp_path / "metrics/audit/leak/gate.json").exists()
    _copy_eval_videos_into_train(tmp_path, video_faces, 0)  # leak removed: the audit passes, training runs
    proc = subprocess.run([dvc, "repro"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "trained.txt").exists()
