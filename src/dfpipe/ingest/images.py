"""Still-image reading: decode one file upright as RGB, or reject it by the format rules.

One rule per format difference, so that no class differs from another by how its files are
stored: grayscale (with or without alpha), 16-bit and translucent images are rejected, a fully
opaque alpha channel is dropped, the EXIF orientation is applied, and oversize images (and
Pillow's decompression bombs) are rejected before any pixel is decoded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dfpipe.core.io import relative_message
from dfpipe.ingest.items import Reject


@dataclass
class Decoded:
    """A decoded still image: ``rgb`` ``(H, W, 3)`` uint8 upright, and how it was stored."""

    rgb: np.ndarray
    file_format: str
    exif_transposed: bool


#: numpy versions of Pillow's ``ImageOps.exif_transpose`` per EXIF orientation (2..8).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}


def read_image(
    path: Path, max_pixels: int, rel: str | None = None, root: Path | None = None
) -> tuple[Decoded | None, Reject | None]:
    """Decode a still image upright, or return a reject (``rel``: the name stored in it; ``root``:
    the source root that messages are made relative to, default the file's folder).

    Rules (one each, so that no class differs from another by format): grayscale images are
    rejected whether or not they carry an alpha channel (``grayscale``; converting them would give
    a class of grey faces); 16-bit images (``bit_depth``) and translucent RGBA (``alpha``) are
    rejected; a fully opaque alpha channel is dropped. The EXIF orientation is applied (a phone
    JPEG is stored sideways) and reported. Images over ``max_pixels``, and those Pillow flags as
    decompression bombs, are ``too_large`` before any pixel is decoded. Messages carry no
    absolute path.
    """
    rel = rel or path.name
    root = root if root is not None else path.parent
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, Reject(rel, -1, "unreadable", relative_message(str(exc), root))
    if size == 0:
        return None, Reject(rel, -1, "empty_file", "zero-byte file")
    from PIL import Image  # header only: the size is known before any pixel is decoded

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                mode, fmt = im.mode, (im.format or "").lower()
                orientation = int(im.getexif().get(0x0112, 1) or 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, Reject(rel, -1, "too_large", relative_message(f"decompression bomb: {exc}", root))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reject with its text
        return None, Reject(rel, -1, "unreadable", relative_message(f"not a readable image: {exc}", root))
    if w * h > max_pixels:
        return None, Reject(rel, -1, "too_large", f"{w}x{h} exceeds max_pixels {max_pixels}")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # UNCHANGED: no EXIF rotation, no conversion
    if img is None:
        return None, Reject(rel, -1, "unreadable", "OpenCV could not decode the image (truncated?)")
    if img.dtype != np.uint8:
        return None, Reject(rel, -1, "bit_depth", f"{img.dtype} pixels, expected 8-bit")
    if mode in _GRAY_MODES or img.ndim == 2 or img.shape[2] in (1, 2):
        return None, Reject(rel, -1, "grayscale", f"single-channel image (mode {mode}, with or without alpha)")
    if img.shape[2] == 4:
        if int(img[:, :, 3].min()) < 255:
            return None, Reject(rel, -1, "alpha", "translucent RGBA image")
        img = img[:, :, :3]
    if img.shape[2] != 3:
        return None, Reject(rel, -1, "channels", f"{img.shape[2]} channels")
    rgb = img[:, :, ::-1]
    transposed = orientation in _ORIENT
    if transposed:
        rgb = _ORIENT[orientation](rgb)
    return Decoded(np.ascontiguousarray(rgb), fmt or path.suffix.lower().lstrip("."), transposed), None
