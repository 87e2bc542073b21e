"""Frozen encoders as their papers ran them: QuickGELU with OpenAI's CLIP weights, the weight
formats those come in (state dict, TorchScript archive), and LGrad gradients one image at a time."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import nn

from dfpipe.core.config import ConfigError, build, to_dict
from dfpipe.features import encoders as E

# A tiny open_clip architecture (same classes as ViT-L-14, a few thousand weights) registered for
# these tests only: no checkpoint is downloaded anywhere.
TINY = "dfpipe-tiny-vit"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_arch(monkeypatch):
    import open_clip.factory as factory

    monkeypatch.setitem(factory._MODEL_CONFIGS, TINY, TINY_CFG)
    return TINY


def clip_cfg(weights, sha256, openai: bool):
    return build(
        E.ClipEncoder,
        {
            "arch": TINY,
            "weights": weights,
            "sha256": sha256,
            "seed": 0,
            "image_size": 32,
            "width": 32,
            "layers": 1,
            "heads": 2,
            "patch_size": 16,
            "embed_dim": 16,
            "openai": openai,
        },
    )


def mlp_activation(tower: nn.Module) -> nn.Module:
    (block,) = tower.net.transformer.resblocks
    return block.mlp.gelu


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's activation (Radford et al. 2021 code): x * sigmoid(1.702 x), written out here."""
    return x / (1.0 + torch.exp(-1.702 * x))


def erf_gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def save_tiny_weights(tmp_path, quick: bool) -> tuple[nn.Module, str]:
    """A random tiny CLIP saved as a plain state dict; returns (model, sha256)."""
    import open_clip

    torch.manual_seed(3)
    model = open_clip.create_model(TINY, pretrained=None, force_quick_gelu=quick)
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    return model, hashlib.sha256((tmp_path / "clip.pt").read_bytes()).hexdigest()


@pytest.mark.parametrize("openai", [True, False])
def test_openai_weights_get_quick_gelu(tmp_path, monkeypatch, tiny_arch, openai):
    monkeypatch.chdir(tmp_path)
    _, digest = save_tiny_weights(tmp_path, quick=True)
    tower = E.build_clip(clip_cfg("clip.pt", digest, openai))
    act = mlp_activation(tower)
    x = torch.linspace(-4, 4, 81)
    expected, other = (quick_gelu(x), erf_gelu(x)) if openai else (erf_gelu(x), quick_gelu(x))
    torch.testing.assert_close(act(x), expected, rtol=0, atol=1e-6)
    assert (act(x) - other).abs().max() > 1e-2  # control: the two activations are told apart


def test_openai_flag_is_left_out_of_dumps_when_false(tiny_arch):
    """Caches written before the key existed keep their index.json bytes."""
    assert "openai" not in to_dict(clip_cfg(None, None, False))
    assert to_dict(clip_cfg(None, None, False)) == {
        k: v for k, v in to_dict(clip_cfg(None, None, True)).items() if k != "openai"
    }
    assert not clip_cfg(None, None, True).quick_gelu  # a random demo tower keeps its GELU


