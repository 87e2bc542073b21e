"""Detection policies: window tiling, the merge of overlapping boxes, the policy/model check, and
small real-photo faces in a wide frame that only the tiled full-range policy finds."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from dfpipe.core.config import ConfigError, build
from dfpipe.ingest.blazeface import BlazeFaceLite
from dfpipe.ingest.config import PreprocessConfig
from dfpipe.ingest.faces import Face, FaceDetector, merge_faces, shrink, window_origins, windows
from dfpipe.ingest.items import Item
from dfpipe.ingest.sources import SourceConfig
from dfpipe.ingest.worker import Worker
from helpers import preprocess_params

SHORT = "models/mediapipe/face_detection_short_range.tflite"
FULL = "models/mediapipe/face_detection_full_range_sparse.tflite"
ASTRONAUT_FACE = (177, 82, 95, 95)  # x, y, w, h of the face in skimage's data.astronaut()


def test_windows_cover_the_frame_with_overlap():
    assert window_origins(1920, 720, 120) == [0, 600, 1200]
    assert window_origins(1080, 720, 120) == [0, 360]
    assert window_origins(500, 720, 120) == [0]
    for length, side, overlap in [(1920, 720, 120), (1281, 384, 96), (4000, 700, 300)]:
        xs = window_origins(length, side, overlap)
        assert xs[0] == 0 and xs[-1] + side == length           # both borders reached
        assert all(b - a <= side - overlap for a, b in zip(xs, xs[1:]))  # overlap at least `overlap`
    wins = windows(1080, 1920, 720, 120)
    assert len(wins) == 6 and wins[0] == (0, 0, 720, 720) and wins[-1] == (1200, 360, 720, 720)
    assert windows(700, 700, 720, 120) == []                     # fits one window: whole frame only
    assert windows(600, 1280, 720, 120)[0] == (0, 0, 720, 600)   # a short frame: windows as tall as it


def test_merge_keeps_the_best_of_overlapping_boxes():
    a = Face(100, 100, 60, 60, 0.9)
    same = Face(104, 98, 58, 62, 0.8)   # the same face from another window: IoU > 0.3
    part = Face(100, 100, 25, 30, 0.7)  # a cut face inside a: most of it inside the kept box
    other = Face(300, 100, 60, 60, 0.6)
    assert merge_faces([part, same, other, a]) == [a, other]
    assert merge_faces([a, other]) == [a, other]  # control: distinct faces both stay
    # order-independent: every permutation gives the same result
    assert merge_faces([other, a, part, same]) == merge_faces([same, part, a, other])


def test_policy_must_match_the_model():
    ok = build(PreprocessConfig, preprocess_params(detector="full_range_tiled", detector_model=FULL), where="p")
    assert ok.detector == "full_range_tiled"
    assert build(PreprocessConfig, preprocess_params(), where="p").detector == "whole"  # the default
    with pytest.raises(ConfigError, match="full-range"):
        build(PreprocessConfig, preprocess_params(detector="full_range", detector_model=SHORT), where="p")
    with pytest.raises(ConfigError, match="short-range"):
        build(PreprocessConfig, preprocess_params(detector="tiled", detector_model=FULL), where="p")
    with pytest.raises(ConfigError, match="tile_overlap"):
        build(PreprocessConfig, preprocess_params(tile_size=300, tile_overlap=300), where="p")
    with pytest.raises(ConfigError):
        build(PreprocessConfig, preprocess_params(detector="pyramid"), where="p")
    # the whole-frame pass of the tiled policies: a BlazeFace model or null (the detector_model)
    both = build(PreprocessConfig, preprocess_params(detector="full_range_tiled", detector_model=FULL,
                                                     whole_model=SHORT), where="p")
    assert both.whole_model is not None and both.whole_model.name == Path(SHORT).name
    with pytest.raises(ConfigError, match="whole_model"):
        build(PreprocessConfig, preprocess_params(whole_model="models/mediapipe/selfie_segmentation.tflite"), where="p")


def wide_frame() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """1280 x 720: textured noise and two real astronaut faces (one mirrored) about 64 px wide,
    i.e. 6 px at the short-range model's 128 px input; returns the frame and the face centres."""
    rng = np.random.default_rng(7)
    field = rng.normal(0, 1, (10, 17, 3)).astype(np.float32)
    frame = np.clip(cv2.resize(field, (1280, 720), interpolation=cv2.INTER_CUBIC) * 12 + 120, 0, 255).astype(np.uint8)
    x, y, w, _ = ASTRONAUT_FACE
    head = data.astronaut()[y - 67 : y + w + 66, x - 67 : x + w + 66]  # 228 px: head and shoulders
    s = 64 / w
    small = cv2.resize(head, (round(228 * s), round(228 * s)), interpolation=cv2.INTER_AREA)
    centres = []
    for (px, py), flip in (((150, 100), False), ((900, 420), True)):
        frame[py : py + small.shape[0], px : px + small.shape[1]] = small[:, ::-1] if flip else small
        centres.append((px + small.shape[1] / 2, py + small.shape[0] / 2))
    return frame, centres


