"""Model registry and detectors (src/dfpipe/models): shapes, gradients, F3Net band definitions,
reduced Xception, weight loading, strict configuration. CPU, batch 2, 64 px."""

from __future__ import annotations


import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F
import torchvision
from timm.models.xception import Xception

from dfpipe.core.config import ConfigError, build
from dfpipe.models import build_model, count_parameters, load_weights, model_config
from dfpipe.models.f3net import FAD, LFS, fad_band_masks, lfs_band_masks, lfs_output_size
from dfpipe.models.npr import npr_residual
from dfpipe.models.common import spectrum_transform

SIZE = 64


pytestmark = pytest.mark.usefixtures("torch_one_thread")


CASES = {
    "resnet18": dict(name="resnet18"),
    "resnet18_binary": dict(name="resnet18", num_classes=2),
    "xception": dict(name="xception"),
    "xception_reduced": dict(name="xception", reduced=True),
    "f3net_fad": dict(name="f3net", f3net_mode="fad"),
    "f3net_lfs": dict(name="f3net", f3net_mode="lfs"),
    "f3net_both": dict(name="f3net", f3net_mode="both"),
    "f3net_mix": dict(name="f3net", f3net_mode="mix"),
    "f3net_mix_reduced": dict(name="f3net", f3net_mode="mix", reduced=True),
    "f3net_mix_seg": dict(name="f3net", f3net_mode="mix", seg_head=True, mask_size=48),
    "f3net_mix_binary": dict(name="f3net", f3net_mode="mix", num_classes=2),
    "npr": dict(name="npr"),
}


def make(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config(dict(image_size=SIZE, **kw)))


def batch(size: int = SIZE) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))


def check_forward_backward(model: torch.nn.Module, x: torch.Tensor, num_classes: int, mask_size: int | None):
    model.train()
    out = model(x)
    assert out["logits"].shape == (2, num_classes)
    assert torch.isfinite(out["logits"]).all()
    loss = F.cross_entropy(out["logits"].float(), torch.tensor([0, num_classes - 1]))
    if mask_size is None:
        assert "mask" not in out
    else:
        assert out["mask"].shape == (2, 1, mask_size, mask_size)
        assert torch.isfinite(out["mask"]).all()
        loss = loss + F.binary_cross_entropy_with_logits(out["mask"].float(), torch.zeros_like(out["mask"]).float())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_backward(case):
    kw = CASES[case]
    model = make(**kw)
    # A 72 px batch exercises the on-device resize to image_size.
    check_forward_backward(model, batch(72), kw.get("num_classes", 3), kw.get("mask_size") if kw.get("seg_head") else None)


@pytest.mark.parametrize("color", ["gray", "per_channel"])
@pytest.mark.parametrize("kind", ["dct", "dft"])
def test_spectral_input_resnet(kind, color):
    channels = 1 if color == "gray" else 3
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(channels, SIZE, SIZE)).astype(np.float32)
    std = rng.uniform(0.5, 2.0, size=(channels, SIZE, SIZE)).astype(np.float32)
    torch.manual_seed(0)
    model = build_model(model_config(dict(name="resnet18", input=kind, spectrum_color=color, image_size=SIZE)))
    spectrum_transform(model).set_stats(mean, std)
    assert model.backbone.conv1.in_channels == channels
    check_forward_backward(model, batch(), 3, None)
    # The statistics travel in the state dict (self-contained checkpoints).
    assert torch.equal(model.state_dict()["input.spectrum.mean"], torch.from_numpy(mean))


def test_spectral_input_config_and_statistics_shape():
    model = build_model(model_config(dict(name="xception", input="dct", spectrum_color="gray", spectrum_eps=1e-3,
                                    image_size=SIZE)))
    assert model.input.spectrum.eps == 1e-3 and model.input.channels == 1
    assert model(batch())["logits"].shape == (2, 3)
    with pytest.raises(ValueError, match="statistics must be"):
        spectrum_transform(model).set_stats(np.zeros((3, SIZE, SIZE)), np.ones((3, SIZE, SIZE)))
    assert spectrum_transform(build_model(model_config(dict(name="resnet18", image_size=SIZE)))) is None


