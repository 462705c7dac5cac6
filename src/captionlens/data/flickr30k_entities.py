"""Flickr30k Entities (Plummer et al.): Flickr30k's captions with their noun phrases linked to boxes.

Layout, all in one folder:
  Sentences/<id>.txt      one caption a line, phrases marked `[/EN#<chain>/<type>[/<type>...] words]`;
                          chain 0 (type `notvisual`) is a phrase with no box
  Annotations/<id>.xml    PASCAL-VOC-like: `<size>` then `<object>`s, each naming one or more chains
                          (`<name>`) and holding a `<bndbox>` (1-based, inclusive pixels) or the flags
                          `<nobndbox>` / `<scene>` (a chain with no box)
  train.txt val.txt test.txt   image ids, one a line
  flickr30k-images/<id>.jpg    (or Images/<id>.jpg)

`load_flickr30k_entities` reads the captions (markup removed) as a `CaptionDataset`, whose records'
`image_id` is the image's file name `<id>.jpg` as in the other loaders and Karpathy's
dataset_flickr30k.json. The grounding is read one image at a time (`load_entities`: the full
dataset has 31,783 images); `word_grounding` maps any word sequence, e.g. a model's own caption,
onto the image's boxes, and `entity_counts` gives the phrase counts an evaluation reports.
"""
from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

import numpy as np

from captionlens.data.images import max_image_pixels
from captionlens.data.records import CaptionDataset, CaptionRecord, image_folder, read_bytes, read_text
from captionlens.data.vocabulary import tokenize

ENTITY_SPLITS = ("train", "val", "test")
IMAGE_FOLDERS = ("flickr30k-images", "Images")
SENTENCES = "Sentences"
ANNOTATIONS = "Annotations"
NO_BOX_CHAIN = 0  # the chain id of `notvisual` phrases
_MARKER = re.compile(r"^\[/EN#(?P<chain>[^/\]\s]*)(?P<types>(?:/[^/\]\s]+)+)$")
_CHAIN_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() takes "²", which int() refuses


