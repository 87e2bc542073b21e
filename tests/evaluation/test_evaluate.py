"""Evaluation orchestration (predictions -> metrics files over seeds), figures, feature maps,
masks, and the stage end to end on a real checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models.resnet import BasicBlock, ResNet

from dfpipe.core.config import ConfigError, build
from dfpipe.core.stagedeps import import_closure
from dfpipe.evaluation import evaluate as E
from dfpipe.evaluation import predictions as P
from dfpipe.splits.gate import variant_fingerprint
from dfpipe.evaluation import featuremaps as FM
from dfpipe.evaluation import figures as F
from dfpipe.scoring import metrics as M
from dfpipe.evaluation.masks import mask_evaluation
from helpers import fake_scores, make_manifest, run_dict, scored_frames

REPO = Path(__file__).resolve().parents[2]


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


def test_headline_is_mean_sd_ci_over_seeds():
    frames = scored_frames(seeds=(0, 1, 2))
    head, details = E.evaluate_seeds(frames, n_boot=60, seed=3, level=0.95)
    # the headline file holds only the headline numbers
    assert set(head) == {"macro_f1", "weighted_f1", "acc", "auc_real_fake", "eer"}
    assert all(set(v) == {"mean", "sd", "low", "high"} for v in head.values())
    accs = [float(np.mean(f["pred"] == f["label"])) for f in frames.values()]
    assert head["acc"]["mean"] == pytest.approx(np.mean(accs))
    assert head["acc"]["sd"] == pytest.approx(np.std(accs, ddof=1))
    for name, v in head.items():
        assert v["low"] <= v["high"], name
    assert head["macro_f1"]["low"] < head["macro_f1"]["mean"] < head["macro_f1"]["high"]
    # weighted-F1 is the support-weighted per-class F1, checked against scikit-learn per seed
    from sklearn.metrics import f1_score
    wf = [f1_score(f["label"], f["pred"], average="weighted") for f in frames.values()]
    assert head["weighted_f1"]["mean"] == pytest.approx(np.mean(wf))
    # per-class F1 per seed and summarised
    assert {"f1_real", "f1_fake", "f1_edited"} <= set(details["summary"])
    assert details["seeds"] == [0, 1, 2] and set(details["per_seed"]) == {"0", "1", "2"}
    # video level keyed (method, video_id): the two 000_003 videos are two videos
    assert details["video"]["n_videos"] == 7
    assert "Face2Face:000_003" in details["video"]["keys"] and "FaceSwap:000_003" in details["video"]["keys"]
    assert details["video"]["summary"]["auc_real_vs_fake"]["mean"] is not None  # both classes present
    assert not any("real-vs-fake" in n for n in details["video"]["notes"])
    # without real videos (the notes' variants) video AUC is undefined, and the notes say why
    man = make_manifest()
    fake_only = man[(man["video_id"] == "") | (man["label"] != 0)].reset_index(drop=True)
    _, d2 = E.evaluate_seeds(scored_frames(fake_only, seeds=(0,)), n_boot=5, seed=0, level=0.95)
    assert d2["video"]["summary"]["auc_real_vs_fake"]["mean"] is None
    assert any("real-vs-fake AUC/AP/EER undefined: only fake" in n for n in d2["video"]["notes"])
    assert details["per_seed"]["0"]["per_source"]["ffhq"]["auc_vs_real"] is None  # null + note
    json.dumps(details, allow_nan=False)


def test_one_seed_has_no_sd_and_other_items_are_refused():
    frames = scored_frames(seeds=(0,))
    head, _ = E.evaluate_seeds(frames, n_boot=20, seed=0, level=0.95)
    assert head["acc"]["sd"] is None and head["acc"]["mean"] is not None
    two = scored_frames(seeds=(0, 1))
    two[1] = two[1].iloc[1:].reset_index(drop=True)
    with pytest.raises(ValueError, match="seed 1 scored other items"):
        E.evaluate_seeds(two, n_boot=5, seed=0, level=0.95)


def test_write_outputs_files_and_determinism(tmp_path):
    frames = scored_frames()
    head, details = E.evaluate_seeds(frames, n_boot=20, seed=0, level=0.95)
    for run in ("a", "b"):
        E.write_outputs("x", frames, head, details, tmp_path / run / "x.json", tmp_path / run / "x")
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == ["x.json", "x/confusion.csv", "x/details.json", "x/figures/confusion.png",
                     "x/figures/roc_pr.png", "x/pr.csv", "x/predictions.parquet", "x/roc.csv"]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    n = len(frames[0])
    conf = pd.read_csv(tmp_path / "a/x/confusion.csv")
    assert len(conf) == 2 * n and set(conf["actual"]) == {"real", "fake", "edited"}
    table = pd.read_parquet(tmp_path / "a/x/predictions.parquet")
    assert table.columns[0] == "seed" and table["seed"].dtype == np.int64 and sorted(set(table["seed"])) == [0, 1]
    back = P.read_predictions(tmp_path / "a/x/predictions.parquet")
    for s in (0, 1):
        pd.testing.assert_frame_equal(back[s], frames[s])


def test_training_curves_from_per_seed_tsv_files(tmp_path):
    curves = tmp_path / "run" / "curves"
    curves.mkdir(parents=True)
    for s in (0, 1):
        pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_macro_f1": [0.4, 0.6],
                      "val_acc": [0.5, 0.7], "updates": [3, 6], "images_seen": [48, 96]}).to_csv(
                          curves / f"seed{s}.tsv", sep="\t", index=False)
    F.plot_training_curves(curves, tmp_path / "curves.png", "run")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(F.read_curves(curves)) == [0, 1]
    assert E.training_budget(F.read_curves(curves)) == {"updates": 6, "images_seen": 96, "steps_per_epoch": 3}
    assert E.training_budget(None)["updates"] == "n/a"
    with pytest.raises(FileNotFoundError, match="missing"):
        F.plot_training_curves(tmp_path / "missing", tmp_path / "c.png", "run")
    (curves / "seed2.tsv").write_text("step\tloss\n0\t1\n")
    with pytest.raises(ValueError, match="seed2.tsv: missing columns"):
        F.read_curves(curves)


def test_evaluate_fingerprint_covers_its_import_closure():
    """The provenance hash covers exactly the evaluate stage's import closure (its dvc.yaml code deps):
    every model module (imported through the registry), none of the report's modules."""
    closure = import_closure(Path("stages/evaluate.py"), REPO)
    assert "src/dfpipe/models/f3net.py" in closure and "src/dfpipe/scoring/metrics.py" in closure
    assert "src/dfpipe/evaluation/tables.py" not in closure


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
    F.plot_featuremap_grid(tmp_path / "g.png", imgs, maps, maps, [str(r) for r in rows], "layer3")
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


