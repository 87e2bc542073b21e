"""The binary papers' single-logit head (``head: sigmoid``): BCE on one logit is two-class CE on the
logits ``[0, z]``, the model trains, its predictions are the two columns ``[1 - sigmoid, sigmoid]``
every downstream reader expects, the head survives fit()'s checkpoint, and the default (softmax)
head leaves configs and the CE loss exactly as they were."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfpipe.core.config import ConfigError, build, to_dict
from dfpipe.models import build_model, model_config
from dfpipe.models.class_head import class_logits, class_probs, predicted_class
from dfpipe.training.checkpoint import load_model
from dfpipe.training.engine import evaluate, predict, train_one_epoch
from dfpipe.training.losses import build_loss
from dfpipe.training.train import RunConfig, RunPaths, TrainConfig, fit

from helpers import approve_variant, loss_config, make_variant, run_dict

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CPU = torch.device("cpu")


def _binary_batch(n: int = 32, dim: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Linearly separable cached-feature items: fakes (label 1) shifted along every axis."""
    g = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % 2
    image = torch.randn(n, dim, generator=g) + 3.0 * (2 * label[:, None].float() - 1)
    return {"image": image, "label": label, "index": torch.arange(n)}


def _two_class_ce(z: torch.Tensor, y: torch.Tensor, **kw) -> torch.Tensor:
    """The same loss written independently: softmax CE on the logits [0, z]."""
    return F.cross_entropy(torch.stack([torch.zeros_like(z), z], 1), y, **kw)


@pytest.mark.parametrize(
    "over, ce_kw",
    [
        ({}, {}),
        ({"label_smoothing": 0.1}, {"label_smoothing": 0.1}),
        ({"class_weights": (1.0, 3.0)}, {"weight": torch.tensor([1.0, 3.0])}),
    ],
    ids=["plain", "smoothing", "class_weights"],
)
def test_bce_on_one_logit_is_two_class_ce_on_zero_and_z(over, ce_kw):
    g = torch.Generator().manual_seed(1)
    z = 3 * torch.randn(64, generator=g)
    y = torch.randint(0, 2, (64,), generator=g)
    loss, parts = build_loss(loss_config(**over), 2)({"logits": z[:, None]}, {"label": y})
    expected = _two_class_ce(z, y, **ce_kw)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert set(parts) == {"cls"}
    # the conversion, checked against the same two-logit model: softmax([0, z]) = [1 - s(z), s(z)]
    zz = z[:, None]
    torch.testing.assert_close(class_probs(zz), torch.softmax(torch.cat([torch.zeros_like(zz), zz], 1), 1))
    torch.testing.assert_close(torch.softmax(class_logits(zz), 1), class_probs(zz))
    assert torch.equal(predicted_class(zz), class_probs(zz).argmax(1))


