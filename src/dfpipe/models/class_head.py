"""The classification head: K logits under softmax, or the binary papers' one logit under a sigmoid.

NPR, CNNDetection, UniversalFakeDetect and LGrad train ``fc: C -> 1`` with binary cross-entropy on
real (0) / fake (1); the project's default is ``num_classes`` logits under softmax cross-entropy.
A binary detector's config (:class:`BinaryHeadConfig`) chooses with ``head: softmax | sigmoid``;
``sigmoid`` needs ``num_classes: 2`` and makes the network output ``(B, 1)``. Everything after the
network sees class probabilities ``(B, num_classes)`` from :func:`class_probs`, the one conversion:
``softmax`` over K logits, ``[1 - sigmoid(z), sigmoid(z)]`` for one logit ``z`` (``p_fake`` is the
papers' score ``sigmoid(z)`` exactly). The loss (:mod:`dfpipe.training.losses`) and these functions
tell the heads apart by the logits' width alone, so no config travels with the outputs.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from .registry import ModelConfig

Head = Literal["softmax", "sigmoid"]


class BinaryHeadConfig(ModelConfig):
    """A detector whose paper trains a single-logit BCE head: ``head: sigmoid`` (with
    ``num_classes: 2``) builds it; ``softmax`` (the default, left out of the dumped config so
    checkpoints written before this key keep their bytes) builds ``num_classes`` logits."""

    head: Head = Field("softmax", exclude_if=lambda v: v == "softmax")

    @property
    def num_logits(self) -> int:
        """The network's output width: 1 for the sigmoid head, else ``num_classes``."""
        return 1 if self.head == "sigmoid" else self.num_classes

    @model_validator(mode="after")
    def _binary_sigmoid(self) -> BinaryHeadConfig:
        if self.head == "sigmoid" and self.num_classes != 2:
            raise ValueError(f"head: sigmoid is one real/fake logit and needs num_classes: 2, not {self.num_classes}")
        return self


def is_single_logit(logits: torch.Tensor) -> bool:
    """Whether ``logits (B, K)`` come from a sigmoid head (``K == 1``)."""
    return logits.shape[1] == 1


def class_probs(logits: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` logits -> ``(B, num_classes)`` float32 class probabilities: ``softmax`` for K > 1,
    ``[1 - sigmoid(z), sigmoid(z)]`` for one logit ``z`` (real, fake)."""
    logits = logits.float()
    if not is_single_logit(logits):
        return torch.softmax(logits, 1)
    fake = torch.sigmoid(logits)
    return torch.cat([1 - fake, fake], 1)


def predicted_class(logits: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64 predicted class: the arg-max logit, or ``z > 0`` (``sigmoid(z) > 0.5``) for one logit."""
    if not is_single_logit(logits):
        return logits.argmax(1)
    return (logits[:, 0] > 0).long()


def class_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(B, num_classes)`` per-class logits for explaining a class (Grad-CAM): the logits as they are
    for K > 1; ``[-z / 2, z / 2]`` for one logit (their softmax is ``[1 - sigmoid(z), sigmoid(z)]``,
    and the real class's evidence is the fake logit's negative)."""
    if not is_single_logit(logits):
        return logits
    half = logits / 2
    return torch.cat([-half, half], 1)
