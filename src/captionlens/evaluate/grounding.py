"""Grounding on the synthetic scenes: does each method's map for a shape noun peak on that object?

The model explains the caption it generates itself; `data.shapes.word_boxes` resolves each shape
noun of that caption to the one object it can only mean (or to nothing when the caption is wrong or
ambiguous — those words are not scored), and the pointing game compares the map's peak with the
object's exact box. The random-point baseline is the exact expected rate of a uniformly random pixel.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from captionlens.data.datasets import load_dataset
from captionlens.data.shapes import SHAPES, load_grounding, word_boxes
from captionlens.evaluate.explanation_metrics import PointingResult, pointing_game
from captionlens.explain.api import explain_batch
from captionlens.models.protocol import Captioner


def shapes_grounding(model: Captioner, data_dir: str | os.PathLike, methods: Sequence[str],
                     split: str = "test", limit: int | None = 30, beam_size: int = 1, batch_size: int = 16,
                     settings: dict[str, dict[str, Any]] | None = None) -> dict[str, PointingResult]:
    """Pointing-game results per method over the shape nouns of the model's own captions."""
    data_dir = Path(data_dir)
    grounding = load_grounding(data_dir)
    records = load_dataset(data_dir, "shapes").split(split).records[:limit]
    explanations, boxes = [], []
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        for record, expl in zip(batch, explain_batch(model, [r.image_path for r in batch], methods,
                                                     beam_size=beam_size, settings=settings)):
            word_box = word_boxes(grounding, record.image_path.name, expl.tokens)
            boxes.append([box if token in SHAPES else None for token, box in zip(expl.tokens, word_box)])
            explanations.append(expl)
    return pointing_game(explanations, boxes, methods)