@pytest.mark.parametrize("name", ["resnet18", "xception", "f3net"])
def test_width_narrows_the_demo_nets(name):
    """width (demo only) cuts parameters; width 1 is the published network (timm/torchvision names)."""
    full, narrow = make(name=name), make(name=name, width=0.25)
    assert count_parameters(narrow) < count_parameters(full) / 8
    assert set(full.state_dict()) == set(narrow.state_dict())  # same module names, so the same code paths
    check_forward_backward(narrow, batch(), 3, None)


def test_baseline_head_has_f3net_dropout():
    from dfpipe.models.xception import HEAD_DROPOUT

    head = make(name="xception").head
    assert isinstance(head.dropout, torch.nn.Dropout) and head.dropout.p == HEAD_DROPOUT == 0.2


# ---- F3Net: band definitions (paper Sec. 3.1 / 3.2) ---------------------------------------------


def test_fad_band_masks_small_grid_exact():
    masks = fad_band_masks(8)  # floor(8 / 2.82) = 2, floor(8 / 2) = 4
    d = np.add.outer(np.arange(8), np.arange(8))
    low, mid, high, full = (m.numpy().astype(bool) for m in masks)
    assert np.array_equal(low, d <= 2) and low.sum() == 1 + 2 + 3
    assert np.array_equal(mid, (d >= 3) & (d <= 4)) and mid.sum() == 4 + 5
    assert high.sum() == 64 - 15 and full.all()
    assert np.array_equal(low.astype(int) + mid + high, np.ones((8, 8), int))  # a partition


def test_fad_band_fractions_match_paper_at_299():
    masks = fad_band_masks(299).numpy()
    n = 299 * 299
    # floor(299 / 2.82) = 106 -> 107*108/2 coefficients; floor(299 / 2) = 149 -> 150*151/2 cumulative.
    assert masks[0].sum() == 107 * 108 // 2
    assert masks[0].sum() + masks[1].sum() == 150 * 151 // 2
    assert abs(masks[0].sum() / n - 1 / 16) < 0.003  # "first 1/16 of the spectrum"
    assert abs((masks[0].sum() + masks[1].sum()) / n - 1 / 8) < 0.003  # middle "between 1/16 and 1/8"
    assert abs(masks[2].sum() / n - 7 / 8) < 0.003  # high "the last 7/8"


def test_lfs_band_masks_counts():
    masks = lfs_band_masks().numpy()
    assert masks.shape == (6, 10, 10)
    # bands over i + j in [0, 3.33), [3.33, 6.67), [6.67, 10), [10, 13.33), [13.33, 16.67), [16.67, 20)
    assert masks.sum(axis=(1, 2)).tolist() == [10, 18, 27, 30, 12, 3]
    assert np.array_equal(masks.sum(axis=0), np.ones((10, 10)))
    assert lfs_output_size(299) == 149  # the F3Net code's 149 x 149 LFS map


def test_fad_bands_reconstruct_image_when_filters_are_the_bases():
    fad = FAD(16)
    with torch.no_grad():
        fad.learnable.fill_(0.0)  # sigma(0) = 0: the filters are exactly the binary bases
    x = torch.rand(2, 3, 16, 16, dtype=torch.float32)
    out = fad(x)
    assert out.shape == (2, 12, 16, 16)
    bands = out.reshape(2, 4, 3, 16, 16)
    torch.testing.assert_close(bands[:, 3], x, atol=1e-5, rtol=0)  # all-pass = identity
    torch.testing.assert_close(bands[:, :3].sum(dim=1), x, atol=1e-5, rtol=0)  # low+mid+high = image
    assert bands[:, 0].std() > 0 and bands[:, 2].std() > 0


