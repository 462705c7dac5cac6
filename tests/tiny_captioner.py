"""Tiny seeded captioning models and image files (good and broken) for the export, focus and CLI tests."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captionlens.data.images import Preprocessing
from captionlens.data.vocabulary import Vocabulary
from captionlens.models import CNNLSTMModel, ShowAttendTellConfig, ShowAttendTellModel, ShowTellConfig
from captionlens.models.base import CaptionModel

WORDS = ("a", "dog", "dogs", "hotdog", "ball", "red", "and", "on", "plate")
IMAGE_SIZE = 32


def tiny_model(attention: bool = False, seed: int = 0) -> CaptionModel:
    """A 32 px tiny-trunk model in eval mode with its vocabulary attached (untrained: captions are noise)."""
    torch.manual_seed(seed)
    vocab = Vocabulary(WORDS)
    common = {"vocab_size": len(vocab), "embed_size": 16, "hidden_size": 16, "backbone": "tiny",
              "preprocessing": Preprocessing(image_size=IMAGE_SIZE)}
    model: CaptionModel
    if attention:
        model = ShowAttendTellModel(ShowAttendTellConfig(**common, attention_dim=16, grid_size=2))
    else:
        model = CNNLSTMModel(ShowTellConfig(**common))
    model.vocab = vocab
    return calibrate_batchnorm(model)


def calibrate_batchnorm(model: CaptionModel, image_size: int = IMAGE_SIZE) -> CaptionModel:
    """Running statistics from one batch of noise, then eval mode: with fresh statistics the tiny trunk's
    activations fade layer by layer, so word scores would hardly depend on the image (as a trained
    model's do) and signed maps (occlusion, LIME) would be all zero."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one batch sets the statistics exactly
    model.train()
    with torch.no_grad():
        model.encode(torch.randn(8, 3, image_size, image_size))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def noise_image(seed: int, hw: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8))


def write_images(folder: Path, names: list[str], hw: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE),
                 seed: int = 0) -> list[Path]:
    """Noise images (seeds seed, seed + 1, ...) saved under `folder`, in the format their suffix says."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        noise_image(seed + k, hw).save(folder / name)
    return [folder / name for name in names]


def write_broken(folder: Path) -> list[Path]:
    """A JPEG with garbage in its entropy-coded data, a PNG cut in half and a text file named .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    jpeg, png = io.BytesIO(), io.BytesIO()
    noise_image(1).save(jpeg, format="JPEG")
    noise_image(2).save(png, format="PNG")
    corrupt = bytearray(jpeg.getvalue())
    third = len(corrupt) // 3
    corrupt[third:third + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    (folder / "corrupt.jpg").write_bytes(bytes(corrupt))
    (folder / "cut.png").write_bytes(png.getvalue()[:len(png.getvalue()) // 2])
    (folder / "notes.jpg").write_text("not an image\n")
    return [folder / "corrupt.jpg", folder / "cut.png", folder / "notes.jpg"]
