"""Facial landmarks (MediaPipe's face landmark model in LiteRT) as a features@ cache, and the two_stream
detector that reads them: real-photo check, failures recorded, byte-identical reruns, data path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfpipe.core import assets
from dfpipe.core.config import build
from dfpipe.features import encoders as E
from dfpipe.features import landmarks as L
from helpers import make_variant, tree_digest

skimage_data = pytest.importorskip("skimage.data")

MODEL = assets.asset_path("face_landmark.tflite")
SHA = next(a.sha256 for a in assets.ASSETS if a.name == "face_landmark.tflite")
# Face Mesh indices: outer corners of the eyes (33: the person's right eye, on the image's left;
# 263: the left eye) and the inner upper lip (13)
RIGHT_EYE, LEFT_EYE, UPPER_LIP = 33, 263, 13


def astronaut_face(size: int | None = None) -> np.ndarray:
    """Eileen Collins' face in skimage's astronaut photograph (a real photo, offline)."""
    face = skimage_data.astronaut()[30:230, 120:320]
    if size is None:
        return np.ascontiguousarray(face)
    x = torch.from_numpy(face.transpose(2, 0, 1).copy())[None].float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy().copy()


def face_like(points: np.ndarray) -> bool:
    """Points inside the crop, both eyes above the mouth, the image-left eye left of the other."""
    inside = bool(((points >= 0) & (points <= 1)).all())
    eyes_above = points[RIGHT_EYE, 1] < points[UPPER_LIP, 1] and points[LEFT_EYE, 1] < points[UPPER_LIP, 1]
    return inside and bool(eyes_above) and bool(points[RIGHT_EYE, 0] < points[LEFT_EYE, 0])


@pytest.fixture(scope="module")
def model() -> L.LandmarkModel:
    return L.LandmarkModel(MODEL, SHA)


def test_landmarks_land_on_a_real_face(model):
    points, presence = model(astronaut_face())
    assert points.shape == (468, 2) and presence > 0.99
    assert face_like(points)
    # the eyes sit in the upper half, the mouth below the crop's centre line
    assert points[RIGHT_EYE, 1] < 0.5 < points[UPPER_LIP, 1]
    # control: the same check refuses the points upside down
    assert not face_like(np.stack([points[:, 0], 1 - points[:, 1]], 1))


def test_a_crop_without_a_face_is_rejected_with_its_reason(model):
    row, status, presence = L.landmark_row(model, np.full((64, 64, 3), 128, np.uint8), 0.5)
    assert status == L.STATUS_NO_FACE and presence < 0.5
    assert np.isnan(row.astype(np.float32)).all()  # never zero-filled
    # control: the same threshold keeps a real face
    _, status, _ = L.landmark_row(model, astronaut_face(64), 0.5)
    assert status == L.STATUS_OK


FEATURES = {
    "out_dir": "data/features",
    "threads": 1,
    "variants_dir": "data/variants",
    "batch_size": 4,
    "shard_size": 5,
    "encoders": {
        "clip": {"arch": "ViT-B-32", "weights": None, "sha256": None, "seed": 0, "image_size": 32, "width": 32,
                 "layers": 1, "heads": 2, "patch_size": 8, "embed_dim": 16},
        "lgrad": {"arch": "random_cnn", "weights": None, "sha256": None, "seed": 0, "image_size": 32, "width": 4},
        "landmarks": {"model": str(MODEL), "sha256": SHA, "min_presence": 0.5},
    },
    "caches": {"lm_toy": {"encoder": "landmarks", "variant": "toy"}},
}
FACE_ROWS = (0, 2)  # items of every split whose crop becomes the astronaut's face
GREY_ROW = 1  # and a flat grey crop


def toy_with_faces(root):
    """make_variant's toy crops (noise, no face) at 64 px, with real faces and a grey crop planted."""
    make_variant(root, per_class={"train": 2, "val": 1, "test": 1}, size=64)
    face = astronaut_face(64)
    for split in ("train", "val", "test"):
        import pandas as pd

        df = pd.read_parquet(root / split / "manifest.parquet")
        for row, crop in [(r, face) for r in FACE_ROWS] + [(GREY_ROW, np.full_like(face, 128))]:
            path = root / split / df["shard"].iloc[row]
            arr = np.load(path)
            arr[df["offset"].iloc[row]] = crop
            np.save(path, arr)
    return root


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    roots = []
    for name in ("a", "b"):
        root = tmp_path_factory.mktemp(f"lm_{name}")
        toy_with_faces(root / "data" / "variants" / "toy")
        cfg = build(E.FeaturesConfig, FEATURES, root=root)
        cfg = cfg.model_copy(update={"out_dir": root / "data/features", "variants_dir": root / "data/variants"})
        E.build_cache("lm_toy", cfg)
        roots.append(root)
    return roots


