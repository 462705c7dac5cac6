"""Fuzzing `read_image` / `decode_image`: every pixel mode and format a user hands us (PNG, JPEG with EXIF
orientation, WebP, GIF, BMP, TIFF, 16-bit), mutated as bytes (PNG chunks' CRCs recomputed half the time, so
the mutation reaches the decoder rather than the checksum), and files that declare sizes no memory holds
(PIL's decompression-bomb guard, as the loaders use it). See harness.py for the contract."""
from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from harness import Blob, Seeds, byte_mutations, check_reader, check_refused, fuzz_settings, write
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from captionlens.data.images import decode_image, read_image

READER = "`read_image`, `decode_image` (PNG, JPEG, WebP, GIF, BMP, TIFF)"  # its row in the table of `make fuzz`


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def seeds() -> Seeds:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: exif_transpose turns it
    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    return Seeds({
        "rgb.png": _encode(rgb, "PNG"), "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "palette.png": _encode(palette, "PNG"), "la.png": _encode(rgb.convert("LA"), "PNG"),
        "16bit.png": _encode(Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16)), "PNG"),
        "photo.jpg": _encode(rgb, "JPEG", quality=80, exif=exif), "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "image.webp": _encode(rgb, "WEBP", lossless=True), "image.gif": _encode(palette, "GIF"),
        "image.bmp": _encode(rgb, "BMP"), "float.tif": _encode(Image.fromarray(rng.random((6, 5), np.float32)), "TIFF"),
    })


def _fix_png_crcs(data: bytes) -> bytes:
    """A PNG's chunks with their CRCs recomputed (as far as the chunk lengths stay within the file)."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, at = bytearray(data), 8
    while at + 12 <= len(out):
        length = struct.unpack(">I", out[at:at + 4])[0]
        end = at + 8 + length
        if end + 4 > len(out):
            break
        out[end:end + 4] = struct.pack(">I", zlib.crc32(out[at + 4:end]))
        at = end + 4
    return Blob(out)


def accept(result: tuple[Image.Image, bytes | None]) -> None:
    """A decoded image is whole: 8-bit RGB of a positive size, with the file's bytes when they are kept."""
    image, kept = result
    assert image.mode == "RGB" and image.width > 0 and image.height > 0
    assert np.asarray(image).shape == (image.height, image.width, 3)


def _read(tmp_path, name: str, data: bytes) -> None:
    path = write(tmp_path / name, data)
    check_reader(lambda: read_image(path), {path.name}, accept)
    check_reader(lambda: (decode_image(data, path.name), None), {path.name}, accept)


def test_seeds_load(seeds, tmp_path):
    for name, data in seeds.items():
        accept(read_image(write(tmp_path / name, data)))


@fuzz_settings()
@given(data=st.data())
def test_bytes(seeds, tmp_path, data):
    name = data.draw(st.sampled_from(sorted(seeds)), label="seed")
    mutated = data.draw(byte_mutations(seeds[name], head=256), label="file")
    if data.draw(st.booleans(), label="fix PNG CRCs"):
        mutated = _fix_png_crcs(mutated)
    _read(tmp_path, name, mutated)


def _png_declaring(width: int, height: int, mode: int = 2) -> bytes:
    """A PNG whose header declares `width` x `height` (colour type `mode`) over a few bytes of pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
            + chunk(b"IEND", b""))


def _gif_declaring(width: int, height: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"," + struct.pack("<HHHH", 0, 0, width,
            height) + b"\x00\x02\x02\x44\x01\x00;")


def _bmp_declaring(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) + info + b"\x00" * 16


@pytest.mark.parametrize("data", [
    pytest.param(_png_declaring(100_000, 100_000), id="PNG 10 gigapixels"),
    pytest.param(_png_declaring(2**31 - 1, 2**31 - 1, mode=6), id="PNG 2^62 pixels RGBA"),
    pytest.param(_png_declaring(9_500, 9_500), id="PNG just over PIL's limit, truncated"),
    pytest.param(_png_declaring(0, 10), id="PNG of width 0"),
    pytest.param(_gif_declaring(65_535, 65_535), id="GIF 4 gigapixels"),
    pytest.param(_bmp_declaring(60_000, -60_000), id="BMP 3.6 gigapixels, top-down"),
    pytest.param(_bmp_declaring(-5, 5), id="BMP of negative width"),
])
def test_huge_and_negative_declared_sizes(tmp_path, data):
    _read(tmp_path, "bomb.img", data)


# Inputs the fuzzer found crashing the reader, each with what it raised before the fix.
CRASHES = {
    "TypeError from a TIFF tag of the wrong kind": (
        b"II*\x00\x08\x00\x00\x00\n\x00\x00\x01\x04\x00\x01\x00\x00\x00\x05\x00\x00\x00\x01\x01\x04\x00\x01\x00\x00"
        b"\x00\x06\x00\x00\x00\x02\x01\x03\x00\x01\x00\x00\x00 \x00\x00\x00\x03\x01\x03\x00\x01\x00\x00\x00\x01\x00"
        b"\x00\x00\x06\x01\x03\x00\x01\x00\x00\x00\x01\x00\x00\x00\x11\x01\x05\x00\x01\x00\x00\x00\x86\x00\x00\x00"
        b"\x16\x01\x04\x00\x01\x00\x00\x00\x06\x00\x00\x00\x17\x01\x04\x00\x01\x00\x00\x00x\x00\x00\x00\x1c\x01\x03"
        b"\x00\x01\x00\x00\x00\x01\x00\x00\x00S\x01\x03\x00\x01\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00"
        + b"\x00" * 120),
}


@pytest.mark.parametrize("data", [pytest.param(data, id=name) for name, data in CRASHES.items()])
def test_crashes_found(tmp_path, data):
    path = write(tmp_path / "found.tif", data)
    check_refused(lambda: read_image(path), {path.name})
    check_refused(lambda: decode_image(data, path.name), {path.name})
