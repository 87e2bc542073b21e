"""Input geometry: crops vs resizes, and what a resize does to the 2x up-sampling trace NPR reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dfpipe.core.config import ConfigError, load_yaml, to_dict
from dfpipe.core.profile import apply_profile
from dfpipe.models import build_model, model_config
from dfpipe.models import geometry as G
from dfpipe.models.papers import run_and_features

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profile")
    shutil.copy(REPO / "params.yaml", tmp / "params.yaml")
    shutil.copy(REPO / "params.full.yaml", tmp / "params.full.yaml")
    apply_profile("full", tmp / "params.yaml")
    return load_yaml(tmp / "params.yaml")


def nearest_2x(side: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, side, side) in [0, 1]: a random image at half the side, every pixel repeated 2 x 2."""
    base = np.random.default_rng(seed).random((1, 3, side // 2, side // 2), dtype=np.float32)
    return torch.from_numpy(base.repeat(2, axis=2).repeat(2, axis=3))


def npr_input(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What NPR's first convolution receives: the residual x - up(down(x)) (scaled by 2/3)."""
    seen = []
    hook = model.backbone.conv1.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    return seen[0]


def mean_abs_residual(img: torch.Tensor) -> float:
    """NPR's residual written out with numpy: each 2x2 block minus its top-left pixel."""
    a = img.numpy()
    top_left = a[..., ::2, ::2].repeat(2, axis=2).repeat(2, axis=3)
    return float(np.abs(a - top_left).mean())


def test_npr_residual_of_a_nearest_2x_image_is_zero_under_the_profile_geometry(full):
    side = full["preprocess"]["size"]  # the stored crop the model receives
    cfg, _ = run_and_features(full, "ug_npr")
    model = build_model(model_config(cfg["model"])).eval()
    x = nearest_2x(side)
    assert mean_abs_residual(x) == 0.0
    assert float(npr_input(model, x).abs().max()) == 0.0
    # control: the same network with the default geometry (the whole crop resized to 224)
    resized = build_model(model_config({**cfg["model"], "train_input": "resize", "test_input": "resize",
                                        "resize_to": 0})).eval()
    plain = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    ratio = npr_input(resized, x).abs().mean() / npr_input(resized, plain).abs().mean()
    assert float(ratio) > 0.3  # the trace is gone: as large a residual as a noise image's (about 1.05x)
    # and the same by hand: resizing the stored crop to 224 before NPR
    assert mean_abs_residual(G.resize_to_side(x, 224)) > 0.1 * mean_abs_residual(plain)


def test_crops_take_windows_of_the_input():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    torch.testing.assert_close(G.center_crop(x, 4), x[..., 2:6, 2:6])
    torch.manual_seed(0)
    crops = G.random_crop(x, 5)
    assert crops.shape == (2, 3, 5, 5)
    for i in range(2):  # each crop is some 5 x 5 window of its own image
        windows = [x[i, :, t : t + 5, s : s + 5] for t in range(4) for s in range(4)]
        assert any(torch.equal(crops[i], w) for w in windows)
    torch.manual_seed(0)
    assert torch.equal(G.random_crop(x, 5), crops)  # seeded by torch's generator
    with pytest.raises(ValueError, match="at least 9 px"):
        G.center_crop(x, 9)


def test_train_and_test_geometry_follow_the_model_mode():
    model = build_model(model_config({"name": "cnndetection", "num_classes": 2, "image_size": 32,
                                      "train_input": "random_crop", "test_input": "center_crop"}))
    seen = []
    model.backbone.conv1.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[-1]))
    x = torch.rand(2, 3, 40, 40)
    model.train()(x)
    model.eval()(x)
    assert seen == [32, 32]
    # the demo's geometry stays out of dumped configs (checkpoints keep their bytes)
    assert set(to_dict(model_config({"name": "npr"}))) == {"name", "input", "num_classes", "image_size"}


@pytest.mark.parametrize("cfg, message", [
    ({"name": "cnndetection", "test_input": "full"}, "takes any input size"),
    ({"name": "clip_probe", "feature_dim": 8, "train_input": "random_crop"}, "needs raw input"),
    ({"name": "f3net", "seg_head": True, "train_input": "random_crop"}, "misalign the mask"),
])
def test_geometry_is_refused_where_it_cannot_hold(cfg, message):
    with pytest.raises(ConfigError, match=message):
        model_config(cfg)
