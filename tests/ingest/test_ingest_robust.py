"""Preprocessing off the happy path (issues 11, 13, 14): location independence, hostile names,
video ids, stale temporaries, EXIF, grayscale, decompression bombs, accounting, one resampling
path, codec control, face choice. Generated inputs, real MediaPipe / PyAV / Pillow / OpenCV."""

import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from dfpipe.core.config import ConfigError, build
from dfpipe.core.io import clean_stale_temps, printable_name, relative_message
from dfpipe.core.manifest import FACE_SCHEMA, read_table
from dfpipe.core.shards import ShardReader
from dfpipe.ingest.codec import h264_intra
from dfpipe.ingest.faces import Box, cut_box
from dfpipe.ingest.images import read_image
from dfpipe.ingest.output import account
from dfpipe.ingest.preprocess import PreprocessConfig, run_source
from dfpipe.ingest.items import Item, Reject
from dfpipe.ingest.sources import SourceConfig
from dfpipe.ingest.worker import ItemResult, Worker
from helpers import preprocess_params
from synthetic import draw_synthetic_face, write_video

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models" / "mediapipe"
DETECTOR, SEGMENTER = MODELS / "face_detection_short_range.tflite", MODELS / "selfie_segmentation.tflite"
CFG = preprocess_params(min_face=20, every_n=5, frames_per_video=3, max_pixels=600 * 600, shard_size=4)
IMG = dict(kind="image_folder", path="raw/img", label=0, method="ffhq", mode="crop")
VID = dict(kind="video_folder", path="raw/vid", label=2, method="clips", mode="crop", sampling="every_nth")
BAD = os.fsdecode(b"caf\xe9.png")  # not valid UTF-8


def cfg(**over):
    """Built from relative paths (params.yaml's rule), then pointed at this checkout's models:
    the tests run from other folders."""
    c = build(PreprocessConfig, {**CFG, **over}, where="preprocess")
    return c.model_copy(update=dict(detector_model=DETECTOR, segmenter_model=SEGMENTER))


def spec(base, **over):
    return build(SourceConfig, {**base, **over}, where="sources.t")


def face(h=160, w=160, cx=80, cy=70, r=36):
    return draw_synthetic_face(h, w, cx, cy, r)


def save_rgb(path, rgb, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, **kw)


