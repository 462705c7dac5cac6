"""What is known about each word of a model's own caption: its class, the pixels of the object it names,
and (on the synthetic shapes) whether any object supports it at all.

Shapes (`shapes_truths`): shape nouns, colour and size adjectives name the one object `data.shapes.
word_refs` resolves them to (exact object mask and box); a word is *supported* when an object has it
— a shape noun when some object has that shape, a colour or size adjective when some object has that
colour or size *and the shape of its noun phrase* (so "a red circle" beside a red square and a blue
circle is an unsupported colour). Function words are a closed list of English function words; the
rest ("picture", "background", "left", numbers) is "other".
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from captionlens.data.shapes import COLOURS, SHAPES, SIZES, word_refs

FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every all both no not of in on at by with from to for into onto
over under above below near behind beside between through up down out off and or but nor so is are was were
be been being am has have had do does did it its itself he she they them his her their there here as while
who which what whose next""".split())
CONTENT_CLASSES = ("shape noun", "colour adjective", "size adjective")


@dataclass
class WordTruth:
    """Ground truth of one generated word (None: not known for this word)."""

    word_class: str
    mask: np.ndarray | None = None                      # the referent's pixels (H, W) bool
    box: tuple[float, float, float, float] | None = None  # its [x0, y0, x1, y1), pixels
    supported: bool | None = None
    types: tuple[str, ...] = field(default_factory=tuple)   # Flickr30k Entities' phrase types
    area: float | None = None                           # the referent's share of the image
    category: str | None = None                         # COCO: the category the word names ...
    supercategory: str | None = None                    # ... its supercategory
    size: str | None = None                             # ... and COCO's size class of its instances

    def __post_init__(self) -> None:
        if self.mask is not None and self.area is None:
            self.area = float(np.asarray(self.mask).mean())

    def without_mask(self) -> WordTruth:
        """This truth with its mask dropped (its area kept): what an evaluation keeps of every word."""
        return replace(self, mask=None)


def function_or_other(token: str) -> str:
    return "function word" if token in FUNCTION_WORDS else "other"


def shapes_class(token: str) -> str:
    if token in SHAPES:
        return "shape noun"
    if token in COLOURS:
        return "colour adjective"
    if token in SIZES:
        return "size adjective"
    return function_or_other(token)


def phrase_shapes(tokens: Sequence[str]) -> list[str | None]:
    """For each adjective, the shape noun its run of adjectives ends in (None when the run ends otherwise);
    for each shape noun, itself; None for other words."""
    out: list[str | None] = [None] * len(tokens)
    for i, token in enumerate(tokens):
        if token in SHAPES:
            out[i] = token
            j = i - 1
            while j >= 0 and (tokens[j] in COLOURS or tokens[j] in SIZES):
                out[j] = token
                j -= 1
    return out


def shapes_support(objects: Sequence[dict[str, Any]], tokens: Sequence[str]) -> list[bool | None]:
    """Whether some object supports each content word (see the module doc); None for other words."""
    nouns = phrase_shapes(tokens)
    support: list[bool | None] = []
    for token, noun in zip(tokens, nouns):
        candidates = [o for o in objects if noun is None or o["shape"] == noun]
        if token in SHAPES:
            support.append(any(o["shape"] == token for o in objects))
        elif token in COLOURS:
            support.append(any(o["colour"] == token for o in candidates))
        elif token in SIZES:
            support.append(any(o["size"] == token for o in candidates))
        else:
            support.append(None)
    return support


def shapes_truths(grounding: dict[str, Any], labels: np.ndarray, filename: str,
                  tokens: Sequence[str]) -> list[WordTruth]:
    """Per token of a caption of shapes image `filename`, given its label mask (0 background, id + 1)."""
    objects = grounding["images"][filename]["objects"]
    boxes = {o["id"]: tuple(float(v) for v in o["bbox"]) for o in objects}
    refs = word_refs(grounding, filename, list(tokens))
    support = shapes_support(objects, tokens)
    truths = []
    for token, ref, supported in zip(tokens, refs, support):
        if ref is None:
            truths.append(WordTruth(shapes_class(token), supported=supported))
        else:
            truths.append(WordTruth(shapes_class(token), labels == ref + 1, boxes[ref], supported))  # type: ignore[arg-type]
    return truths
