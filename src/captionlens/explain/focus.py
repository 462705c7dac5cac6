"""Keyword focus: where does the model look when it writes "dog", across every image whose caption says "dog"?

The images are captioned once, in batches; each keyword then picks the images whose caption has it
as a word (a token match: "dog" does not match "hotdog"), those captions are explained once per
image with one method (teacher-forced, so no second decoding), and each keyword collects that
word's map from each of its images: resized to a common `size` x `size` grid (so maps align by
relative image position), normalised per map (min-max, or value / max|value| for signed methods),
and averaged into a mean map. `viz.focus` draws and writes the result.
"""
from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from captionlens.data.images import ImageLoadError
from captionlens.data.vocabulary import tokenize
from captionlens.explain.api import check_explain_arguments, explain_batch
from captionlens.explain.maps import resize_map, scale_maps
from captionlens.explain.registry import is_signed
from captionlens.models.captioning import caption_files
from captionlens.models.protocol import Captioner, require_vocab


@dataclass
class KeywordFocus:
    """One keyword's matching images and that word's normalised (N, size, size) maps on them."""

    keyword: str
    paths: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    word_index: list[int] = field(default_factory=list)   # the keyword's first position in each caption
    maps: list[np.ndarray] = field(default_factory=list)  # (size, size) each, normalised
    thumbnails: list[np.ndarray] = field(default_factory=list)  # (size, size, 3) uint8, for overlays
    signed: bool = False

    @property
    def count(self) -> int:
        return len(self.paths)

    @property
    def mean_map(self) -> np.ndarray | None:
        """Pixel-wise mean of the normalised maps, or None when no image matched."""
        return np.asarray(np.mean(self.maps, axis=0, dtype=np.float64), np.float32) if self.maps else None


@dataclass
class FocusResult:
    method: str
    size: int
    captions: dict[str, str]                        # every captioned image's caption, by path
    keywords: dict[str, KeywordFocus]
    failed: list[dict[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # keywords the model's vocabulary lacks

    def lines(self) -> list[str]:
        """`found N images with 'dog'` / `none with 'ball'`, one line per keyword."""
        out = []
        for name, focus in self.keywords.items():
            if focus.count:
                out.append(f"found {focus.count} image{'s' * (focus.count != 1)} with '{name}'")
            else:
                out.append(f"none with '{name}'" + (" (not in the model's vocabulary)" if name in self.unknown else ""))
        return out


def keyword_focus(model: Captioner, image_paths: Sequence[str | os.PathLike], keywords: Sequence[str],
                  method: str = "gradcam", limit: int = 100, beam_size: int = 1, batch_size: int = 16,
                  size: int = 64, max_length: int = 20, settings: dict[str, Any] | None = None,
                  verbose: bool = True) -> FocusResult:
    """Caption the first `limit` images, then collect each keyword's maps (see the module doc).

    `settings` are the method's keyword arguments (e.g. {"num_samples": 300} for LIME).
    Unreadable images are reported in one line each on stderr and listed in `failed`; with `verbose`,
    `FocusResult.lines()` are printed.
    """
    words = _keyword_tokens(keywords)
    check_explain_arguments(model, [method], beam_size, max_length, "log_prob", None, {method: settings or {}})
    if limit < 1 or size < 1:
        raise ValueError(f"limit and size must be >= 1, got limit={limit}, size={size}")
    paths = [str(p) for p in list(image_paths)[:limit]]
    if not paths:
        raise ValueError("no images to look for keywords in")
    vocab = require_vocab(model)
    result = FocusResult(method, size, {}, {w: KeywordFocus(w) for w in words},
                         unknown=[w for w in words if w not in vocab])
    decoded = caption_files(model, paths, beam_size=beam_size, max_length=max_length, batch_size=batch_size)
    tokens: dict[str, list[str]] = {}
    for path, outcome in zip(paths, decoded):
        if isinstance(outcome, ImageLoadError):
            print(f"error: {' '.join(str(outcome).split())}", file=sys.stderr)
            result.failed.append({"path": path, "error": str(outcome)})
        else:
            tokens[path] = outcome.words
            result.captions[path] = outcome.caption
    matched = [p for p in tokens if any(w in tokens[p] for w in words)]
    for start in range(0, len(matched), batch_size):
        _collect(model, matched[start:start + batch_size], tokens, result, settings or {})
    if verbose:
        print("\n".join(result.lines()))
    return result


def _keyword_tokens(keywords: Sequence[str]) -> list[str]:
    """Each keyword as the one token a caption would hold ("Dog" -> "dog"); duplicates dropped."""
    out = []
    for keyword in keywords:
        tokens = tokenize(keyword)
        if len(tokens) != 1:
            raise ValueError(f"keyword {keyword!r} must be one word")
        out.append(tokens[0])
    if not out:
        raise ValueError("no keywords given")
    return list(dict.fromkeys(out))


def _collect(model: Captioner, paths: list[str], tokens: dict[str, list[str]], result: FocusResult,
             settings: dict[str, Any]) -> None:
    """Explain these images' own captions (teacher-forced) and file each keyword's map under it."""
    with warnings.catch_warnings():
        # The model's own words are in its vocabulary; only <UNK>/<PAD> it emitted would warn, harmlessly.
        warnings.simplefilter("ignore", UserWarning)
        explanations = explain_batch(model, paths, (result.method,), captions=[" ".join(tokens[p]) for p in paths],
                                     settings={result.method: settings})
    for path, expl in zip(paths, explanations):
        maps = expl[result.method].maps
        signed = is_signed(result.method, maps)
        thumbnail = np.asarray(Image.fromarray(expl.image).resize((result.size,) * 2, Image.Resampling.BILINEAR))
        for word, focus in result.keywords.items():
            if word not in tokens[path]:
                continue
            index = tokens[path].index(word)
            focus.signed = focus.signed or signed
            resized = resize_map(maps[index], (result.size, result.size))[None]
            focus.maps.append(scale_maps(resized, signed)[0])
            focus.paths.append(path)
            focus.captions.append(expl.caption)
            focus.word_index.append(index)
            focus.thumbnails.append(thumbnail)
