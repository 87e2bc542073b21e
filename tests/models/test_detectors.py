"""Detectors from the group's reading list: CNNDetection, UniversalFakeDetect probe, LGrad; the features@
caches; the blur_jpeg preset; the unseen-generator variant and table. CPU, tiny sizes."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dfpipe.core.config import ConfigError, build, load_yaml
from dfpipe.features import encoders as E
from dfpipe.models import build_model, model_config
from dfpipe.training.augment import blur_jpeg
from dfpipe.training.data import FeatureDataset, open_split
from dfpipe.training.checkpoint import load_model
from dfpipe.training.train import RunConfig, RunPaths, TrainConfig, fit

from helpers import approve_variant, feature_caches_in_two_folders, make_variant, run_dict, tree_digest

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


FEATURES = {
    "out_dir": "data/features", "threads": 1, "variants_dir": "data/variants", "batch_size": 5, "shard_size": 7,
    "encoders": {
        "clip": {"arch": "ViT-L-14", "weights": None, "sha256": None, "seed": 0, "image_size": 16, "width": 16,
                 "layers": 1, "heads": 2, "patch_size": 8, "embed_dim": 8},
        "lgrad": {"arch": "random_cnn", "weights": None, "sha256": None, "seed": 0, "image_size": 32, "width": 4},
    },
    "caches": {"clip_toy": {"encoder": "clip", "variant": "toy"}, "lgrad_toy": {"encoder": "lgrad", "variant": "toy"}},
}


@pytest.mark.parametrize("cfg, x", [
    (dict(name="cnndetection", num_classes=2, image_size=32), torch.rand(2, 3, 40, 40)),
    (dict(name="clip_probe", input="clip", num_classes=2, feature_dim=8), torch.randn(2, 8)),
    (dict(name="lgrad", input="lgrad", num_classes=2, image_size=32), torch.rand(2, 3, 32, 32)),
    (dict(name="lgrad", input="lgrad", num_classes=2, image_size=32, reduced=True), torch.rand(2, 3, 32, 32)),
], ids=["cnndetection", "clip_probe", "lgrad", "lgrad_reduced"])
def test_forward_backward_batch2(cfg, x):
    torch.manual_seed(0)
    model = build_model(model_config(dict(**cfg))).train()
    logits = model(x)["logits"]
    assert logits.shape == (2, 2)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("cfg, message", [
    (dict(name="clip_probe", input="clip"), "feature_dim"),
    (dict(name="clip_probe", input="raw", feature_dim=8), r"input: 'raw' is not one of \['clip'\]"),
    (dict(name="cnndetection", input="clip"), r"input: 'clip' is not one of \['raw'\]"),
])
def test_feature_models_need_their_input(cfg, message):
    with pytest.raises(ValueError, match=message):
        model_config(dict(**cfg))


def test_blur_jpeg_is_seeded_and_changes_images():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8))
    a = blur_jpeg(x, torch.Generator().manual_seed(5))
    b = blur_jpeg(x, torch.Generator().manual_seed(5))
    c = blur_jpeg(x, torch.Generator().manual_seed(6))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a != x).flatten(1).any(1)
    # p(neither blur nor JPEG) = 0.25: with 16 images some are untouched and most are changed
    assert 4 <= int(changed.sum()) < 16


def test_gradient_maps_are_input_gradients_scaled_to_unit_range():
    f = E.build_lgrad_transform(build(E.LGradEncoder, FEATURES["encoders"]["lgrad"]))
    x = torch.rand(3, 3, 32, 32)
    g = E.gradient_maps(f, x)
    assert g.shape == x.shape and float(g.min()) == 0.0 and float(g.max()) == 1.0
    x0 = x[:1].clone().requires_grad_(True)
    (raw,) = torch.autograd.grad(f(x0).sum(), x0)
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    torch.testing.assert_close(g[:1], expected)


def test_lgrad_torchscript_transformation_model_is_pinned_and_fed_minus_one_to_one(tmp_path, monkeypatch):
    """arch torchscript: a user-exported model (the paper's StyleGAN discriminator) is loaded only
    with its sha256 and sees images in [-1, 1]; the maps are its input gradients."""
    monkeypatch.chdir(tmp_path)  # weights are repository paths
    disc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.LeakyReLU(0.2), torch.nn.Flatten(),
                               torch.nn.LazyLinear(1))
    disc(torch.zeros(1, 3, 16, 16))
    torch.jit.trace(disc, torch.zeros(1, 3, 16, 16)).save(str(tmp_path / "disc.pt"))
    digest = hashlib.sha256((tmp_path / "disc.pt").read_bytes()).hexdigest()
    base = {"arch": "torchscript", "weights": "disc.pt", "seed": 0, "image_size": 16, "width": 1}
    f = E.build_lgrad_transform(build(E.LGradEncoder, {**base, "sha256": digest}))
    x = torch.rand(2, 3, 16, 16)
    x0 = x.clone().requires_grad_(True)
    (raw,) = torch.autograd.grad(disc(x0 * 2 - 1).sum(), x0)
    expected = torch.stack([(r - r.min()) / (r.max() - r.min()) for r in raw])
    torch.testing.assert_close(E.gradient_maps(f, x), expected)
    with pytest.raises(ValueError, match="does not match the pinned"):
        E.build_lgrad_transform(build(E.LGradEncoder, {**base, "sha256": "0" * 64}))
    with pytest.raises(ConfigError, match="needs weights"):
        build(E.LGradEncoder, {**base, "weights": None, "sha256": None})


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """A toy variant and both feature caches built twice in different folders."""
    return feature_caches_in_two_folders(tmp_path_factory, "features", FEATURES)


def test_feature_caches_byte_identical_on_rerun(cached):
    a, b = (r / "data" / "features" for r in cached)
    da, db = tree_digest(a), tree_digest(b)
    assert da == db
    assert "clip/toy/train/features-00000.npy" in da and "lgrad/toy/test/ids.parquet" in da
    idx = E.FeatureCache(a / "clip" / "toy" / "train").index
    assert idx["shape"] == [8] and idx["dtype"] == "float16" and idx["count"] == 18 and idx["random"] is True
    assert E.read_ids(a / "clip" / "toy" / "train")[:2] == ["toy/train/0/000", "toy/train/0/001"]
    arr = np.load(a / "lgrad" / "toy" / "val" / "features-00000.npy")
    assert arr.dtype == np.float16 and arr.shape == (7, 3, 32, 32)


def test_cache_must_match_manifest(cached, tmp_path):
    root = cached[0]
    other = make_variant(tmp_path / "toy", per_class={"train": 5, "val": 3, "test": 3})
    with pytest.raises(ValueError, match="rerun features@"):
        FeatureDataset(other, "train", root / "data/features/clip/toy/train", num_classes=2)
    mc = model_config(dict(name="clip_probe", input="clip", num_classes=2, feature_dim=8))
    with pytest.raises(FileNotFoundError, match="features@"):
        open_split(other, "train", mc, tmp_path / "nowhere")


def _train(root: Path, model: dict, **over):
    run = dict(model=model, variant="toy", lr=0.01, batch_size=6, epochs=2, seeds=[3], max_steps_per_epoch=0,
               bn_recalibration_images=0)
    run_cfg = build(RunConfig, run_dict(**{**run, **over}))
    name = model["name"]
    train_cfg = build(TrainConfig, {"device": "cpu", "amp": "off", "progress": False, "threads": 1, "log_every": 0,
                                    "num_workers": 0, "scratch_dir": f"{name}/.scratch/train",
                                    "log_dir": f"{name}/.scratch/logs", "models_dir": f"{name}/models",
                                    "metrics_dir": f"{name}/metrics"})
    paths = RunPaths.for_run(name, run_cfg, train_cfg, Path("metrics/audit"))
    rel = lambda p: root / p  # noqa: E731
    paths = dataclasses.replace(paths, variant_dir=rel(paths.variant_dir), out_dir=rel(paths.out_dir),
                                metrics_dir=rel(paths.metrics_dir), scratch_dir=rel(paths.scratch_dir),
                                log_file=rel(paths.log_file), gate=rel(paths.gate),
                                features=None if paths.features is None else rel(paths.features))
    approve_variant(paths.variant_dir, paths.gate)
    return fit(name, run_cfg, train_cfg, paths)[3], paths


def test_probe_trains_on_cached_features_without_the_encoder(cached, monkeypatch):
    root = cached[0]

    def no_encoder(*a, **k):
        raise AssertionError("the encoder must not be built when training on cached features")

    monkeypatch.setattr(E, "build_clip", no_encoder)
    monkeypatch.setattr(E, "build_encoder", no_encoder)
    import open_clip  # noqa: F401 - imported or not, nothing may call it
    monkeypatch.setattr(open_clip, "create_model", no_encoder)
    out, paths = _train(root, {"name": "clip_probe", "input": "clip", "num_classes": 2, "feature_dim": 8},
                        flip=False)
    assert out["epochs_run"] == 2 and 0.0 <= out["best_score"] <= 1.0
    model, run_cfg = load_model(paths.out_dir / "seed3.pt")
    ds = open_split(paths.variant_dir, "test", run_cfg.model, paths.features)
    x = torch.stack([ds[i]["image"] for i in range(len(ds))]).float()
    assert model(x)["logits"].shape == (len(ds), 2)


def test_lgrad_and_cnndetection_train_through_the_one_fit(cached):
    root = cached[0]
    out, _ = _train(root, {"name": "lgrad", "input": "lgrad", "num_classes": 2, "image_size": 32, "reduced": True})
    assert out["epochs_run"] == 2
    out, _ = _train(root, {"name": "cnndetection", "num_classes": 2, "image_size": 32}, augment="blur_jpeg",
                    epochs=1, max_steps_per_epoch=1)
    assert out["epochs_run"] == 1


def test_params_unseen_generator_protocol():
    params = load_yaml(REPO / "params.yaml")
    v = params["variants"]["unseen_wgan_gp"]
    gans = [s for s in params["sources"] if s.startswith("gan_") and "_c23" not in s]
    assert [s for s in v["train"] if s.startswith("gan_")] == ["gan_wgan_gp"]
    assert sorted(s for s in v["test"] if s.startswith("gan_")) == sorted(gans)
    for name in ("ug_resnet18", "ug_npr", "ug_cnndetection", "ug_ufd", "ug_lgrad"):
        assert params["runs"][name]["variant"] == "unseen_wgan_gp"
        assert params["runs"][name]["model"]["num_classes"] == 2
        assert name not in params["evaluations"]  # scored on its own variant by default
    cfg = build(E.FeaturesConfig, params["features"], where="features")
    assert {(c.encoder, c.variant) for c in cfg.caches.values()} == {("clip", "unseen_wgan_gp"),
                                                                   ("lgrad", "unseen_wgan_gp"),
                                                                   ("landmarks", "v4")}  # two-stream


def test_unseen_tables_from_predictions(tmp_path):
    """Cells = seed-mean AP / accuracy of real + that generator's items, recomputed here; the seen
    column is marked and left out of the mean; random-encoder rows are labelled."""
    import pandas as pd

    from dfpipe.core.io import write_json
    from dfpipe.scoring.metrics import binary_ap
    from dfpipe.evaluation.unseen import UnseenTable, binary_acc, unseen_tables
    from helpers import fake_scores, make_manifest

    man = make_manifest()
    man = man[man["source"] != "ffpp"].reset_index(drop=True)  # stills only: real ffhq + two GANs
    labels = man["label"].to_numpy(np.int64)
    probs = {}
    for name, seeds in (("ug_a", (0, 1)), ("ug_b", (0,))):
        frames = []
        for s in seeds:
            p3 = fake_scores(labels, s + (5 if name == "ug_b" else 0))
            p = np.stack([p3[:, 0], p3[:, 1:].sum(1)], 1)  # binary model: p_real, p_fake
            probs[(name, s)] = p
            frames.append(man.assign(p_real=p[:, 0], p_fake=p[:, 1], seed=s))
        (tmp_path / name).mkdir()
        pd.concat(frames).to_parquet(tmp_path / name / "predictions.parquet")
    write_json(tmp_path / "ug_b" / "details.json", {"features": {"random": True},
                                                    "run": {"stopping": "fixed epochs", "images_seen": 64}})
    thresholds = {0: 0.3, 1: 0.7}  # chosen on val by evaluate; the table must apply them, not 0.5
    write_json(tmp_path / "ug_a" / "details.json", {"val_threshold": {str(s): t for s, t in thresholds.items()},
                                                    "run": {"stopping": "val early stop, patience 2",
                                                            "images_seen": "960/1280"}})
    cfg = build(UnseenTable, {"rows": {"A": "ug_a", "B": "ug_b"},
                              "generators": {"WGAN-GP": "gan_wgan_gp", "StyleGAN": "gan_stylegan"},
                              "seen": ["gan_wgan_gp"], "bootstrap": 50, "ci_level": 0.95, "seed": 0})
    read = set()
    (ap_name, _, cols, ap_rows, notes), (acc_name, _, _, acc_rows, _) = unseen_tables(cfg, tmp_path, read)
    assert (ap_name, acc_name) == ("unseen_ap", "unseen_acc")
    assert cols == ["Detector", "Evaluation", "WGAN-GP (train)", "StyleGAN", "Mean (unseen)", "Training"]
    assert ap_rows[0][-1] == "val early stop, patience 2; 960/1280 images seen"
    # rows that stop by different rules are called out, not averaged into one claim
    assert any("ROWS STOP BY DIFFERENT RULES (fixed epochs, val early stop, patience 2)" in n for n in notes)
    assert [r[0] for r in ap_rows] == ["A", "B [random features (demo)]"] and any("ug_b" in n for n in notes)
    assert tmp_path / "ug_b" / "details.json" in read and tmp_path / "ug_a" / "predictions.parquet" in read
    order = np.argsort(man["id"].to_numpy(), kind="stable")  # the table aligns seeds by sorted id
    y_all, src = (labels[order] > 0).astype(int), man["source"].to_numpy()[order]
    sel = (src == "gan_stylegan") | (y_all == 0)
    ap = np.mean([binary_ap(y_all[sel], 1 - probs[("ug_a", s)][order][sel, 0]) for s in (0, 1)])
    acc = np.mean([np.mean(((1 - probs[("ug_a", s)][order][sel, 0]) > thresholds[s]) == y_all[sel])
                   for s in (0, 1)])
    acc_at_half = np.mean([binary_acc(y_all[sel], 1 - probs[("ug_a", s)][order][sel, 0]) for s in (0, 1)])
    assert abs(acc - acc_at_half) > 1e-3  # the thresholds matter for this data
    assert ap_rows[0][3].startswith(f"{100 * ap:.2f} ± ") and "[" in ap_rows[0][3]
    assert acc_rows[0][3].startswith(f"{100 * acc:.2f} ± ")
    assert ap_rows[0][4] == f"{100 * ap:.2f}"  # the mean skips the seen (train) column
    assert ap_rows[1][3].startswith(f"{100 * binary_ap(y_all[sel], 1 - probs[('ug_b', 0)][order][sel, 0]):.2f} [")
    assert any("ug_b: no val threshold" in n for n in notes)  # B: no threshold recorded, Acc at 0.5
