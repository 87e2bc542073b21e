"""Training engine and fit(): overfit one batch, resume == uninterrupted, selection on val, config."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

import pytest
import torch

import dfpipe.training.train as train_mod
from dfpipe.core.config import ConfigError, build, deep_merge, load_yaml, to_dict
from dfpipe.training.data import VariantDataset, make_loader
from dfpipe.training.engine import to_device, train_one_epoch
from dfpipe.training.losses import build_loss
from dfpipe.models import build_model, model_config
from dfpipe.training.checkpoint import CHECKPOINT_KEYS, config_hash, load_model
from dfpipe.training.train import CURVE_COLUMNS, RunConfig, RunPaths, TrainConfig, fit

from helpers import approve_variant, loss_config, make_variant, run_dict

RUN = run_dict(
    model={"name": "resnet18", "num_classes": 3, "image_size": 32},
    variant="toy", lr=0.001, batch_size=8, epochs=2, optimizer="adam",
    schedule="cosine", warmup_epochs=0.5, seeds=[11], max_steps_per_epoch=2, bn_recalibration_images=0,
)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    make_variant(root / "data" / "variants" / "toy")
    return root


def _cfgs(workdir: Path, run: dict, out: str):
    run_cfg = build(RunConfig, run, where="runs.test")
    train_cfg = build(TrainConfig, {"device": "cpu", "num_workers": 0, "amp": "off", "progress": False, "threads": 1,
                                    "log_every": 0, "variants_dir": "data/variants",
                                    "models_dir": f"{out}/models", "metrics_dir": f"{out}/metrics",
                                    "scratch_dir": f"{out}/.scratch/train", "log_dir": f"{out}/.scratch/logs"})
    paths = RunPaths.for_run("test", run_cfg, train_cfg, Path("metrics/audit"))
    root = lambda p: workdir / p  # noqa: E731 - params paths are relative to the repository root
    paths = dataclasses.replace(
        paths, variant_dir=root(paths.variant_dir), out_dir=root(paths.out_dir), metrics_dir=root(paths.metrics_dir),
        scratch_dir=root(paths.scratch_dir), log_file=root(paths.log_file), gate=root(paths.gate))
    approve_variant(paths.variant_dir, paths.gate)  # the variant as it is now has passed its audit
    return run_cfg, train_cfg, paths


def test_overfit_one_batch(workdir):
    torch.manual_seed(0)
    ds = VariantDataset(workdir / "data/variants/toy", "train")
    batch = next(iter(make_loader(ds, 12, train=True, num_workers=0, seed=0)))
    model = build_model(model_config(dict(name="resnet18", image_size=32)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss(loss_config(), 3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stats = [train_one_epoch(model, [batch], loss_fn, opt, scaler, torch.device("cpu"), epoch=e,
                             flip=False, progress=False) for e in range(20)]
    assert stats[-1]["loss"] < 0.1 * stats[0]["loss"]
    assert stats[-1]["acc"] == 1.0
    model.eval()
    with torch.no_grad():
        logits = model(to_device(batch, torch.device("cpu"))["image"])["logits"]
    assert (logits.argmax(1) == batch["label"]).all()


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resume_equals_uninterrupted(workdir):
    """An interrupted seed resumes from .scratch/<config-hash>/ and ends byte-identical; the tracked
    checkpoint holds exactly {model, config}; no timings in metrics/curves; scratch removed at the end."""
    cfgs_a = _cfgs(workdir, RUN, "a")
    cfgs_b = _cfgs(workdir, RUN, "b")
    full = fit("test", *cfgs_a)[11]
    paths_b = cfgs_b[2]
    first = fit("test", *cfgs_b, stop_after=1)[11]
    assert first["epochs_run"] == 1 and not first["finished"]
    resume = paths_b.resume_file(cfgs_b[0], 11)
    assert resume.parent.name == config_hash(cfgs_b[0]) and _state(resume)["epoch"] == 1
    assert not (paths_b.out_dir / "seed11.pt").exists() and not (paths_b.metrics_dir / "metrics.json").exists()
    resumed = fit("test", *cfgs_b)[11]
    assert resumed["epochs_run"] == 1 and full["epochs_run"] == 2
    a, b = (_state(c[2].out_dir / "seed11.pt") for c in (cfgs_a, cfgs_b))
    assert set(a) == set(CHECKPOINT_KEYS) == {"model", "config"}
    assert (cfgs_a[2].out_dir / "seed11.pt").read_bytes() == (paths_b.out_dir / "seed11.pt").read_bytes()
    assert not resume.parent.exists()  # scratch state of a finished run is removed
    metrics = (paths_b.metrics_dir / "metrics.json").read_text()
    assert set(json.loads(metrics)["seeds"]["11"]) == {"best_val_macro_f1", "best_epoch"}
    curves = (paths_b.metrics_dir / "curves" / "seed11.tsv").read_text().splitlines()
    assert curves[0].split("\t") == list(CURVE_COLUMNS) and len(curves) == 3
    # the budget spent, cumulative over the resume: 2 steps of 8 images per epoch
    assert [line.split("\t")[-2:] for line in curves[1:]] == [["2", "16"], ["4", "32"]]
    assert curves == (cfgs_a[2].metrics_dir / "curves" / "seed11.tsv").read_text().splitlines()
    assert "img/s" in paths_b.log_file.read_text()  # timings: log only


def test_changed_config_does_not_resume(workdir):
    run_cfg, train_cfg, paths = _cfgs(workdir, RUN, "c")
    fit("test", run_cfg, train_cfg, paths, stop_after=1)
    other = run_cfg.model_copy(update={"lr": 0.002})
    assert paths.resume_file(other, 11) != paths.resume_file(run_cfg, 11)
    out = fit("test", other, train_cfg, paths, stop_after=1)[11]
    assert out["epochs_run"] == 1 and _state(paths.resume_file(other, 11))["epoch"] == 1


def test_seeds_each_get_a_checkpoint(workdir):
    run_cfg, train_cfg, paths = _cfgs(workdir, dict(RUN, epochs=1, seeds=[3, 4]), "seeds")
    out = fit("test", run_cfg, train_cfg, paths)
    assert sorted(out) == [3, 4]
    assert sorted(p.name for p in paths.out_dir.iterdir()) == ["seed3.pt", "seed4.pt"]
    a, b = (_state(paths.out_dir / f"seed{s}.pt")["model"] for s in (3, 4))
    assert not torch.equal(a["backbone.conv1.weight"], b["backbone.conv1.weight"])
    assert sorted(json.loads((paths.metrics_dir / "metrics.json").read_text())["seeds"]) == ["3", "4"]


def test_selection_uses_val_never_eval(workdir, monkeypatch):
    root = workdir / "sel"
    make_variant(root / "data/variants/toy", seed=1)
    # Plant an test split that would break (and so reveal) any use of it: garbage bytes.
    (root / "data/variants/toy/test/manifest.parquet").write_bytes(b"not parquet")
    opened = []
    real_init = VariantDataset.__init__

    def spy(self, variant_dir, split, *args, **kwargs):
        opened.append(split)
        real_init(self, variant_dir, split, *args, **kwargs)

    monkeypatch.setattr(VariantDataset, "__init__", spy)
    run = dict(RUN, epochs=3, lr=0.01, schedule="none", warmup_epochs=0.0)
    run_cfg, train_cfg, paths = _cfgs(root, run, "s")
    out = fit("test", run_cfg, train_cfg, paths)[11]
    assert sorted(set(opened)) == ["train", "val"]
    scores = [h["val_macro_f1"] for h in out["history"]]
    assert out["best_epoch"] == scores.index(max(scores)) + 1 and out["best_score"] == max(scores)
    # the checkpoint holds the selected epoch's weights and reproduces its recorded val score
    model, cfg = load_model(paths.out_dir / "seed11.pt")
    assert cfg == run_cfg
    from dfpipe.training.engine import evaluate
    val = make_loader(VariantDataset(paths.variant_dir, "val"), 8, False, 0, 0)
    assert evaluate(model, val, torch.device("cpu"), progress=False)["macro_f1"] == pytest.approx(out["best_score"])


def test_spectrum_runs_load_the_stats_of_their_kind(workdir):
    """A dft run reads stats_dft.npz into the model's buffers; the checkpoint is {model, config}
    and loads with no statistics file; a statistics file of another kind is an error."""
    from dfpipe.features import spectra as sp
    from dfpipe.features import moments
    from dfpipe.models.spectrum import SpectrumTransform

    root = workdir / "spec"
    make_variant(root / "data/variants/toy", seed=2)
    scfg = build(sp.SpectraConfig, {"variants": ["toy"], "variants_dir": "data/variants", "out_dir": "data/spectra",
                                     "metrics_dir": "m", "plots_dir": "p", "cache": [], "kind": "dct", "color": "per_channel",
                                     "eps": 0.5, "batch_size": 16, "shard_size": 64}, where="spectra")
    scfg = scfg.model_copy(update=dict(variants_dir=root / scfg.variants_dir, out_dir=root / scfg.out_dir))
    sp.build_variant("toy", scfg)
    run = dict(RUN, epochs=1, model={**RUN["model"], "input": "dft", "spectrum_eps": 0.5})
    run_cfg, train_cfg, paths = _cfgs(root, run, "dft")
    assert paths.spectrum_stats == Path("data/spectra/toy/stats_dft.npz")
    paths = dataclasses.replace(paths, spectrum_stats=root / paths.spectrum_stats)
    dft_mean, dft_std = moments.load_stats(paths.spectrum_stats)
    dct_mean, _ = moments.load_stats(root / "data/spectra/toy/stats_dct.npz")
    assert not np.allclose(dft_mean, dct_mean)
    fit("test", run_cfg, train_cfg, paths)
    ckpt = paths.out_dir / "seed11.pt"
    assert set(_state(ckpt)) == {"model", "config"}
    moved = root / "moved"
    shutil.move(root / "data/spectra", moved)  # loading needs no statistics file
    model, cfg = load_model(ckpt)
    shutil.move(moved, root / "data/spectra")
    t = model.input.spectrum
    assert (t.kind, t.color, t.eps) == ("dft", "per_channel", 0.5) and cfg.model.input == "dft"
    assert torch.equal(t.mean, torch.from_numpy(dft_mean))
    x = torch.rand(2, 3, 32, 32)
    expected = (torch.from_numpy(sp.log_spectrum_np((x.numpy() * 255).transpose(0, 2, 3, 1), "dft", "per_channel", 0.5))
                .float() - torch.from_numpy(dft_mean)) / torch.from_numpy(dft_std).clamp_min(1e-6)
    torch.testing.assert_close(t(x), expected, rtol=1e-3, atol=1e-3)
    assert isinstance(t, SpectrumTransform)
    # the recorded kind still guards a mismatched file (e.g. DCT statistics under the DFT name)
    bad = root / "bad/stats_dft.npz"
    bad.parent.mkdir()
    bad.write_bytes((root / "data/spectra/toy/stats_dct.npz").read_bytes())
    with pytest.raises(ValueError, match="statistics are for .*'dct'.* but the model input is .*'dft'"):
        fit("test", run_cfg, train_cfg, dataclasses.replace(paths, spectrum_stats=bad))


@pytest.mark.parametrize("change, message", [
    ({"lr_rate": 0.1}, "unknown key"),
    ({"lr": -1.0}, r"runs\.x\.lr: must be > 0"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"model": {"name": "resnet18", "typo": 1}}, "unknown key"),
    ({"loss": {"w_bce": 1.0}}, "need a model with a mask output"),
    ({"loss": {"class_weights": [1.0, 2.0]}}, "class_weights has 2 entries"),
    ({"warmup_epochs": 2.0}, "warmup_epochs"),
    ({"seeds": [1, 1]}, "seeds must be distinct"),
    ({"seeds": []}, "seeds"),
    ({"init": "../x"}, "init"),
])
def test_bad_run_config(change, message):
    with pytest.raises(ConfigError, match=message):
        build(RunConfig, deep_merge(RUN, change), where="runs.x")
    bad = dict(RUN)
    del bad["variant"]
    with pytest.raises(ConfigError, match="missing required key 'variant'"):
        build(RunConfig, bad, where="runs.x")


def test_lr_schedule_shapes():
    cfg = build(RunConfig, {**RUN, "epochs": 4, "warmup_epochs": 1.0}, where="r")
    f = [train_mod.lr_factor(s, cfg, 10) for s in range(40)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.01
    step = cfg.model_copy(update=dict(schedule="step", step_size=2, gamma=0.5, warmup_epochs=0.0))
    assert [train_mod.lr_factor(s, step, 10) for s in (0, 19, 20, 39)] == [1.0, 1.0, 0.5, 0.5]


def test_params_yaml_runs_build():
    """Every run in the repository's params.yaml builds (strict keys, validated values)."""
    params = load_yaml(Path(__file__).resolve().parents[2] / "params.yaml")
    train_cfg, runs = train_mod.load_runs(params)
    assert runs, "params.yaml has no runs"
    for name, cfg in runs.items():
        assert build(RunConfig, to_dict(cfg)) == cfg, name


