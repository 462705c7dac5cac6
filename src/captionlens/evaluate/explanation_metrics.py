"""Is an explanation true? Grounding (pointing game) against known object boxes, and deletion curves.

Pointing game: a word's map "hits" when its peak lies inside the box of the object the word refers
to. The random-point baseline is the exact expected hit rate of a uniformly random pixel
(box area / image area), not a sampled estimate.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from captionlens.explain.maps import upsample
from captionlens.explain.result import CaptionExplanation
from captionlens.explain.scoring import batched_word_scores, caption_tensor
from captionlens.models.protocol import Captioner, eval_mode, require_vocab

Box = Sequence[float]  # [x0, y0, x1, y1], x1/y1 exclusive, in image pixels


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    """(row, col) of the map's maximum; the first one in row-major order on ties."""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(row), int(col)


def point_in_box(row: int, col: int, box: Box) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= col < x1 and y0 <= row < y1


def box_fraction(box: Box, hw: tuple[int, int]) -> float:
    """Share of the image a box covers: the chance that a uniformly random pixel falls inside it."""
    x0, y0, x1, y1 = box
    return max(0.0, min(x1, hw[1]) - max(x0, 0)) * max(0.0, min(y1, hw[0]) - max(y0, 0)) / (hw[0] * hw[1])


@dataclass
class PointingResult:
    hits: int = 0
    total: int = 0
    baseline: float = 0.0   # summed expected hits of a random point

    @property
    def rate(self) -> float:
        return self.hits / self.total if self.total else float("nan")

    @property
    def baseline_rate(self) -> float:
        return self.baseline / self.total if self.total else float("nan")

    def as_dict(self) -> dict[str, float | int]:
        return {"hits": self.hits, "total": self.total, "rate": self.rate, "random_baseline": self.baseline_rate}


def pointing_game(explanations: Sequence[CaptionExplanation], boxes: Sequence[Sequence[Box | None]],
                  methods: Sequence[str] | None = None) -> dict[str, PointingResult]:
    """Pointing-game results per method over the words that have a box (`boxes[i][t]`, None = not grounded)."""
    results: dict[str, PointingResult] = {}
    for expl, word_boxes in zip(explanations, boxes, strict=True):
        if len(word_boxes) != len(expl.tokens):
            raise ValueError(f"{len(word_boxes)} boxes for a caption of {len(expl.tokens)} words")
        for name in methods or expl.methods:
            result = results.setdefault(name, PointingResult())
            maps = expl[name].maps
            for t, box in enumerate(word_boxes):
                if box is None:
                    continue
                result.total += 1
                result.hits += point_in_box(*peak(maps[t]), box)
                result.baseline += box_fraction(box, maps[t].shape)
    return results


@torch.no_grad()
def deletion_scores(model: Captioner, image_tensor: torch.Tensor, token_ids: Sequence[int], maps: np.ndarray,
                    steps: int = 10, fill: float = 0.0, batch_size: int = 64) -> np.ndarray:
    """Deletion curve per word: the word's log-prob as the most salient pixels (by its own map,
    resized to the model input) are replaced by `fill`, from 0% to 100% in `steps` steps.

    Returns (T, steps + 1). A faithful map makes the score fall fast (low area under the curve);
    compare with the curve for a random map. All T x (steps + 1) images are scored in batches.
    """
    vocab = require_vocab(model)
    _, _, height, width = image_tensor.shape
    saliency = upsample(maps, (height, width)).reshape(len(token_ids), -1)
    order = np.argsort(-saliency, axis=1, kind="stable")
    counts = np.linspace(0, height * width, steps + 1).round().astype(int)
    keep = np.ones((len(token_ids), steps + 1, height * width), dtype=bool)
    for t in range(len(token_ids)):
        for s, n in enumerate(counts):
            keep[t, s, order[t, :n]] = False
    keep_t = torch.from_numpy(keep).to(image_tensor.device).view(-1, 1, height, width)
    images = torch.where(keep_t, image_tensor, torch.full_like(image_tensor, fill))
    with eval_mode(model):
        scores = batched_word_scores(model, images, caption_tensor(token_ids, vocab, image_tensor.device),
                                     batch_size=batch_size)
    per_word = scores.view(len(token_ids), steps + 1, len(token_ids))
    return per_word.diagonal(dim1=0, dim2=2).T.cpu().numpy()  # word t's score on images ordered by map t
