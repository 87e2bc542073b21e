"""Face crop geometry (borders, margin), mask cropping, and the real MediaPipe tasks on drawn faces."""

from pathlib import Path

import numpy as np
import pytest

from synthetic import draw_synthetic_face
from dfpipe.ingest.faces import (
    Box, Face, FaceDetector, PersonSegmenter, crop_image, crop_mask, cut_box,
    square_box, whole_image_box,
)

DET = Path("models/mediapipe/face_detection_short_range.tflite")
SEG = Path("models/mediapipe/selfie_segmentation.tflite")


def test_square_box_margin_and_centre():
    b = square_box(Face(10, 20, 40, 60, 0.9), margin=1.5)
    assert b == Box(-15, 5, 90)  # side max(40, 60) * 1.5 = 90 around the centre (30, 50)
    b = square_box(Face(100, 100, 50, 50, 0.9), margin=1.3)
    assert b.side == 65 and b.x + b.side / 2 == pytest.approx(125, abs=0.5)


def test_cut_box_pads_outside_with_zero():
    img = np.arange(1, 1 + 10 * 12 * 3, dtype=np.int32).reshape(10, 12, 3).astype(np.uint16)
    box = Box(-3, 6, 8)  # passes the left and bottom borders
    out = cut_box(img, box)
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out[:4, 3:], img[6:10, 0:5])  # the part inside the image
    assert not out[:, :3].any() and not out[4:].any()         # the rest is padding
    whole = Box(-5, -5, 30)                                    # larger than the image
    np.testing.assert_array_equal(cut_box(img, whole)[5:15, 5:17], img)


def test_whole_image_box_pads_to_square():
    assert whole_image_box(720, 1280) == Box(0, -280, 1280)
    img = np.full((20, 40, 3), 7, np.uint8)
    out = crop_image(img, whole_image_box(20, 40), 40)
    assert out.shape == (40, 40, 3) and (out[10:30] == 7).all() and not out[:10].any()


def test_crop_mask_follows_the_box():
    """A planted mask rectangle lands where the box geometry says, binarised to 0/255."""
    mask = np.zeros((100, 120), np.uint8)
    mask[30:50, 40:80] = 200            # a lossy mask video's "white"
    mask[60:70, 0:10] = 90              # below the 127 threshold: background
    box = Box(20, 10, 80)               # crop scale 80 -> 40: factor 1/2
    out = crop_mask(mask, box, 40)
    assert set(np.unique(out)) == {0, 255}
    expected = np.zeros((40, 40), np.uint8)
    expected[10:20, 10:30] = 255        # rows (30-10)/2..(50-10)/2, cols (40-20)/2..(80-20)/2
    np.testing.assert_array_equal(out, expected)


@pytest.fixture(scope="module")
def detector():
    with FaceDetector(DET, min_score=0.5) as d:
        yield d


def test_detector_finds_drawn_face(detector):
    img = draw_synthetic_face(240, 320, 200, 110, 50)
    face = detector.detect(img)
    assert face is not None and face.score >= 0.5
    assert abs(face.x + face.w / 2 - 200) < 15 and abs(face.y + face.h / 2 - 110) < 20
    assert 50 < face.w < 150


def test_detector_no_face_on_plain_image(detector):
    assert detector.detect(np.full((128, 128, 3), 120, np.uint8)) is None


def test_face_at_border_crop_is_padded(detector):
    img = draw_synthetic_face(256, 256, 25, 110, 55)  # face centre 25 px from the left edge
    face = detector.detect(img)
    assert face is not None
    box = square_box(face, 1.3)
    assert box.x < 0
    crop = crop_image(img, box, 64)
    pad = int(np.floor(-box.x * 64 / box.side))
    assert pad >= 2 and not crop[:, : pad - 1].any() and crop[:, pad + 1:].any()


def test_segmenter_separates_person_from_background():
    img = draw_synthetic_face(256, 256, 128, 110, 55)
    with PersonSegmenter(SEG) as seg:
        prob = seg.person_probability(img)
    assert prob.shape == (256, 256) and prob.dtype == np.float32
    assert prob[110, 128] > 0.5      # the face
    assert prob[5:30, 5:30].max() < 0.5  # the wall behind