def test_recalibrate_bn_replaces_lagging_running_stats():
    """Precise BN: running stats become the plain average over the given batches; momentum kept."""
    from dfpipe.training.engine import recalibrate_bn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    batches = [{"image": torch.rand(8, 3, 10, 10) * (i + 1), "label": torch.zeros(8, dtype=torch.long)}
               for i in range(3)]
    net.eval()
    stale = net[1].running_mean.clone()
    used = recalibrate_bn(net, batches, torch.device("cpu"), num_batches=2)
    assert used == 2 and not net.training and net[1].momentum == 0.1
    with torch.no_grad():
        feats = [net[0](b["image"]) for b in batches[:2]]
    expected = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    torch.testing.assert_close(net[1].running_mean, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(net[1].running_mean, stale)
    assert recalibrate_bn(net, batches, torch.device("cpu"), num_batches=0) == 0


@pytest.mark.parametrize("mask_on, expected_items", [("edited", [2]), ("all", [0, 1, 2])])
def test_mask_losses_apply_to_edited_items_by_default(mask_on, expected_items):
    """Real/generated items' masks restate their class: by default only edited items (label 2)
    contribute to BCE/Dice; ``mask_on: all`` restores the notes' setup."""
    loss = build_loss(loss_config(w_cls=1.0, w_bce=1.0, w_dice=1.0, mask_on=mask_on), 3)
    labels = torch.tensor([0, 1, 2])
    target = torch.stack([torch.zeros(8, 8), torch.ones(8, 8), torch.zeros(8, 8)])
    target[2, :4] = 1.0
    batch = {"label": labels, "mask": target, "mask_weight": torch.ones(3)}
    logits = torch.zeros(3, 3)
    per_item = []
    for i in range(3):  # a perfect mask prediction on item i only
        mask = torch.zeros(3, 1, 8, 8)
        mask[i, 0] = 20 * (2 * target[i] - 1)
        per_item.append(loss({"logits": logits, "mask": mask}, batch)[1]["bce"])
    base = loss({"logits": logits, "mask": torch.zeros(3, 1, 8, 8)}, batch)[1]["bce"]
    changed = [i for i in range(3) if not torch.isclose(per_item[i], base)]
    assert changed == expected_items


def test_mask_on_edited_needs_three_classes():
    with pytest.raises(ConfigError, match="mask_on: edited needs"):
        build(RunConfig, {**RUN, "model": {**RUN["model"], "name": "f3net", "seg_head": True, "num_classes": 2},
                          "loss": {**RUN["loss"], "w_bce": 1.0}}, where="runs.x")


def test_precise_bn_batches_scale_with_images_and_split():
    cfg = build(RunConfig, {**RUN, "batch_size": 32, "bn_recalibration_images": 6400}, where="r")
    assert cfg.bn_batches(10_000) == 200  # detectron2's PreciseBN default at full scale
    assert cfg.bn_batches(23) == 23       # never more than the train split
    assert cfg.model_copy(update={"bn_recalibration_images": 0}).bn_batches(23) == 0


def test_init_loads_the_pretrained_key_and_scratch_does_not(workdir, tmp_path):
    """``init: <key>`` loads ``<pretrained_dir>/<key>.pt`` over the seeded init; ``scratch`` is the seeded init."""
    from dfpipe.training.train import init_model

    torch.manual_seed(99)
    donor = build_model(model_config(dict(name="resnet18", image_size=32)))
    (tmp_path / "pretrained").mkdir()
    torch.save(donor.backbone.state_dict(), tmp_path / "pretrained" / "r18_test.pt")
    run_cfg, train_cfg, paths = _cfgs(workdir, dict(RUN, init="r18_test"), "init")
    train_cfg = train_cfg.model_copy(update={"pretrained_dir": tmp_path / "pretrained"})
    paths = dataclasses.replace(paths, pretrained=RunPaths.for_run("test", run_cfg, train_cfg, Path("a")).pretrained)
    loaded = init_model(run_cfg, paths, seed=0)
    assert torch.equal(loaded.backbone.conv1.weight, donor.backbone.conv1.weight)
    scratch = init_model(run_cfg.model_copy(update={"init": "scratch"}), dataclasses.replace(paths, pretrained=None), 0)
    assert not torch.equal(scratch.backbone.conv1.weight, donor.backbone.conv1.weight)
    with pytest.raises(FileNotFoundError, match="pretrained weights for init"):
        init_model(run_cfg, dataclasses.replace(paths, pretrained=tmp_path / "missing.pth"), 0)


def test_early_stopping_ends_training_patience_epochs_after_the_best(workdir, monkeypatch):
    """With patience 1 a run stops the epoch after its best val epoch; the curves, the checkpoint's
    completeness and the best epoch say so; without patience every epoch runs."""
    from dfpipe.training import train as T

    scores = iter([0.5, 0.7, 0.6, 0.9, 0.95, 0.96])  # planted val curve: best at epoch 2, then worse
    real_evaluate = T.evaluate

    def planted(*args, **kwargs):
        out = real_evaluate(*args, **kwargs)
        return {**out, "macro_f1": next(scores)}

    monkeypatch.setattr(T, "evaluate", planted)
    run = dict(RUN, epochs=6, patience=1, schedule="none", warmup_epochs=0.0)
    run_cfg, train_cfg, paths = _cfgs(workdir, run, "early")
    out = fit("test", run_cfg, train_cfg, paths)[11]
    assert [h["epoch"] for h in out["history"]] == [1, 2, 3] and out["best_epoch"] == 2
    assert (paths.out_dir / "seed11.pt").is_file()  # a stopped run is finished, not interrupted
    curves = (paths.metrics_dir / "curves" / "seed11.tsv").read_text().splitlines()
    assert len(curves) == 4
    scores = iter([0.5, 0.7, 0.6, 0.9, 0.95, 0.96])
    run_cfg, train_cfg, paths = _cfgs(workdir, dict(run, patience=None, epochs=4), "full")
    assert [h["epoch"] for h in fit("test", run_cfg, train_cfg, paths)[11]["history"]] == [1, 2, 3, 4]
