"""Synthetic grounded scenes: the dataset that ships with the code, made in seconds on a CPU.

Each image holds 1 to 3 distinct coloured shapes on a noisy grey background; its captions are
true by construction and every word that names something comes with the object it names (and that
object's exact mask and box). That makes it the ground truth for testing whether an explanation
of the word "red" points at the red object. `scenes="binding"` makes scenes built to provoke binding
errors instead (three objects, two of one shape and two of one colour, e.g. a red circle, a blue circle
and a red square): where a captioner writes words no object supports, for the hallucination tests.

Layout written by `generate_shapes(out_dir)`:
  Images/<split>_<n>.png   the scenes
  masks/<split>_<n>.png    uint8 labels: 0 background, object id + 1
  dataset_shapes.json      Karpathy layout (so `load_karpathy` reads it) plus the generator's params
  grounding.json           {"image_size": S, "images": {filename: {"objects": [...], "captions": [...]}}}
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from captionlens.data.records import read_json

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (215, 45, 40), "green": (40, 160, 60), "blue": (40, 80, 215), "yellow": (235, 200, 30)}
SIZES = {"small": 0.09, "large": 0.17}  # "radius" as a fraction of the image side
BACKGROUND = (205, 205, 205)
NOISE_STD = 6.0
GAP = 0.05  # least gap between two objects' boxes, as a fraction of the image side
SHAPES_JSON = "dataset_shapes.json"
GROUNDING_JSON = "grounding.json"
CAPTIONS_PER_IMAGE = 5
GENERATOR_VERSION = 1  # bump when the output changes, so stale folders are regenerated
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_KINDS = [(shape, colour, size) for shape in SHAPES for colour in COLOURS for size in SIZES]

# Caption templates; {k} is the k-th object's noun phrase ("a small red circle", "a circle", ...).
_CANONICAL = {1: "{0}", 3: "{0} {1} and {2}"}  # two objects: the first template of their relation
_LISTINGS = {
    1: ["there is {0}", "{0} on a grey background", "a picture of {0}", "{0} in the picture", "{0} by itself"],
    2: ["there is {0} and {1}", "a picture of {0} and {1}", "two shapes {0} and {1}",
        "{0} and {1} on a grey background"],
    3: ["there is {0} {1} and {2}", "a picture of {0} {1} and {2}", "three shapes {0} {1} and {2}",
        "{0} {1} and {2} on a grey background"],
}
# {0} is the left (or top) object of a pair, {1} the other.
_RELATIONS = {
    "left": ["{0} left of {1}", "{0} to the left of {1}", "{1} right of {0}", "{1} to the right of {0}"],
    "above": ["{0} above {1}", "{0} is above {1}", "{1} below {0}", "{1} is below {0}"],
}
_SLOT = re.compile(r"^\{(\d)\}$")


@dataclass
class _Object:
    shape: str
    colour: str
    size: str
    bbox: list[int]
    centre: list[float]
    id: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "shape": self.shape, "colour": self.colour, "size": self.size,
                "bbox": self.bbox, "centre": self.centre}


SCENES = ("mixed", "binding")


def generate_shapes(out_dir: str | os.PathLike, n_train: int = 2000, n_val: int = 200, n_test: int = 200,
                    image_size: int = 96, seed: int = 0, scenes: str = "mixed") -> Path:
    """Write the dataset into `out_dir` (see the module doc) and return `out_dir`.

    Byte-identical for the same arguments; a folder that already holds a complete dataset made
    with the same arguments is reused as it is.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 for the shapes to fit, got {image_size}")
    if scenes not in SCENES:
        raise ValueError(f"unknown scenes {scenes!r}; choose one of {', '.join(SCENES)}")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    if min(counts.values()) < 0:
        raise ValueError(f"image counts must be >= 0, got {counts}")
    out = Path(out_dir)
    params = {**{f"n_{split}": n for split, n in counts.items()}, "image_size": image_size, "seed": seed,
              "version": GENERATOR_VERSION, **({"scenes": scenes} if scenes != "mixed" else {})}
    previous = _read_json_or_none(out / SHAPES_JSON)
    if previous is not None and previous.get("params") == params and _files_complete(out, previous):
        return out
    _remove_previous(out, previous)
    (out / "Images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    entries: list[dict[str, Any]] = []
    grounding: dict[str, Any] = {}
    for split, n in counts.items():
        for i in range(n):
            rng = np.random.default_rng([seed, _SPLIT_CODES[split], i])
            filename = f"{split}_{i:05d}.png"
            image, mask, objects = _make_scene(rng, image_size, _binding_kinds if scenes == "binding" else _mixed_kinds)
            captions = _make_captions(rng, objects)
            Image.fromarray(image).save(out / "Images" / filename)
            Image.fromarray(mask).save(out / "masks" / filename)
            entries.append(_karpathy_entry(filename, split, len(entries), captions))
            grounding[filename] = {"objects": [o.to_json() for o in objects],
                                   "captions": [{"tokens": [w for w, _ in c], "refs": [r for _, r in c]}
                                                for c in captions]}
    _write_json(out / GROUNDING_JSON, {"image_size": image_size, "images": grounding})
    # Written last: its presence with matching params marks the folder complete.
    _write_json(out / SHAPES_JSON, {"dataset": "shapes", "params": params, "images": entries})
    return out


def _karpathy_entry(filename: str, split: str, imgid: int, captions: list[list[tuple[str, int | None]]]
                    ) -> dict[str, Any]:
    sentids = [imgid * CAPTIONS_PER_IMAGE + k for k in range(len(captions))]
    return {"filename": filename, "imgid": imgid, "split": split, "sentids": sentids,
            "sentences": [{"raw": " ".join(w for w, _ in c), "tokens": [w for w, _ in c],
                           "imgid": imgid, "sentid": sentid} for sentid, c in zip(sentids, captions)]}


def _read_json_or_none(path: Path) -> dict | None:
    """An earlier generation's dataset JSON, or None when absent or not ours."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    images = data.get("images") if isinstance(data, dict) else None
    return data if isinstance(images, list) and all(isinstance(e, dict) for e in images) else None


def _files_complete(out: Path, dataset: dict) -> bool:
    names = [entry.get("filename", "") for entry in dataset["images"]]
    return (out / GROUNDING_JSON).is_file() and all(
        (out / "Images" / name).is_file() and (out / "masks" / name).is_file() for name in names)


def _remove_previous(out: Path, previous: dict | None) -> None:
    """Delete the files an earlier, different generation wrote (and only those)."""
    (out / SHAPES_JSON).unlink(missing_ok=True)
    for entry in previous["images"] if previous else []:
        name = str(entry.get("filename", ""))
        if re.fullmatch(r"(train|val|test)_\d+\.png", name):
            (out / "Images" / name).unlink(missing_ok=True)
            (out / "masks" / name).unlink(missing_ok=True)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def _extent(shape: str, radius: float) -> tuple[float, float, float]:
    """(half width, extent above the centre, extent below) of a shape drawn by `_draw`."""
    if shape == "circle":
        return radius, radius, radius
    if shape == "square":
        return 0.9 * radius, 0.9 * radius, 0.9 * radius
    return 1.2 * radius * np.sqrt(3) / 2, 1.2 * radius, 0.6 * radius


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, label: int) -> None:
    half_width, up, down = _extent(shape, radius)
    if shape == "triangle":  # equilateral, pointing up, circumradius 1.2 r
        draw.polygon([(cx, cy - up), (cx - half_width, cy + down), (cx + half_width, cy + down)], fill=label)
    elif shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=label)
    else:
        draw.rectangle([cx - half_width, cy - up, cx + half_width, cy + down], fill=label)


def _place(rng: np.random.Generator, kinds: list[tuple[str, str, str]], size: int
           ) -> list[tuple[float, float]] | None:
    """Random centres that keep every shape inside the image and the shapes' boxes GAP apart;
    None when 100 tries found none."""
    gap = max(3.0, GAP * size)
    for _ in range(100):
        centres, boxes = [], []
        for shape, _, size_word in kinds:
            half_width, up, down = _extent(shape, SIZES[size_word] * size)
            cx = rng.uniform(gap + half_width, size - gap - half_width)
            cy = rng.uniform(gap + up, size - gap - down)
            centres.append((cx, cy))
            boxes.append((cx - half_width, cy - up, cx + half_width, cy + down))
        if all(_apart(a, b, gap) for k, a in enumerate(boxes) for b in boxes[k + 1:]):
            return centres
    return None


def _apart(a: tuple[float, ...], b: tuple[float, ...], gap: float) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _mixed_kinds(rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """1 to 3 distinct (shape, colour, size) kinds."""
    count = int(rng.integers(1, 4))
    return [_KINDS[k] for k in rng.choice(len(_KINDS), size=count, replace=False)]


def _binding_kinds(rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """Three kinds that share features crosswise: (shape A, colour X), (shape A, colour Y), (shape B, colour X)."""
    shape_a, shape_b = rng.choice(SHAPES, size=2, replace=False)
    colour_x, colour_y = rng.choice(list(COLOURS), size=2, replace=False)
    sizes = rng.choice(list(SIZES), size=3)
    kinds = [(str(shape_a), str(colour_x), str(sizes[0])), (str(shape_a), str(colour_y), str(sizes[1])),
             (str(shape_b), str(colour_x), str(sizes[2]))]
    return [kinds[k] for k in rng.permutation(3)]


def _make_scene(rng: np.random.Generator, size: int,
                choose: Callable[[np.random.Generator], list[tuple[str, str, str]]] = _mixed_kinds
                ) -> tuple[np.ndarray, np.ndarray, list[_Object]]:
    """(image (S, S, 3) uint8, label mask (S, S) uint8, objects ordered left to right) with the kinds `choose` picks."""
    while True:
        kinds = choose(rng)
        count = len(kinds)
        centres = _place(rng, kinds, size)
        if centres is not None:
            break
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for label, ((shape, _, size_word), (cx, cy)) in enumerate(zip(kinds, centres), 1):
        _draw(draw, shape, cx, cy, SIZES[size_word] * size, label)
    drawn = np.asarray(canvas)
    objects = []
    for label, (shape, colour, size_word) in enumerate(kinds, 1):
        ys, xs = np.nonzero(drawn == label)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        objects.append(_Object(shape, colour, size_word, bbox, [(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2]))
    # Ids follow the canonical order: left to right by centre x.
    order = sorted(range(count), key=lambda k: objects[k].centre)
    relabel = np.zeros(count + 1, np.uint8)
    for new_id, old in enumerate(order):
        relabel[old + 1] = new_id + 1
        objects[old].id = new_id
    mask = relabel[drawn]
    objects = [objects[k] for k in order]
    image = np.empty((size, size, 3), np.float64)
    image[:] = BACKGROUND
    for obj in objects:
        image[mask == obj.id + 1] = COLOURS[obj.colour]
    image += rng.normal(0.0, NOISE_STD, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask, objects


def _relation(a: _Object, b: _Object) -> tuple[_Object, _Object, str]:
    """(first, second, "left" | "above"): the pair's dominant direction, left / top object first."""
    dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
    if abs(dx) >= abs(dy):
        return (a, b, "left") if dx > 0 else (b, a, "left")
    return (a, b, "above") if dy > 0 else (b, a, "above")


def _noun_phrase(obj: _Object, objects: list[_Object], rng: np.random.Generator | None
                 ) -> list[tuple[str, int | None]]:
    """The full "a <size> <colour> <shape>" when rng is None, else a random form of it (maybe
    shorter) that still picks out `obj` alone among `objects`."""
    forms = [[obj.size, obj.colour, obj.shape]]
    if rng is not None:
        forms += [[obj.colour, obj.shape], [obj.size, obj.shape], [obj.shape]]
        forms = [f for f in forms if sum(set(f) <= {o.size, o.colour, o.shape} for o in objects) == 1]
        forms = [forms[int(rng.integers(len(forms)))]]
    return [("a", None)] + [(word, obj.id) for word in forms[0]]


def _fill(template: str, slots: list[_Object], objects: list[_Object], rng: np.random.Generator | None
          ) -> list[tuple[str, int | None]]:
    """(word, id of the object it names or None) for each word of a filled-in template."""
    words: list[tuple[str, int | None]] = []
    for token in template.split():
        slot = _SLOT.match(token)
        words += _noun_phrase(slots[int(slot[1])], objects, rng) if slot else [(token, None)]
    return words


def _make_captions(rng: np.random.Generator, objects: list[_Object]) -> list[list[tuple[str, int | None]]]:
    """True captions: the canonical full description first, then variants drawn from the templates."""
    count = len(objects)
    if count == 2:
        first, second, relation = _relation(*objects)
        canonical = _fill(_RELATIONS[relation][0], [first, second], objects, None)
    else:
        canonical = _fill(_CANONICAL[count], objects, objects, None)
    pool: list[tuple[str, list[_Object]]] = [
        (template, [objects[k] for k in rng.permutation(count)]) for template in _LISTINGS[count]]
    if count > 1:
        for k in range(len(_RELATIONS["left"])):
            pair = rng.choice(count, size=2, replace=False)
            first, second, relation = _relation(objects[pair[0]], objects[pair[1]])
            pool.append((_RELATIONS[relation][k], [first, second]))
    chosen = rng.choice(len(pool), size=CAPTIONS_PER_IMAGE - 1, replace=False)
    return [canonical] + [_fill(pool[k][0], pool[k][1], objects, rng) for k in chosen]


def load_grounding(path: str | os.PathLike) -> dict[str, Any]:
    """The grounding.json of a shapes folder (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / GROUNDING_JSON
    grounding: dict[str, Any] = read_json(path)
    return grounding


def load_mask(folder: str | os.PathLike, filename: str) -> np.ndarray:
    """Label mask (S, S) uint8 of one image of a shapes folder: 0 background, object id + 1."""
    with Image.open(Path(folder) / "masks" / filename) as mask:
        return np.array(mask)


def word_refs(grounding: dict[str, Any], filename: str, tokens: list[str]) -> list[int | None]:
    """Object id named by each token of any word sequence (e.g. a model's caption), or None.

    A shape noun names the one object of that shape whose colour and size agree with the colour
    and size words right before it; its adjectives name the same object. Nouns that fit no object
    or several get None, as do their adjectives and all other words.
    """
    try:
        objects = grounding["images"][filename]["objects"]
    except KeyError:
        raise KeyError(f"no image {filename!r} in the grounding data") from None
    refs: list[int | None] = [None] * len(tokens)
    for end, token in enumerate(tokens):
        if token not in SHAPES:
            continue
        start = end
        while start > 0 and (tokens[start - 1] in COLOURS or tokens[start - 1] in SIZES):
            start -= 1
        words = set(tokens[start:end + 1])
        fits = [o for o in objects if words <= {o["shape"], o["colour"], o["size"]}]
        if len(fits) == 1:
            refs[start:end + 1] = [fits[0]["id"]] * (end + 1 - start)
    return refs


def word_boxes(grounding: dict[str, Any], filename: str, tokens: list[str]) -> list[list[int] | None]:
    """Box [x0, y0, x1, y1] (x1, y1 exclusive) of the object each token names, or None (see `word_refs`)."""
    refs = word_refs(grounding, filename, tokens)
    boxes = {o["id"]: o["bbox"] for o in grounding["images"][filename]["objects"]}
    return [None if ref is None else boxes[ref] for ref in refs]
