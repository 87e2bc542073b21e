"""Shortcut audit: a planted codec shortcut fails a shortcut_free variant; a controlled one passes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfpipe.splits.audit import ShortcutError, audit_variant, check_gate
from dfpipe.splits.shortcut import FEATURES, codec_family, macro_auc, pixel_stats
from dfpipe.splits.variants import build_variant
from helpers import AUDIT, face_rows, run_audit_stage, smooth_image, split_cfg, variant_cfg, write_source, write_stage_params

REPO = Path(__file__).resolve().parents[2]
N = 160  # stills per class: ~50 test items per class keep a no-signal probe's AUC well under 0.75
COUNTS = {"real_src": N, "fake_src": N}


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """RGB uint8 through a real JPEG encode/decode at ``quality`` (OpenCV's libjpeg)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _provenance(file_format: str, codec: str) -> dict:
    return {"file_format": file_format, "native_face": np.float32(64.0), "scale": np.float32(0.25),
            "resize_kernel": "area", "codec": codec, "exif_transposed": False, "face_rule": "only"}


def _faces(tmp_path: Path, planted: bool) -> None:
    """Reals and fakes from one image generator; ``planted``: fakes JPEG q=50, reals PNG (lossless);
    else both classes went through the same JPEG q=50 codec control."""
    faces = tmp_path / "faces"
    real = face_rows("ffhq_real_src", n_images=N, provenance=_provenance("png", "" if planted else "jpeg_q50"))
    fake = face_rows("gan_fake_src", n_images=N,
                      provenance=_provenance("jpeg" if planted else "png", "" if planted else "jpeg_q50"))
    real["source"], fake["source"] = "real_src", "fake_src"
    real["id"] = "real_src/" + real["path"]
    fake["id"] = "fake_src/" + fake["path"]
    real["group_keys"] = [[i] for i in real["id"]]
    fake["group_keys"] = [[i] for i in fake["id"]]
    big = lambda row: cv2.resize(smooth_image(row.id, 64), (16, 16), interpolation=cv2.INTER_AREA)  # noqa: E731
    write_source(faces, real, image=lambda row: big(row) if planted else jpeg(big(row), 50))
    write_source(faces, fake, image=lambda row: jpeg(big(row), 50))


def _variant(tmp_path: Path, shortcut_free: bool = True) -> Path:
    cfg = variant_cfg(shortcut_free=shortcut_free, train=COUNTS, test=COUNTS)
    build_variant("s", cfg, split_cfg(tmp_path, on_shortfall="cap"))
    return tmp_path / "variants/s"


def test_planted_jpeg_shortcut_fails_a_shortcut_free_variant(tmp_path):
    _faces(tmp_path, planted=True)
    m, md, _ = audit_variant("s", _variant(tmp_path), True, AUDIT, shortcut_free=True)
    s = m["shortcut"]
    assert s["check"] == "failed" and m["gate"] == "failed" and s["max_auc"] > 0.95
    for fset in ("gate", "all"):
        for p in s["probes"][fset].values():
            assert p["auc_ci"][0] <= p["auc"] <= p["auc_ci"][1] and p["macro_f1"] > 0.9
    assert s["codec_by_class"] == {"real": {"png": N}, "fake": {"jpeg": N}}
    with pytest.raises(ShortcutError, match="shortcut_free.*probe.*> audit.shortcut_max_auc 0.75"):
        check_gate(m)
    assert "Shortcut audit: **failed**" in md and "codec families: jpeg, png" in md
    # reported, not fatal, for a variant that does not declare itself shortcut-free
    m2, _, _ = audit_variant("s", tmp_path / "variants/s", True, AUDIT, shortcut_free=False)
    assert m2["shortcut"]["check"] == "not required" and m2["shortcut"]["max_auc"] == s["max_auc"]
    assert check_gate(m2)["status"] == "passed"  # leak_free still passes


def test_controlled_variant_passes(tmp_path):
    _faces(tmp_path, planted=False)
    m, md, _ = audit_variant("s", _variant(tmp_path), True, AUDIT, shortcut_free=True)
    s = m["shortcut"]
    assert s["check"] == "passed" and s["max_auc"] < 0.75 and s["max_auc_all_features"] < 0.75, s["probes"]
    assert s["features"] == {"gate": ["native_face", "scale", "codec"], "all": list(FEATURES)}
    assert s["codec_by_class"] == {"real": {"jpeg": N}, "fake": {"jpeg": N}}
    assert check_gate(m) == {"variant": "s", "leak_free": True, "status": "passed"}
    assert set(s["by_class"]) == {"native_face", "scale", "brightness", "hf_energy"}
    assert len(s["by_class"]["brightness"]["real"]) == len(s["quantiles"]) == 5


def test_shortcut_free_stage_fails_without_gate(tmp_path):
    _faces(tmp_path, planted=True)
    _variant(tmp_path)
    write_stage_params(tmp_path, "s", leak_free=True, shortcut_free=True, counts=COUNTS)
    proc = run_audit_stage(tmp_path, "s")
    assert proc.returncode != 0 and "declared shortcut_free" in proc.stderr and "no gate written" in proc.stderr
    assert not (tmp_path / "metrics/audit/s/gate.json").exists()
    metrics = json.loads((tmp_path / "metrics/audit/s.json").read_text())
    assert metrics["shortcut"]["check"] == "failed"


def test_features_and_metrics_helpers():
    assert codec_family("h264_crf23", "png") == "h264" and codec_family("", "jpg") == "jpeg"
    assert codec_family("", "h264") == "h264"
    flat = np.full((16, 16, 3), 128, np.uint8)
    noisy = np.clip(flat + np.random.default_rng(0).integers(-40, 41, flat.shape), 0, 255).astype(np.uint8)
    (b0, h0), (b1, h1) = pixel_stats(flat), pixel_stats(noisy)
    assert b0 == pytest.approx(128.0, abs=0.01) and h0 == 0.0 and h1 > 1.0
    y = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[y]
    assert macro_auc(y, perfect, np.array([0, 1, 2])) == 1.0
    assert macro_auc(np.array([0, 0]), perfect[:2], np.array([0, 1, 2])) != macro_auc(np.array([0, 0]), perfect[:2], np.array([0, 1, 2]))  # NaN: one class


def test_fast_auc_and_f1_equal_sklearn():
    from sklearn.metrics import f1_score, roc_auc_score

    from dfpipe.splits.shortcut import binary_auc, macro_f1

    rng = np.random.default_rng(3)
    for _ in range(5):
        y = rng.integers(0, 3, 200)
        score = np.round(rng.normal(size=200) + (y == 1), 1)  # rounded: ties
        pred = rng.integers(0, 3, 200)
        assert binary_auc(y == 1, score) == pytest.approx(roc_auc_score(y == 1, score), abs=1e-12)
        want = f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)
        assert macro_f1(y, pred) == pytest.approx(want, abs=1e-12)
    y, pred = np.array([0, 0, 2]), np.array([1, 0, 2])  # class 1 only predicted
    assert macro_f1(y, pred) == pytest.approx(f1_score(y, pred, labels=[0, 2], average="macro", zero_division=0))


