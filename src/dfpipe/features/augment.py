"""Image augmentations shared by training and the feature caches: CNNDetection's Blur+JPEG (0.5)
and the augmented views of a training image that a frozen-encoder cache stores.

``blur_jpeg``: Wang et al. CVPR 2020 (CNNDetection), setting "Blur+JPEG (0.5)": each image is, with
p = 0.5, Gaussian-blurred with sigma ~ U[0, 3] (per channel, ``scipy.ndimage.gaussian_filter``, as
their data/datasets.py), then, independently with p = 0.5, JPEG re-encoded with quality ~ U{30..100}
(PIL; their code picks cv2 or PIL at random, a detail left out). Every draw comes from the
caller's generator, so the same seed gives the same images.

``augmented_view``: UniversalFakeDetect's training input (Ojha et al. CVPR 2023, their defaults on
CNNDetection's code base): Blur+JPEG (0.5), a random ``size`` crop (when the image is larger) and a
horizontal flip with p = 0.5. A cached-feature detector never sees its encoder's input at training
time, so ``features@`` encodes a fixed number of such views per training image, each drawn from a
seed derived from the encoder seed, the view and the batch (:mod:`dfpipe.features.encoders`).
"""

from __future__ import annotations

import io

import numpy as np
import torch

BLUR_PROB, BLUR_SIGMA = 0.5, (0.0, 3.0)
JPEG_PROB, JPEG_QUALITY = 0.5, (30, 100)


def blur_jpeg(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> uint8 ``(B, 3, S, S)`` with CNNDetection's Blur+JPEG (0.5)."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"blur_jpeg expects uint8 (B, 3, S, S) images, got {images.dtype} {tuple(images.shape)}")
    b = images.shape[0]
    u = torch.rand(b, 4, generator=generator, dtype=torch.float64).numpy()
    out = images.numpy().copy()
    for i in range(b):
        img = out[i].transpose(1, 2, 0)  # (S, S, 3)
        if u[i, 0] < BLUR_PROB:
            sigma = BLUR_SIGMA[0] + u[i, 1] * (BLUR_SIGMA[1] - BLUR_SIGMA[0])
            img = np.stack([gaussian_filter(img[..., c].astype(np.float64), sigma=sigma) for c in range(3)], -1)
            img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        if u[i, 2] < JPEG_PROB:
            lo, hi = JPEG_QUALITY
            quality = lo + min(int(u[i, 3] * (hi - lo + 1)), hi - lo)
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=quality)
            img = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        out[i] = img.transpose(2, 0, 1)
    return torch.from_numpy(out)


def augmented_view(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> uint8 ``(B, 3, s, s)``, s = min(S, size): Blur+JPEG (0.5), then one
    uniformly placed ``size`` crop per image (torchvision's RandomCrop) when S > size, then a
    horizontal flip with p = 0.5; every draw from ``generator``."""
    out = blur_jpeg(images, generator)
    b, side = out.shape[0], out.shape[-1]
    if side > size:
        offsets = torch.randint(0, side - size + 1, (b, 2), generator=generator).tolist()
        out = torch.stack([out[i, :, t : t + size, s : s + size] for i, (t, s) in enumerate(offsets)])
    flip = torch.rand(b, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)
