"""UniversalFakeDetect (Ojha et al., "Towards Universal Fake Image Detectors that Generalize Across
Generative Models", CVPR 2023): a linear probe on frozen CLIP ViT-L/14 image features.

The encoder never runs here: ``features@<name>`` (:mod:`dfpipe.features.encoders`) caches its
embeddings once per variant, and this model is only the linear layer the paper trains on them, so
training takes seconds and never loads the encoder. Input ``clip``: ``(B, feature_dim)`` float
features (the data path reads them from the cache in place of images).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from .class_head import BinaryHeadConfig
from .registry import PaperRecord, register_model

#: What Ojha et al. (CVPR 2023) ran: Sec. 4 and their train options (the CNNDetection code base's
#: Blur+JPEG with p = 0.5 each, random crop 224 and flip on train, centre crop 224 on test).
PAPER = PaperRecord(
    citation="U. Ojha, Y. Li, Y. J. Lee, Towards Universal Fake Image Detectors that Generalize Across "
    "Generative Models, CVPR 2023",
    settings={
        "train_input": "random crop 224",
        "test_input": "centre crop 224",
        "encoder": "ViT-L-14 OpenAI CLIP",
        "encoder_size": 224,
        "activation": "QuickGELU",
        "augment": "blur_jpeg + flip",
        "optimizer": "adam",
        "lr": 1e-4,
        "batch_size": 256,
        "head": "1 logit, BCE",
    },
    sources={
        "encoder": "Sec. 3: CLIP ViT-L/14 (OpenAI weights, trained with QuickGELU)",
        "lr": "Sec. 4: Adam, lr 1e-4, batch 256",
        "augment": "train options: blur_prob 0.5, jpg_prob 0.5, flip",
    },
)


class LinearProbe(nn.Module):
    """(B, feature_dim) cached CLIP features -> {"logits": (B, num_logits)}; one ``nn.Linear``.

    Ojha et al. train ``fc: 768 -> 1`` under BCE: ``head: sigmoid`` (:mod:`.class_head`); the
    default is ``num_classes`` logits under softmax cross-entropy.
    """

    def __init__(self, cfg: CLIPProbeConfig):
        super().__init__()
        self.feature_dim = cfg.feature_dim
        self.fc = nn.Linear(cfg.feature_dim, cfg.num_logits)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(
                f"clip_probe expects cached features (B, {self.feature_dim}), got {tuple(x.shape)} "
                "(is the run's model.input 'clip' and features@ built for its variant?)"
            )
        return {"logits": self.fc(x)}


class CLIPProbeConfig(BinaryHeadConfig):
    """``clip_probe``: a linear layer on cached encoder features (``input: clip``) of
    ``feature_dim`` values (the encoder's embedding size, 768 for ViT-L/14); ``head: sigmoid``: the
    paper's one logit under BCE."""

    name: Literal["clip_probe"]
    input: Literal["clip"] = "clip"
    feature_dim: int = Field(ge=1)


@register_model(CLIPProbeConfig, example={"feature_dim": 16}, paper=PAPER)
def build_clip_probe(cfg: CLIPProbeConfig) -> nn.Module:
    return LinearProbe(cfg)
