"""The spectral model input: log-magnitude DCT/DFT of an image batch, normalised by buffers.

The spectrum follows Frank et al. 2020, "Leveraging Frequency Analysis for Deep Fake Image
Recognition" (ICML, arXiv 2003.08685): a type-II orthonormal 2-D DCT of each colour channel (or of
the BT.601 luma) of the crop at pixel values 0-255, then ``log(|c| + eps)``, then a
per-coefficient standardisation with the training split's mean and standard deviation. The DFT
variant is ``log |fftshift(fft2(x, norm="ortho"))| + eps``. The numpy reference that builds the
spectra stage's statistics (:func:`dfpipe.features.spectra.log_spectrum_np`) must agree with
:class:`SpectrumTransform` (``tests/features/test_spectra.py``).

The transform's ``mean``/``std`` are persistent buffers of shape ``(C, S, S)``, created as 0 / 1
from the model config alone and filled once before training from the spectra stage's
``stats_<kind>.npz`` (:meth:`SpectrumTransform.set_stats`), so a checkpoint's state dict is the
only place the statistics live. The orthonormal DCT-II matrix (:func:`dct_matrix`) is shared with
F3Net's FAD/LFS branches.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Literal

import numpy as np
import torch
from torch import nn

Kind = Literal["dct", "dft"]
Color = Literal["per_channel", "gray"]

#: ITU-R BT.601 luma weights (the ones PIL's ``convert("L")`` and OpenCV's ``COLOR_RGB2GRAY`` use).
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
#: Floor on the per-coefficient standard deviation, so a coefficient that is constant over the
#: training split (e.g. exactly-zero DFT bins of a flat demo background) normalises to 0, not inf.
STD_FLOOR = 1e-6


def num_channels(color: str) -> int:
    """3 for ``per_channel``, 1 for ``gray``."""
    if color not in ("per_channel", "gray"):
        raise ValueError(f"color must be 'per_channel' or 'gray', got {color!r}")
    return 3 if color == "per_channel" else 1


@functools.cache
def _dct_matrix_np(n: int) -> np.ndarray:
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    d = np.sqrt(2.0 / n) * np.cos(np.pi * (2.0 * i + 1.0) * k / (2.0 * n))
    d[0, :] = np.sqrt(1.0 / n)
    d.setflags(write=False)
    return d


_DCT_CACHE: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}


def dct_matrix(n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` of size ``(n, n)``: ``D @ x`` = ``scipy.fft.dct(x, norm="ortho")``.

    ``D[k, i] = s_k cos(pi (2i + 1) k / (2n))`` with ``s_0 = sqrt(1/n)``, ``s_k = sqrt(2/n)``;
    ``D @ D.T = I``, so the inverse 2-D DCT of ``Y`` is ``D.T @ Y @ D``. Built in float64 and cast,
    cached per ``(n, device, dtype)``; treat the returned tensor as read-only.
    """
    if n < 1:
        raise ValueError(f"DCT size must be >= 1, got {n}")
    device = torch.device(device if device is not None else "cpu")
    key = (int(n), str(device), dtype)
    mat = _DCT_CACHE.get(key)
    if mat is None:
        mat = torch.from_numpy(_dct_matrix_np(int(n)).copy()).to(device=device, dtype=dtype)
        _DCT_CACHE[key] = mat
    return mat


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dimensions, ``D_H @ x @ D_W.T``, in ``x``'s dtype."""
    dh = dct_matrix(x.shape[-2], x.device, x.dtype)
    dw = dct_matrix(x.shape[-1], x.device, x.dtype)
    return dh @ x @ dw.T


def idct2(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2`: ``D_H.T @ y @ D_W``."""
    dh = dct_matrix(y.shape[-2], y.device, y.dtype)
    dw = dct_matrix(y.shape[-1], y.device, y.dtype)
    return dh.T @ y @ dw


@contextlib.contextmanager
def ieee_fp32_matmul():
    """Run float32 matmuls in full IEEE precision inside the block, whatever the global setting.

    A training script that calls ``torch.set_float32_matmul_precision("high")`` turns on TF32
    (10-bit mantissa) on CUDA; a DCT of 0-255 pixels in TF32 has absolute errors of ~1, which
    swamps every high-frequency coefficient of the log-spectrum. Not thread-safe (global flag).
    """
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class SpectrumTransform(nn.Module):
    """Normalised log-spectrum of a batch of images, on the images' device.

    Input ``(B, 3, S, S)`` float in [0, 1] (uint8 / 255); output ``(B, C, S, S)`` float32,
    ``C = 3`` (``per_channel``) or ``1`` (``gray``): ``(log(|T(255 x)| + eps) - mean) / std`` with
    ``T`` the orthonormal 2-D DCT-II (``kind="dct"``) or the fft-shifted orthonormal DFT.
    ``mean``/``std`` are ``(C, S, S)`` persistent buffers (0 / 1 until :meth:`set_stats`).
    The math runs in float32 with autocast disabled: the log of small coefficients is ill-
    conditioned and half precision would destroy the high frequencies this input exists for.
    """

    mean: torch.Tensor  # registered buffers
    std: torch.Tensor
    gray_weights: torch.Tensor

    def __init__(self, kind: Kind, color: Color, eps: float, size: int):
        super().__init__()
        if kind not in ("dct", "dft"):
            raise ValueError(f"kind must be 'dct' or 'dft', got {kind!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.kind, self.color, self.eps, self.size = kind, color, float(eps), int(size)
        self.channels = num_channels(color)
        shape = (self.channels, self.size, self.size)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))
        gray = torch.tensor(GRAY_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("gray_weights", gray, persistent=False)

    @torch.no_grad()
    def set_stats(self, mean, std) -> None:
        """Copy training statistics ``(C, S, S)`` into the buffers (std floored at STD_FLOOR)."""
        mean_t = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std_t = torch.as_tensor(np.asarray(std), dtype=torch.float32)
        if mean_t.shape != self.mean.shape or std_t.shape != self.std.shape:
            raise ValueError(
                f"spectrum statistics must be {tuple(self.mean.shape)} (color={self.color!r}, "
                f"image_size={self.size}), got {tuple(mean_t.shape)} and {tuple(std_t.shape)}"
            )
        self.mean.copy_(mean_t)
        self.std.copy_(std_t.clamp_min(STD_FLOOR))

    def extra_repr(self) -> str:
        return f"kind={self.kind}, color={self.color}, eps={self.eps:g}, size={self.size}"

    def log_spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised ``log(|T(255 x)| + eps)``: (B, 3, S, S) -> (B, C, S, S) float32."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"SpectrumTransform expects (B, 3, H, W), got {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False), ieee_fp32_matmul():
            x = x.float() * 255.0
            if self.color == "gray":
                x = (x * self.gray_weights).sum(dim=1, keepdim=True)
            if self.kind == "dct":
                spec = dct2(x).abs()
            else:
                spec = torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1)).abs()
            return torch.log(spec + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.log_spectrum(x)
        if out.shape[1:] != self.mean.shape:
            raise ValueError(
                f"input spectrum {tuple(out.shape[1:])} does not match the statistics "
                f"{tuple(self.mean.shape)}: resize inputs to image_size first"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            return (out - self.mean) / self.std