@dataclass(frozen=True)
class Phrase:
    """One marked phrase of a caption.

    `caption` is the caption's index among the image's captions (blank lines are not captions),
    `first_word` the index of the phrase's first word among the caption's words (the plain
    caption split on white space, punctuation words included), `chain` its chain id (0: no box)
    and `types` its entity types, e.g. ("people", "other").
    """

    caption: int
    first_word: int
    words: tuple[str, ...]
    chain: int
    types: tuple[str, ...]

    @property
    def head(self) -> str:
        """The head noun: the phrase's last word, lower-cased as by `tokenize` ("T-shirt" -> "tshirt");
        a last word that is all punctuation is passed over; "" when every word is."""
        for word in reversed(self.words):
            tokens = tokenize(word)
            if tokens:
                return "".join(tokens)
        return ""

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class ImageEntities:
    """The grounding of one image: its captions, their phrases and the boxes of their chains.

    `boxes[chain]` lists the chain's boxes as [x0, y0, x1, y1], 0-based with x1, y1 exclusive
    (converted from the XML's 1-based inclusive pixels: x0 = xmin - 1, x1 = xmax); a chain that
    no `<object>` gives a box has no key. `nobox` and `scene` hold the chains flagged
    `<nobndbox>` and `<scene>`; `chains` every chain some `<object>` names.
    """

    image_id: str
    width: int
    height: int
    captions: list[str]
    phrases: list[Phrase]
    boxes: dict[int, list[list[int]]]
    nobox: frozenset[int]
    scene: frozenset[int]
    chains: frozenset[int]

    def has_boxes(self, chain: int) -> bool:
        return bool(self.boxes.get(chain))

    def chain_boxes(self, chains: Iterable[int]) -> list[list[int]]:
        """The boxes of the chains, in chain order, each box once."""
        found: list[list[int]] = []
        for chain in chains:
            for box in self.boxes.get(chain, []):
                if box not in found:
                    found.append(box)
        return found

    def mask(self, chains: Iterable[int]) -> np.ndarray:
        """Boolean (height, width) mask of the union of the chains' boxes (boxes clipped to the image)."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        for x0, y0, x1, y1 in self.chain_boxes(chains):
            mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        return mask


@dataclass
class Grounded:
    """What one word of a caption names: the chains, their boxes (0-based, x1/y1 exclusive) and types."""

    head: str
    chains: tuple[int, ...]
    boxes: list[list[int]]
    types: tuple[str, ...]

    @property
    def bbox(self) -> list[int]:
        """The smallest box [x0, y0, x1, y1] holding all of `boxes`."""
        return [min(b[0] for b in self.boxes), min(b[1] for b in self.boxes),
                max(b[2] for b in self.boxes), max(b[3] for b in self.boxes)]


@dataclass(frozen=True)
class EntityCounts:
    """Counts of a set of images: `phrases` is every marked phrase of their captions (notvisual ones
    included), `phrases_with_boxes` those whose chain has at least one box."""

    images: int
    captions: int
    phrases: int
    phrases_with_boxes: int


def load_flickr30k_entities(root: str | os.PathLike, image_root: str | os.PathLike | None = None
                            ) -> CaptionDataset:
    """Records of the images listed in train.txt / val.txt / test.txt, with their plain captions.

    Images listed in no split file are left out. Each listed image needs its Sentences/<id>.txt and
    Annotations/<id>.xml (the XML is only checked to exist here; `load_entities` parses it). Images
    are looked for in `image_root`, else root/flickr30k-images/ or root/Images/, as <id>.jpg.
    """
    root = Path(root)
    splits = read_entity_splits(root)
    image_dir = image_folder(root, image_root, IMAGE_FOLDERS)
    annotations = _listing(root / ANNOTATIONS)
    records = []
    for image_id, (split, split_file, lineno) in splits.items():
        sentences = root / SENTENCES / f"{image_id}.txt"
        try:
            text = read_text(sentences)
        except FileNotFoundError:
            raise FileNotFoundError(f"{split_file}:{lineno}: image {image_id} has no sentences file "
                                    f"{sentences}") from None
        except ValueError as exc:  # unreadable (a name too long for the file system) or not UTF-8
            raise ValueError(f"{split_file}:{lineno}: image {image_id[:40]}: {exc}") from None
        if f"{image_id}.xml" not in annotations:
            raise FileNotFoundError(_no_xml(root, image_id))
        captions = [" ".join(words) for words, _ in _parse_sentences(text, sentences)]
        records.append(CaptionRecord(image_dir / f"{image_id}.jpg", captions, split, f"{image_id}.jpg"))
    return CaptionDataset.from_records(records, root)


def read_entity_splits(root: str | os.PathLike) -> dict[str, tuple[str, Path, int]]:
    """Image id -> (split, split file, line) from root's train.txt, val.txt and test.txt (all three needed)."""
    root = Path(root)
    absent = [f"{split}.txt" for split in ENTITY_SPLITS if not (root / f"{split}.txt").is_file()]
    if absent:
        raise FileNotFoundError(f"{root}: no {', '.join(absent)} (Flickr30k Entities needs train.txt, "
                                "val.txt and test.txt)")
    found: dict[str, tuple[str, Path, int]] = {}
    for split in ENTITY_SPLITS:
        path = root / f"{split}.txt"
        for lineno, line in enumerate(read_text(path).splitlines(), 1):
            image_id = line.strip()
            if not image_id:
                continue
            if "/" in image_id or "\\" in image_id or "\x00" in image_id or image_id in (".", ".."):
                raise ValueError(f"{path}:{lineno}: {image_id[:40]!r} is not an image id (a file name without "
                                 "its .jpg)")
            if image_id in found:
                _, other, other_line = found[image_id]
                raise ValueError(f"{path}:{lineno}: image {image_id} is also listed in {other}:{other_line}")
            found[image_id] = (split, path, lineno)
    return found


def load_entities(root: str | os.PathLike, image_id: str) -> ImageEntities:
    """The grounding of one image (`image_id` either "<id>" or "<id>.jpg"): Sentences/<id>.txt and
    Annotations/<id>.xml, checked against each other (a phrase's chain, unless 0, must be named by
    some `<object>`)."""
    root = Path(root)
    image_id = image_id[:-4] if image_id.endswith(".jpg") else image_id
    sentences = root / SENTENCES / f"{image_id}.txt"
    text = read_text(sentences)
    xml = root / ANNOTATIONS / f"{image_id}.xml"
    if not xml.is_file():
        raise FileNotFoundError(_no_xml(root, image_id))
    width, height, boxes, nobox, scene, chains = _parse_annotation(xml)
    parsed = _parse_sentences(text, sentences, chains, xml)
    return ImageEntities(image_id, width, height, [" ".join(words) for words, _ in parsed],
                         [phrase for _, phrases in parsed for phrase in phrases], boxes, nobox, scene, chains)


