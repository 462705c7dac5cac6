"""Image loading and the model's input transform: the one place both live.

`load_image` turns whatever a user points at (grayscale, palette, transparent, CMYK, 16-bit,
rotated phone JPEGs) into a plain RGB image or one clear `ImageLoadError`, so that models and
explanation methods only ever see 8-bit RGB.
"""
from __future__ import annotations

import os
import struct

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_HIGH_BIT_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
# What a corrupt or unsupported file makes Pillow raise (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


class ImageLoadError(ValueError):
    """A file that cannot be read as an image; the message names the file and why."""


def make_transform(image_size: int = 224) -> transforms.Compose:
    """PIL RGB image -> float tensor (3, s, s), resized and ImageNet-normalised."""
    return transforms.Compose([
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def resize_uint8(image: Image.Image, image_size: int) -> torch.Tensor:
    """The resize step of `make_transform` alone, kept as uint8 (3, s, s): 4x smaller to cache."""
    resized = transforms.Resize((image_size, image_size))(image)
    return TF.pil_to_tensor(resized)


def normalize_uint8(image: torch.Tensor) -> torch.Tensor:
    """The rest of `make_transform` on a `resize_uint8` tensor; the result equals `make_transform`'s."""
    return TF.normalize(image.float().div(255), IMAGENET_MEAN, IMAGENET_STD)


def denormalize(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    """Inverse of the normalisation, for display: (3, H, W) tensor -> (H, W, 3) uint8."""
    x = torch.as_tensor(tensor).detach().cpu().float()
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"denormalize expects a (3, H, W) tensor, got shape {tuple(x.shape)}")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(1, 2, 0).numpy()


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
    if not os.path.exists(path):
        raise ImageLoadError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(f"{path}: cannot read image ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not a recognised image format"
    return str(exc) or type(exc).__name__


def load_image_tensor(path: str | os.PathLike, image_size: int = 224) -> tuple[torch.Tensor, np.ndarray]:
    """(model input (3, s, s), original image (H, W, 3) uint8) of one file."""
    image = load_image(path)
    return make_transform(image_size)(image), np.asarray(image)