def test_tiled_full_range_finds_small_faces_the_whole_frame_misses(tmp_path):
    frame, centres = wide_frame()
    with FaceDetector(SHORT, 0.5, "whole") as whole, FaceDetector(FULL, 0.5, "full_range_tiled", 768, 128) as tiled:
        assert whole.detect_all(frame) == []  # the control: the current policy finds neither face
        found = tiled.detect_all(frame)
        odd = tiled.detect_all(np.ascontiguousarray(frame[:717, :1279]))  # sides not multiples of 4
        small = tiled.detect_all(np.ascontiguousarray(frame[100:300, 130:330]))  # smaller than a window
    assert len(odd) == 2 and len(small) == 1
    assert len(found) == 2
    for cx, cy in centres:
        assert any(abs(f.x + f.w / 2 - cx) < 12 and abs(f.y + f.h / 2 - cy) < 12 and 45 < f.w < 90 for f in found)

    # the preprocess worker: no_face with the whole-frame policy, the same crop bytes on every run
    cv2.imwrite(str(tmp_path / "wide.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    item = Item("wide.png", False, "", ("wide",))
    src = build(SourceConfig, dict(kind="image_folder", path="raw", label=0, method="m", mode="crop"), where="s")

    def run(policy: str, model: str):
        cfg = build(PreprocessConfig, preprocess_params(detector=policy, detector_model=model,
                                                        max_pixels=1280 * 720), where="p")
        w = Worker(cfg, src, Path(tmp_path))
        try:
            return w.process(item)
        finally:
            w.close()

    miss = run("whole", SHORT)
    assert not miss.crops and [r.reason for r in miss.rejects] == ["no_face"]
    first, second = run("full_range_tiled", FULL), run("full_range_tiled", FULL)
    assert len(first.crops) == 1 and not first.rejects
    a, b = first.crops[0], second.crops[0]
    assert a.box == b.box and a.face_rule == "largest" and a.image.tobytes() == b.image.tobytes()
    assert a.image.shape == (32, 32, 3) and a.image.std() > 10


def test_no_face_share_counts_images_and_frames():
    from dfpipe.ingest.output import no_face_share

    counts = {"files": {"rejected_by_reason": {"no_face": 3, "unreadable": 1}},
              "frames": {"sampled": 40, "rejected_by_reason": {"no_face": 7, "small_face": 2}}}
    # 12 items of which 2 videos: 10 still images + 40 sampled frames = 50 tries, 10 of them no_face
    assert no_face_share(12, 2, counts) == {"rejected": 10, "of": 50, "share": 0.2}
    none = {"files": {"rejected_by_reason": {}}, "frames": {"sampled": 0, "rejected_by_reason": {}}}
    assert no_face_share(0, 0, none) == {"rejected": 0, "of": 0, "share": 0.0}


@pytest.mark.parametrize("whole_model", [None, SHORT])
@pytest.mark.parametrize("width, frame_size", [(380, (1080, 1920)), (700, (1080, 1920)), (900, (720, 1280))])
def test_tiled_finds_a_close_up_larger_than_the_window_overlap_whole(width, frame_size, whole_model):
    """A face wider than the windows' overlap, or than a window, is cut by the windows: the whole
    frame pass or the check on a larger square must return the whole face, not a part (without
    the whole-frame pass the 700 and 900 px faces were lost: their window parts score 0.5-0.65)."""
    H, W = frame_size
    frame = np.full((H, W, 3), 90, np.uint8)
    x, y, w, _ = ASTRONAUT_FACE
    head = data.astronaut()[y - 67 : y + w + 66, x - 67 : x + w + 66]
    side = round(228 * width / w)
    big = cv2.resize(head, (side, side), interpolation=cv2.INTER_CUBIC)
    # centred on the border between the first two window columns (x = 672 of 1920 / 1280 is cut)
    cx, cy = 672, H // 2
    px, py = cx - side // 2, cy - side // 2
    x0, y0 = max(px, 0), max(py, 0)
    x1, y1 = min(px + side, W), min(py + side, H)
    frame[y0:y1, x0:x1] = big[y0 - py : y1 - py, x0 - px : x1 - px]
    with FaceDetector(FULL, 0.7, "full_range_tiled", 768, 128, whole_model) as tiled:
        found = tiled.detect_all(frame)
        candidates = tiled._candidates(frame)
    assert found, "close-up not found"

    def whole_face(f: Face) -> bool:
        return abs(f.x + f.w / 2 - cx) < 0.15 * width and 0.7 * width < f.w < 1.4 * width

    assert whole_face(found[0]), (found, width)
    assert all(whole_face(c) for c, _check in candidates)  # no part survived the merge
    # control: the face's left half (what a window cut at the face centre sees) is not the face
    assert not whole_face(Face(cx - width // 2, cy - width // 2, width // 2, width, 0.9))


@pytest.mark.parametrize("model, policy", [(SHORT, "whole"), (FULL, "full_range")])
def test_litert_boxes_are_mediapipes(model, policy):
    """The tiled policies run the bare model in LiteRT (dfpipe.ingest.blazeface): on model-sized
    windows its boxes and scores are those of MediaPipe's Tasks FaceDetector (the same whole
    pixels: tests/ingest/test_blazeface.py), the same on a second run."""
    side = 192 if policy == "full_range" else 128
    lite = BlazeFaceLite(model, 0.3)
    with FaceDetector(model, 0.3, policy) as tasks:
        for s, flip in ((side, False), (side, True), (3 * side // 4, False)):
            img = np.zeros((side, side, 3), np.uint8)
            img[:s, :s] = cv2.resize(data.astronaut(), (s, s), interpolation=cv2.INTER_AREA)
            if flip:
                img = np.ascontiguousarray(img[:, ::-1])
            want, got = tasks.detect_all(img), lite.detect(img)
            assert len(want) == len(got) == 1, (want, got)
            (x, y, w, h, score), f = got[0], want[0]
            assert (x, y, w, h) == (f.x, f.y, f.w, f.h) and abs(score - f.score) < 0.01
            assert lite.detect(img) == got
            # control: the same check fires on a box one pixel off
            assert (x + 1, y, w, h) != (f.x, f.y, f.w, f.h)
    with pytest.raises(ValueError, match="uint8 RGB"):
        lite.detect(np.zeros((side + 1, side, 3), np.uint8))


def test_shrink_by_halving_keeps_windows_exact():
    """The tiled policies shrink the frame once (halving steps): a window at a multiple of the
    factor equals its native window shrunk alone, so tiling the shrunk frame is tiling the frame."""
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (216, 384, 3), dtype=np.uint8)
    small = shrink(frame, 4)
    assert small.shape == (54, 96, 3)
    assert np.array_equal(small[8:40, 12:60], shrink(frame[32:160, 48:240], 4))
    assert np.array_equal(shrink(frame, 6)[5:20, 4:30], shrink(frame[30:120, 24:180], 6))
    # control: a window off the block grid differs
    assert not np.array_equal(small[8:40, 12:60], shrink(frame[33:161, 48:240], 4))


def test_check_cut_from_a_halving_step_finds_the_same_face():
    """A large candidate's check square is cut from the most shrunk halving step where it still
    spans the model input (FaceDetector._verify): the same face as the square cut at native
    resolution, within a few pixels; a candidate on the background is dropped either way."""
    frame = np.full((1080, 1920, 3), 90, np.uint8)
    x, y, w, _ = ASTRONAUT_FACE
    head = data.astronaut()[y - 67 : y + w + 66, x - 67 : x + w + 66]
    side = round(228 * 160 / w)  # a 160 px face: its check square is 640 px, cut from the 2 x step
    frame[301 : 301 + side, 903 : 903 + side] = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
    with FaceDetector(FULL, 0.7, "full_range_tiled", 768, 128, SHORT) as tiled:
        levels = tiled._pyramid(frame)
        assert [q for q, _ in levels] == [1, 2, 4]
        face = tiled.detect_all(frame)[0]
        from_level = tiled._verify(frame, face, levels)
        native = tiled._verify(frame, face)
        background = Face(200, 700, 160, 160, 0.6)
        assert tiled._verify(frame, background, levels) is None and tiled._verify(frame, background) is None
    assert from_level is not None and native is not None
    assert max(abs(from_level.x - native.x), abs(from_level.y - native.y), abs(from_level.w - native.w)) <= 4
    # control: the comparison fires on a box shifted by a tenth of the face
    assert abs(from_level.x + 16 - native.x) > 4