def test_landmark_cache_is_byte_identical_and_records_failures(caches):
    a, b = (r / "data/features/landmarks/toy" for r in caches)
    assert tree_digest(a) == tree_digest(b) and tree_digest(a)
    for split in ("train", "val", "test"):
        status = L.read_status(a / split)
        index = E.FeatureCache(a / split)
        assert index.index["status"]["ok"] == len(FACE_ROWS)  # the planted faces; noise and grey are rejected
        assert (status["status"].iloc[list(FACE_ROWS)] == L.STATUS_OK).all()
        assert status["status"].iloc[GREY_ROW] == L.STATUS_NO_FACE
        assert index.index["status"]["no_face_landmarks"] == len(status) - len(FACE_ROWS)
        assert face_like(np.asarray(index.get(FACE_ROWS[0]), np.float32))
        assert np.isnan(np.asarray(index.get(GREY_ROW), np.float32)).all()


def test_two_stream_reads_the_map_beside_the_pixels_and_trains(caches):
    from dfpipe.models.registry import build_model, model_config
    from dfpipe.training.data import LandmarkDataset, VariantDataset, open_split
    from dfpipe.training.engine import to_device

    root = caches[0]
    cfg = model_config(dict(name="two_stream", num_classes=3, image_size=32, width=0.25, landmark_width=4))
    ds = open_split(root / "data/variants/toy", "train", cfg, root / "data/features/landmarks/toy")
    assert isinstance(ds, LandmarkDataset) and ds.missing == len(ds) - len(FACE_ROWS)
    rows = np.array([FACE_ROWS[0], GREY_ROW])
    batch = ds.get_batch(rows)
    plain = VariantDataset(root / "data/variants/toy", "train", 3).get_batch(rows)
    assert batch["image"].shape == (2, 4, 64, 64)
    assert torch.equal(batch["image"][:, :3], plain["image"])  # the pixels are untouched
    maps = batch["image"][:, 3]
    assert int((maps[0] == 255).sum()) > 100 and int(maps[1].max()) == 0  # a face drawn; missing: all 0
    assert torch.equal(ds[int(rows[0])]["image"], batch["image"][0])
    # the feature-only control: a non-landmark model reads plain crops
    assert type(open_split(root / "data/variants/toy", "train", model_config(dict(name="resnet18")))) is VariantDataset

    torch.manual_seed(0)
    model = build_model(cfg).train()
    x = to_device(batch, torch.device("cpu"))["image"]
    out = model(x)
    assert out["logits"].shape == (2, 3)
    out["logits"].logsumexp(1).sum().backward()
    assert model.landmarks[0].weight.grad is not None and model.landmarks[0].weight.grad.abs().sum() > 0
    # the explicit missing indicator: the same pixels with the landmark map removed give other logits
    model.eval()
    with torch.no_grad():
        blank = x.clone()
        blank[:, 3] = 0
        assert not torch.allclose(model(x)["logits"][0], model(blank)["logits"][0])
    with pytest.raises(ValueError, match="RGB \\+ landmark map"):
        model(x[:, :3])
