"""Still-image reading: decode one file upright as RGB, or reject it by the format rules.

One rule per format difference, so that no class differs from another by how its files are
stored: grayscale (with or without alpha), 16-bit and translucent images are rejected, a fully
opaque alpha channel is dropped, the EXIF orientation is applied, and oversize images (and
Pillow's decompression bombs) are rejected before any pixel is decoded.

Each file is read once and decoded once (OpenCV): Pillow parses only the header (size, mode and the
EXIF orientation). A PNG may store its ``eXIf`` chunk after the image data, where Pillow finds it
only by decoding the image; :func:`_png_trailing_metadata` walks the chunks after the image data
instead (lengths only, nothing decompressed) and hands the metadata chunks to Pillow's own handlers.
"""

from __future__ import annotations

import io
import struct
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
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IMAGE_DATA = {b"IDAT", b"DDAT", b"fdAT"}
#: chunks that can carry the EXIF orientation (eXIf; EXIF or XMP text) after the image data
_PNG_METADATA = {b"eXIf", b"tEXt", b"zTXt", b"iTXt"}


def _png_trailing_metadata(im, data: bytes) -> None:
    """Add to ``im.info`` what Pillow's ``load()`` would read from the metadata chunks after the
    PNG image data, without decompressing it (Pillow's ``PngImageFile.load_end`` walk, metadata
    chunks only: they are all ``getexif()`` reads)."""
    from PIL import PngImagePlugin

    pos, end, seen_data = len(_PNG_SIGNATURE), len(data), False
    fp = io.BytesIO(data)
    stream = PngImagePlugin.PngStream(fp)
    stream.text_memory = getattr(im.png, "text_memory", 0)  # Pillow's limit counts header text too
    while pos + 8 <= end:
        length, cid = struct.unpack(">I4s", data[pos : pos + 8])
        if not PngImagePlugin.is_cid(cid) or cid == b"IEND":
            break  # Pillow stops at a broken chunk header as at the end
        if cid in _PNG_IMAGE_DATA:
            seen_data = True
        elif seen_data:
            if cid == b"fcTL" and getattr(im, "is_animated", False):
                break  # the next frame of an APNG: Pillow stops here
            if cid in _PNG_METADATA:
                fp.seek(pos + 8)
                try:
                    stream.call(cid, pos + 8, length)
                except UnicodeDecodeError:
                    break
                except EOFError:
                    pass
        pos += 12 + length  # length, type, data, CRC
    stream.close()
    im.info.update(stream.im_info)


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

    header_only = rgb_jpeg = False
    try:
        data = path.read_bytes()  # one read: Pillow parses the header of these bytes, OpenCV decodes them
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                im = Image.open(io.BytesIO(data))
            except Exception:  # noqa: BLE001 - raised again below, naming the file
                im = Image.open(path)  # the same error, its message naming the file (not a BytesIO)
            with im:
                w, h = im.size
                mode, fmt = im.mode, (im.format or "").lower()
                # an 8-bit RGB JPEG can only decode to 3 channels: OpenCV may write RGB directly
                rgb_jpeg = fmt == "jpeg" and mode == "RGB" and getattr(im, "bits", 0) == 8
                if fmt == "png" and "exif" not in im.info and data.startswith(_PNG_SIGNATURE):
                    # PngImageFile.getexif() would decode the whole image to reach the chunks
                    # after the image data; read those chunks, then Image.getexif (no load)
                    _png_trailing_metadata(im, data)
                    orientation = int(Image.Image.getexif(im).get(0x0112, 1) or 1)
                    header_only = True
                else:
                    orientation = int(im.getexif().get(0x0112, 1) or 1)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, Reject(rel, -1, "too_large", relative_message(f"decompression bomb: {exc}", root))
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reject with its text
        return None, Reject(rel, -1, "unreadable", relative_message(f"not a readable image: {exc}", root))
    if w * h > max_pixels:
        return None, Reject(rel, -1, "too_large", f"{w}x{h} exceeds max_pixels {max_pixels}")
    buf = np.frombuffer(data, np.uint8)
    if rgb_jpeg:  # the same pixels as UNCHANGED + BGR2RGB, without the extra pass (no EXIF rotation)
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    else:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # UNCHANGED: no EXIF rotation, no conversion
    if img is None:
        if header_only:  # Pillow's decode would have failed first: keep its message
            rej = _pillow_decode_error(path, rel, root)
            if rej is not None:
                return None, rej
        return None, Reject(rel, -1, "unreadable", "OpenCV could not decode the image (truncated?)")
    if img.dtype != np.uint8:
        return None, Reject(rel, -1, "bit_depth", f"{img.dtype} pixels, expected 8-bit")
    if mode in _GRAY_MODES or img.ndim == 2 or img.shape[2] in (1, 2):
        return None, Reject(rel, -1, "grayscale", f"single-channel image (mode {mode}, with or without alpha)")
    if img.shape[2] == 4:
        if int(img[:, :, 3].min()) < 255:
            return None, Reject(rel, -1, "alpha", "translucent RGBA image")
    elif img.shape[2] != 3:
        return None, Reject(rel, -1, "channels", f"{img.shape[2]} channels")
    if rgb_jpeg:
        rgb = img
    else:  # BGR(A) -> RGB in one vectorised pass (a reversed-stride numpy copy costs 10x more)
        rgb = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    transposed = orientation in _ORIENT
    if transposed:
        rgb = _ORIENT[orientation](rgb)
    return Decoded(np.ascontiguousarray(rgb), fmt or path.suffix.lower().lstrip("."), transposed), None


def _pillow_decode_error(path: Path, rel: str, root: Path) -> Reject | None:
    """The reject Pillow's full decode of ``path`` gives (None if it decodes): the message a PNG
    that OpenCV cannot decode gets, as when Pillow decoded every PNG before OpenCV."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reject with its text
        return Reject(rel, -1, "unreadable", relative_message(f"not a readable image: {exc}", root))
    return None
