"""The tests' tiny-model zoo: every seeded captioning model a test needs comes from `tiny_captioner`,
with the word lists the tests share, and the noise image files (good and broken) that the export,
focus, distributed and CLI tests caption.

One builder for both architectures: it asks the model registry (`captionlens.models.ARCHITECTURES`)
for the architecture's config class and builds with `build_model`, so a new architecture needs no
change here. A test that wants something the builder does not do (sharper decoder weights, a bias on
<END>, double precision) changes the model it gets back; a test of the model classes themselves
(a subclass with another forward, `pretrained=True`) or of a tutorial's own code builds its own.

`tests/` is on `sys.path` (the rootdir conftest): `from zoo import tiny_captioner`.
"""
from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captionlens.data.images import Preprocessing
from captionlens.data.vocabulary import Vocabulary
from captionlens.explain.scoring import NO_FOIL
from captionlens.explain.target import TargetLayer
from captionlens.models import ARCHITECTURES, build_model
from captionlens.models.base import CaptionModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from custom_captioner import GRUCaptioner  # noqa: E402

# The words of the generated shapes captions: the conftest fixtures' vocabulary (`vocab`).
SHAPE_WORDS = ("a", "red", "blue", "green", "circle", "square", "triangle", "above", "below", "left", "of", "right",
               "the", "and", "small", "large")
# Keywords and near misses ("dogs", "hotdog") for the image-file tests (export, focus, distributed, CLI).
FILE_WORDS = ("a", "dog", "dogs", "hotdog", "ball", "red", "and", "on", "plate")
# Words without meaning, for tests that only need a vocabulary of some size (`NUMBERED_WORDS[:n]`).
NUMBERED_WORDS = tuple(f"w{i}" for i in range(20))

IMAGE_SIZE = 32           # the zoo's default model input, and the image files' default size
EXPLAIN_IMAGE_SIZE = 64   # the conftest fixtures' models: the tiny trunk's 8x8 map at the target layer


def tiny_captioner(architecture: str = "show-tell", *, vocab: Vocabulary | Iterable[str],
                   image_size: int = IMAGE_SIZE, embed_size: int = 16, hidden_size: int = 16,
                   attention_dim: int = 16, grid_size: int | None = 2, backbone: str = "tiny",
                   head: str | None = None, attention_activation: str | None = None,
                   num_layers: int | None = None, dropout: float | None = None,
                   seed: int = 0, calibrate: bool = True, attach_vocab: bool = True) -> CaptionModel:
    """A random `architecture` ("show-tell", "show-attend-tell": a name in the model registry) over
    `vocab` (a `Vocabulary`, or its words) taking `image_size` px input, in eval mode.

    `torch.manual_seed(seed)` comes right before the model is built, so the same arguments give the
    same weights. `attention_dim` and `grid_size` (None: the trunk's own map) go to the architectures
    whose config has them; `head`, `attention_activation`, `num_layers` and `dropout` are left at the
    config's defaults unless given (a field the architecture lacks is its config's TypeError).
    `calibrate`: batch-norm statistics from one batch of noise (see `calibrate_batchnorm`), without
    which explanations of the untrained trunk are nearly flat; `attach_vocab`: `model.vocab = vocab`,
    as loading a checkpoint does, so that callers need not pass the vocabulary again.
    """
    vocab = vocab if isinstance(vocab, Vocabulary) else Vocabulary(vocab)
    config_class = ARCHITECTURES[architecture].config_class
    takes = {field.name for field in fields(config_class)}
    sizes = {"attention_dim": attention_dim, "grid_size": grid_size}
    chosen = {"head": head, "attention_activation": attention_activation, "num_layers": num_layers,
              "dropout": dropout}
    config = config_class(vocab_size=len(vocab), embed_size=embed_size, hidden_size=hidden_size, backbone=backbone,
                          preprocessing=Preprocessing(image_size=image_size),
                          **{name: value for name, value in sizes.items() if name in takes},
                          **{name: value for name, value in chosen.items() if value is not None})
    torch.manual_seed(seed)
    model = build_model(config)
    if calibrate:
        calibrate_batchnorm(model, image_size)
    if attach_vocab:
        model.vocab = vocab
    return model.eval()


def autograd_word_grads(model: CaptionModel, target: TargetLayer, activations: torch.Tensor, captions: torch.Tensor,
                        lengths: list[int], score: str, foils: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient oracle: for each image and word, d score / dA by one plain autograd call through the model's
    own teacher-forced forward (no replication, no written-out backward). With `foils` ((B, T) vocabulary ids,
    NO_FOIL where there is none), the score at a position with a foil is log p(word) - log p(foil)."""
    grads = []
    for b, n in enumerate(lengths):
        for t in range(n):
            leaf = activations[b:b + 1].clone().requires_grad_()
            hidden, _ = model.teacher_forced_hidden(target.upper(leaf), captions[b:b + 1])
            logits = model.output_logits(hidden)[0, t]
            word = int(captions[b, t + 1])
            foil = NO_FOIL if foils is None else int(foils[b, t])
            if foil != NO_FOIL:
                log_probs = logits.log_softmax(-1)
                value = log_probs[word] - log_probs[foil]
            else:
                value = (logits.log_softmax(-1) if score == "log_prob" else logits)[word]
            grads.append(torch.autograd.grad(value, leaf)[0][0])
    return torch.stack(grads)


# The models every gradient route is checked on (`gradient_variant`): both architectures, a batch-norm head,
# both attention nonlinearities and the example's own GRU captioner (a `Captioner` we did not write), 32 px.
VARIANT_VOCAB = Vocabulary(NUMBERED_WORDS)
_VARIANT_SIZES = {"vocab": VARIANT_VOCAB, "embed_size": 12, "hidden_size": 16, "attention_dim": 8, "grid_size": 3,
                  "calibrate": False, "attach_vocab": False}
_VARIANTS: dict[str, Callable[[], torch.nn.Module]] = {
    "show-tell": lambda: tiny_captioner("show-tell", **_VARIANT_SIZES),
    "show-tell, batch-norm head": lambda: tiny_captioner("show-tell", **_VARIANT_SIZES, head="linear-batchnorm"),
    "show-attend-tell, tanh": lambda: tiny_captioner("show-attend-tell", **_VARIANT_SIZES),
    "show-attend-tell, relu": lambda: tiny_captioner("show-attend-tell", **_VARIANT_SIZES,
                                                     attention_activation="relu"),
    "custom GRU captioner": lambda: GRUCaptioner(VARIANT_VOCAB, channels=8, hidden=12, image_size=32),
}
GRADIENT_VARIANTS = tuple(_VARIANTS)


def gradient_variant(name: str) -> torch.nn.Module:
    """The variant `name` of `GRADIENT_VARIANTS` in double precision and eval mode, its batch-norm statistics
    from noise and its decoder weights doubled (so that activations and gradients are not tiny)."""
    torch.manual_seed(0)
    model = _VARIANTS[name]().double()
    model.train()
    with torch.no_grad():
        model.encode(torch.randn(8, 3, 32, 32, dtype=torch.float64))
        for parameter_name, p in model.named_parameters():
            if not parameter_name.startswith(("encoder.resnet", "stages")):
                p.mul_(2.0)
    return model.eval()


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
