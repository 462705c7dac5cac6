"""`explain()`: per-word maps for the caption a model produces (or a given caption), any methods at once."""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from captionlens.data.images import load_image, make_transform
from captionlens.data.vocabulary import Vocabulary, tokenize
from captionlens.explain.result import CaptionExplanation, MethodMaps
from captionlens.explain.scoring import LayerSplit, Score, caption_tensor, scores_from_features
from captionlens.models.base import CaptionModel
from captionlens.models.decoding import decode_features

ImageLike = str | Path | Image.Image | np.ndarray


@dataclass
class ExplainContext:
    """Everything a method needs for one image and one caption."""

    model: CaptionModel
    vocab: Vocabulary
    image: np.ndarray             # (H, W, 3) uint8 original
    image_tensor: torch.Tensor    # (1, 3, S, S) normalised model input, on the model's device
    captions: torch.Tensor        # (1, T + 2) <START> words <END>
    token_ids: list[int]
    split: LayerSplit             # the model cut at the target layer
    activations: torch.Tensor     # (1, C, h, w) target-layer activations of image_tensor, no grad
    score: Score = "log_prob"

    @property
    def num_words(self) -> int:
        return len(self.token_ids)

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.image.shape[0], self.image.shape[1]


MethodFn = Callable[..., MethodMaps]
METHODS: dict[str, MethodFn] = {}


def register(name: str) -> Callable[[MethodFn], MethodFn]:
    """Decorator: make `fn(ctx, **settings) -> MethodMaps` available as `methods=(name, ...)`."""
    def wrap(fn: MethodFn) -> MethodFn:
        METHODS[name] = fn
        return fn
    return wrap


def check_methods(model: CaptionModel, methods: Sequence[str]) -> None:
    """Raise one ValueError for a method name that does not exist or that `model` cannot run."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; available: {sorted(METHODS)}")
    if "attention" in methods and not model.has_attention:
        raise ValueError(f"'attention' needs a Show-Attend-Tell model; {type(model).__name__} has no attention")


def _as_pil(image: ImageLike) -> tuple[Image.Image, str | None]:
    if isinstance(image, (str, Path)):
        return load_image(image), str(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image array must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        return Image.fromarray(image), None
    if isinstance(image, Image.Image):
        return image.convert("RGB"), None
    raise TypeError(f"image must be a path, PIL image or (H, W, 3) uint8 array, got {type(image).__name__}")


def _resolve_vocab(model: CaptionModel, vocab: Vocabulary | None) -> Vocabulary:
    vocab = vocab or model.vocab
    if vocab is None:
        raise ValueError("no vocabulary: pass vocab=..., or load the model with captionlens.load()")
    return vocab


def _given_caption_ids(caption: str, vocab: Vocabulary) -> list[int]:
    tokens = tokenize(caption)
    if not tokens:
        raise ValueError(f"caption {caption!r} has no words")
    unknown = [t for t in tokens if t not in vocab]
    if unknown:
        warnings.warn(f"caption words not in the vocabulary, explained as <UNK>: {', '.join(unknown)}",
                      stacklevel=3)
    return vocab.encode(tokens, add_special=False)


def explain(model: CaptionModel, image: ImageLike, methods: Sequence[str] = ("gradcam",),
            caption: str | None = None, vocab: Vocabulary | None = None, beam_size: int = 3,
            max_length: int = 20, score: Score = "log_prob", target_layer: str | int | None = None,
            image_size: int | None = None, settings: dict[str, dict[str, Any]] | None = None) -> CaptionExplanation:
    """Explain every word of one caption of one image with each of `methods`.

    With `caption=None` the explained caption is the one the model produces with these decoding
    settings (beam search when beam_size > 1); with a string, that caption is teacher-forced.
    `settings` maps a method name to its keyword arguments, e.g. {"lime": {"num_samples": 500}}.
    """
    return explain_batch(model, [image], methods, None if caption is None else [caption], vocab, beam_size,
                         max_length, score, target_layer, image_size, settings)[0]


def explain_batch(model: CaptionModel, images: Sequence[ImageLike], methods: Sequence[str] = ("gradcam",),
                  captions: Sequence[str] | None = None, vocab: Vocabulary | None = None, beam_size: int = 3,
                  max_length: int = 20, score: Score = "log_prob", target_layer: str | int | None = None,
                  image_size: int | None = None,
                  settings: dict[str, dict[str, Any]] | None = None) -> list[CaptionExplanation]:
    """`explain` for many images: the encoder runs once per image (its target-layer activations are
    reused by decoding, scoring and the gradient methods), captions are decoded in one batch, then
    each method runs per image."""
    check_methods(model, methods)
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions given for {len(images)} images")
    vocab = _resolve_vocab(model, vocab)
    device = next(model.parameters()).device
    transform = make_transform(image_size or model.config.get("image_size", 224))
    loaded = [_as_pil(img) for img in images]
    tensors = torch.stack([transform(pil) for pil, _ in loaded]).to(device)
    was_training = model.training
    model.eval()
    split = LayerSplit(model, target_layer)
    try:
        with torch.no_grad():
            activations = split.lower(tensors)
            features = split.upper(activations)
        if captions is None:
            decoded = decode_features(model, features, vocab, max_length=max_length, beam_size=beam_size)
            id_lists = [d.token_ids for d in decoded]
            log_prob_lists = [d.log_probs for d in decoded]  # decoding's own, equal to teacher forcing
            decoding = {"beam_size": beam_size, "max_length": max_length, "source": "generated"}
        else:
            id_lists = [_given_caption_ids(c, vocab) for c in captions]
            with torch.no_grad():
                log_prob_lists = [scores_from_features(model, features[i:i + 1], caption_tensor(ids, vocab, device),
                                                       "log_prob")[0].tolist() for i, ids in enumerate(id_lists)]
            decoding = {"source": "given"}
        decoding.update(score=score, target_layer=split.name)
        results = []
        for i, ((pil, path), ids, log_probs) in enumerate(zip(loaded, id_lists, log_prob_lists)):
            ctx = ExplainContext(model, vocab, np.asarray(pil), tensors[i:i + 1],
                                 caption_tensor(ids, vocab, device), list(ids), split, activations[i:i + 1], score)
            results.append(_explain_one(ctx, np.asarray(log_probs, np.float32), methods, settings or {}, decoding,
                                        path))
        return results
    finally:
        model.train(was_training)


def _explain_one(ctx: ExplainContext, log_probs: np.ndarray, methods: Sequence[str],
                 settings: dict[str, dict[str, Any]], decoding: dict[str, Any], path: str | None) -> CaptionExplanation:
    ids = ctx.token_ids
    result = CaptionExplanation(image=ctx.image, tokens=[ctx.vocab.idx2word[i] for i in ids], token_ids=list(ids),
                                log_probs=log_probs, source=decoding["source"], decoding=dict(decoding),
                                image_path=path)
    if not ids:
        return result
    for name in methods:
        start = time.perf_counter()
        maps = METHODS[name](ctx, **settings.get(name, {}))
        maps.seconds = time.perf_counter() - start
        result.methods[name] = maps
    return result
