"""Image loading and a model's input preprocessing: the one place both live.

`load_image` turns whatever a user points at (grayscale, palette, transparent, CMYK, 16-bit,
rotated phone JPEGs) into a plain RGB image or one clear `ImageLoadError`, so that models and
explanation methods only ever see 8-bit RGB.
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
                  "bicubic": InterpolationMode.BICUBIC, "lanczos": InterpolationMode.LANCZOS}

KEPT_FORMATS = {"JPEG", "PNG", "WEBP"}  # compressed files an explanation keeps as they are
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}  # what a folder's images are named
_HIGH_BIT_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


class ImageLoadError(ValueError):
    """A file that cannot be read as an image; the message names the file and why."""


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """How a model's input is made from an RGB image: a resize to `image_size` x `image_size` with
    `interpolation` (PIL's filter of that name), then scaling to [0, 1] and per-channel normalisation.

    Every checkpoint carries its own (the tutorials' importers record theirs), so captioning and
    explanations feed a model exactly what it was trained on.
    """

    image_size: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    MAX_IMAGE_SIZE: ClassVar[int] = 4096  # a checkpoint asking for more would resize every photo past any memory

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or isinstance(self.image_size, bool) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}")
        if self.image_size > self.MAX_IMAGE_SIZE:
            raise ValueError(f"image_size must be at most {self.MAX_IMAGE_SIZE}, got {self.image_size}")
        if not isinstance(self.interpolation, str) or self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}")
        for name in ("mean", "std"):
            given = getattr(self, name)
            try:
                value = tuple(float(v) for v in given)
            except (TypeError, ValueError, OverflowError):
                value = ()
            finite = len(value) == 3 and all(math.isfinite(v) and math.isfinite(np.float32(v)) for v in value)
            if not finite or (name == "std" and min(np.float32(v) for v in value) <= 0):  # > 0 in float32 too
                raise ValueError(f"{name} must be three finite numbers (std > 0), got {given!r:.60}")
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "interpolation": self.interpolation, "mean": list(self.mean),
                "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        if not isinstance(data, dict):
            raise ValueError(f"preprocessing must be a JSON object, got {data!r:.40}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown preprocessing field(s) {sorted(unknown)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def resize_uint8(self, image: Image.Image) -> torch.Tensor:
        """The resize step alone, kept as uint8 (3, s, s): 4x smaller to cache than the float input."""
        size = (self.image_size, self.image_size)
        return TF.pil_to_tensor(TF.resize(image, list(size), interpolation=INTERPOLATIONS[self.interpolation]))

    def normalize_uint8(self, image: torch.Tensor) -> torch.Tensor:
        """The rest of `transform` on a `resize_uint8` tensor (..., 3, s, s); equal to `transform`'s result."""
        return TF.normalize(image.float().div(255), list(self.mean), list(self.std))

    def transform(self, image: Image.Image) -> torch.Tensor:
        """PIL RGB image -> the model's float input (3, s, s)."""
        return self.normalize_uint8(self.resize_uint8(image))

    def normalize_colour(self, rgb: Sequence[float]) -> tuple[float, float, float]:
        """An RGB colour in 0..255 as it appears in the normalised input."""
        return tuple((c / 255.0 - m) / s for c, m, s in zip(rgb, self.mean, self.std))  # type: ignore[return-value]

    def denormalize(self, tensor: torch.Tensor | np.ndarray) -> np.ndarray:
        """Inverse of the normalisation, for display: (3, H, W) tensor -> (H, W, 3) uint8."""
        x = torch.as_tensor(tensor).detach().cpu().float()
        if x.ndim != 3 or x.shape[0] != 3:
            raise ValueError(f"denormalize expects a (3, H, W) tensor, got shape {tuple(x.shape)}")
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        x = (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
        return x.permute(1, 2, 0).numpy()


def max_image_pixels() -> int:
    """The most pixels an image may have: past twice `PIL.Image.MAX_IMAGE_PIXELS` Pillow refuses to decode a
    file as a decompression bomb, and a file declaring an image size is held to the same limit."""
    return 2 * int(Image.MAX_IMAGE_PIXELS or 0) or 2**62


def _high_bit_depth_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit values scale 0..65535 -> 0..255 (full scale stays full scale, nothing clips);
    anything wider (32-bit integers or floats) is stretched from its min..max."""
    if values.dtype.kind in "iu" and values.min() >= 0 and values.max() <= 65535:
        return np.round(values / 257.0).astype(np.uint8)
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        return Image.fromarray(_high_bit_depth_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        # Transparent pixels become white, as a viewer shows them, not black as a bare convert would.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Fully decoded RGB image with its EXIF orientation applied.

    Raises `ImageLoadError` naming the file when it is missing, not an image, truncated or corrupt.
    """
    return read_image(path)[0]


def read_image(path: str | os.PathLike) -> tuple[Image.Image, bytes | None]:
    """`load_image`'s image, and the file's bytes when it is in a compressed format worth keeping as it
    is (`KEPT_FORMATS`): an explanation file then stores those bytes instead of encoding the image again."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # a folder, no permission, a NUL in the name
        raise ImageLoadError(f"{path}: cannot read file ({_reason(exc)})") from None
    image, fmt = _decode(data, path)
    return image, data if fmt in KEPT_FORMATS else None


def decode_image(data: bytes, name: str | os.PathLike) -> Image.Image:
    """The RGB image of an encoded file's bytes, exactly as `load_image` makes it from the file (`name`
    is for the error message)."""
    return _decode(data, name)[0]


def _decode(data: bytes, name: str | os.PathLike) -> tuple[Image.Image, str | None]:
    """Pillow's decoders raise whatever a corrupt file leads them to (OSError, SyntaxError, TypeError from a
    TIFF tag of the wrong kind, ...): each is the file's fault, and one ImageLoadError. A file declaring more
    pixels than Pillow's decompression-bomb limit allows (twice `Image.MAX_IMAGE_PIXELS`) is refused before
    any is decoded; MemoryError, a limit of the machine's, is not the file's and passes."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image)), image.format
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ImageLoadError(f"{name}: cannot read image ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not a recognised image format"
    return " ".join(str(exc).split()) or type(exc).__name__


def load_image_tensor(path: str | os.PathLike, preprocessing: Preprocessing) -> tuple[torch.Tensor, np.ndarray]:
    """(model input (3, s, s), original image (H, W, 3) uint8) of one file."""
    image = load_image(path)
    return preprocessing.transform(image), np.asarray(image)