def test_lfs_matches_direct_windowed_dct():
    size = 20
    lfs = LFS(size)
    with torch.no_grad():
        lfs.learnable.fill_(0.0)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    out = lfs(x).detach().numpy()
    assert out.shape == (1, 6, lfs_output_size(size), lfs_output_size(size))
    grey = (0.299 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2]).numpy().astype(np.float64) * 255.0
    padded = np.pad(grey, 4)
    masks = lfs_band_masks().numpy().astype(bool)
    for r, c in [(0, 0), (3, 5), (out.shape[2] - 1, out.shape[3] - 1)]:
        patch = padded[2 * r: 2 * r + 10, 2 * c: 2 * c + 10]
        q = np.log10(np.abs(scipy.fft.dctn(patch, norm="ortho")) + 1e-15)
        expected = [q[m].mean() for m in masks]
        np.testing.assert_allclose(out[0, :, r, c], expected, rtol=1e-4, atol=1e-3)


# ---- Architecture options --------------------------------------------------------------------------


def test_reduced_removes_middle_blocks_4_to_7():
    full, reduced = make(name="f3net", f3net_mode="mix"), make(name="f3net", f3net_mode="mix", reduced=True)
    for net in (reduced.fad_net, reduced.lfs_net):
        assert not any(hasattr(net, f"block{i}") for i in (4, 5, 6, 7))
        assert all(hasattr(net, f"block{i}") for i in (1, 2, 3, 8, 9, 10, 11, 12))
    assert hasattr(full.fad_net, "block4")
    # each Xception middle block = 3 separable convs 728->728 (+BN): 8 blocks less in two streams
    assert count_parameters(full) - count_parameters(reduced) == 2 * 4 * sum(
        p.numel() for p in full.fad_net.block4.parameters())


def test_mix_streams_align_without_resampling():
    model = make(name="f3net", f3net_mode="mix")
    x = model.input(batch())
    f = model.fad_net.to_mid(model.fad(x))
    s = model.lfs_net.to_mid(model.lfs(batch()))
    assert f.shape == s.shape == (2, 728, 4, 4)


def test_npr_residual_matches_authors_formula():
    x = torch.rand(2, 3, 16, 16)
    authors = x - F.interpolate(
        F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True),
        scale_factor=2, mode="nearest", recompute_scale_factor=True)
    torch.testing.assert_close(npr_residual(x), authors, atol=0, rtol=0)
    upsampled = F.interpolate(torch.rand(1, 3, 8, 8), scale_factor=2, mode="nearest")
    assert npr_residual(upsampled).abs().max() == 0  # nearest up-sampling leaves no NPR trace
    assert not hasattr(make(name="npr").backbone, "layer3")


def test_autocast_bf16_and_channels_last_cpu():
    model = make(name="f3net", f3net_mode="mix", seg_head=True, mask_size=32).to(memory_format=torch.channels_last)
    x = batch().to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert torch.isfinite(out["logits"].float()).all() and out["mask"].shape == (2, 1, 32, 32)


def test_build_is_deterministic_under_a_seed():
    a, b = make(name="f3net", f3net_mode="lfs"), make(name="f3net", f3net_mode="lfs")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# ---- Weights -----------------------------------------------------------------------------------


def test_weights_roundtrip_checkpoint(tmp_path):
    src = make(name="f3net", f3net_mode="mix", seg_head=True, mask_size=32)
    torch.save({"model": src.state_dict(), "config": {}}, tmp_path / "ckpt.pt")
    torch.manual_seed(123)  # different init: the file must overwrite it
    dst = build_model(model_config(dict(name="f3net", image_size=SIZE, seg_head=True, mask_size=32)))
    load_weights(dst, tmp_path / "ckpt.pt")
    sd = dst.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in src.state_dict().items())
    src.eval(), dst.eval()
    torch.testing.assert_close(dst(batch())["logits"], src(batch())["logits"])


