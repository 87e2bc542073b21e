"""LRL (Chen et al., AAAI 2021): shapes, the mask-derived similarity targets, the ``w_relation``
loss term and its reach into the backbone. (Checkpoint round trip and every-parameter-reached are
the registry-wide test in test_model_zoo.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dfpipe.core.config import ConfigError, build
from dfpipe.models.lrl import patch_similarity, relation_targets
from dfpipe.models.registry import build_model, model_config
from dfpipe.training.config import RunConfig
from dfpipe.training.losses import build_loss
from helpers import loss_config, run_dict

IMAGE = 64


def _model(**over):
    cfg = model_config({"name": "lrl", "width": 0.25, "reduced": True, "image_size": IMAGE, "num_classes": 3, **over})
    return cfg, build_model(cfg)


def _planted_mask() -> torch.Tensor:
    """16 x 16 mask on a 4 x 4 grid of 4 x 4-pixel patches: patch 0 fully forged (p = 1), patch 5
    (row 1, column 1) half forged (p = 0.5: its top two rows), every other patch real (p = 0)."""
    mask = torch.zeros(16, 16)
    mask[0:4, 0:4] = 1
    mask[4:6, 4:8] = 1
    return mask


def _hand_targets() -> torch.Tensor:
    """1 - (p_i - p_j)^2 written out: 0 between the forged patch and a real one, 0.75 between the
    half patch and either, 1 elsewhere."""
    t = torch.ones(16, 16)
    t[0, :] = t[:, 0] = 0.0
    t[5, :] = t[:, 5] = 0.75
    t[0, 0] = t[5, 5] = 1.0
    return t


def test_forward_backward_and_shapes():
    torch.manual_seed(0)
    cfg, model = _model(relation_grids=(4, 2), seg_head=True, mask_size=32)
    out = model.train()(torch.rand(2, 3, IMAGE, IMAGE))
    assert out["logits"].shape == (2, 3)
    assert [tuple(s.shape) for s in out["relation"]] == [(2, 16, 16), (2, 4, 4)]
    assert out["mask"].shape == (2, 1, 32, 32)
    for sim in out["relation"]:
        assert float(sim.detach().min()) >= 0.0 and float(sim.detach().max()) <= 1.0 + 1e-6
        assert torch.allclose(torch.diagonal(sim, dim1=1, dim2=2), torch.ones(2, sim.shape[-1]), atol=1e-5)
        assert torch.allclose(sim, sim.transpose(1, 2), atol=1e-6)
    (out["logits"].sum() + sum(s.mean() for s in out["relation"]) + out["mask"].mean()).backward()
    assert model.freq_net.conv1.weight.grad is not None and model.freq_net.conv1.weight.grad.abs().sum() > 0


def test_patch_similarity_hand_case():
    """A 1-channel 4 x 4 map on a 2 x 2 grid: parallel patches give 1, orthogonal 0.5, opposite 0."""
    feats = torch.zeros(1, 1, 4, 4)
    feats[0, 0, 0:2, 0:2] = 1.0  # patch 0: all ones
    feats[0, 0, 0:2, 2:4] = -1.0  # patch 1: opposite of patch 0
    feats[0, 0, 2:4, 0:2] = torch.tensor([[1.0, -1.0], [1.0, -1.0]])  # patch 2: orthogonal to 0
    feats[0, 0, 2:4, 2:4] = 2.0  # patch 3: parallel to patch 0
    sim = patch_similarity(feats, 2)[0]
    assert torch.allclose(sim[0], torch.tensor([1.0, 0.0, 0.5, 1.0]), atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 3"):
        patch_similarity(feats, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the regression target's precision is kept
        assert patch_similarity(feats.bfloat16(), 2).dtype == torch.float32
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.bfloat16  # control: autocast is on


def test_relation_targets_on_a_planted_mask():
    got = relation_targets(_planted_mask()[None], 4)[0]
    assert torch.equal(got, _hand_targets())
    # control: the 1 - |p_i - p_j| variant would give 0.5 for the half patch, so the formula is pinned
    assert got[0, 5] == 0.75 and got[5, 1] == 0.75
    # a real face (mask all 0) and a fully generated one (all 1): every pair equally alike
    both = relation_targets(torch.stack([torch.zeros(16, 16), torch.ones(16, 16)]), 4)
    assert torch.equal(both, torch.ones(2, 16, 16))
    # a 2 x 2 grid averages 8 x 8 quarters: top-left (16 + 8) / 64 = 0.375 forged, the rest 0
    coarse = relation_targets(_planted_mask()[None], 2)[0]
    assert torch.allclose(coarse[0, 1], torch.tensor(1 - 0.375**2)) and coarse[1, 2] == 1.0


def _batch() -> dict[str, torch.Tensor]:
    mask = torch.stack([torch.zeros(16, 16), _planted_mask(), _planted_mask()])
    return {
        "label": torch.tensor([0, 2, 2]),
        "mask": mask,
        "mask_weight": torch.tensor([1.0, 1.0, 0.0]),  # item 2: an edited frame without a mask
    }


HAND_MSE = (28 * 1.0 + 30 * 0.25**2) / 256  # a prediction of all ones against _hand_targets()


@pytest.mark.parametrize(("mask_on", "expected"), [("edited", HAND_MSE), ("all", HAND_MSE / 2)])
def test_relation_loss_hand_value(mask_on, expected):
    loss = build_loss(loss_config(w_cls=0.0, w_relation=2.0, mask_on=mask_on), 3)
    outputs = {"logits": torch.zeros(3, 3), "relation": (torch.ones(3, 16, 16),)}
    total, parts = loss(outputs, _batch())
    assert parts["relation"].item() == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(2.0 * expected, rel=1e-6)
    # two grids: the mean over the maps (the all-ones 2 x 2 prediction's error is its own hand value)
    coarse_err = 6 * 0.375**4 / 16  # item 1: the six off-diagonal pairs with the top-left quarter
    outputs["relation"] = (torch.ones(3, 16, 16), torch.ones(3, 4, 4))
    two = loss(outputs, _batch())[1]["relation"].item()
    per_item = (HAND_MSE + coarse_err) / 2
    assert two == pytest.approx(per_item if mask_on == "edited" else per_item / 2, rel=1e-6)


def test_relation_term_needs_its_output_and_masks():
    cfg = loss_config(w_relation=1.0)
    assert cfg.uses_masks and not cfg.uses_mask_head  # the loader provides masks; no mask head needed
    assert not loss_config().uses_masks  # control: the default leaves masks off
    loss = build_loss(cfg, 3)
    with pytest.raises(ValueError, match="no relation output"):
        loss({"logits": torch.zeros(3, 3)}, _batch())
    with pytest.raises(ValueError, match="no target masks"):
        loss({"logits": torch.zeros(3, 3), "relation": (torch.ones(3, 16, 16),)}, {"label": torch.tensor([0, 2, 2])})
    assert "w_relation" not in loss_config().model_dump()  # 0: old checkpoints keep their bytes


def test_run_config_checks_the_relation_output():
    base = run_dict(
        model={"name": "lrl", "num_classes": 3, "image_size": 64, "width": 0.25},
        variant="toy",
        lr=0.001,
        batch_size=8,
        epochs=2,
        optimizer="adam",
        seeds=[0],
        max_steps_per_epoch=2,
    )
    loss = {**base["loss"], "w_relation": 1.0}
    assert build(RunConfig, {**base, "loss": loss}, where="runs.x").loss.w_relation == 1.0
    with pytest.raises(ConfigError, match="patch-similarity"):
        build(RunConfig, {**base, "model": {"name": "resnet18", "num_classes": 3}, "loss": loss}, where="runs.x")


def test_relation_loss_reaches_the_backbone():
    """The term's gradient reaches both streams' first conv; at w_relation 0 the gradient is the
    class loss's alone (the control)."""
    torch.manual_seed(0)
    _, model = _model()
    model.eval()  # no dropout, fixed BN statistics: the two passes see the same network
    x = torch.rand(3, 3, IMAGE, IMAGE)
    batch = {**_batch(), "mask": F.interpolate(_batch()["mask"][:, None], size=IMAGE, mode="nearest")[:, 0]}

    def grads(w_relation: float) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        total, _ = build_loss(loss_config(w_cls=1.0, w_relation=w_relation), 3)(model(x), batch)
        total.backward()
        return model.rgb_net.conv1.weight.grad.clone(), model.freq_net.conv1.weight.grad.clone()

    model.zero_grad()
    F.cross_entropy(model(x)["logits"], batch["label"]).backward()
    ce_only = model.rgb_net.conv1.weight.grad.clone()
    off, on = grads(0.0), grads(1.0)
    assert torch.allclose(off[0], ce_only, rtol=1e-5, atol=1e-8)
    for a, b in zip(off, on):
        assert (a - b).abs().max() > 1e-6 * b.abs().max()
