"""CHAIR (Rohrbach et al. 2018, "Object Hallucination in Image Captioning"): how often captions name an
object that is not in the image.

An object mention is a word or phrase of a caption that the synonym table (`SynonymTable`, by default
evaluate/data/coco_synonyms.txt: the 80 COCO categories) maps to a category; it is *hallucinated* when
that category is not in the image's ground truth. As the paper defines it, an image's ground truth is
the union of its annotated instances' categories (crowd regions included) and the categories its
reference captions mention (`coco_ground_truth`). Then

  CHAIR_i = hallucinated mentions / all mentions          (every mention counts, repeats included,
  CHAIR_s = captions with a hallucinated mention / captions  as the paper's released code counts them)

`chair(captions, ground_truth)` scores any captions against any ground truth (category names);
`chair_on_coco` against a COCO folder's annotations, `load_captions` reads a captions file a user brings.
"""
from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from captionlens.data.coco import CocoAnnotations, CocoImage
from captionlens.data.records import read_json, read_text
from captionlens.data.vocabulary import tokenize

SYNONYMS_FILE = Path(__file__).parent / "data" / "coco_synonyms.txt"
SHIPPED = "captionlens/evaluate/data/coco_synonyms.txt"  # how results name the shipped table
NO_OBJECT = "none"  # the table's key for phrases that name no COCO object


@dataclass(frozen=True)
class ObjectMention:
    """Words of a caption that name a category: `words` as matched (e.g. "hot dogs"), the category's name,
    and their token span [start, stop) in the caption's tokens (`data.vocabulary.tokenize`)."""

    words: str
    category: str
    start: int
    stop: int

    def to_json(self) -> dict[str, Any]:
        return {"words": self.words, "category": self.category, "start": self.start, "stop": self.stop}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObjectMention:
        return cls(data["words"], data["category"], data["start"], data["stop"])


class SynonymTable:
    """Which phrases name which category (None: a phrase that names no object, e.g. "bus stop")."""

    def __init__(self, phrases: Mapping[tuple[str, ...], str | None], source: str) -> None:
        self.phrases = dict(phrases)
        self.source = source
        self.categories = frozenset(c for c in self.phrases.values() if c is not None)
        self.longest = max((len(p) for p in self.phrases), default=0)

    @classmethod
    def load(cls, path: str | os.PathLike = SYNONYMS_FILE) -> SynonymTable:
        """Read a table in the format documented at the top of coco_synonyms.txt; errors name the line."""
        path = Path(path)
        phrases: dict[tuple[str, ...], str | None] = {}
        where: dict[tuple[str, ...], int] = {}
        categories: dict[str, int] = {}
        for lineno, line in enumerate(read_text(path).splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, rest = line.partition(":")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"{path}:{lineno}: expected '<category>: <phrase>, <phrase>, ...'")
            if key != NO_OBJECT:
                if key in categories:
                    raise ValueError(f"{path}:{lineno}: category {key!r} is also on line {categories[key]}")
                categories[key] = lineno
            listed = [phrase.strip() for phrase in rest.split(",")]
            if key != NO_OBJECT and key not in listed:
                raise ValueError(f"{path}:{lineno}: category {key!r} is not among its own phrases")
            for phrase in listed:
                tokens = tuple(tokenize(phrase))
                if not tokens or " ".join(tokens) != phrase:
                    raise ValueError(f"{path}:{lineno}: phrase {phrase!r} is not written as the tokenizer writes "
                                     f"it ({' '.join(tokens)!r})")
                if tokens in phrases:
                    raise ValueError(f"{path}:{lineno}: phrase {phrase!r} is also on line {where[tokens]}")
                phrases[tokens], where[tokens] = (None if key == NO_OBJECT else key), lineno
        if not categories:
            raise ValueError(f"{path}: no categories")
        return cls(phrases, SHIPPED if path.resolve() == SYNONYMS_FILE.resolve() else str(path))

    def find(self, tokens: Sequence[str]) -> list[ObjectMention]:
        """The object mentions of a token sequence: left to right, the longest phrase at each token wins;
        a phrase that names no object consumes its words."""
        mentions: list[ObjectMention] = []
        start = 0
        while start < len(tokens):
            for length in range(min(self.longest, len(tokens) - start), 0, -1):
                words = tuple(tokens[start:start + length])
                if words in self.phrases:
                    category = self.phrases[words]
                    if category is not None:
                        mentions.append(ObjectMention(" ".join(words), category, start, start + length))
                    start += length
                    break
            else:
                start += 1
        return mentions

    def mentions(self, text: str) -> list[ObjectMention]:
        """`find` on a caption's tokens (`data.vocabulary.tokenize`: lower case, punctuation dropped)."""
        return self.find(tokenize(text))