def word_grounding(entities: ImageEntities, tokens: Iterable[str]) -> list[Grounded | None]:
    """What each token of any word sequence (e.g. a model's generated caption) names in the image.

    The rule: a token names something when it equals (after `tokenize`'s lower-casing and
    punctuation stripping) the head noun (`Phrase.head`, the phrase's last word) of some phrase of
    any of the image's reference captions whose chain has at least one box. It then gets every
    chain with a boxed phrase of that head noun, the union of those chains' boxes and the types
    of those phrases (sorted). Every other token, including adjectives and the words of notvisual
    or box-less phrases, gets None. `entities.mask(grounded.chains)` is the union's pixel mask.
    """
    chains: dict[str, set[int]] = {}
    types: dict[str, set[str]] = {}
    for phrase in entities.phrases:
        head = phrase.head
        if head and entities.has_boxes(phrase.chain):
            chains.setdefault(head, set()).add(phrase.chain)
            types.setdefault(head, set()).update(phrase.types)
    grounded: list[Grounded | None] = []
    for token in tokens:
        word = "".join(tokenize(token))
        if word in chains:
            named = tuple(sorted(chains[word]))
            grounded.append(Grounded(word, named, entities.chain_boxes(named), tuple(sorted(types[word]))))
        else:
            grounded.append(None)
    return grounded


def entity_counts(root: str | os.PathLike, images: str | CaptionDataset | Iterable[str]) -> EntityCounts:
    """Image, caption and phrase counts of a split name ("test": every id test.txt lists), of a loaded
    `CaptionDataset` (its records: images missing on disk are not counted) or of image ids.

    Each image is read with `load_entities`, so every file is checked as it is counted.
    """
    if isinstance(images, str):
        if images not in ENTITY_SPLITS:
            raise ValueError(f"unknown split {images!r}; expected one of {', '.join(ENTITY_SPLITS)}")
        ids = [i for i, (split, _, _) in read_entity_splits(root).items() if split == images]
    elif isinstance(images, CaptionDataset):
        ids = [record.image_id for record in images]
    else:
        ids = list(images)
    n_captions = n_phrases = n_boxed = 0
    for image_id in ids:
        entities = load_entities(root, image_id)
        n_captions += len(entities.captions)
        n_phrases += len(entities.phrases)
        n_boxed += sum(entities.has_boxes(p.chain) for p in entities.phrases)
    return EntityCounts(len(ids), n_captions, n_phrases, n_boxed)


def _no_xml(root: Path, image_id: str) -> str:
    return (f"{root / ANNOTATIONS / (image_id + '.xml')}: no such file (image {image_id} has sentences in "
            f"{root / SENTENCES / (image_id + '.txt')})")



def _listing(folder: Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(folder)}
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}: no such folder") from None


# --- Sentences/<id>.txt ---------------------------------------------------------------------------

