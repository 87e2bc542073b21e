"""Stand-ins for GAN generators: faces drawn at low resolution, then up-sampled by a fixed chain.

Each generator family is a chain of ``n`` stages ``x -> conv(up2(x))`` whose up-sampling operator
and fixed random convolution weights are the family's "architecture" and "trained weights".
The operators leave the periodic spectral artefacts analysed by Durall et al., "Watch your
Up-Convolution" (CVPR 2020, arXiv:2003.01826) and Frank et al., "Leveraging Frequency Analysis for
Deep Fake Image Recognition" (ICML 2020, arXiv:2003.08685):

- ``transposed``: zero insertion + a 4x4 kernel (a transposed convolution, stride 2). Its four
  polyphase components have different gains, which is the checkerboard pattern of
  Odena et al. 2016 and gives DFT/DCT peaks at the half band.
- ``nearest``: nearest-neighbour up-sampling + conv (spectral replicas, weaker peaks).
- ``bilinear``: bilinear up-sampling + conv (smooth, suppressed high band; peaks from the conv).

With two stages from 32 px to 128 px the stage-one artefacts sit at 1/4 of the band and the
stage-two artefacts at 1/2, so some survive a later face crop resized to 64 px. The demo passes
only a face's coarse band through the chain and adds the fine detail and sensor-like noise after
it (:func:`dfpipe.demo.build.make_demo`), so the chain's fingerprint is the one thing that sets a
family apart: a logistic regression on log-DCT spectra (Frank et al.) trained on real vs
``transposed`` gives about 98 AP on that family and 81 / 52 on ``nearest`` / ``bilinear``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast, get_args

import cv2
import numpy as np

Operator = Literal["transposed", "nearest", "bilinear"]
OPERATORS: tuple[Operator, ...] = get_args(Operator)

# Bilinear interpolation kernel for stride-2 zero insertion: each polyphase component sums to 1.
_BILINEAR_4 = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25]).astype(np.float32)


@dataclass(frozen=True)
class UpsamplingChain:
    """Fixed weights of one generator family.

    ``up_kernels[i]``: (3, 4, 4) per-channel transposed-conv kernels (used by ``transposed`` only);
    ``conv_kernels[i]``: (3, 3, 3) per-channel 3x3 kernels after up-sampling;
    ``mix[i]``: (3, 3) colour mixing matrix after the conv (the 1x1 channel part of a conv layer).
    """

    operator: str
    up_kernels: tuple[np.ndarray, ...]
    conv_kernels: tuple[np.ndarray, ...]
    mix: tuple[np.ndarray, ...]


def _transposed_kernel(rng: np.random.Generator, shape_std: float = 0.1, gain_spread: float = 0.06) -> np.ndarray:
    """(3, 4, 4) stride-2 transposed-conv kernels: a bilinear kernel with random shape changes that
    keep each polyphase component's sum at 1, times a per-phase gain of 1 +- ``gain_spread``.

    The unequal phase gains make the flat-area checkerboard (DC-level peaks at the half band); the
    phase-dependent shapes make texture and edges periodic too. Gains of +-24 % (an unconstrained
    random kernel) made a grid so strong that BlazeFace found almost no face; +-6 % keeps faces
    detectable (the checkerboard is on the coarse band only) while the peaks stay clear in the spectrum.
    """
    k = _BILINEAR_4[None] + rng.normal(0.0, shape_std, (3, 4, 4)).astype(np.float32)
    # two phases up, two down, by exactly gain_spread: every draw leaves a checkerboard of the same
    # strength (uniform gains sometimes drew four nearly equal phases, i.e. almost no fingerprint)
    signs = np.stack([rng.permutation([1.0, 1.0, -1.0, -1.0]) for _ in range(3)]).reshape(3, 2, 2)
    gains = (1.0 + gain_spread * signs).astype(np.float32)
    for py in range(2):
        for px in range(2):
            phase = k[:, py::2, px::2]
            phase -= (phase.sum(axis=(1, 2), keepdims=True) - 1.0) / phase[0].size
            phase *= gains[:, py, px][:, None, None]
    return k


def make_chain(operator: str, stages: int, rng: np.random.Generator) -> UpsamplingChain:
    """Draw the fixed random weights of a ``stages``-stage chain for ``operator``."""
    if operator not in OPERATORS:
        raise ValueError(f"unknown up-sampling operator {operator!r}; expected one of {OPERATORS}")
    if stages < 1:
        raise ValueError("stages must be >= 1")
    up, conv, mix = [], [], []
    for _ in range(stages):
        up.append(_transposed_kernel(rng))
        # A near-identity 3x3 conv (keeps the face recognisable) plus a random part, normalised to
        # unit DC gain so brightness is kept.
        c = np.zeros((3, 3, 3), np.float32)
        c[:, 1, 1] = 1.0
        c += rng.normal(0.0, 0.10, (3, 3, 3)).astype(np.float32)
        conv.append(c / c.sum(axis=(1, 2), keepdims=True))
        m = np.eye(3, dtype=np.float32) + rng.normal(0.0, 0.04, (3, 3)).astype(np.float32)
        mix.append(m / m.sum(axis=1, keepdims=True))
    return UpsamplingChain(operator, tuple(up), tuple(conv), tuple(mix))


def _filter(img: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Per-channel 2-D correlation, reflect border. img (H, W, 3) float32, kernels (3, k, k)."""
    return np.stack(
        [cv2.filter2D(img[..., c], cv2.CV_32F, kernels[c], borderType=cv2.BORDER_REFLECT_101) for c in range(3)],
        axis=-1,
    )


def upsample(img: np.ndarray, chain: UpsamplingChain) -> np.ndarray:
    """Run ``img`` (h, w, 3) float32 in [0, 255] through the chain: (h * 2^n, w * 2^n, 3) float32."""
    x = img.astype(np.float32)
    for up_k, conv_k, mix in zip(chain.up_kernels, chain.conv_kernels, chain.mix):
        h, w = x.shape[:2]
        if chain.operator == "transposed":
            z = np.zeros((2 * h, 2 * w, 3), np.float32)
            z[::2, ::2] = x
            x = _filter(z, up_k)
        elif chain.operator == "nearest":
            x = np.repeat(np.repeat(x, 2, axis=0), 2, axis=1)
        else:
            x = cast(np.ndarray, cv2.resize(x, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR))  # float32 in and out
        x = _filter(x, conv_k) @ mix.T
    return x