@lru_cache(maxsize=1)
def coco_synonyms() -> SynonymTable:
    """The shipped table of the 80 COCO categories (read once)."""
    return SynonymTable.load(SYNONYMS_FILE)


@dataclass(frozen=True)
class CaptionObjects:
    """One caption's object mentions, those its image's ground truth lacks, and that ground truth."""

    image_id: str
    caption: str
    objects: tuple[ObjectMention, ...]
    hallucinated: tuple[ObjectMention, ...]
    ground_truth: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "caption": self.caption,
                "objects": [m.to_json() for m in self.objects],
                "hallucinated": [m.to_json() for m in self.hallucinated],
                "ground_truth": list(self.ground_truth)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CaptionObjects:
        return cls(data["image_id"], data["caption"], tuple(ObjectMention.from_json(m) for m in data["objects"]),
                   tuple(ObjectMention.from_json(m) for m in data["hallucinated"]), tuple(data["ground_truth"]))


@dataclass(frozen=True)
class CategoryCount:
    """Mentions of one category over the captions, and how many of them were hallucinated."""

    mentions: int
    hallucinated: int


@dataclass(frozen=True)
class ChairResult:
    """CHAIR of a set of captions: the two rates, the counts behind them, per category and per caption.

    `chair_i` is None when no caption mentions an object (nothing to measure)."""

    chair_i: float | None
    chair_s: float
    captions: int
    captions_hallucinating: int
    mentions: int
    mentions_hallucinated: int
    categories: Mapping[str, CategoryCount]
    per_caption: tuple[CaptionObjects, ...]
    synonyms: str

    def to_json(self) -> dict[str, Any]:
        return {"chair_i": self.chair_i, "chair_s": self.chair_s, "captions": self.captions,
                "captions_hallucinating": self.captions_hallucinating, "mentions": self.mentions,
                "mentions_hallucinated": self.mentions_hallucinated,
                "categories": {name: {"mentions": c.mentions, "hallucinated": c.hallucinated}
                               for name, c in self.categories.items()},
                "per_caption": [c.to_json() for c in self.per_caption], "synonyms": self.synonyms}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChairResult:
        return cls(data["chair_i"], data["chair_s"], data["captions"], data["captions_hallucinating"],
                   data["mentions"], data["mentions_hallucinated"],
                   {name: CategoryCount(c["mentions"], c["hallucinated"]) for name, c in data["categories"].items()},
                   tuple(CaptionObjects.from_json(c) for c in data["per_caption"]), data["synonyms"])