def test_weights_imagenet_style_backbones(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18(weights=None)
    torch.save(imagenet.state_dict(), tmp_path / "r18.pth")
    model = make(name="resnet18")
    report = load_weights(model, tmp_path / "r18.pth")
    assert report.loaded == {"backbone": len(imagenet.state_dict()) - 2}  # all but the 1000-class fc
    assert sorted(report.shape_mismatch) == ["backbone.fc.bias: file (1000,) vs model (3,)",
                                             "backbone.fc.weight: file (1000, 512) vs model (3, 512)"]
    assert torch.equal(model.backbone.layer1[0].conv1.weight, imagenet.layer1[0].conv1.weight)

    xcep = Xception(num_classes=1000)
    torch.save(xcep.state_dict(), tmp_path / "xception.pth")
    f3 = make(name="f3net", f3net_mode="both")
    report = load_weights(f3, tmp_path / "xception.pth")
    assert set(report.loaded) == {"fad_net", "lfs_net"}
    # RGB conv1 spread over the 12 FAD channels (4 bands) and 6 LFS channels, divided as the authors do
    torch.testing.assert_close(f3.fad_net.conv1.weight[:, 3:6], xcep.conv1.weight / 4)
    assert {"fad_net.conv1.weight", "lfs_net.conv1.weight"} <= set(report.adapted)
    torch.testing.assert_close(f3.lfs_net.conv1.weight[:, :3], xcep.conv1.weight / 2)
    assert torch.equal(f3.lfs_net.block8.rep[1].pointwise.weight, xcep.block8.rep[1].pointwise.weight)


def test_weights_mismatch_is_a_clear_error(tmp_path):
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt: no tensor matched"):
        load_weights(make(name="npr"), tmp_path / "bad.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt: expected a state_dict"):
        load_weights(make(name="npr"), tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_weights(make(name="npr"), tmp_path / "missing.pt")


# ---- Strict configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "vit"}, r"runs\.x\.model\.name: 'vit' is not one of \['clip_probe', 'cnndetection', "),
        ({"name": "resnet18", "dropout": 0.1}, r"runs\.x\.model\.dropout: unknown key \(allowed: \['image_size', "),
        ({"image_size": 64}, "runs.x.model: missing required key 'name'"),
        ({"name": "resnet18", "num_classes": 1}, r"runs\.x\.model\.num_classes: must be >= 2"),
        ({"name": "resnet18", "seg_head": True}, r"model\.seg_head: unknown key"),  # only f3net has a mask head
        ({"name": "f3net", "f3net_mode": "both", "seg_head": True}, "seg_head .* needs f3net_mode: mix"),
        ({"name": "f3net", "input": "dct"}, r"model\.input: 'dct' is not one of \['raw'\]"),
        ({"name": "npr", "reduced": True}, r"model\.reduced: unknown key"),
        ({"name": "npr", "image_size": 65}, "even image_size"),
        ({"name": "xception", "image_size": 16}, r"image_size: must be >= 32"),
        ({"name": "resnet18", "weights": "w.pt"}, r"model\.weights: unknown key"),
        ({"name": "resnet18", "width": 1.5}, r"width: must be <= 1"),
        ({"name": "npr", "width": 0.5}, r"model\.width: unknown key"),
        ({"name": "resnet18", "input": "dct", "spectrum_color": "rgb"}, "spectrum_color"),
        ({"name": "f3net", "spectrum_eps": 1e-3}, r"model\.spectrum_eps: unknown key"),  # f3net has no spectrum input
    ],
)
def test_bad_config_is_config_error(data, message):
    with pytest.raises(ConfigError, match=message):
        model_config(data, where="runs.x.model")


def test_good_config_builds():
    cfg = model_config({"name": "f3net", "f3net_mode": "mix", "reduced": True, "seg_head": True, "image_size": 299})
    assert type(cfg).__name__ == "F3NetConfig" and cfg.mask_output
    assert cfg.model_dump()["width"] == 1.0 and cfg.model_dump()["mask_size"] == 224
