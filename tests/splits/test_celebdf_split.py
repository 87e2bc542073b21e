"""Celeb-DF v2's official test list stays out of train and val in every variant; the audit counts shared identities."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
import yaml

from dfpipe.core.config import ConfigError, build
from dfpipe.core.manifest import FACE_SCHEMA, add_provenance
from dfpipe.ingest.sources import SourceConfig, list_items
from dfpipe.splits.audit import OfficialListError, audit_variant, celebdf_list_audit, check_gate
from dfpipe.splits.celebdf import celebdf_identities, read_celebdf_list
from dfpipe.splits.variants import VariantConfig, build_variant, materialise_split, select_variant
from helpers import AUDIT, AUDIT_PARAMS, REPO, split_cfg, variant_cfg, write_source

IDS = 8
#: The official test list of the generated tree (Celeb-DF's convention: 1 real, 0 synthesized): the
#: first real video of id0-id3, two face swaps (id4 <- id5, id5 <- id6) and one YouTube video.
LISTED = (["1 Celeb-real/id{}_0000.mp4".format(k) for k in range(4)]
          + ["0 Celeb-synthesis/id4_id5_0000.mp4", "0 Celeb-synthesis/id5_id6_0000.mp4", "1 YouTube-real/00000.mp4"])
COUNTS = {"cdf_real": 1000, "cdf_fake": 1000}


def _celebdf_tree(root: Path) -> Path:
    """A Celeb-DF v2 download in miniature: 3 real videos of each of ``IDS`` people, 2 face swaps per
    target (each onto the next person), 4 YouTube videos, and the official test list."""
    names = ([f"Celeb-real/id{k}_{n:04d}.mp4" for k in range(IDS) for n in range(3)]
             + [f"Celeb-synthesis/id{k}_id{(k + 1) % IDS}_{n:04d}.mp4" for k in range(IDS) for n in range(2)]
             + [f"YouTube-real/{j:05d}.mp4" for j in range(4)])
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")  # listing needs names only; pixels come from write_source
    (root / "List_of_testing_videos.txt").write_text("\n".join(LISTED) + "\n")
    return root / "List_of_testing_videos.txt"


def _faces(tmp_path: Path, frames: int = 3) -> tuple[Path, Path]:
    """Preprocess-format faces of the tree's two ``subset: all`` sources (``frames`` crops per video)."""
    test_list = _celebdf_tree(tmp_path / "celebdf")
    faces = tmp_path / "faces"
    for name, label, method in (("cdf_real", 0, "celebdf_real"), ("cdf_fake", 2, "celebdf_synthesis")):
        spec = build(SourceConfig, dict(kind="celebdf", path="celebdf", label=label, method=method, mode="crop",
                                        sampling="per_video", subset="all"))
        items, rejects = list_items(name, spec, tmp_path / "celebdf")
        assert not rejects and items
        rows = [dict(id=f"{name}/{it.path}#f{f:04d}", source=name, label=label, method=method, video_id=it.video_id,
                     group_keys=list(it.group_keys), path=it.path, frame_index=f, n_frames=frames, box_x=0, box_y=0,
                     box_w=16, box_h=16, det_score=np.float32("nan"), content_hash="", has_mask=False, shard="",
                     offset=0, mask_shard="") for it in items for f in range(frames)]
        write_source(faces, add_provenance(pd.DataFrame(rows))[FACE_SCHEMA.names])
    return faces, test_list


def _all_faces(faces: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(faces.glob("*/manifest.parquet"))], ignore_index=True)


def _listed_paths() -> set[str]:
    return {line.split()[1] for line in LISTED}


def _people(rel: str) -> set[str]:
    """Who a Celeb-DF video shows, read from its name independently of the library."""
    stem = PurePosixPath(rel).stem
    return {f"yt{stem}"} if rel.startswith("YouTube-real/") else set(re.findall(r"id\d+", stem))