def chair(captions: Mapping[Any, str], ground_truth: Mapping[Any, Collection[str]],
          table: SynonymTable | None = None) -> ChairResult:
    """CHAIR of one caption per image (image id -> caption) against each image's objects (image id -> the
    category names present, e.g. from `coco_ground_truth`). Every captioned image needs a ground truth,
    whose names must be categories of `table` (default: `coco_synonyms()`)."""
    table = table or coco_synonyms()
    if not captions:
        raise ValueError("no captions to score")
    missing = [key for key in captions if key not in ground_truth]
    if missing:
        raise ValueError(f"no ground truth for image {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    per_caption = []
    counts: dict[str, list[int]] = {}
    for key, text in captions.items():
        if not isinstance(text, str):
            raise ValueError(f"the caption of image {key!r} is not text: {text!r:.60}")
        present = set(ground_truth[key])
        unknown = sorted(present - table.categories)
        if unknown:
            raise ValueError(f"the ground truth of image {key!r} names {unknown[0]!r}, which is not a category of "
                             f"the synonym table {table.source}")
        objects = tuple(table.mentions(text))
        hallucinated = tuple(m for m in objects if m.category not in present)
        for mention in objects:
            count = counts.setdefault(mention.category, [0, 0])
            count[0] += 1
            count[1] += mention.category not in present
        per_caption.append(CaptionObjects(str(key), text, objects, hallucinated, tuple(sorted(present))))
    mentions = sum(len(c.objects) for c in per_caption)
    wrong = sum(len(c.hallucinated) for c in per_caption)
    hallucinating = sum(bool(c.hallucinated) for c in per_caption)
    return ChairResult(wrong / mentions if mentions else None, hallucinating / len(per_caption), len(per_caption),
                       hallucinating, mentions, wrong,
                       {name: CategoryCount(*counts[name]) for name in sorted(counts)}, tuple(per_caption),
                       table.source)


def coco_ground_truth(images: Iterable[CocoImage], table: SynonymTable | None = None) -> dict[str, frozenset[str]]:
    """Each image's objects for CHAIR, by file name: the categories of its instances (crowd regions too)
    and those its reference captions mention. An instance category the table lacks is an error."""
    table = table or coco_synonyms()
    truth = {}
    for image in images:
        for instance in image.instances:
            if instance.category.name not in table.categories:
                raise ValueError(f"image {image.file_name}: annotation {instance.id} has category "
                                 f"{instance.category.name!r}, which is not in the synonym table {table.source}")
        mentioned = {m.category for caption in image.captions for m in table.mentions(caption)}
        truth[image.file_name] = image.categories | mentioned
    return truth


def chair_on_coco(captions: Mapping[Any, str], annotations: CocoAnnotations,
                  table: SynonymTable | None = None) -> ChairResult:
    """`chair` of captions keyed by COCO file name or id (as `CocoAnnotations.image` takes them) against
    the ground truth of `annotations`; image ids are reported as given."""
    images: dict[Any, CocoImage] = {}
    unknown = []
    for key in captions:
        try:
            images[key] = annotations.image(key)
        except KeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} captioned images are not in {annotations.root} "
                         f"(first: {', '.join(map(str, unknown[:5]))})")
    truth = coco_ground_truth(images.values(), table)
    return chair(captions, {key: truth[image.file_name] for key, image in images.items()}, table)


def load_captions(path: str | os.PathLike) -> dict[str, str]:
    """Captions a user brings: a JSON object {image id: caption}, or COCO's results format, a list of
    {"image_id": ..., "caption": ...}; ids are COCO file names or ids. Errors name the file and entry."""
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict):
        pairs = list(data.items())
    elif isinstance(data, list):
        pairs = []
        for index, entry in enumerate(data):
            if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
                raise ValueError(f"{path}: [{index}] is not an object with 'image_id' and 'caption'")
            pairs.append((entry["image_id"], entry["caption"]))
    else:
        raise ValueError(f"{path}: expected {{image id: caption}} or a list of {{image_id, caption}}")
    captions: dict[str, str] = {}
    for key, text in pairs:
        if not isinstance(text, str):
            raise ValueError(f"{path}: the caption of image {key!r} is not text: {text!r:.60}")
        if str(key) in captions:
            raise ValueError(f"{path}: image {key!r} has two captions (CHAIR scores one per image)")
        captions[str(key)] = text
    if not captions:
        raise ValueError(f"{path}: no captions")
    return captions