def write_flags(path, man: pd.DataFrame, videos_in_train: set[str]) -> None:
    """The audit's test_items.parquet (per-test-item leak flags) for ``man``."""
    keys = [M.video_key(m, v) if v else "" for m, v in zip(man["method"], man["video_id"])]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": man["id"], "video_key": keys, "group_in_train": [k in videos_in_train for k in keys],
                  "video_in_train": [k in videos_in_train for k in keys]}).to_parquet(path)


def test_run_evaluation_end_to_end(tmp_path):
    from dfpipe.core.config import to_dict
    from dfpipe.models import build_model, model_config
    from dfpipe.training.train import RunConfig

    ev_man = make_manifest(n_images=9, frames=2)
    write_split(tmp_path / "variants" / "v3", "test", ev_man)
    write_split(tmp_path / "variants" / "v3", "val", make_manifest(seed=1, n_images=6, frames=1), seed=1)
    write_flags(tmp_path / "audit" / "v3" / "test_items.parquet", ev_man, {"FaceSwap:000_003", "youtube:000"})
    run_cfg = build(RunConfig, run_dict(model={"name": "resnet18", "image_size": 32}, variant="v3", lr=2e-4,
                                        batch_size=128, epochs=1, bn_recalibration_images=0,
                                        max_steps_per_epoch=0))
    (tmp_path / "models" / "r5").mkdir(parents=True)
    for s in (0, 1):
        torch.manual_seed(s)
        model = build_model(run_cfg.model)
        torch.save({"model": model.state_dict(), "config": to_dict(run_cfg)}, tmp_path / "models" / "r5" / f"seed{s}.pt")
    curves = tmp_path / "train_metrics" / "r5" / "curves"
    curves.mkdir(parents=True)
    for s in (0, 1):
        (curves / f"seed{s}.tsv").write_text(
            "epoch\ttrain_loss\tval_macro_f1\tval_acc\tupdates\timages_seen\n1\t1.0\t0.5\t0.6\t4\t64\n")
    cfg = E.EvaluateConfig(batch_size=16, num_workers=0, device="cpu", amp="off", bootstrap=20,
                           ci_level=0.95, seed=0, featuremap_layer="backbone.layer3", featuremap_per_class=1)
    ev = E.Evaluation(run="r5", variant="v3", train_variant="v3")
    kwargs = dict(models_dir=tmp_path / "models", variants_dir=tmp_path / "variants",
                  train_metrics_dir=tmp_path / "train_metrics", audit_dir=tmp_path / "audit",
                  out_root=tmp_path / "eval", code_root=tmp_path)
    head = E.run_evaluation("r5", ev, cfg, scale=0.04, **kwargs)
    saved = json.loads((tmp_path / "eval" / "r5.json").read_text())
    assert saved == head and set(head) == {"macro_f1", "weighted_f1", "acc", "auc_real_fake", "eer"}
    details = json.loads((tmp_path / "eval" / "r5" / "details.json").read_text())
    assert details["seeds"] == [0, 1] and details["n"] == len(ev_man)
    assert details["run"]["seeds"] == "0,1" and details["run"]["lr"] == 2e-4 and details["run"]["init"] == "scratch"
    assert (details["run"]["updates"], details["run"]["images_seen"]) == (4, 64)  # spent, from the curves
    # FF++ protocol: originals vs manipulated on the 14 video frames alone, threshold from val
    ffpp = details["ffpp"]
    assert ffpp["threshold_source"] == "val" and ffpp["methods"] == ["Face2Face", "FaceSwap"]
    assert ffpp["frame"]["all"]["n_items"] == 14 and ffpp["video"]["all"]["n_items"] == 7
    assert ffpp["frame"]["Face2Face"]["n_fake"] == 4 and ffpp["frame"]["Face2Face"]["n_real"] == 6
    assert ffpp["frame"]["all"]["auc"]["interval"] == "ok" and ffpp["video"]["all"]["auc"]["interval"] == "n too small"
    data = details["provenance"].pop("data")
    assert details["provenance"] == {"code": "unknown", "scale": 0.04, "variant": "v3", "train_variant": "v3",
                                     "seeds": [0, 1]}
    assert data == {"test": variant_fingerprint(tmp_path / "variants/v3/test")["digest"][:12],
                    "val": variant_fingerprint(tmp_path / "variants/v3/val")["digest"][:12]}
    assert details["leak"]["frames_in"] == 4 and details["leak"]["videos_in"] == 2
    assert details["per_seed"]["0"] != details["per_seed"]["1"]  # two different models were scored
    preds = pd.read_parquet(tmp_path / "eval" / "r5" / "predictions.parquet")
    assert len(preds) == 2 * len(ev_man)
    figs = sorted(p.name for p in (tmp_path / "eval" / "r5" / "figures").iterdir())
    assert figs == ["confusion.png", "featuremaps.png", "roc_pr.png", "training_curves.png"]
    with pytest.raises(ValueError, match="trained on 'v3'"):
        E.run_evaluation("bad", E.Evaluation(run="r5", variant="v3", train_variant="v4"), cfg, 0.04, **kwargs)
    with pytest.raises(FileNotFoundError, match="no seed<s>.pt"):
        E.run_evaluation("bad", E.Evaluation(run="r9", variant="v3", train_variant="v3"), cfg, 0.04, **kwargs)


