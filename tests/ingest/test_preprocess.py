"""The preprocess stage on a generated tree that plants every kind of bad input, real MediaPipe."""


import cv2
import numpy as np
import pytest

from dfpipe.core.config import ConfigError, build
from dfpipe.ingest.faces import Box, crop_mask
from helpers import preprocess_params
from synthetic import draw_synthetic_face
from dfpipe.core.manifest import FACE_SCHEMA, read_table
from dfpipe.ingest.preprocess import PreprocessConfig, run_source
from dfpipe.core.shards import ShardReader
from dfpipe.ingest.sources import SourceConfig, ffpp_group_keys
from synthetic import write_video

CFG = preprocess_params(min_face=60, shard_size=5)
N_FRAMES, H, W = 20, 120, 160


def cfg(**over):
    return build(PreprocessConfig, {**CFG, **over}, where="preprocess")


def face_frame(i):
    return draw_synthetic_face(H, W, 60 + 2 * i, 50, 38)


def mask_frame(i):
    """Planted manipulation mask; its width changes with i, so a frame mix-up is visible."""
    m = np.zeros((H, W), np.uint8)
    m[30:75, 40 + 2 * i: 70 + 4 * i] = 255
    return m


def _write_image(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    imgs = root / "ffhq"
    good = lambda cx: draw_synthetic_face(200, 200, cx, 90, 48)[:, :, ::-1]  # noqa: E731 (BGR)
    _write_image(imgs / "id0001_00.png", good(100))
    _write_image(imgs / "id0001_01.png", good(95))
    _write_image(imgs / "id0002_00.jpg", good(105))
    _write_image(imgs / "sub" / "id0011_00.png", good(100))
    _write_image(imgs / "id0003_00.png", cv2.cvtColor(good(100), cv2.COLOR_BGR2GRAY))
    rgba = cv2.cvtColor(good(100), cv2.COLOR_BGR2BGRA)
    rgba[:10, :10, 3] = 0
    _write_image(imgs / "id0004_00.png", rgba)
    _write_image(imgs / "id0005_00.png", good(100).astype(np.uint16) * 257)
    (imgs / "id0006_00.png").write_bytes(b"")
    (imgs / "id0007_00.png").write_bytes(b"this is text, not a PNG" * 20)
    _write_image(imgs / "id0008_00.png", np.full((200, 200, 3), 128, np.uint8))
    _write_image(imgs / "id0009_00.png", draw_synthetic_face(200, 200, 100, 90, 22)[:, :, ::-1])
    _write_image(imgs / "id0010_00.png", np.zeros((400, 400, 3), np.uint8))
    (imgs / "README.txt").write_text("not an image")
    _write_image(imgs / "noid.png", good(100))
    _write_image(root / "elsewhere" / "id0012_00.png", good(100))
    (imgs / "id0012_00.png").symlink_to(root / "elsewhere" / "id0012_00.png")  # escapes the root

    ff = root / "Face2Face"
    vids, masks = ff / "c23" / "videos", ff / "masks" / "videos"
    frames = [face_frame(i) for i in range(N_FRAMES)]
    write_video(vids / "000_001.mp4", frames, gop=5)
    write_video(masks / "000_001.mp4", [mask_frame(i) for i in range(N_FRAMES)], gop=5, crf=0, gray=True)
    write_video(vids / "002_003.mp4", frames, gop=5)  # mask missing
    write_video(vids / "004_005.mp4", frames, gop=5)
    write_video(masks / "004_005.mp4", [mask_frame(i) for i in range(10)], gop=5, crf=0, gray=True)
    (vids / "006_007.mp4").write_bytes(b"")
    write_video(vids / "008_009.mp4", frames, gop=5)
    data = (vids / "008_009.mp4").read_bytes()
    (vids / "008_009.mp4").write_bytes(data[: len(data) // 2])
    write_video(vids / "010_011.mp4", [np.full((H, W, 3), 90, np.uint8)] * N_FRAMES, gop=5)
    write_video(masks / "010_011.mp4", [mask_frame(i) for i in range(N_FRAMES)], gop=5, gray=True)
    (vids / "012_013.mp4").write_bytes(b"text with a video name " * 40)
    (vids / "notes.txt").write_text("stray file")
    write_video(vids / "clip.mp4", frames[:3], gop=5)
    return root


IMG_SPEC = dict(kind="image_folder", path="ffhq", label=0, method="ffhq", mode="crop", group_pattern=r"^(id\d+)_")
FF_SPEC = dict(kind="ffpp", path="f2f", label=2, method="Face2Face", mode="crop", sampling="every_nth", masks=True)


def spec(base, **over):
    return build(SourceConfig, {**base, **over}, where="sources.test")


def run(tree, base, out, sub, config=None, **over):
    return run_source("src", spec(base, **over), config or cfg(), out / "faces", out / "m.json", root=tree / sub)


@pytest.fixture(scope="module")
def images_run(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("img1")
    return out, run(tree, IMG_SPEC, out, "ffhq")


@pytest.fixture(scope="module")
def ffpp_run(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("ff1")
    return out, run(tree, FF_SPEC, out, "Face2Face")


def rejects(out):
    df = read_table(out / "faces" / "rejects.parquet")
    return {(p, int(f)): r for p, f, r in zip(df["path"], df["frame_index"], df["reason"])}


def test_image_folder_manifest_and_rejects(images_run):
    out, metrics = images_run
    df = read_table(out / "faces" / "manifest.parquet", FACE_SCHEMA)
    assert list(df["id"]) == ["src/id0001_00.png", "src/id0001_01.png", "src/id0002_00.jpg", "src/sub/id0011_00.png"]
    assert [list(k) for k in df["group_keys"]] == [["ffhq:id0001"], ["ffhq:id0001"], ["ffhq:id0002"], ["ffhq:id0011"]]
    assert (df["frame_index"] == -1).all() and (df["label"] == 0).all() and not df["has_mask"].any()
    assert (df["det_score"] >= 0.5).all() and (df["box_w"] == df["box_h"]).all()
    assert rejects(out) == {
        ("README.txt", -1): "not_image",
        ("id0003_00.png", -1): "grayscale",
        ("id0004_00.png", -1): "alpha",
        ("id0005_00.png", -1): "bit_depth",
        ("id0006_00.png", -1): "empty_file",
        ("id0007_00.png", -1): "unreadable",
        ("id0008_00.png", -1): "no_face",
        ("id0009_00.png", -1): "small_face",
        ("id0010_00.png", -1): "too_large",
        ("id0012_00.png", -1): "outside_root",
        ("noid.png", -1): "no_group",
    }
    assert metrics["faces"] == 4 and metrics["files"]["rejected_by_reason"]["no_face"] == 1
    assert metrics["files"] == {"offered": 15, "kept": 4, "rejected": 11,
                                "rejected_by_reason": {r: 1 for r in sorted(rejects(out).values())}}
    assert metrics["frames"] == {"sampled": 0, "kept": 0, "rejected": 0, "rejected_by_reason": {}}
    imgs = ShardReader(out / "faces").gather(list(df["shard"]), list(df["offset"]))
    assert imgs.shape == (4, 32, 32, 3) and imgs.dtype == np.uint8


def test_ffpp_frames_masks_and_rejects(ffpp_run):
    out, metrics = ffpp_run
    df = read_table(out / "faces" / "manifest.parquet", FACE_SCHEMA)
    assert list(df["id"]) == [f"src/c23/videos/000_001.mp4#f{i:05d}" for i in (0, 6, 12, 18)]
    assert (df["video_id"] == "000_001").all() and (df["n_frames"] == N_FRAMES).all()
    assert [list(k) for k in df["group_keys"]][0] == ["ffpp:000", "ffpp:001"]
    assert df["has_mask"].all() and (df["mask_shard"] == df["shard"].str.replace("images", "masks")).all()
    rj = rejects(out)
    assert rj[("c23/videos/002_003.mp4", -1)] == "mask_missing"
    assert rj[("c23/videos/004_005.mp4", -1)] == "mask_short"
    assert rj[("c23/videos/006_007.mp4", -1)] == "empty_file"  # zero bytes, as for an image
    assert rj[("c23/videos/008_009.mp4", -1)] == "unreadable"
    assert rj[("c23/videos/012_013.mp4", -1)] == "unreadable"
    assert [rj[("c23/videos/010_011.mp4", i)] for i in (0, 6, 12, 18)] == ["no_face"] * 4
    assert rj[("c23/videos/notes.txt", -1)] == "not_video"
    assert rj[("c23/videos/clip.mp4", -1)] == "bad_name"
    assert metrics["faces"] == 4
    # 9 files: 000_001 kept; 002/004/006/008/012 rejected as files; 010_011 loses all 4 frames;
    # notes.txt, clip.mp4 rejected by the listing
    assert metrics["files"] == {"offered": 9, "kept": 1, "rejected": 8, "rejected_by_reason": {
        "all_frames_rejected": 1, "bad_name": 1, "empty_file": 1, "mask_missing": 1, "mask_short": 1,
        "not_video": 1, "unreadable": 2}}
    assert metrics["frames"] == {"sampled": 8, "kept": 4, "rejected": 4, "rejected_by_reason": {"no_face": 4}}
    assert (df["file_format"] == "h264").all() and (df["codec"] == "").all()


def test_mask_crop_is_aligned_with_frame_and_box(ffpp_run):
    """The stored mask is the planted mask of the same frame, cut with the same box."""
    out, _ = ffpp_run
    df = read_table(out / "faces" / "manifest.parquet")
    reader = ShardReader(out / "faces")
    for row in df.itertuples():
        stored = reader.get(row.mask_shard, row.offset)
        assert set(np.unique(stored)) <= {0, 255}
        box = Box(row.box_x, row.box_y, row.box_w)
        expected = crop_mask(mask_frame(row.frame_index), box, 32)
        assert (stored != expected).mean() < 0.01
        for other in (row.frame_index - 6, row.frame_index + 6):  # a neighbour's mask differs
            if 0 <= other < N_FRAMES:
                assert (stored != crop_mask(mask_frame(other), box, 32)).mean() > 0.03
        # the face is in the middle of the crop: the box follows the moving face
        assert abs(row.box_x + row.box_w / 2 - (60 + 2 * row.frame_index)) < 8


def _all_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("which", ["images", "ffpp"])
def test_same_bytes_with_two_workers(tree, tmp_path, images_run, ffpp_run, which):
    out1, _ = images_run if which == "images" else ffpp_run
    base, sub = (IMG_SPEC, "ffhq") if which == "images" else (FF_SPEC, "Face2Face")
    run(tree, base, tmp_path, sub, config=cfg(workers=2))
    one, two = _all_bytes(out1 / "faces"), _all_bytes(tmp_path / "faces")
    assert sorted(one) == sorted(two) and any(n.startswith("images-") for n in one)
    assert one == two


def test_per_video_crop_seg_and_raw_modes(tree, tmp_path):
    m = run(tree, FF_SPEC, tmp_path / "k", "Face2Face", sampling="per_video", mode="crop_seg")
    df = read_table(tmp_path / "k" / "faces" / "manifest.parquet")
    assert list(df.loc[df["video_id"] == "000_001", "frame_index"]) == [2, 7, 12, 17]  # floor((i+.5)*20/4)
    imgs = ShardReader(tmp_path / "k" / "faces").gather(list(df["shard"]), list(df["offset"]))
    assert not imgs[:, :2, :2].any()  # background (the wall) blanked in the corners
    assert (imgs[:, 14:18, 14:18] > 0).all()  # the face kept
    assert m["faces"] == 4

    m = run(tree, IMG_SPEC, tmp_path / "raw", "ffhq", mode="raw")
    df = read_table(tmp_path / "raw" / "faces" / "manifest.parquet")
    assert df["det_score"].isna().all() and (df["box_w"] == 200).all() and (df["box_x"] == 0).all()
    assert "no_face" not in m["files"]["rejected_by_reason"] and m["faces"] == 6  # raw: no detector
    assert (df["face_rule"] == "none").all() and (df["resize_kernel"] == "area").all()


def test_source_with_nothing_fails_clearly(tree, tmp_path):
    (tmp_path / "empty" / "c23" / "videos").mkdir(parents=True)
    (tmp_path / "empty" / "c23" / "videos" / "000.mp4").write_bytes(b"")
    with pytest.raises(RuntimeError, match=r"source src .* yielded no face crops.*empty_file"):
        run(tmp_path, FF_SPEC, tmp_path / "o", "empty", masks=False)
    assert (tmp_path / "o" / "faces" / "rejects.parquet").is_file()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(tmp_path, FF_SPEC, tmp_path / "o", "nowhere")


def test_stale_outputs_are_removed(tree, tmp_path):
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "images-00007.npy").write_bytes(b"old")
    run(tree, IMG_SPEC, tmp_path, "ffhq")
    assert not (tmp_path / "faces" / "images-00007.npy").exists()


@pytest.mark.parametrize("bad, words", [
    (dict(margin=0.5), "margin"),
    (dict(size=2), "size"),
    (dict(min_score=1.5), "min_score"),
    (dict(seg_background="grey"), "seg_background"),
    (dict(every_n=0), "every_n"),
    (dict(extra_key=1), "unknown key"),
])
def test_invalid_preprocess_params(bad, words):
    with pytest.raises(ConfigError, match=words):
        cfg(**bad)


@pytest.mark.parametrize("base, bad, words", [
    (FF_SPEC, dict(sampling=None), "needs sampling"),
    (IMG_SPEC, dict(sampling="every_nth"), "video sources only"),
    (IMG_SPEC, dict(group_pattern="(unclosed"), "not a regex"),
    (IMG_SPEC, dict(group_pattern="id"), "capture group"),
    (IMG_SPEC, dict(label=3), "label"),
    (IMG_SPEC, dict(masks=True), "masks"),
    (IMG_SPEC, dict(path="/abs/path"), "absolute"),
    (FF_SPEC, dict(mode="segment"), "mode"),
])
def test_invalid_source_params(base, bad, words):
    with pytest.raises(ConfigError, match=words):
        spec(base, **bad)


def test_group_keys_from_names():
    assert ffpp_group_keys("071") == ("ffpp:071",)
    assert ffpp_group_keys("071_054") == ("ffpp:071", "ffpp:054")
    assert ffpp_group_keys("01_02__meeting_serious__YVGY8LOK") == ("dfd_actor:01",)
    assert ffpp_group_keys("01__walking_down_street") == ("dfd_actor:01",)
    assert ffpp_group_keys("clip") is None


def test_broken_model_fails_instead_of_hanging(tree, tmp_path):
    """A worker whose MediaPipe task cannot start must fail the stage (Pool would respawn forever)."""
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer")
    config = cfg(workers=2).model_copy(update={"detector_model": bad})
    with pytest.raises(RuntimeError, match="could not start"):
        run(tree, IMG_SPEC, tmp_path, "ffhq", config=config)
    with pytest.raises(FileNotFoundError, match="model missing"):
        run(tree, IMG_SPEC, tmp_path, "ffhq", config=config.model_copy(update={"detector_model": tmp_path / "no.tflite"}))
