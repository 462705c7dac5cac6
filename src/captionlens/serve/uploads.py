"""What the server accepts as an image: at most `Limits.max_bytes` bytes and `Limits.max_pixels` pixels, and
a file the loaders can read; anything else is refused with one clear message (`Refused`) before the
model sees it.

The pixel count is read from the file's header before anything is decoded, so a small file that
would decompress to a huge image (a decompression bomb) costs nothing; the decoding itself is the
loaders' (`data.images.decode_image`: EXIF rotation, grayscale, transparency, 16-bit, and Pillow's own
decompression-bomb guard).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from captionlens.data.images import ImageLoadError, decode_image

MEGABYTE = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * MEGABYTE
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError(f"upload limits must be >= 1, got {self.max_bytes} bytes and {self.max_pixels} pixels")


class Refused(ValueError):
    """An image the server does not take: `status` is the HTTP status that says why (413: too large, 400: not
    an image)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def too_large(size: int, limit: int, name: str) -> Refused:
    shown, most = readable(size), readable(limit)
    if shown == most:                            # rounded alike: say it in bytes
        shown, most = f"{size:,} bytes", f"{limit:,} bytes"
    return Refused(f"{name} is {shown}, more than the {most} this server accepts", 413)


def readable(size: int) -> str:
    """A byte count as people read it: 512 bytes, 48 KB, 20.0 MB."""
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 1024:.0f} KB" if size < MEGABYTE else f"{size / MEGABYTE:.1f} MB"


def open_image(data: bytes, name: str, limits: Limits) -> Image.Image:
    """The RGB image of an image file's bytes, or `Refused` naming the file and the reason."""
    if len(data) > limits.max_bytes:
        raise too_large(len(data), limits.max_bytes, name)
    try:
        with Image.open(io.BytesIO(data)) as probe:                 # reads the header only
            width, height = probe.size
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - whatever a corrupt header raises, decode_image names it below
        width = height = 0
    if width * height > limits.max_pixels:
        raise Refused(f"{name}: {width} x {height} = {width * height:,} pixels is more than the "
                      f"{limits.max_pixels:,} this server accepts", 413)
    try:
        return decode_image(data, name)
    except ImageLoadError as exc:
        raise Refused(f"{exc} (not an image this server can read)", 400) from None