def test_binary_run_records_a_threshold_chosen_on_the_train_variants_val(tmp_path):
    """A 2-class run's details.json holds, per seed, the balanced-accuracy threshold of its
    predictions on the *train* variant's val split (not on the test data it is applied to)."""
    from dfpipe.core.config import to_dict
    from dfpipe.models import build_model, model_config
    from dfpipe.training.data import make_loader, open_split
    from dfpipe.training.engine import predict
    from dfpipe.training.train import RunConfig

    def binary(man):
        return man.assign(label=(man["label"] > 0).astype(man["label"].dtype))

    write_split(tmp_path / "variants" / "ug_test", "test", binary(make_manifest(n_images=9, frames=2)))
    val_man = binary(make_manifest(n_images=6, frames=1))
    val_man["id"] = "val_" + val_man["id"]
    write_split(tmp_path / "variants" / "ug", "val", val_man)
    run_cfg = build(RunConfig, run_dict(model={"name": "resnet18", "image_size": 32, "num_classes": 2}, variant="ug",
                                        lr=2e-4, batch_size=8, epochs=1, bn_recalibration_images=0,
                                        max_steps_per_epoch=0))
    (tmp_path / "models" / "b").mkdir(parents=True)
    torch.manual_seed(3)
    model = build_model(run_cfg.model)
    torch.save({"model": model.state_dict(), "config": to_dict(run_cfg)}, tmp_path / "models" / "b" / "seed0.pt")
    (tmp_path / "tm" / "b" / "curves").mkdir(parents=True)
    (tmp_path / "tm" / "b" / "curves" / "seed0.tsv").write_text(
        "epoch\ttrain_loss\tval_macro_f1\tval_acc\tupdates\timages_seen\n1\t1\t.5\t.5\t2\t32\n")
    cfg = E.EvaluateConfig(batch_size=16, num_workers=0, device="cpu", amp="off", bootstrap=10,
                           ci_level=0.95, seed=0, featuremap_layer="backbone.layer3", featuremap_per_class=0)
    E.run_evaluation("b", E.Evaluation(run="b", variant="ug_test", train_variant="ug"), cfg, scale=0.04,
                     models_dir=tmp_path / "models", variants_dir=tmp_path / "variants",
                     train_metrics_dir=tmp_path / "tm", audit_dir=tmp_path / "audit",
                     out_root=tmp_path / "eval", code_root=tmp_path)
    details = json.loads((tmp_path / "eval" / "b" / "details.json").read_text())
    model.eval()
    val = predict(model, make_loader(open_split(tmp_path / "variants" / "ug", "val", run_cfg.model), 16, False, 0, 0),
                  torch.device("cpu"), progress=False)
    assert details["val_threshold"] == {"0": M.val_threshold(*M.real_vs_fake(val["labels"], val["probs"]))}