def test_the_single_logit_loss_is_bce_not_ce_control():
    """Control: CE over a single logit is identically zero (log-softmax of one value), so a loss that
    used CE on the sigmoid head would train nothing; ours has BCE's value and gradient (s(z) - y) / B."""
    z = torch.tensor([2.0, -1.0, 0.5, -3.0], requires_grad=True)
    y = torch.tensor([1, 1, 0, 0])
    loss, _ = build_loss(loss_config(), 2)({"logits": z[:, None]}, {"label": y})
    ce_on_one_logit = F.cross_entropy(z[:, None], torch.zeros_like(y))
    assert ce_on_one_logit.item() == 0.0 and loss.item() > 0.1
    assert not torch.allclose(loss, ce_on_one_logit)  # the value check below tells the two apart
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(z, y.float()))
    (grad,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(grad, (torch.sigmoid(z) - y) / len(y))
    # labels of the three-class coding map to real (0) / fake (!= 0); one logit needs 2 classes
    with pytest.raises(ValueError, match="needs num_classes 2"):
        build_loss(loss_config(), 3)({"logits": z[:, None]}, {"label": y})


def test_ce_path_is_unchanged_for_k_logits():
    """The softmax head's class term is still F.cross_entropy itself, bit for bit."""
    g = torch.Generator().manual_seed(2)
    logits, y = torch.randn(16, 3, generator=g), torch.randint(0, 3, (16,), generator=g)
    cfg = loss_config(label_smoothing=0.05, class_weights=(1.0, 2.0, 0.5))
    loss, _ = build_loss(cfg, 3)({"logits": logits}, {"label": y})
    ref = F.cross_entropy(logits, y, weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.05)
    assert torch.equal(loss, ref)
    assert torch.equal(class_probs(logits), torch.softmax(logits, 1))
    assert torch.equal(predicted_class(logits), logits.argmax(1))
    assert class_logits(logits) is logits


def _loader(batch: dict[str, torch.Tensor]) -> list:
    """A one-batch loader with what predict() reads of a BatchLoader (``dataset.ids``)."""

    class One(list):
        dataset = SimpleNamespace(ids=[f"item{i}" for i in range(len(batch["label"]))])

    return One([batch])


def test_a_sigmoid_head_model_trains_and_predicts_two_columns():
    torch.manual_seed(0)
    cfg = model_config({"name": "clip_probe", "num_classes": 2, "feature_dim": 8, "head": "sigmoid"})
    model = build_model(cfg)
    assert model.fc.out_features == 1
    batch = _binary_batch()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss_fn = build_loss(loss_config(), 2)
    stats = [
        train_one_epoch(model, [batch], loss_fn, opt, scaler, CPU, epoch=e, flip=False, progress=False)
        for e in range(15)
    ]
    assert stats[-1]["loss"] < 0.2 * stats[0]["loss"] and stats[-1]["acc"] == 1.0

    pred = predict(model, _loader(batch), CPU, progress=False)
    probs = pred["probs"]
    assert probs.shape == (32, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=0, atol=1e-6)
    with torch.no_grad():
        z = model(batch["image"])["logits"][:, 0]
    np.testing.assert_array_equal(probs[:, 1], torch.sigmoid(z).numpy())  # p_fake: the papers' score
    np.testing.assert_array_equal(probs[:, 0], (1 - torch.sigmoid(z)).numpy())
    assert evaluate(model, _loader(batch), CPU, progress=False)["acc"] == 1.0


def test_head_config_defaults_and_validation():
    default = model_config({"name": "cnndetection", "num_classes": 2})
    # the default is left out of the dumped config: checkpoints keep the bytes they had before the key
    assert to_dict(default) == {"name": "cnndetection", "input": "raw", "num_classes": 2, "image_size": 224,
                                "width": 1.0}
    sig = model_config({"name": "cnndetection", "num_classes": 2, "head": "sigmoid"})
    assert to_dict(sig)["head"] == "sigmoid" and model_config(to_dict(sig)) == sig
    with pytest.raises(ConfigError, match="num_classes: 2"):
        model_config({"name": "npr", "head": "sigmoid"})  # three classes
    with pytest.raises(ConfigError, match=r"head: unknown key|head.*[Ee]xtra"):
        model_config({"name": "resnet18", "num_classes": 2, "head": "sigmoid"})  # no paper with that head


def test_fit_keeps_the_head_in_its_checkpoint(tmp_path):
    """fit() with a sigmoid head: val metrics and selection run on the two columns, and the
    checkpoint's config rebuilds the one-logit model (the evaluation stage's path)."""
    make_variant(tmp_path / "data" / "variants" / "toy")
    run = run_dict(
        model={"name": "npr", "num_classes": 2, "image_size": 32, "head": "sigmoid"},
        variant="toy", lr=0.001, batch_size=8, epochs=1, optimizer="adam", seeds=[5],
        max_steps_per_epoch=2, bn_recalibration_images=0,
    )
    run_cfg = build(RunConfig, run, where="runs.test")
    train_cfg = build(TrainConfig, {"device": "cpu", "num_workers": 0, "amp": "off", "progress": False, "threads": 1,
                                    "log_every": 0, "variants_dir": "data/variants", "models_dir": "out/models",
                                    "metrics_dir": "out/metrics", "scratch_dir": "out/.scratch/train",
                                    "log_dir": "out/.scratch/logs"})
    paths = RunPaths.for_run("test", run_cfg, train_cfg, Path("metrics/audit"))
    paths = dataclasses.replace(
        paths, variant_dir=tmp_path / paths.variant_dir, out_dir=tmp_path / paths.out_dir,
        metrics_dir=tmp_path / paths.metrics_dir, scratch_dir=tmp_path / paths.scratch_dir,
        log_file=tmp_path / paths.log_file, gate=tmp_path / paths.gate)
    approve_variant(paths.variant_dir, paths.gate)
    out = fit("test", run_cfg, train_cfg, paths)[5]
    assert 0.0 <= out["history"][0]["val_macro_f1"] <= 1.0
    ckpt = torch.load(paths.out_dir / "seed5.pt", map_location="cpu", weights_only=True)
    assert ckpt["config"]["model"]["head"] == "sigmoid"
    assert ckpt["model"]["fc.weight"].shape[0] == 1
    model, cfg = load_model(paths.out_dir / "seed5.pt", CPU)
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))["logits"]
    assert logits.shape == (2, 1) and class_probs(logits).shape == (2, 2)


def test_gradcam_explains_either_class_of_one_logit():
    """Grad-CAM of a one-logit model: the fake class is explained by z, the real class by -z (up to
    the scale the per-image normalisation removes), as by two-logit models with those logits."""
    from torchvision.models.resnet import BasicBlock, ResNet

    from dfpipe.evaluation import featuremaps as FM

    torch.manual_seed(0)
    net = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=1)
    images = torch.rand(4, 3, 48, 48)
    _, layer = FM.find_layer(net, "layer3")
    target = torch.tensor([0, 1, 0, 1])
    out = FM.gradcam(net, images, layer, target)
    assert out["logits"].shape == (4, 1)
    fake = torch.nn.Sequential()
    fake.forward = lambda x: torch.cat([torch.zeros(len(x), 1), net(x)], 1)  # type: ignore[method-assign]
    real = torch.nn.Sequential()
    real.forward = lambda x: torch.cat([-net(x), torch.zeros(len(x), 1)], 1)  # type: ignore[method-assign]
    want_fake = FM.gradcam(fake, images, layer, torch.ones(4, dtype=torch.long))["cam"]
    want_real = FM.gradcam(real, images, layer, torch.zeros(4, dtype=torch.long))["cam"]
    torch.testing.assert_close(out["cam"][1::2], want_fake[1::2])
    torch.testing.assert_close(out["cam"][::2], want_real[::2])
    assert not torch.allclose(want_fake[::2], want_real[::2])  # control: the two classes' maps differ
