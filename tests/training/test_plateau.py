"""``schedule: plateau`` (CNNDetection, Wang et al. 2020): lr x gamma after ``step_size`` epochs
without a better val score, training ends below ``min_lr``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dfpipe.core.config import build, to_dict
from dfpipe.training import train as T
from dfpipe.training.train import RunConfig, RunPaths, TrainConfig, fit, plateau_factor

from helpers import approve_variant, make_variant, run_dict

pytestmark = pytest.mark.usefixtures("torch_one_thread")

RUN = run_dict(
    model={"name": "resnet18", "num_classes": 3, "image_size": 32, "width": 0.25},
    variant="toy", lr=0.01, batch_size=8, epochs=6, optimizer="adam", schedule="plateau", step_size=2,
    gamma=0.1, min_lr=0.0005, seeds=[5], max_steps_per_epoch=1, bn_recalibration_images=0,
)


def test_plateau_factor_counts_epochs_without_gain():
    cfg = build(RunConfig, dict(RUN, step_size=3))
    # best 0.6 at epoch 2; epochs 3, 4, 5 bring nothing better -> one cut; 0.7 is new best; 1 bad epoch
    assert plateau_factor([0.5, 0.6, 0.6, 0.6, 0.55, 0.7, 0.7], cfg) == pytest.approx(0.1)
    assert plateau_factor([0.5, 0.6, 0.6, 0.6, 0.55, 0.5, 0.5, 0.5], cfg) == pytest.approx(0.01)
    assert plateau_factor([0.5, 0.6, 0.7], cfg) == 1.0
    assert plateau_factor([0.5] * 9, build(RunConfig, dict(RUN, schedule="step"))) == 1.0  # control


def test_min_lr_is_left_out_of_dumps_at_zero():
    assert "min_lr" not in to_dict(build(RunConfig, dict(RUN, schedule="none", min_lr=0.0)))
    assert to_dict(build(RunConfig, RUN))["min_lr"] == 0.0005


def test_training_cuts_the_rate_and_ends_below_min_lr(tmp_path, monkeypatch):
    make_variant(tmp_path / "data" / "variants" / "toy")
    scores = iter([0.5, 0.4, 0.4, 0.3, 0.3, 0.2])  # never better after epoch 1
    real_evaluate, lrs = T.evaluate, []

    def planted(model, *args, **kwargs):
        return {**real_evaluate(model, *args, **kwargs), "macro_f1": next(scores)}

    real_epoch = T.train_one_epoch

    def record(net, loader, loss_fn, optimizer, *args, **kwargs):
        lrs.append(optimizer.param_groups[0]["lr"])
        return real_epoch(net, loader, loss_fn, optimizer, *args, **kwargs)

    monkeypatch.setattr(T, "evaluate", planted)
    monkeypatch.setattr(T, "train_one_epoch", record)
    run_cfg = build(RunConfig, RUN)
    train_cfg = build(TrainConfig, {"device": "cpu", "num_workers": 0, "amp": "off", "progress": False, "threads": 1,
                                    "log_every": 0, "variants_dir": "data/variants", "models_dir": "out/models",
                                    "metrics_dir": "out/metrics", "scratch_dir": "out/.scratch/train",
                                    "log_dir": "out/.scratch/logs"})
    paths = RunPaths.for_run("test", run_cfg, train_cfg, Path("metrics/audit"))
    root = lambda p: tmp_path / p  # noqa: E731
    paths = dataclasses.replace(
        paths, variant_dir=root(paths.variant_dir), out_dir=root(paths.out_dir), metrics_dir=root(paths.metrics_dir),
        scratch_dir=root(paths.scratch_dir), log_file=root(paths.log_file), gate=root(paths.gate))
    approve_variant(paths.variant_dir, paths.gate)
    out = fit("test", run_cfg, train_cfg, paths)[5]
    # epochs 2, 3 bring nothing: x0.1 for epoch 4; epochs 4, 5 nothing: x0.01 = 1e-4 < 5e-4 -> stop
    assert [h["epoch"] for h in out["history"]] == [1, 2, 3, 4, 5]
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.001, 0.001])
    assert (paths.out_dir / "seed5.pt").is_file()