def test_mask_evaluation_with_trivial_baselines(tmp_path):
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
    out = mask_evaluation(man, tmp_path, man["id"].to_numpy()[perm], probs[perm])
    n = int(edited.sum())
    assert out["model"] == {"n": n, "dice": 1.0, "iou": 1.0, "pbca": 1.0}
    assert out["all_zeros"] == {"n": n, "dice": 0.0, "iou": 0.0, "pbca": 0.5}  # misses the half
    assert out["all_ones"]["dice"] == pytest.approx(2 / 3) and out["all_ones"]["iou"] == pytest.approx(0.5)
    assert out["all_ones"]["pbca"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no predicted mask"):
        mask_evaluation(man, tmp_path, man["id"].to_numpy()[:2], probs[:2])


def test_params_evaluations_match_runs():
    """Every run is scored on its own variant under its own name; each listed exception names a
    defined run, and its thresholds come from that run's own variant."""
    from dfpipe.core.config import load_section, load_yaml
    from dfpipe.evaluation.evaluations import resolved_evaluations
    from dfpipe.training.train import load_runs

    params = REPO / "params.yaml"
    data = load_yaml(params)
    evaluations = resolved_evaluations(data)
    load_section("evaluate", E.EvaluateConfig, params)
    _, runs = load_runs(data)
    for name, ev in evaluations.items():
        assert ev["run"] in runs, name
        assert runs[ev["run"]].variant == ev["train_variant"], name
    assert {n for n, ev in evaluations.items() if ev["run"] == n} == set(runs)  # every run evaluated
    assert set(evaluations) - set(runs) == set(data["evaluations"])  # only the exceptions are written


def test_evaluation_exceptions_are_checked():
    from dfpipe.evaluation.evaluations import resolved_evaluations

    params = {"runs": {"a": {"variant": "v1"}, "b": {"variant": "v2"}}, "evaluations": {"a_on_v2": {"run": "a", "variant": "v2"}}}
    assert resolved_evaluations(params)["a_on_v2"] == {"run": "a", "variant": "v2", "train_variant": "v1"}
    assert resolved_evaluations(params)["b"] == {"run": "b", "variant": "v2", "train_variant": "v2"}
    with pytest.raises(ConfigError, match=r"evaluations\.x\.run: no run 'c'"):
        resolved_evaluations({**params, "evaluations": {"x": {"run": "c", "variant": "v1"}}})
    with pytest.raises(ConfigError, match=r"evaluations\.a: evaluate@a already scores run a"):
        resolved_evaluations({**params, "evaluations": {"a": {"run": "a", "variant": "v2"}}})
    with pytest.raises(ConfigError, match=r"evaluations\.x\.train_variant"):
        resolved_evaluations({**params, "evaluations": {"x": {"run": "a", "variant": "v2", "train_variant": "v2"}}})


def test_run_summary_init_and_backbone(tmp_path):
    import hashlib

    ev = E.Evaluation(run="r", variant="v4", train_variant="v4")
    cfg = {"model": {"name": "f3net", "reduced": True, "width": 0.25, "image_size": 64}, "lr": 0.1,
           "batch_size": 8, "epochs": 2, "init": "scratch"}
    s = E.run_summary(ev, cfg, [0, 1], tmp_path)
    assert (s["init"], s["backbone"], s["width"], s["seeds"]) == ("scratch", "reduced", 0.25, "0,1")
    (tmp_path / "xception_imagenet.pt").write_bytes(b"weights")
    short = hashlib.sha256(b"weights").hexdigest()[:8]
    assert E.run_summary(ev, {**cfg, "init": "xception_imagenet"}, [0], tmp_path)["init"] == f"xception_imagenet:{short}"
    assert E.run_summary(ev, {**cfg, "init": "absent"}, [0], tmp_path)["init"] == "absent"
    assert E.run_summary(ev, {**cfg, "model": {"name": "resnet18", "image_size": 64}}, [0], tmp_path)["backbone"] == "-"