def _parse_sentences(text: str, path: Path, known: Collection[int] | None = None, xml: Path | None = None
                     ) -> list[tuple[list[str], list[Phrase]]]:
    """(words, phrases) of each caption line; with `known`, a phrase's chain (not 0) must be in it."""
    captions: list[tuple[list[str], list[Phrase]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        words, phrases = _parse_line(line, len(captions), where)
        if known is not None:
            for phrase in phrases:
                if phrase.chain != NO_BOX_CHAIN and phrase.chain not in known:
                    raise ValueError(f"{where}: phrase {phrase.text!r} has unknown chain id {phrase.chain} "
                                     f"(no <object> in {xml} names it)")
        captions.append((words, phrases))
    if not captions:
        raise ValueError(f"{path}: no captions")
    return captions


def _parse_line(line: str, caption: int, where: str) -> tuple[list[str], list[Phrase]]:
    words: list[str] = []
    phrases: list[Phrase] = []
    marker = ""  # the open phrase's marker, "" when none is open
    chain, start = 0, 0
    types: tuple[str, ...] = ()
    for token in line.split():
        if not marker:
            if token.startswith("["):
                match = _MARKER.match(token)
                if match is None:
                    if "]" in token and _MARKER.match(token[:token.index("]")]):
                        raise ValueError(f"{where}: phrase {token!r} has no words")
                    raise ValueError(f"{where}: phrase marker {token[:40]!r} does not parse "
                                     "(expected '[/EN#<number>/<type>')")
                if not _CHAIN_ID.fullmatch(match["chain"]):
                    raise ValueError(f"{where}: phrase marker {token[:40]!r} does not parse "
                                     f"(chain id {match['chain'][:20]!r} is not a number)")
                marker, chain, start = token, int(match["chain"]), len(words)
                types = tuple(match["types"].split("/")[1:])
                continue
            if "[" in token or "]" in token:
                raise ValueError(f"{where}: unbalanced brackets: {token[:40]!r} outside a phrase")
            words.append(token)
            continue
        closes = token.endswith("]")
        word = token[:-1] if closes else token
        if "[" in word or "]" in word:
            raise ValueError(f"{where}: unbalanced brackets: {token[:40]!r} inside the phrase {marker!r} "
                             "(phrases do not nest)")
        if word:
            words.append(word)
        if closes:
            if len(words) == start:
                raise ValueError(f"{where}: phrase {marker + ' ' + token!r} has no words")
            phrases.append(Phrase(caption, start, tuple(words[start:]), chain, types))
            marker = ""
    if marker:
        raise ValueError(f"{where}: unbalanced brackets: the phrase {marker!r} at word {start} is not closed")
    return words, phrases


# --- Annotations/<id>.xml -------------------------------------------------------------------------

@dataclass
class _Node:
    tag: str
    line: int
    children: list[_Node]
    text: str = ""

    def all(self, tag: str) -> list[_Node]:
        return [child for child in self.children if child.tag == tag]

    def one(self, tag: str, path: Path) -> _Node:
        found = self.all(tag)
        if not found:
            raise ValueError(f"{path}:{self.line}: <{self.tag}> has no <{tag}>")
        return found[0]

    def integer(self, tag: str, path: Path) -> int:
        node = self.one(tag, path)
        try:
            return int(node.text.strip())
        except ValueError:
            raise ValueError(f"{path}:{node.line}: <{tag}> is not an integer: {node.text.strip()[:30]!r}") from None


def _read_xml(path: Path) -> _Node:
    """The element tree of an XML file, each element with its line (expat: ElementTree keeps none)."""
    data = read_bytes(path)
    parser = expat.ParserCreate()
    parser.buffer_text = True
    top: list[_Node] = []
    stack: list[_Node] = []

    def start(tag: str, attrs: object) -> None:
        node = _Node(tag, parser.CurrentLineNumber, [])
        (stack[-1].children if stack else top).append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def chars(text: str) -> None:
        if stack:
            stack[-1].text += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid XML ({expat.ErrorString(exc.code)})") from None
    return top[0]


def _parse_annotation(path: Path) -> tuple[int, int, dict[int, list[list[int]]], frozenset[int], frozenset[int],
                                           frozenset[int]]:
    """(width, height, boxes by chain (0-based, exclusive), nobndbox chains, scene chains, all chains)."""
    root = _read_xml(path)
    if root.tag != "annotation":
        raise ValueError(f"{path}:{root.line}: expected <annotation>, got <{root.tag}>")
    size = root.one("size", path)
    width, height = size.integer("width", path), size.integer("height", path)
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}:{size.line}: image size {width}x{height} is not positive")
    if width * height > max_image_pixels():
        raise ValueError(f"{path}:{size.line}: image size {width}x{height} is more pixels than an image may have "
                         f"({max_image_pixels()}, Pillow's decompression-bomb limit)")
    boxes: dict[int, list[list[int]]] = {}
    nobox: set[int] = set()
    scene: set[int] = set()
    chains: set[int] = set()
    for obj in root.all("object"):
        names = obj.all("name")
        if not names:
            raise ValueError(f"{path}:{obj.line}: <object> has no <name>")
        ids = []
        for name in names:
            if not _CHAIN_ID.fullmatch(name.text.strip()):
                raise ValueError(f"{path}:{name.line}: <name> is not a chain id: {name.text.strip()[:30]!r}")
            ids.append(int(name.text))
        chains.update(ids)
        found = [_box(node, path) for node in obj.all("bndbox")]
        flags = {tag: obj.integer(tag, path) > 0 for tag in ("nobndbox", "scene") if obj.all(tag)}
        if not found and not flags:
            raise ValueError(f"{path}:{obj.line}: <object> has neither <bndbox> nor <nobndbox>/<scene>")
        for chain in ids:
            for box in found:
                boxes.setdefault(chain, []).append(box)
            if flags.get("nobndbox"):
                nobox.add(chain)
            if flags.get("scene"):
                scene.add(chain)
    return width, height, boxes, frozenset(nobox), frozenset(scene), frozenset(chains)


def _box(node: _Node, path: Path) -> list[int]:
    """[x0, y0, x1, y1] 0-based, x1/y1 exclusive, of a `<bndbox>` in 1-based inclusive pixels."""
    xmin, ymin, xmax, ymax = (node.integer(tag, path) for tag in ("xmin", "ymin", "xmax", "ymax"))
    if xmax < xmin or ymax < ymin:
        raise ValueError(f"{path}:{node.line}: <bndbox> is empty: x {xmin}..{xmax}, y {ymin}..{ymax}")
    return [xmin - 1, ymin - 1, xmax, ymax]