def test_pixel_statistics_are_reported_but_do_not_gate(tmp_path):
    """Fakes darker than reals (a pixel statistic) with matched metadata: the all-feature probes
    see it, the gate (metadata features) does not; gating on every feature fails the variant."""
    faces = tmp_path / "faces"
    for src, label_src, shift in (("real_src", "ffhq_r", 0), ("fake_src", "gan_f", -60)):
        rows = face_rows(label_src, n_images=N, provenance=_provenance("png", ""))
        rows["source"], rows["id"] = src, src + "/" + rows["path"]
        rows["group_keys"] = [[i] for i in rows["id"]]
        write_source(faces, rows, image=lambda row, d=shift: np.clip(smooth_image(row.id).astype(np.int16) + d, 0, 255).astype(np.uint8))
    vdir = _variant(tmp_path)
    m, _, _ = audit_variant("s", vdir, True, AUDIT, shortcut_free=True)
    s = m["shortcut"]
    assert s["check"] == "passed" and s["max_auc"] < 0.75 and s["max_auc_all_features"] > 0.95
    strict = AUDIT.model_copy(update={"shortcut_gate_features": FEATURES})
    m, _, _ = audit_variant("s", vdir, True, strict, shortcut_free=True)
    assert m["shortcut"]["check"] == "failed" and set(m["shortcut"]["probes"]) == {"gate"}


def test_nuisance_table_reads_provenance_columns_and_falls_back_per_row():
    import pandas as pd

    from dfpipe.splits.shortcut import nuisance_table

    rows = face_rows("ff_f2f_k", videos=[("000", "001")], frames=2)
    rows = pd.concat([rows, face_rows("gan_x", n_images=2)], ignore_index=True)
    rows["box_w"], rows["split"], rows["group"] = 32, "train", rows["id"]
    side, stats = np.full(4, 16.0), np.zeros(4)
    table, origin = nuisance_table(rows, side, stats, stats)  # no provenance columns at all
    assert "derived" in origin and "4 of 4" in origin
    assert table["native_face"].tolist() == [32.0] * 4 and table["scale"].tolist() == [0.5] * 4
    assert table["codec_family"].tolist() == ["video", "video", "png", "png"]
    rows["file_format"] = ["h264", "h264", "png", ""]  # last row: not recorded
    rows["native_face"] = np.array([64, 64, 128, np.nan], np.float32)
    rows["scale"] = np.array([0.25, 0.25, 0.125, np.nan], np.float32)
    rows["codec"] = ["", "", "h264_crf23", ""]
    table, origin = nuisance_table(rows, side, stats, stats)
    assert "1 of 4" in origin
    assert table["native_face"].tolist() == [64.0, 64.0, 128.0, 32.0]
    assert table["scale"].tolist() == [0.25, 0.25, 0.125, 0.5]
    assert table["codec_family"].tolist() == ["h264", "h264", "h264", "png"]