def test_state_dict_and_torchscript_archive_give_the_source_embeddings(tmp_path, monkeypatch, tiny_arch):
    monkeypatch.chdir(tmp_path)
    model, digest = save_tiny_weights(tmp_path, quick=True)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(E.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(E.CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.visual((x - mean) / std)
        got = E.build_clip(clip_cfg("clip.pt", digest, True))(x)
    torch.testing.assert_close(got, expected)

    # a TorchScript archive whose parameters carry OpenAI's names (visual.*), plus OpenAI's
    # hyper-parameter entries, as OpenAI's released ViT-L-14.pt is
    class Released(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = model.visual
            self.register_buffer("input_resolution", torch.tensor(32))

        def forward(self, image):
            return self.visual(image)

    traced = torch.jit.trace(Released().eval(), torch.zeros(1, 3, 32, 32), check_trace=False)
    traced.save(str(tmp_path / "released.pt"))
    with pytest.raises(Exception):  # noqa: B017 - torch's own refusal: weights_only cannot open it
        torch.load(tmp_path / "released.pt", weights_only=True)
    assert E.is_torchscript(tmp_path / "released.pt") and not E.is_torchscript(tmp_path / "clip.pt")
    archive_digest = hashlib.sha256((tmp_path / "released.pt").read_bytes()).hexdigest()
    with torch.no_grad():
        from_archive = E.build_clip(clip_cfg("released.pt", archive_digest, True))(x)
    torch.testing.assert_close(from_archive, expected)

    converted_digest = E.convert_torchscript(tmp_path / "released.pt", tmp_path / "converted.pt")
    assert converted_digest == hashlib.sha256((tmp_path / "converted.pt").read_bytes()).hexdigest()
    state = torch.load(tmp_path / "converted.pt", weights_only=True)
    assert "input_resolution" not in state and all(k.startswith("visual.") for k in state)
    with torch.no_grad():
        from_converted = E.build_clip(clip_cfg("converted.pt", converted_digest, True))(x)
    torch.testing.assert_close(from_converted, expected)
    with pytest.raises(ValueError, match="does not match the pinned"):
        E.build_clip(clip_cfg("converted.pt", archive_digest, True))


class MinibatchStdDisc(nn.Module):
    """A discriminator with StyleGAN's minibatch standard deviation: the std over the batch of
    each feature, averaged, appended as a channel -- so each score depends on the other images."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(5 * 8 * 8, 1)

    def forward(self, x):
        h = torch.nn.functional.leaky_relu(self.conv(x), 0.2)
        std = (h.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()  # one image alone: var 0
        h = torch.cat([h, std.expand(h.shape[0], 1, h.shape[2], h.shape[3])], dim=1)
        return self.head(h.flatten(1))


def test_per_image_gradients_do_not_depend_on_batch_neighbours(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    disc = MinibatchStdDisc()
    torch.jit.script(disc).save(str(tmp_path / "disc.pt"))
    digest = hashlib.sha256((tmp_path / "disc.pt").read_bytes()).hexdigest()
    base = {"weights": "disc.pt", "sha256": digest, "seed": 0, "image_size": 8, "width": 1}
    f = E.build_lgrad_transform(build(E.LGradEncoder, {**base, "arch": "stylegan_discriminator", "per_image": True}))
    torch.manual_seed(1)
    a, b, c = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    # expectation computed independently: the image alone through the plain module, scaled by hand
    x0 = a.clone().requires_grad_(True)
    (raw,) = torch.autograd.grad(disc(x0 * 2 - 1).sum(), x0)
    alone = (raw - raw.min()) / (raw.max() - raw.min())
    with_b = E.gradient_maps(f, torch.cat([a, b]), per_image=True)[:1]
    with_c = E.gradient_maps(f, torch.cat([a, c, b]), per_image=True)[:1]
    torch.testing.assert_close(with_b, alone)
    torch.testing.assert_close(with_c, alone)
    # control: batched gradients through the same model do depend on the neighbours
    batched_b = E.gradient_maps(f, torch.cat([a, b]))[:1]
    batched_c = E.gradient_maps(f, torch.cat([a, c, b]))[:1]
    assert (batched_b - batched_c).abs().max() > 1e-3


def test_stylegan_discriminator_needs_per_image_and_per_image_is_not_dumped_when_false():
    base = {"weights": "disc.pt", "sha256": "0" * 64, "seed": 0, "image_size": 256, "width": 1}
    with pytest.raises(ConfigError, match="per_image: true"):
        build(E.LGradEncoder, {**base, "arch": "stylegan_discriminator", "per_image": False})
    demo = {"arch": "random_cnn", "weights": None, "sha256": None, "seed": 0, "image_size": 64, "width": 8}
    assert "per_image" not in to_dict(build(E.LGradEncoder, {**demo, "per_image": False}))
    assert to_dict(build(E.LGradEncoder, {**demo, "per_image": True}))["per_image"] is True
