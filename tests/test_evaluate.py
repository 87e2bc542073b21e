"""Evaluation library (predictions -> metrics files, leak overlap, plots) and feature maps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models.resnet import BasicBlock, ResNet

from helpers import fake_scores, make_manifest
from dfpipe.evaluation import evaluate as E
from dfpipe.evaluation import featuremaps as FM
from dfpipe.core.config import ConfigError, build




def scored_frame(seed: int = 0) -> pd.DataFrame:
    man = make_manifest()
    labels = man["label"].to_numpy(np.int64)
    probs = fake_scores(labels, seed)
    perm = np.random.default_rng(seed).permutation(len(man))  # loader order != manifest order
    return E.align_predictions(man, man["id"].to_numpy()[perm], labels[perm], probs[perm], "test")


def test_align_checks_ids_and_labels():
    man = make_manifest()
    labels = man["label"].to_numpy(np.int64)
    probs = fake_scores(labels)
    frame = E.align_predictions(man, man["id"], labels, probs, "m.parquet")
    assert frame["id"].tolist() == sorted(man["id"])
    np.testing.assert_array_equal(frame["pred"], probs.argmax(1))
    with pytest.raises(ValueError, match="m.parquet: predictions and manifest differ"):
        E.align_predictions(man, man["id"][:-1], labels[:-1], probs[:-1], "m.parquet")
    bad = labels.copy()
    bad[0] = (bad[0] + 1) % 3
    with pytest.raises(ValueError, match="m.parquet: label of"):
        E.align_predictions(man, man["id"], bad, probs, "m.parquet")
    # binary model: labels 0/1 must equal manifest label != 0
    p2 = np.stack([probs[:, 0], 1 - probs[:, 0]], 1)
    frame2 = E.align_predictions(man, man["id"], (labels != 0).astype(int), p2, "m.parquet")
    assert list(frame2.columns[-2:]) == ["p_real", "p_fake"]


def test_evaluate_predictions_headline_and_details():
    frame = scored_frame()
    head, details = E.evaluate_predictions(frame, n_boot=50, seed=3, level=0.95)
    assert head["n"] == len(frame)
    assert head["acc"] == pytest.approx(float(np.mean(frame["pred"] == frame["label"])))
    for key in ("macro_f1", "f1_real", "f1_fake", "f1_edited", "auc_real", "auc_edited",
                "ap_fake", "auc_real_vs_fake", "ap_real_vs_fake", "eer"):
        assert 0.0 <= head[key] <= 1.0, key
    assert head["ci"]["macro_f1"]["low"] <= head["macro_f1"] <= head["ci"]["macro_f1"]["high"]
    # video level: 3 originals + 4 fakes, the two 000_003 videos kept apart
    assert head["video"]["n"] == 7
    assert details["video"]["per_method"]["Face2Face"]["n"] == 2
    assert details["video"]["per_method"]["FaceSwap"]["n"] == 2
    assert set(details["per_source"]) == {"ffhq", "ffpp", "gan_stylegan", "gan_wgan_gp"}
    assert details["per_source"]["ffhq"]["auc_vs_real"] is None  # real-only source: null + note
    assert details["per_source"]["ffhq"]["notes"]
    json.dumps(details, allow_nan=False)  # valid JSON: no NaN anywhere


def test_train_overlap_counts_hashes_and_videos():
    ev = make_manifest()
    images = ev.index[ev["video_id"] == ""][:2].tolist()
    frames = ev.index[(ev["method"] == "FaceSwap") & (ev["video_id"] == "000_003")][:2].tolist()
    train = ev.loc[images + frames].copy()  # two images, two frames of FaceSwap/000_003
    train.loc[train.index[0], "id"] = "other/renamed.png"  # same pixels under another id still count
    val = ev.iloc[:0].copy()
    out = E.train_overlap({"train": train, "val": val}, ev)
    assert out == {"n_eval": len(ev), "overlap_train": 4, "overlap_train_frames": int((train["video_id"] != "").sum()),
                   "overlap_train_videos": len({(m, v) for m, v in zip(train["method"], train["video_id"]) if v}),
                   "overlap_val": 0, "overlap_val_frames": 0, "overlap_val_videos": 0}
    assert out["overlap_train_frames"] == 2 and out["overlap_train_videos"] == 1


def test_write_outputs_files_and_determinism(tmp_path):
    frame = scored_frame()
    head, details = E.evaluate_predictions(frame, n_boot=20, seed=0, level=0.95)
    for run in ("a", "b"):
        E.write_outputs("x", frame, head, details, tmp_path / run / "x.json", tmp_path / run / "x")
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == ["x.json", "x/confusion.csv", "x/details.json", "x/figures/confusion.png",
                     "x/figures/roc_pr.png", "x/pr.csv", "x/predictions.parquet", "x/roc.csv"]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    conf = pd.read_csv(tmp_path / "a/x/confusion.csv")
    assert len(conf) == len(frame) and set(conf["actual"]) == {"real", "fake", "edited"}
    back = pd.read_parquet(tmp_path / "a/x/predictions.parquet")
    pd.testing.assert_frame_equal(back, frame)


def test_training_curves_from_dvclive_layout(tmp_path):
    series = tmp_path / "run" / "plots" / "metrics"
    for split in ("train", "val"):
        (series / split).mkdir(parents=True)
        pd.DataFrame({"step": [0, 1, 2], "loss": [1.0, 0.5, 0.3]}).to_csv(series / split / "loss.tsv", sep="\t", index=False)
    E.plot_training_curves(tmp_path / "run", tmp_path / "curves.png", "run")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileNotFoundError, match="missing/plots/metrics"):
        E.plot_training_curves(tmp_path / "missing", tmp_path / "c.png", "run")


def test_config_validation():
    ok = dict(batch_size=8, num_workers=0, device="cpu", amp="off", bootstrap=10, ci_level=0.95,
              seed=0, featuremap_layer="auto", featuremap_per_class=2)
    assert build(E.EvaluateConfig, ok).bootstrap == 10
    with pytest.raises(ConfigError, match="bootstrap"):
        build(E.EvaluateConfig, {**ok, "bootstrap": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        build(E.EvaluateConfig, {**ok, "bootstarp": 5})
    with pytest.raises(ConfigError, match="plain name"):
        build(E.Evaluation, {"run": "../x", "variant": "v3", "train_variant": "v3"})


# ---- feature maps -------------------------------------------------------------------------


def tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3)


def test_gradcam_shapes_and_range():
    model = tiny_resnet()
    images = torch.rand(4, 3, 48, 48)
    name, layer = FM.find_layer(model, "layer3")
    out = FM.gradcam(model, images, layer, torch.tensor([0, 1, 2, 0]))
    assert out["cam"].shape == (4, 48, 48) and out["activation"].shape == (4, 48, 48)
    assert out["logits"].shape == (4, 3)
    for key in ("cam", "activation"):
        assert float(out[key].min()) >= 0.0 and float(out[key].max()) <= 1.0
    assert all(p.grad is None for p in model.parameters())  # weights untouched
    # dict-output models (the registry's contract) work too
    wrapped = torch.nn.Sequential()
    wrapped.forward = lambda x: {"logits": model(x)}  # type: ignore[method-assign]
    out2 = FM.gradcam(wrapped, images, layer, torch.tensor([0, 1, 2, 0]))
    torch.testing.assert_close(out2["cam"], out["cam"])


def test_find_layer_auto_and_unknown():
    model = tiny_resnet()
    name, layer = FM.find_layer(model, "auto", torch.rand(1, 3, 64, 64))
    assert name == "layer3.0.conv2"  # last stride-16 conv; not the strided 1x1 downsample after it
    with pytest.raises(ValueError, match="needs an example"):
        FM.find_layer(model, "auto")
    with pytest.raises(ValueError, match="layer 'layer9' not in the model"):
        FM.find_layer(model, "layer9")


def test_pick_examples_and_grid(tmp_path):
    labels = np.array([0, 1, 2] * 5)
    ids = np.array([f"id{i:02d}" for i in range(15)])
    rows = FM.pick_examples(labels, ids, per_class=2, seed=1, num_classes=3)
    assert rows.tolist() == FM.pick_examples(labels, ids, 2, 1, 3).tolist()
    assert labels[rows].tolist() == [0, 0, 1, 1, 2, 2]
    imgs = (np.random.default_rng(0).random((6, 16, 16, 3)) * 255).astype(np.uint8)
    maps = np.random.default_rng(1).random((6, 16, 16))
    FM.save_grid(tmp_path / "g.png", imgs, maps, maps, [str(r) for r in rows], "layer3")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


# ---- the stage end to end: real checkpoint format, real dataset / loader / predict -----------


def write_split(root, split: str, man: pd.DataFrame, size: int = 32, seed: int = 0) -> None:
    """A variant split as variant@ writes it: VARIANT_SCHEMA manifest + one image shard."""
    from dfpipe.core.io import array_hash
    from dfpipe.core.manifest import add_provenance, write_variant
    from dfpipe.core.shards import ShardWriter

    rng = np.random.default_rng(seed)
    d = root / split
    rows = []
    with ShardWriter(d, "images", 4096) as writer:
        for rec in man.to_dict("records"):
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            shard, off = writer.add(img)
            video = rec["video_id"] != ""
            rows.append({**rec, "group_keys": [rec["id"]], "path": rec["id"],
                         "frame_index": 0 if video else -1, "n_frames": 100 if video else -1,
                         "box_x": 0, "box_y": 0, "box_w": size, "box_h": size, "det_score": 1.0,
                         "content_hash": rec.get("content_hash") or array_hash(img),
                         "has_mask": False, "shard": shard, "offset": off, "mask_shard": "",
                         "split": split, "split_group": rec["id"]})
    write_variant(add_provenance(pd.DataFrame(rows)), d / "manifest.parquet")


def test_run_evaluation_end_to_end(tmp_path):
    from dfpipe.core.config import to_dict
    from dfpipe.models import ModelConfig, build_model
    from dfpipe.training.train import RunConfig

    ev_man = make_manifest(n_images=9, frames=2)
    write_split(tmp_path / "variants" / "v4", "eval", ev_man)
    tr = ev_man.iloc[:4].copy()  # a leaky training split: 4 eval items inside
    write_split(tmp_path / "variants" / "v3", "train", tr)
    val = ev_man.iloc[[5]].assign(id="ffhq/val_only.png", content_hash="h-val-only")
    write_split(tmp_path / "variants" / "v3", "val", val)
    from dfpipe.core.config import build
    from helpers import run_dict

    run_cfg = build(RunConfig, run_dict(model={"name": "resnet18", "image_size": 32}, variant="v3", lr=2e-4,
                                        batch_size=128, epochs=1, bn_recalibration_batches=0,
                                        max_steps_per_epoch=0))
    torch.manual_seed(0)
    model = build_model(run_cfg.model)
    (tmp_path / "models" / "r5").mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": to_dict(run_cfg), "epoch": 1},
               tmp_path / "models" / "r5" / "best.pt")
    series = tmp_path / "train_metrics" / "r5" / "plots" / "metrics" / "val"
    series.mkdir(parents=True)
    (series / "macro_f1.tsv").write_text("step\tmacro_f1\n0\t0.5\n1\t0.7\n")
    cfg = E.EvaluateConfig(batch_size=16, num_workers=0, device="cpu", amp="off", bootstrap=20,
                           ci_level=0.95, seed=0, featuremap_layer="backbone.layer3", featuremap_per_class=1)
    ev = E.Evaluation(run="r5", variant="v4", train_variant="v3")
    kwargs = dict(models_dir=tmp_path / "models", variants_dir=tmp_path / "variants",
                  train_metrics_dir=tmp_path / "train_metrics", out_root=tmp_path / "eval")
    head = E.run_evaluation("r5_on_v4", ev, cfg, **kwargs)
    saved = json.loads((tmp_path / "eval" / "r5_on_v4.json").read_text())
    assert saved == head and head["n"] == len(ev_man)
    assert head["leak"]["overlap_train"] == 4 and head["leak"]["overlap_val"] == 0
    assert head["run"]["lr"] == 2e-4 and head["run"]["batch_size"] == 128 and head["run"]["train_variant"] == "v3"
    assert head["run"]["init"] == "scratch"  # no init in the run: trained from random weights
    figs = sorted(p.name for p in (tmp_path / "eval" / "r5_on_v4" / "figures").iterdir())
    assert figs == ["confusion.png", "featuremaps.png", "roc_pr.png", "training_curves.png"]
    with pytest.raises(ValueError, match="trained on 'v3'"):
        E.run_evaluation("bad", E.Evaluation(run="r5", variant="v4", train_variant="v4"), cfg, **kwargs)


def test_mask_evaluation_on_stored_masks(tmp_path):
    from dfpipe.core.io import save_npy

    man = make_manifest(n_images=3, frames=1)
    edited = (man["label"] == 2).to_numpy()
    man["has_mask"] = edited
    man["mask_shard"] = np.where(edited, "masks-00000.npy", "")
    man["offset"] = np.arange(len(man))
    masks = np.zeros((len(man), 8, 8), np.uint8)
    masks[:, :4] = 255                                   # top half manipulated
    save_npy(tmp_path / "masks-00000.npy", masks)
    probs = np.zeros((len(man), 4, 4), np.float16)       # model output at a smaller size
    probs[:, :2] = 1.0                                   # exactly the top half
    perm = np.arange(len(man))[::-1]
    out = E.mask_evaluation(man, tmp_path, man["id"].to_numpy()[perm], probs[perm])
    assert out == {"n": int(edited.sum()), "dice": 1.0, "iou": 1.0}
    with pytest.raises(ValueError, match="no predicted mask"):
        E.mask_evaluation(man, tmp_path, man["id"].to_numpy()[:2], probs[:2])


def test_params_evaluations_match_runs():
    """Each evaluations.<name> names a defined run and that run's own training variant."""
    from pathlib import Path

    from dfpipe.core.config import load_section, load_yaml
    from dfpipe.training.train import load_runs

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    evaluations = load_section("evaluations", dict[str, E.Evaluation], params)
    load_section("evaluate", E.EvaluateConfig, params)
    _, runs = load_runs(load_yaml(params))
    for name, ev in evaluations.items():
        assert ev.run in runs, name
        assert runs[ev.run].variant == ev.train_variant, name
    assert {n for n, ev in evaluations.items() if ev.run == n} == set(runs)  # every run evaluated
