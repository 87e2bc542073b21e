"""Every registered model, found through the registry alone (a new detector is checked without
editing this file): it builds from its declared example settings, runs forward and backward at
batch 2, reaches every parameter with a gradient, and survives the ``{model, config}`` checkpoint
round trip with the same outputs and parameter count."""

from __future__ import annotations

import io

import pytest
import torch

from dfpipe.models.registry import ModelConfig, build_model, model_capabilities, model_config, registered_names

IMAGE = 64  # small enough for CPU, large enough for Xception's stride-32 exit flow


def _config(name: str, **over) -> ModelConfig:
    caps = model_capabilities(name)
    data = {"name": name, "input": caps.inputs[0], "image_size": IMAGE, "num_classes": 3}
    return model_config({**data, **dict(caps.example), **over}, where=f"model {name}")


def _input(cfg: ModelConfig) -> torch.Tensor:
    if cfg.input == "clip":
        return torch.rand(2, cfg.feature_dim)
    if getattr(cfg, "landmark_input", False):  # RGB + the landmark map its loader draws
        return torch.rand(2, 4, IMAGE, IMAGE)
    return torch.rand(2, 3, IMAGE, IMAGE)


def test_the_registry_lists_every_model_file():
    assert set(registered_names()) >= {"resnet18", "xception", "f3net", "npr", "cnndetection", "clip_probe", "lgrad"}


@pytest.mark.parametrize("name", registered_names())
def test_every_registered_model_trains_and_round_trips(name):
    torch.manual_seed(0)
    cfg = _config(name)
    model = build_model(cfg).train()
    x = _input(cfg)
    out = model(x)
    assert out["logits"].shape == (2, cfg.num_classes)
    out["logits"].logsumexp(dim=1).sum().backward()
    params = dict(model.named_parameters())
    n_params = sum(p.numel() for p in params.values())
    assert n_params > 0
    no_grad = sorted(k for k, p in params.items() if p.requires_grad and p.grad is None)
    assert not no_grad, f"{name}: parameters the loss never reaches: {no_grad[:5]}"

    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "config": cfg.model_dump()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    torch.manual_seed(1)  # other random weights: the state dict alone must restore the model
    again = build_model(model_config(ckpt["config"], where="checkpoint config"))
    assert type(again) is type(model)
    again.load_state_dict(ckpt["model"])
    assert sum(p.numel() for p in again.parameters()) == n_params
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], again(x)["logits"])


HEAD_MODELS = [n for n in registered_names() if "head" in model_capabilities(n).config.model_fields]


def test_the_binary_papers_models_have_the_head_knob():
    assert set(HEAD_MODELS) == {"npr", "cnndetection", "clip_probe", "lgrad"}


@pytest.mark.parametrize("name", HEAD_MODELS)
def test_single_logit_head_trains_and_round_trips(name):
    """``head: sigmoid``: one logit, every parameter reached, the head kept by the checkpoint config."""
    torch.manual_seed(0)
    cfg = _config(name, num_classes=2, head="sigmoid")
    model = build_model(cfg).train()
    x = _input(cfg)
    out = model(x)
    assert out["logits"].shape == (2, 1)
    out["logits"].sum().backward()
    no_grad = sorted(k for k, p in model.named_parameters() if p.requires_grad and p.grad is None)
    assert not no_grad, f"{name}: parameters the loss never reaches: {no_grad[:5]}"
    again = build_model(model_config(cfg.model_dump(), where="checkpoint config"))
    assert cfg.model_dump()["head"] == "sigmoid"
    again.load_state_dict(model.state_dict())
    model.eval(), again.eval()
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], again(x)["logits"])


def test_published_backbone_sizes():
    """Parameter counts at width 1 are the published networks' (ImageNet heads): ResNet-18
    11,689,512 and Xception 22,855,952 minus/plus the head; a changed block shows up here."""
    resnet = build_model(_config("resnet18", num_classes=1000, width=1.0))
    assert sum(p.numel() for p in resnet.parameters()) == 11_689_512
    xception = build_model(_config("xception", num_classes=1000, width=1.0, reduced=False))
    backbone = sum(p.numel() for p in xception.backbone.parameters())
    assert backbone + 2048 * 1000 + 1000 == 22_855_952