@pytest.mark.parametrize("level", ["group", "frame"])
def test_every_split_variant_keeps_the_test_list_out_of_train_and_val(tmp_path, level):
    faces_dir, list_path = _faces(tmp_path)
    faces, test_list = _all_faces(faces_dir), read_celebdf_list(list_path)
    cfg = variant_cfg(level=level, leak_free=level == "group", test_fraction=0.2, train=COUNTS, test=COUNTS)
    split = split_cfg(on_shortfall="cap")
    listed = faces["path"].isin(_listed_paths())
    assert faces.loc[listed, "video_id"].nunique() == len(LISTED)

    # the hash alone (an empty list) sends listed videos to train/val: the list, not luck, keeps them out
    blind, _ = select_variant(faces, "v", cfg, split, test_list={})
    assert blind.loc[blind["path"].isin(_listed_paths()), "split"].isin(["train", "val"]).any()

    rows, summary = select_variant(faces, "v", cfg, split, test_list=test_list)
    on_list = rows["path"].isin(_listed_paths())
    assert on_list.any() and (rows.loc[on_list, "split"] == "test").all()
    # a listed video is test or, a face swap whose other person is on the train side, dropped by split.bridging
    dropped = set(faces.loc[listed, "path"]) - set(rows["path"])
    assert all(p.startswith("Celeb-synthesis/") for p in dropped)
    assert len(dropped) * 3 <= summary["bridging"]["items"]
    assert summary["celebdf_test_list"]["listed_items"] == int(on_list.sum())
    if level == "group":  # the whole identity group of a listed video is test, as FF++'s official test split
        forced = {"celebdf:id0", "celebdf:id1", "celebdf:id2", "celebdf:id3", "celebdf:id4", "celebdf:id5",
                  "celebdf_yt:00000"}  # the people of the listed videos (a face swap's group is its target's)
        assert set(rows.loc[on_list, "split_group"]) <= forced
        assert (rows.loc[rows["split_group"].isin(forced), "split"] == "test").all()
        assert summary["celebdf_test_list"]["items_eval_by_list"] == int(rows["split_group"].isin(forced).sum())
        assert not set(rows.loc[rows["split"] != "test", "split_group"]) & set(rows.loc[rows["split"] == "test",
                                                                                         "split_group"])
    else:  # frame level: only the listed videos' frames are pinned; other videos of a person are split per frame
        assert summary["celebdf_test_list"]["items_eval_by_list"] == int(on_list.sum())
        assert rows.loc[~on_list & rows["path"].str.startswith("Celeb-real/id0_"), "split"].nunique() > 1


def test_a_split_variant_on_celebdf_needs_the_test_list(tmp_path):
    faces_dir, list_path = _faces(tmp_path, frames=1)
    faces = _all_faces(faces_dir)
    with pytest.raises(ConfigError, match=r"split\.celebdf_test_list: variant 'v' draws on Celeb-DF \(sources "
                                          r"\['cdf_fake', 'cdf_real'\]\)"):
        select_variant(faces, "v", variant_cfg(train=COUNTS, test=COUNTS), split_cfg(on_shortfall="cap"))
    test_set = build(VariantConfig, dict(description="t", role="test_set", level="group", leak_free=True,
                                               shortcut_free=False, masks=False, test_fraction=0.25, train={},
                                               test={"cdf_real": -1, "cdf_fake": -1}))
    rows, _ = select_variant(faces, "t", test_set, split_cfg())  # a test set has no train/val to protect
    assert set(rows["split"]) == {"test"}
    with pytest.raises(ConfigError, match=r"split\.celebdf_test_list: .*missing\.txt is not a file"):
        build_variant("v", variant_cfg(train=COUNTS, test=COUNTS),
                      split_cfg(tmp_path, on_shortfall="cap", celebdf_test_list="missing.txt"))
    assert celebdf_identities("Celeb-synthesis/id0_id16_0001.mp4") == ("celebdf:id0", "celebdf:id16")
    assert celebdf_identities("YouTube-real/00170.mp4") == ("celebdf_yt:00170",)
    assert celebdf_identities("other/clip.mp4") == ()


