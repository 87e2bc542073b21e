"""FFD (Dang et al., CVPR 2020): the attention-gated Xception, its map output, the supervised map
loss (``w_map``) on hand-computed values, and a control that the attention really gates the
features. CPU, batch 2, 64 px, width 0.25."""

from __future__ import annotations

import io
import math

import pytest
import torch

from dfpipe.core.config import ConfigError
from dfpipe.models import build_model, model_config
from dfpipe.models.ffd import MAP_SIZE, FFDConfig
from dfpipe.training.losses import build_loss
from helpers import loss_config

SIZE = 64


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def make(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config({"name": "ffd", "image_size": SIZE, "width": 0.25, **kw}))


def batch(size: int = SIZE, seed: int = 1) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", [{}, {"reduced": True}, {"mask_size": 8, "num_classes": 2}], ids=str)
def test_forward_backward_shapes_and_every_parameter_reached(kw):
    model = make(**kw).train()
    out = model(batch(72))  # 72 px: the on-device resize to image_size
    k, s = kw.get("num_classes", 3), kw.get("mask_size", MAP_SIZE)
    assert out["logits"].shape == (2, k) and out["mask"].shape == (2, 1, s, s)
    assert torch.isfinite(out["logits"]).all() and torch.isfinite(out["mask"]).all()
    loss = out["logits"].logsumexp(1).sum() + torch.sigmoid(out["mask"]).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert float(model.attention.conv.pointwise.weight.grad.abs().sum()) > 0


def test_config_defaults_and_mask_contract():
    cfg = model_config({"name": "ffd"})
    assert isinstance(cfg, FFDConfig) and cfg.mask_size == 19 and cfg.mask_output and cfg.input == "raw"
    with pytest.raises(ConfigError, match="misalign the mask"):
        model_config({"name": "ffd", "train_input": "random_crop", "resize_to": 80})


def test_native_map_is_the_papers_19x19_at_299_px():
    """At the paper's 299 px input the map after middle-flow block 7 is 19 x 19 (train.py
    map_size), so the returned mask is the attention logits themselves, not a resampling."""
    model = make(image_size=299).eval()
    seen = {}
    model.attention.register_forward_hook(lambda m, i, o: seen.update(logits=o[1]))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 299, 299))
    assert seen["logits"].shape == (1, 1, 19, 19)
    assert torch.equal(out["mask"], seen["logits"])


def test_checkpoint_round_trip_keeps_logits_and_map():
    model = make().eval()
    buf = io.BytesIO()
    cfg = model_config({"name": "ffd", "image_size": SIZE, "width": 0.25})
    torch.save({"model": model.state_dict(), "config": cfg.model_dump()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    torch.manual_seed(5)
    again = build_model(model_config(ckpt["config"])).eval()
    again.load_state_dict(ckpt["model"])
    x = batch()
    with torch.no_grad():
        a, b = model(x), again(x)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["mask"], b["mask"])


def test_attention_gates_the_features():
    """Control: forcing the map to sigmoid(-50) ~ 0 zeroes every feature after block 7, so the
    classifier sees the same (constant) input for any image; the free map does not."""
    model = make().eval()
    x1, x2 = batch(seed=1), batch(seed=2)
    with torch.no_grad():
        free = model(x1)["logits"], model(x2)["logits"]
    assert not torch.allclose(free[0], free[1])
    handle = model.attention.conv.register_forward_hook(lambda m, i, o: torch.full_like(o, -50.0))
    with torch.no_grad():
        shut = model(x1)["logits"], model(x2)["logits"]
    handle.remove()
    assert torch.allclose(shut[0], shut[1], atol=1e-6)
    assert not torch.allclose(shut[0], free[0])


def _planted():
    """Two items, map logits (2, 1, 2, 2) with sigmoid [[.5, .75], [.25, .5]]; 4x4 targets whose
    top half is manipulated (nearest-resized to the map: [[1, 1], [0, 0]])."""
    ln3 = math.log(3.0)
    logits = torch.tensor([[0.0, ln3], [-ln3, 0.0]]).expand(2, 1, 2, 2).clone()
    target = torch.zeros(2, 4, 4)
    target[:, :2] = 1.0
    target[1] = 1.0  # the second item: all manipulated
    outputs = {"logits": torch.zeros(2, 3), "mask": logits}
    batch_ = {"label": torch.tensor([2, 0]), "mask": target, "mask_weight": torch.ones(2)}
    return outputs, batch_


def test_map_loss_equals_the_hand_computed_l1():
    outputs, b = _planted()
    # item 0: |.5-1| + |.75-1| + |.25-0| + |.5-0| = 1.5 over 4 pixels = 0.375
    # item 1 (all ones): .5 + .25 + .75 + .5 = 2.0 / 4 = 0.5
    total, parts = build_loss(loss_config(w_cls=0.0, w_map=2.0), 3)(outputs, b)  # mask_on: edited
    assert set(parts) == {"map"}
    assert parts["map"].item() == pytest.approx(0.375) and total.item() == pytest.approx(0.75)
    _, parts = build_loss(loss_config(w_cls=0.0, w_map=1.0, mask_on="all"), 3)(outputs, b)
    assert parts["map"].item() == pytest.approx((0.375 + 0.5) / 2)
    b["mask_weight"] = torch.tensor([0.0, 1.0])  # a weight-0 item does not count
    _, parts = build_loss(loss_config(w_cls=0.0, w_map=1.0, mask_on="all"), 3)(outputs, b)
    assert parts["map"].item() == pytest.approx(0.5)
    total, parts = build_loss(loss_config(w_map=1.0), 3)(outputs, b)  # with the class term
    assert set(parts) == {"cls", "map"} and total.item() == pytest.approx(parts["cls"].item())  # item 0 weight 0


def test_map_weight_switches_the_mask_requirements():
    assert loss_config(w_map=0.5).uses_masks and not loss_config().uses_masks
    outputs, b = _planted()
    with pytest.raises(ValueError, match="no mask output"):
        build_loss(loss_config(w_map=1.0), 3)({"logits": outputs["logits"]}, b)
    with pytest.raises(ValueError, match="all loss weights are zero"):
        loss_config(w_cls=0.0)
    assert loss_config(w_cls=0.0, w_map=1.0).w_map == 1.0  # the map term alone is a loss
