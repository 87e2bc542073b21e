"""MediaPipe model assets: pinned by sha256, clear errors, real models load in the Tasks API."""

from __future__ import annotations

import shutil

import pytest

from dfpipe.core import assets
from dfpipe.core.assets import ASSETS, AssetError, fetch_assets


def test_installed_assets_verify():
    for a in ASSETS:
        assets.verify(assets.asset_path(a.name), a)


def test_sha256_mismatch_is_a_clear_error(tmp_path):
    a = ASSETS[0]
    (tmp_path / a.name).write_bytes(b"not a model")
    with pytest.raises(AssetError, match="does not match the pinned"):
        fetch_assets(tmp_path, try_urls=False)


def test_fetch_from_local_folder(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for a in ASSETS:
        shutil.copy(assets.asset_path(a.name), src / a.name)
    monkeypatch.setenv("DFPIPE_ASSETS_FROM", str(src))
    paths = fetch_assets(tmp_path / "dest", try_urls=False)
    assert [p.name for p in paths] == [a.name for a in ASSETS]


def test_no_source_works_names_every_attempt(tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    for a in ASSETS:
        (bad / a.name).write_bytes(b"tampered")
    monkeypatch.setenv("DFPIPE_ASSETS_FROM", str(bad))

    def no_index(workdir):
        raise AssetError("pip download mediapipe==0.10.21 failed: no index")

    monkeypatch.setattr(assets, "_download_wheel", no_index)
    # after `make setup` the repository's prefetch folder holds good copies: a tampered one here
    prefetch = tmp_path / "prefetch"
    shutil.copytree(bad, prefetch)
    monkeypatch.setattr(assets, "PREFETCH_DIR", prefetch)
    with pytest.raises(AssetError) as info:
        fetch_assets(tmp_path / "dest", try_urls=False)
    text = str(info.value)
    assert "sha256" in text and "no index" in text and "DFPIPE_ASSETS_FROM" in text and str(prefetch) in text
    assert not (tmp_path / "dest" / ASSETS[0].name).exists()


def test_missing_asset_message(tmp_path):
    with pytest.raises(AssetError, match="make setup"):
        assets.asset_path("face_detection_short_range.tflite", tmp_path)


def test_models_load_in_tasks_api():
    import numpy as np
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    det = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_path=str(assets.asset_path(ASSETS[0].name)))))
    seg = vision.ImageSegmenter.create_from_options(vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=str(assets.asset_path(ASSETS[1].name))),
        output_confidence_masks=True))
    try:
        img = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.full((128, 128, 3), 127, np.uint8))
        assert det.detect(img).detections == []  # a flat grey image holds no face
        masks = seg.segment(img).confidence_masks
        assert masks[0].numpy_view().shape[:2] == (128, 128)
    finally:
        det.close()
        seg.close()


def test_stage_copies_from_the_setup_prefetch_folder(tmp_path, monkeypatch):
    """The `assets` DVC stage finds `make setup`'s prefetch (.scratch/assets) offline."""
    prefetch = tmp_path / ".scratch" / "assets"
    prefetch.mkdir(parents=True)
    for a in ASSETS:
        shutil.copy(assets.asset_path(a.name), prefetch / a.name)
    root = tmp_path
    monkeypatch.delenv("DFPIPE_ASSETS_FROM", raising=False)
    monkeypatch.setattr(assets, "_download_wheel", lambda workdir: (_ for _ in ()).throw(AssetError("offline")))
    monkeypatch.chdir(root)
    assert assets.main(["--dest", "models/mediapipe", "--no-urls"]) == 0
    for a in ASSETS:
        assets.verify(root / "models" / "mediapipe" / a.name, a)