def test_audit_counts_identities_shared_with_the_test_list_and_fails_a_listed_video_in_train(tmp_path):
    faces_dir, list_path = _faces(tmp_path)
    split = split_cfg(tmp_path, on_shortfall="cap").model_copy(update={"celebdf_test_list": list_path})
    cfg = variant_cfg(level="frame", leak_free=False, test_fraction=0.2, train=COUNTS, test=COUNTS)
    build_variant("v", cfg, split)
    vdir = tmp_path / "variants/v"
    test_list = read_celebdf_list(list_path)
    m, md, _ = audit_variant("v", vdir, False, AUDIT, test_list=test_list)
    s = m["celebdf_test_list"]
    rows = pd.concat([pd.read_parquet(vdir / p / "manifest.parquet") for p in ("train", "val", "test")])
    fit_side = rows[rows["split"] != "test"]
    people_fit = set().union(*(_people(p) for p in fit_side["path"]))
    people_listed = set().union(*(_people(p) for p in _listed_paths()))
    assert s["check"] == "passed" and s["listed_videos_train_val"] == 0 and s["listed_videos_test"] == len(LISTED)
    assert s["identities_listed"] == len(people_listed) == 8
    assert s["identities_shared"] == len(people_fit & people_listed) > 0
    assert s["identities_train_val"] == len(people_fit)
    assert m["gate"] == "passed" and check_gate(m)["status"] == "passed"
    assert f"**{s['identities_shared']}** of 8 listed identities" in md and "| `celebdf:id0` |" in md

    # a listed video moved into train (a stale or hand-made variant): the audit fails it, whatever it declares
    rows, _ = select_variant(_all_faces(faces_dir), "v", cfg, split, test_list=test_list)
    moved = rows["path"] == "Celeb-real/id0_0000.mp4"
    rows.loc[moved, "split"] = "train"
    for part in ("train", "val", "test"):
        materialise_split(rows[rows["split"] == part].sort_values("id"), faces_dir, vdir / part, False, 5)
    m, md, _ = audit_variant("v", vdir, False, AUDIT, test_list=test_list)
    assert m["celebdf_test_list"]["listed_videos_train_val"] == 1 and m["gate"] == "failed"
    with pytest.raises(OfficialListError, match="1 video\\(s\\) of Celeb-DF's official test list in train/val"):
        check_gate(m)
    section, _ = celebdf_list_audit(rows.assign(video_key=rows["method"] + ":" + rows["video_id"]), None)
    assert section["check"] == "failed" and not section["configured"]  # Celeb-DF in train, nothing to check against


@pytest.mark.slow
def test_audit_stage_reports_the_test_list_figure(tmp_path):
    faces_dir, list_path = _faces(tmp_path, frames=2)
    params = {
        "split": {"salt": "test-salt", "scale": 1.0, "val_fraction": 0.2, "on_shortfall": "cap", "ffpp_official": None,
                  "bridging": "drop", "faces_dir": "faces", "out_dir": "variants", "shard_size": 5,
                  "celebdf_test_list": "celebdf/List_of_testing_videos.txt"},
        "variants": {"v": {"description": "t", "level": "group", "leak_free": True, "shortcut_free": False,
                           "masks": False, "test_fraction": 0.2, "train": COUNTS, "test": COUNTS}},
        "audit": AUDIT_PARAMS,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for script in ("variant", "audit"):
        proc = subprocess.run([sys.executable, str(REPO / f"stages/{script}.py"), "v"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "variants/v/summary.json").read_text())
    evaluated = pd.read_parquet(tmp_path / "variants/v/test/manifest.parquet")
    listed_test = int(evaluated["path"].isin(_listed_paths()).sum())
    assert listed_test > 0 and summary["celebdf_test_list"]["listed_items"] == listed_test
    metrics = json.loads((tmp_path / "metrics/audit/v.json").read_text())
    s = metrics["celebdf_test_list"]
    assert s["check"] == "passed" and s["listed_videos_train_val"] == 0 and s["listed_videos_test"] == listed_test // 2
    assert "Celeb-DF test list passed" in proc.stdout
    assert "## Celeb-DF official test list: passed" in (tmp_path / "metrics/audit/v.md").read_text()
    assert json.loads((tmp_path / "metrics/audit/v/gate.json").read_text())["status"] == "passed"
