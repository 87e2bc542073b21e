"""BlazeFace in LiteRT (dfpipe.ingest.blazeface): boxes converted to whole pixels as MediaPipe Tasks
converts them, so that the tiled policies' runner and the Tasks FaceDetector give the same integers."""

import cv2
import numpy as np
import pytest
from skimage import data

from dfpipe.ingest import blazeface
from dfpipe.ingest.blazeface import BlazeFaceLite, pixel_boxes
from dfpipe.ingest.faces import FaceDetector

SHORT = "models/mediapipe/face_detection_short_range.tflite"
FULL = "models/mediapipe/face_detection_full_range_sparse.tflite"


def test_pixel_boxes_truncate_and_bound_like_mediapipe():
    corners = np.array(
        [
            [10.6, 20.4, 51.3, 60.5],  # x 10.6 -> 10 (rounding: 11), w 40.7 -> 40 (41), h 40.1 -> 40
            [-3.6, 5.0, 26.4, 35.9],  # left of the image: x 0 (rounding: -4), w 30.0 kept, h 30.9 -> 30
            [100.2, -0.4, 140.0, 30.0],  # y -0.4 -> 0; w 39.8 -> 39 (rounding: 40)
            [-10.0, -10.0, 200.0, 150.0],  # larger than the image: x, y 0, w and h bounded to the sides
        ]
    )
    got = pixel_boxes(corners, 128, 96)
    assert got.dtype == np.int64
    assert got.tolist() == [[10, 20, 40, 40], [0, 5, 30, 30], [100, 0, 39, 30], [0, 0, 128, 96]]
    # control: the rounding the tiled runner used before gives other integers for the same boxes
    rounded = np.round(np.c_[corners[:, :2], corners[:, 2:] - corners[:, :2]]).astype(int)
    assert (rounded != got).any(axis=1).sum() == 4


def _images(side: int, n: int, seed: int):
    """``n`` noise frames with the astronaut photo pasted at a random size and place: square
    (side x side) and, every other frame, a window with one side shorter by an even number of
    pixels (the tiled policies' 192 x 180 windows of a 720p frame), upright or lying."""
    rng = np.random.default_rng(seed)
    astro = data.astronaut()
    for i in range(n):
        short = side - 2 * int(rng.integers(1, side // 6)) if i % 2 else side
        shape = (short, side, 3) if i % 4 == 1 else (side, short, 3)
        img = np.clip(rng.normal(100, 20, shape), 0, 255).astype(np.uint8)
        s = int(rng.integers(short // 3, short + 1))
        x, y = int(rng.integers(0, shape[1] - s + 1)), int(rng.integers(0, shape[0] - s + 1))
        img[y : y + s, x : x + s] = cv2.resize(astro, (s, s), interpolation=cv2.INTER_AREA)
        yield img


@pytest.mark.parametrize("model, policy, side", [(SHORT, "whole", 128), (FULL, "full_range", 192)])
def test_litert_and_tasks_give_the_same_integer_boxes(model, policy, side, monkeypatch):
    """Same integer boxes on square and letterboxed windows (the window centred as MediaPipe
    letterboxes it)."""
    seen = []  # the float boxes before conversion, for the control
    convert = blazeface.pixel_boxes

    def spy(corners, width, height):
        seen.append(corners.copy())
        return convert(corners, width, height)

    monkeypatch.setattr(blazeface, "pixel_boxes", spy)
    lite = BlazeFaceLite(model, 0.3)
    n = rounding_differs = top_left_differs = 0
    with FaceDetector(model, 0.3, policy) as tasks:
        for img in _images(side, 16, seed=side):
            seen.clear()
            want = [(f.x, f.y, f.w, f.h) for f in sorted(tasks.detect_all(img), key=lambda f: -f.score)]
            got = [(x, y, w, h) for x, y, w, h, _s in lite.detect(img)]
            assert got == want
            n += len(got)
            c = seen[0] if seen else np.zeros((0, 4))
            rounded = [tuple(int(round(v)) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])) for b in c]
            rounding_differs += rounded != want
            if img.shape[0] != img.shape[1]:  # control: the window at the input's top-left
                pad = np.zeros((side, side, 3), np.uint8)
                pad[: img.shape[0], : img.shape[1]] = img
                top_left = [b[:4] for b in lite.detect(pad)]
                top_left_differs += top_left != want
    assert n >= 14
    # controls: rounding the same detections, or placing a smaller window at the top-left, gives
    # other integers on most frames
    assert rounding_differs >= 8 and top_left_differs >= 4
