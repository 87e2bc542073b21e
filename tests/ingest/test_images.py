"""Still images are decoded once: the EXIF orientation comes from the header (a PNG's eXIf, EXIF or
XMP text chunks after the image data included) without Pillow decoding the pixels, and every result
equals what Pillow's full ``getexif()`` (which decodes a PNG) gives."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile

from dfpipe.ingest.images import read_image


def _chunk(cid: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + cid + data + struct.pack(">I", zlib.crc32(cid + data))


def _exif_payload(orientation: int) -> bytes:
    ex = Image.Exif()
    ex[0x0112] = orientation
    raw = ex.tobytes()
    return raw[6:] if raw.startswith(b"Exif\x00\x00") else raw


def _png(rgb: np.ndarray, after_idat: list[bytes] = (), before_idat: list[bytes] = ()) -> bytes:
    """cv2's PNG of ``rgb`` with extra chunks inserted before the first IDAT / before IEND."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    data = buf.tobytes()
    first_idat = data.index(b"IDAT") - 4
    iend = data.rindex(b"IEND") - 4
    return data[:first_idat] + b"".join(before_idat) + data[first_idat:iend] + b"".join(after_idat) + data[iend:]


def _itxt(key: str, text: str) -> bytes:
    return _chunk(b"iTXt", key.encode() + b"\x00\x00\x00\x00\x00" + text.encode())


def _raw_profile(orientation: int) -> bytes:
    hexed = _exif_payload(orientation).hex()
    text = f"\nexif\n{len(hexed) // 2}\n{hexed}\n"
    return _chunk(b"tEXt", b"Raw profile type exif\x00" + text.encode("latin-1"))


def _pillow_orientation(path) -> int:
    """The former reading: Pillow's getexif(), which loads (decodes) a PNG."""
    with Image.open(path) as im:
        return int(im.getexif().get(0x0112, 1) or 1)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)


CASES = {
    "none": dict(),
    "exif_before_idat": dict(before_idat=[_chunk(b"eXIf", _exif_payload(6))]),
    "exif_after_idat": dict(after_idat=[_chunk(b"eXIf", _exif_payload(8))]),
    "xmp_after_idat": dict(after_idat=[_itxt("XML:com.adobe.xmp", '<x tiff:Orientation="3"/>')]),
    "raw_profile_after_idat": dict(after_idat=[_raw_profile(6)]),
    "text_after_idat_no_exif": dict(after_idat=[_chunk(b"tEXt", b"Comment\x00hello")]),
    "both_before_wins": dict(
        before_idat=[_chunk(b"eXIf", _exif_payload(6))], after_idat=[_chunk(b"eXIf", _exif_payload(3))]
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_png_orientation_from_chunks_without_decoding(tmp_path, rgb, case, monkeypatch):
    path = tmp_path / "x.png"
    path.write_bytes(_png(rgb, **CASES[case]))
    want = _pillow_orientation(path)
    if case in ("exif_after_idat", "xmp_after_idat", "raw_profile_after_idat"):
        assert want != 1  # the case does exercise a trailing orientation
    calls = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(1) or real_load(self))
    dec, rej = read_image(path, 10**7)
    assert rej is None and calls == []  # no Pillow decode: OpenCV decodes the pixels once
    assert dec.exif_transposed == (want != 1)
    expect = {1: rgb, 3: rgb[::-1, ::-1], 6: np.rot90(rgb, -1), 8: np.rot90(rgb, 1)}[want]
    np.testing.assert_array_equal(dec.rgb, expect)


def test_the_no_decode_check_fires(tmp_path, rgb, monkeypatch):
    """Control: the former reading (PNG getexif) does call Pillow's load, which the test counts."""
    path = tmp_path / "x.png"
    path.write_bytes(_png(rgb, after_idat=[_chunk(b"eXIf", _exif_payload(6))]))
    calls = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(1) or real_load(self))
    assert _pillow_orientation(path) == 6 and calls


def test_jpeg_orientation_without_decoding(tmp_path, rgb, monkeypatch):
    path = tmp_path / "x.jpg"
    ex = Image.Exif()
    ex[0x0112] = 6
    Image.fromarray(rgb).save(path, exif=ex, quality=95)
    calls = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(1) or real_load(self))
    dec, rej = read_image(path, 10**7)
    assert rej is None and calls == [] and dec.exif_transposed and dec.rgb.shape == (56, 40, 3)


def test_truncated_png_keeps_pillows_message(tmp_path, rgb):
    """A PNG that cannot be decoded gets the reject text it got when Pillow decoded it first."""
    path = tmp_path / "cut.png"
    data = _png(np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as im:
        with pytest.raises(Exception) as exc:
            im.load()
    dec, rej = read_image(path, 10**7, root=tmp_path)
    assert dec is None and rej.reason == "unreadable"
    assert rej.detail == f"not a readable image: {exc.value}", rej.detail


def test_unreadable_file_message_names_the_file(tmp_path):
    path = tmp_path / "junk.png"
    path.write_bytes(b"not an image at all")
    dec, rej = read_image(path, 10**7, root=tmp_path)
    assert dec is None and rej.reason == "unreadable" and "junk.png" in rej.detail and "BytesIO" not in rej.detail