def bomb_png(path, side=40000):
    """A valid PNG header claiming ``side`` x ``side`` grey pixels with a tiny (wrong) body:
    Pillow refuses it at open() as a decompression bomb, nothing is allocated."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def make_tree(base: Path) -> None:
    """A small raw tree with planted bad inputs (images and videos)."""
    img = base / "raw" / "img"
    save_rgb(img / "p1.png", face(cx=80))
    save_rgb(img / "sub" / "p2.png", face(cx=76, r=30))
    save_rgb(img / BAD, face(cx=82))
    (img / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 30)  # Pillow message
    (img / "empty.jpg").write_bytes(b"")
    (img / "notes.txt").write_text("not an image")
    bomb_png(img / "bomb.png")
    save_rgb(img / "gray.png", cv2.cvtColor(face(), cv2.COLOR_RGB2GRAY))
    save_rgb(img / "gray_alpha.png", np.dstack([cv2.cvtColor(face(), cv2.COLOR_RGB2GRAY),
                                                np.full((160, 160), 255, np.uint8)]), )
    frames = [draw_synthetic_face(120, 160, 60 + 2 * i, 50, 34) for i in range(10)]
    vid = base / "raw" / "vid"
    write_video(vid / "a" / "clip.mp4", frames, gop=5)
    write_video(vid / "b" / "clip.mp4", frames[::-1], gop=5)
    (vid / "c" / "bad.mp4").parent.mkdir(parents=True)
    (vid / "c" / "bad.mp4").write_bytes(b"not a video at all " * 30)  # PyAV message with a path
    write_video(vid / "d" / "blank.mp4", [np.full((120, 160, 3), 90, np.uint8)] * 10, gop=5)


def run_in(base: Path, monkeypatch, which: str, **over):
    """Run one source as the DVC stage would: from ``base`` (the checkout), relative paths."""
    monkeypatch.chdir(base)
    s = spec(IMG if which == "img" else VID)
    return run_source(which, s, cfg(**over), f"data/faces/{which}", f"metrics/preprocess/{which}.json")


def md5s(base: Path) -> dict[str, str]:
    out = {}
    for top in ("data/faces", "metrics"):
        for p in sorted((base / top).rglob("*")):
            if p.is_file():
                out[p.relative_to(base).as_posix()] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def two_checkouts(tmp_path_factory):
    """The same raw tree and outputs in two different folders (two clones)."""
    mp = pytest.MonkeyPatch()
    first = tmp_path_factory.mktemp("clone_one") / "repo"
    make_tree(first)
    second = tmp_path_factory.mktemp("somewhere_else") / "deeper" / "repo"
    shutil.copytree(first, second, symlinks=True)
    metrics = {}
    try:
        for base in (first, second):
            for which in ("img", "vid"):
                metrics[(base, which)] = run_in(base, mp, which)
    finally:
        mp.undo()
    return first, second, metrics


def test_outputs_identical_in_two_folders_and_hold_no_absolute_path(two_checkouts):
    first, second, _ = two_checkouts
    one, two = md5s(first), md5s(second)
    assert "data/faces/img/rejects.parquet" in one and "metrics/preprocess/vid/face_size.png" in one
    assert one == two
    for base in (first, second):
        for rel in one:
            data = (base / rel).read_bytes()
            for marker in (str(base).encode(), str(base.parent).encode(), b"/tmp/", b"/work/"):
                assert marker not in data, (rel, marker)
    rj = read_table(first / "data/faces/vid/rejects.parquet")
    detail = rj.loc[rj["path"] == "c/bad.mp4", "detail"].item()
    assert detail.startswith("c/bad.mp4: not a readable video"), detail  # relative to the source root


def test_hostile_name_is_a_reject_and_the_stage_completes(two_checkouts, tmp_path, monkeypatch, capsys):
    first, _, metrics = two_checkouts
    rj = read_table(first / "data/faces/img/rejects.parquet")
    row = rj[rj["reason"] == "bad_name"]
    assert list(row["path"]) == ["caf\\xe9.png"]  # escaped, printable
    df = read_table(first / "data/faces/img/manifest.parquet", FACE_SCHEMA)
    assert list(df["path"]) == ["p1.png", "sub/p2.png"]
    assert metrics[(first, "img")]["files"]["rejected_by_reason"]["bad_name"] == 1
    # the preflight warning lists the file by its printable name
    base = tmp_path / "repo"
    make_tree(base)
    run_in(base, monkeypatch, "img")
    err = capsys.readouterr().err
    assert "WARNING: source img: 1 file name(s) are not valid UTF-8" in err and "caf\\xe9.png" in err
    assert printable_name(os.fsdecode(b"a\nb\xff.png")) == "a\\nb\\xff.png"


def test_video_ids_are_relative_paths(two_checkouts):
    first, _, metrics = two_checkouts
    df = read_table(first / "data/faces/vid/manifest.parquet")
    assert sorted(set(df["video_id"])) == ["a/clip", "b/clip"]
    assert sorted(set(map(tuple, df["group_keys"]))) == [("clips:a/clip.mp4",), ("clips:b/clip.mp4",)]
    assert (df["file_format"] == "h264").all() and (df["frame_index"] >= 0).all()


def test_accounting_files_and_frames(two_checkouts):
    first, _, metrics = two_checkouts
    img, vid = metrics[(first, "img")], metrics[(first, "vid")]
    assert img["files"] == {"offered": 9, "kept": 2, "rejected": 7, "rejected_by_reason": {
        "bad_name": 1, "empty_file": 1, "grayscale": 2, "not_image": 1, "too_large": 1, "unreadable": 1}}
    # a/clip, b/clip kept; c/bad.mp4 unreadable; d/blank.mp4 loses all sampled frames (no face)
    assert vid["files"] == {"offered": 4, "kept": 2, "rejected": 2,
                            "rejected_by_reason": {"all_frames_rejected": 1, "unreadable": 1}}
    assert vid["frames"] == {"sampled": 6, "kept": 4, "rejected": 2, "rejected_by_reason": {"no_face": 2}}
    for m in (img, vid):
        assert "seconds" not in m and not any("second" in k or "time" in k for k in m)  # no timings


def test_accounting_violation_fails():
    it = Item("x.mp4", True, "x", ("k",))
    bad = ItemResult([None], [Reject("x.mp4", 5, "no_face", "")], 3)  # 3 sampled, 2 accounted
    with pytest.raises(RuntimeError, match="3 frames sampled != 1 kept \\+ 1 rejected"):
        account("s", [], [(it, bad)])
    both = ItemResult([None], [Reject("x.mp4", -1, "unreadable", "")], 0)
    with pytest.raises(RuntimeError, match="rejected as a file and also"):
        account("s", [], [(it, both)])


def test_grayscale_with_or_without_alpha_and_bombs(two_checkouts):
    first, _, _ = two_checkouts
    rj = read_table(first / "data/faces/img/rejects.parquet").set_index("path")
    assert rj.loc["gray.png", "reason"] == rj.loc["gray_alpha.png", "reason"] == "grayscale"
    assert rj.loc["bomb.png", "reason"] == "too_large" and "decompression bomb" in rj.loc["bomb.png", "detail"]
    # Pillow's own bomb error, not our max_pixels, decides here
    _, rej = read_image(first / "raw/img/bomb.png", max_pixels=10**12)
    assert rej.reason == "too_large"


def test_stale_temps_removed(tmp_path, monkeypatch):
    base = tmp_path / "repo"
    make_tree(base)
    planted = [base / "data/faces/img/.images-00000.npy.abc123.tmp", base / "data/faces/img/.manifest.parquet.x.tmp",
               base / "metrics/preprocess/.img.json.q1.tmp", base / "metrics/preprocess/img/.face_size.csv.z.tmp"]
    for p in planted:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    other = base / "metrics/preprocess/.other.json.q1.tmp"  # another stage's file: left alone
    other.write_bytes(b"x")
    run_in(base, monkeypatch, "img")
    assert not any(p.exists() for p in planted) and other.exists()
    d = tmp_path / "d"
    (d / ".t.tmp").mkdir(parents=True)
    (d / ".t.tmp" / "f").write_text("x")
    (d / "keep.tmp").write_text("not hidden: not ours")
    assert clean_stale_temps(d) == [".t.tmp"] and (d / "keep.tmp").exists()


def test_relative_message():
    root = "/data/x/raw"
    assert relative_message(f"[Errno 2] No such file: '{root}/a/b.png'", root) == "[Errno 2] No such file: 'a/b.png'"
    assert relative_message("escapes the data root /data/x/raw", root) == "escapes the data root ."
    assert relative_message("cannot identify '/other/place/c.png'") == "cannot identify 'c.png'"


@pytest.fixture(scope="module")
def worker():
    w = Worker(cfg(), spec(IMG), Path("."))
    yield w
    w.close()


def test_exif_orientation_is_applied(tmp_path, worker, monkeypatch):
    upright = face(160, 200, 100, 70, 36)
    # stored rotated: orientation 6 means "rotate 90 degrees clockwise to display"
    exif = Image.Exif()
    exif[0x0112] = 6
    save_rgb(tmp_path / "rot.jpg", np.ascontiguousarray(np.rot90(upright, 1)), exif=exif, quality=95)
    dec, rej = read_image(tmp_path / "rot.jpg", 10**7)
    assert rej is None and dec.exif_transposed and dec.rgb.shape == upright.shape and dec.file_format == "jpeg"
    assert np.abs(dec.rgb.astype(int) - upright).mean() < 3
    monkeypatch.setattr(worker, "root", tmp_path)
    res = worker.process(Item("rot.jpg", False, "", ("k",)))
    assert not res.rejects and res.exif_transposed and res.crops[0].box.x > 50  # the upright face
    save_rgb(tmp_path / "plain.png", upright)
    dec, _ = read_image(tmp_path / "plain.png", 10**7)
    assert not dec.exif_transposed and dec.file_format == "png"
    # the numpy transforms equal Pillow's exif_transpose for every orientation
    arr = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    from dfpipe.ingest.images import _ORIENT
    for o in range(2, 9):
        im = Image.fromarray(arr)
        ex = im.getexif()
        ex[0x0112] = o
        im.info["exif"] = ex.tobytes()
        want = np.asarray(ImageOps.exif_transpose(Image.open(_save_exif(tmp_path / f"o{o}.png", arr, o))))
        assert np.array_equal(_ORIENT[o](arr), want), o


def _save_exif(path, arr, o):
    ex = Image.Exif()
    ex[0x0112] = o
    Image.fromarray(arr).save(path, exif=ex)
    return path


def test_one_kernel_for_two_native_sizes(tmp_path):
    """The same face drawn at two native sizes: both regions are area-downsampled, and the stored
    pixels are exactly cv2.INTER_AREA of the native region."""
    root = tmp_path / "raw"
    save_rgb(root / "small.png", face(160, 160, 80, 70, 24))
    save_rgb(root / "big.png", face(480, 480, 240, 210, 72))
    m = run_source("s", spec(IMG), cfg(max_pixels=10**6), tmp_path / "out", tmp_path / "m.json", root=root)
    df = read_table(tmp_path / "out/manifest.parquet").set_index("path")
    assert list(df["resize_kernel"]) == ["area", "area"] and m["resize_kernels"] == {"area": 2}
    assert df.loc["big.png", "native_face"] > 2.5 * df.loc["small.png", "native_face"] > 2.5 * 32
    reader = ShardReader(tmp_path / "out")
    for name in ("small.png", "big.png"):
        r = df.loc[name]
        assert r["scale"] == pytest.approx(32 / r["native_face"])
        native = cut_box(np.asarray(Image.open(root / name)), Box(int(r["box_x"]), int(r["box_y"]), int(r["box_w"])))
        assert np.array_equal(reader.get(r["shard"], int(r["offset"])), cv2.resize(native, (32, 32), interpolation=cv2.INTER_AREA))
    csv = pd.read_csv(tmp_path / "m" / "face_size.csv")
    assert csv["count"].sum() == 2 and (tmp_path / "m" / "face_size.png").stat().st_size > 1000


def test_small_region_upscale_policy(tmp_path):
    root = tmp_path / "raw"
    save_rgb(root / "tiny.png", face(160, 160, 80, 70, 24))  # region ~45 px
    m = run_source("s", spec(IMG), cfg(size=64), tmp_path / "o1", root=root)
    df = read_table(tmp_path / "o1/manifest.parquet")
    assert list(df["resize_kernel"]) == ["cubic"] and df["scale"].item() > 1
    with pytest.raises(RuntimeError, match="small_face"):
        run_source("s", spec(IMG), cfg(size=64, upscale="reject"), tmp_path / "o2", root=root)
    rj = read_table(tmp_path / "o2/rejects.parquet")
    assert list(rj["reason"]) == ["small_face"] and "upscale: reject" in rj["detail"].item()
    assert m["resize_kernels"] == {"cubic": 1}


@pytest.mark.parametrize("codec, tag", [({"kind": "h264", "crf": 23}, "h264_crf23"), ({"kind": "jpeg", "quality": 50}, "jpeg_q50")])
def test_codec_control_recorded_and_byte_identical(tmp_path, codec, tag):
    root = tmp_path / "raw"
    for i in range(3):
        save_rgb(root / f"f{i}.png", face(161, 157, 78 + i, 70, 34))  # odd sides: padding path
    outs = []
    for k in range(2):
        run_source("s", spec(IMG, codec=codec), cfg(), tmp_path / f"o{k}", root=root)
        outs.append({p.name: p.read_bytes() for p in sorted((tmp_path / f"o{k}").iterdir())})
    assert outs[0] == outs[1]  # reruns give the same bytes
    run_source("s", spec(IMG), cfg(), tmp_path / "plain", root=root)
    df = read_table(tmp_path / "o0/manifest.parquet")
    plain = read_table(tmp_path / "plain/manifest.parquet")
    assert (df["codec"] == tag).all() and (df["file_format"] == "png").all() and (plain["codec"] == "").all()
    assert (df["content_hash"] != plain["content_hash"]).all()  # the codec changed the pixels
    rgb = face(161, 157, 78, 70, 34)
    once = h264_intra(rgb, 23)
    assert once.shape == rgb.shape and np.array_equal(once, h264_intra(rgb, 23))
    assert 0.3 < np.abs(once.astype(int) - rgb).mean() < 6


@pytest.mark.parametrize("bad, words", [
    (dict(codec={"kind": "h264"}), "crf"),
    (dict(codec={"kind": "jpeg", "quality": 0}), "quality"),
    (dict(codec={"kind": "h264", "crf": 23, "quality": 5}), "crf"),
    (dict(codec={"kind": "av1", "crf": 23}), "kind"),
])
def test_invalid_codec_params(bad, words):
    with pytest.raises(ConfigError, match=words):
        spec(IMG, **bad)
    with pytest.raises(ConfigError, match="image_folder"):
        spec(VID, codec={"kind": "h264", "crf": 23})


def test_face_choice_mask_overlap_then_largest(worker):
    """Two faces in one frame; the mask covers the smaller one: that one is cropped. A mask that
    touches no detected face, or an empty mask, rejects the frame: no fallback to another face."""
    img = face(200, 320, 90, 80, 42)
    img[60:180, 200:310] = draw_synthetic_face(120, 110, 55, 50, 26)
    mask = np.zeros((200, 320), np.uint8)
    mask[95:145, 232:280] = 255  # the small face (box ~ x 235..276, y 98..139)
    crop, rej = worker._face(img, "two.png", 0, 1, mask)
    assert rej is None and crop.face_rule == "mask_overlap" and crop.box.x > 200
    crop, _ = worker._face(img, "two.png", 0, 1, None)
    assert crop.face_rule == "largest" and crop.box.x < 100
    elsewhere = np.zeros_like(mask)
    elsewhere[5:25, 150:190] = 255  # background between the two faces, above both
    for m, reason in ((elsewhere, "mask_face_not_found"), (np.zeros_like(mask), "mask_empty")):
        crop, rej = worker._face(img, "two.png", 0, 1, m)
        assert crop is None and rej.reason == reason and rej.frame_index == 0, (reason, rej)
    one = face(200, 320, 90, 80, 42)  # a single face: still no fallback when the mask is elsewhere
    crop, rej = worker._face(one, "one.png", 3, 9, elsewhere)
    assert crop is None and rej.reason == "mask_face_not_found" and "none of the 1 detected" in rej.detail
    on_face = np.zeros_like(mask)
    on_face[70:100, 70:110] = 255
    crop, rej = worker._face(one, "one.png", 3, 9, on_face)
    assert rej is None and crop.face_rule == "only" and crop.mask.any()
    crop, _ = worker._face(face(), "one.png", -1, -1, None)
    assert crop.face_rule == "only"


def test_mediapipe_startup_logging_is_silenced(tmp_path):
    code = (
        "from dfpipe.ingest.faces import FaceDetector, PersonSegmenter\nfrom synthetic import draw_synthetic_face as d\n"
        f"f = FaceDetector({str(DETECTOR)!r}, 0.5); s = PersonSegmenter({str(SEGMENTER)!r})\n"
        "img = d(120, 160, 80, 50, 30); print(f.detect(img) is not None); s.person_probability(img)\n"
        "f.close(); s.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "True"
    assert out.stderr.strip() == "", out.stderr[:2000]


@pytest.mark.parametrize("path", ["../outside", "link"])
def test_stage_refuses_source_path_leaving_the_repository(tmp_path, monkeypatch, capsys, path):
    import runpy

    import yaml

    repo = tmp_path / "repo"
    (tmp_path / "outside").mkdir()
    save_rgb(tmp_path / "outside" / "p.png", face())
    repo.mkdir()
    (repo / "link").symlink_to(tmp_path / "outside")  # a symlinked root that leaves the repository
    params = {"preprocess": CFG, "sources": {"s": {**IMG, "path": path}}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(repo)
    monkeypatch.setattr(sys, "argv", ["preprocess.py", "s"])
    with pytest.raises(SystemExit) as exc:  # the stage prints the ConfigError as one line, exit 2
        runpy.run_path(str(REPO / "stages" / "preprocess.py"), run_name="__main__")
    assert exc.value.code == 2
    assert re.match(r"ConfigError: sources.s.path.*(escapes|outside the repository)", capsys.readouterr().err)
    assert not (repo / "data").exists()


def test_face_choice_in_a_masked_ffpp_video(tmp_path):
    """End to end: an FF++ fake whose mask covers the smaller of two faces crops that face."""
    img = face(200, 320, 90, 80, 42)
    img[60:180, 200:310] = draw_synthetic_face(120, 110, 55, 50, 26)
    mask = np.zeros((200, 320), np.uint8)
    mask[95:145, 232:280] = 255
    root = tmp_path / "Face2Face"
    write_video(root / "c23/videos/000_001.mp4", [img] * 6, gop=3)
    write_video(root / "masks/videos/000_001.mp4", [mask] * 6, gop=3, crf=0, gray=True)
    ff = dict(kind="ffpp", path="ff", label=2, method="Face2Face", mode="crop", sampling="every_nth", masks=True)
    m = run_source("ff", spec(ff), cfg(every_n=3), tmp_path / "out", root=root)
    df = read_table(tmp_path / "out/manifest.parquet")
    assert list(df["face_rule"]) == ["mask_overlap"] * 2 and (df["box_x"] > 200).all()
    assert m["face_rules"] == {"mask_overlap": 2} and (df["video_id"] == "000_001").all()


def test_masked_frames_without_the_manipulated_face_are_rejected_and_counted(tmp_path):
    """A planted FF++ fake whose manipulated face the detector cannot see (its mask lies on a
    region with no face, beside a detected, unaltered person), a fake with empty mask frames, and
    a normal fake: only the normal frames are stored, the others are counted per reason."""
    n = 12  # every_n 3: frames 0, 3, 6, 9 sampled
    person = face(200, 320, 90, 80, 42)
    missed = np.zeros((200, 320), np.uint8)
    missed[60:150, 200:300] = 255  # the swapped face the detector missed: background pixels only
    on_face = np.zeros((200, 320), np.uint8)
    on_face[55:110, 65:115] = 255
    two = person.copy()
    two[60:180, 200:310] = draw_synthetic_face(120, 110, 55, 50, 26)
    small = np.zeros((200, 320), np.uint8)
    small[95:145, 232:280] = 255
    root = tmp_path / "Deepfakes"
    videos = {
        "000_001": ([person] * n, [missed] * n),                           # 4 x mask_face_not_found
        "002_003": ([person] * n, [np.zeros_like(on_face)] * 6 + [on_face] * 6),  # frames 0, 3 empty
        "004_005": ([two] * n, [small] * n),                               # 4 x mask_overlap
    }
    for vid, (frames, masks) in videos.items():
        write_video(root / f"c23/videos/{vid}.mp4", frames, gop=3)
        write_video(root / f"masks/videos/{vid}.mp4", masks, gop=3, crf=0, gray=True)
    ff = dict(kind="ffpp", path="ff", label=2, method="Deepfakes", mode="crop", sampling="every_nth", masks=True)
    m = run_source("ff", spec(ff), cfg(every_n=3), tmp_path / "out", tmp_path / "m.json", root=root)
    df = read_table(tmp_path / "out/manifest.parquet")
    rj = read_table(tmp_path / "out/rejects.parquet")
    got = sorted(zip(rj["path"], rj["frame_index"], rj["reason"]))
    assert got == [("c23/videos/000_001.mp4", i, "mask_face_not_found") for i in (0, 3, 6, 9)] + [
        ("c23/videos/002_003.mp4", i, "mask_empty") for i in (0, 3)]
    assert m["frames"] == {"sampled": 12, "kept": 6, "rejected": 6,
                           "rejected_by_reason": {"mask_empty": 2, "mask_face_not_found": 4}}
    assert m["files"]["rejected_by_reason"] == {"all_frames_rejected": 1}
    assert m["face_rules"] == {"mask_overlap": 4, "only": 2}
    kept = df.set_index(["video_id", "frame_index"])
    assert sorted(kept.index) == [("002_003", 6), ("002_003", 9)] + [("004_005", i) for i in (0, 3, 6, 9)]
    assert (df["has_mask"]).all() and (df.loc[df["video_id"] == "004_005", "box_x"] > 200).all()
    masks = ShardReader(tmp_path / "out").gather(list(df["mask_shard"]), list(df["offset"]))
    assert all(mk.any() for mk in masks)  # no stored edited crop has an all-zero mask


def test_reasons_for_containers_empty_files_and_links(tmp_path):
    """Each odd file gets the reason that says what happened: a decodable .avi in an FF++ folder
    (``wrong_container``), zero-byte images and videos (``empty_file``), a symlinked folder
    (``symlinked_folder``, not followed), dangling links (``broken_link``); a link leaving the root
    stays ``outside_root``."""
    frames = [draw_synthetic_face(120, 160, 60 + 2 * i, 50, 34) for i in range(6)]
    ffdir = tmp_path / "ff" / "c23" / "videos"
    write_video(ffdir / "000.mp4", frames, gop=3)
    _write_avi(ffdir / "001.avi", frames)
    (ffdir / "002.mp4").write_bytes(b"")
    (ffdir / "003.mp4").symlink_to(ffdir / "gone.mp4")
    (ffdir / "sub").mkdir()
    (ffdir / "004.mp4").symlink_to(ffdir / "sub", target_is_directory=True)
    ff = dict(kind="ffpp", path="ff", label=0, method="youtube", mode="crop", sampling="every_nth")
    m = run_source("ff", spec(ff), cfg(every_n=3), tmp_path / "o_ff", tmp_path / "ff.json", root=tmp_path / "ff")
    assert _reasons(tmp_path / "o_ff") == {
        "c23/videos/001.avi": "wrong_container", "c23/videos/002.mp4": "empty_file",
        "c23/videos/003.mp4": "broken_link", "c23/videos/004.mp4": "symlinked_folder"}
    assert m["files"]["kept"] == 1 and m["files"]["rejected_by_reason"] == {
        "broken_link": 1, "empty_file": 1, "symlinked_folder": 1, "wrong_container": 1}
    assert "not_video" not in _reasons(tmp_path / "o_ff").values()

    img = tmp_path / "img"
    save_rgb(img / "p1.png", face())
    (img / "empty.png").write_bytes(b"")
    save_rgb(tmp_path / "more" / "p2.png", face(cx=76))
    (img / "more").symlink_to(tmp_path / "more", target_is_directory=True)
    (img / "gone.png").symlink_to(tmp_path / "nowhere" / "gone.png")  # absolute, outside the root
    (img / "loop.png").symlink_to("loop.png")
    (img / "out.png").symlink_to(tmp_path / "more" / "p2.png")  # exists, outside the root
    m = run_source("img", spec(IMG), cfg(), tmp_path / "o_img", tmp_path / "img.json", root=img)
    assert _reasons(tmp_path / "o_img") == {"empty.png": "empty_file", "gone.png": "broken_link",
                                            "loop.png": "broken_link", "more": "symlinked_folder",
                                            "out.png": "outside_root"}
    assert m["files"]["kept"] == 1 and m["files"]["offered"] == 6

    vid = tmp_path / "vid"
    write_video(vid / "a.mp4", frames, gop=3)
    _write_avi(vid / "b.avi", frames)  # any container is right for a video_folder
    (vid / "c.webm").write_bytes(b"")
    m = run_source("vid", spec(VID, label=0), cfg(every_n=3), tmp_path / "o_vid", tmp_path / "vid.json", root=vid)
    assert _reasons(tmp_path / "o_vid") == {"c.webm": "empty_file"} and m["files"]["kept"] == 2


def _write_avi(path, frames):
    """An MPEG-4 Part 2 video in an AVI container (a format PyAV decodes)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(stream.encode())


def _reasons(out: Path) -> dict[str, str]:
    rj = read_table(out / "rejects.parquet")
    return dict(zip(rj["path"], rj["reason"]))
