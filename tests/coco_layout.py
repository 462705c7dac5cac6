"""COCO-format folders for the tests and the COCO benchmark, in the exact layout COCO is distributed in:
annotations/captions_<split><year>.json and instances_<split><year>.json, images in <split><year>/,
and Karpathy's dataset_coco.json beside them.

`write_split` writes one split's two files from plain dicts (so a test says exactly what is in them);
`photo` gives scikit-image's bundled photos at a small size; `generated_coco` writes a random set of
any size (polygons, uncompressed RLE crowds, five captions an image naming its objects) for the
benchmark and the tests that need many images. `CATEGORIES` is COCO's own list of 80 categories (ids
with COCO's gaps, names and supercategories as in instances_val2014.json), the oracle for the
synonym table.

`tests/` is on `sys.path` (the rootdir conftest): `from coco_layout import write_split`.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

_SUPERCATEGORIES = {
    "person": ["person"],
    "vehicle": ["bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat"],
    "outdoor": ["traffic light", "fire hydrant", "stop sign", "parking meter", "bench"],
    "animal": ["bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"],
    "accessory": ["backpack", "umbrella", "handbag", "tie", "suitcase"],
    "sports": ["frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
               "skateboard", "surfboard", "tennis racket"],
    "kitchen": ["bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl"],
    "food": ["banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake"],
    "furniture": ["chair", "couch", "potted plant", "bed", "dining table", "toilet"],
    "electronic": ["tv", "laptop", "mouse", "remote", "keyboard", "cell phone"],
    "appliance": ["microwave", "oven", "toaster", "sink", "refrigerator"],
    "indoor": ["book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"],
}
# COCO's category ids: 1..90 without the 10 ids its 2014 release left unused.
_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
CATEGORIES = [{"supercategory": supercategory, "id": number, "name": name}
              for number, (supercategory, name) in zip(_IDS, [(s, n) for s, names in _SUPERCATEGORIES.items()
                                                               for n in names])]
CATEGORY_ID = {c["name"]: c["id"] for c in CATEGORIES}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def file_name(image_id: int, split: str, year: str = "2014") -> str:
    """COCO's file name of an image: COCO_val2014_000000000042.jpg (2014), 000000000042.jpg (2017)."""
    return f"COCO_{split}{year}_{image_id:012d}.jpg" if year == "2014" else f"{image_id:012d}.jpg"


def photo(name: str, width: int, height: int) -> Image.Image:
    """One of scikit-image's bundled photos (no download), resized."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((width, height))


def write_split(root: Path, split: str, images: Sequence[Mapping[str, Any]], instances: Sequence[Mapping[str, Any]],
                captions: Sequence[Mapping[str, Any]], year: str = "2014",
                categories: Sequence[Mapping[str, Any]] = CATEGORIES, photos: bool = True) -> tuple[Path, Path]:
    """annotations/captions_<split><year>.json and instances_<split><year>.json of the given COCO `images`
    ({id, file_name, width, height}), instance annotations and caption annotations, as COCO writes them;
    with `photos`, each image file too (scikit-image's photos in turn) in <split><year>/."""
    folder = root / "annotations"
    folder.mkdir(parents=True, exist_ok=True)
    info = {"description": "captionlens test set", "year": int(year)}
    captions_path = folder / f"captions_{split}{year}.json"
    instances_path = folder / f"instances_{split}{year}.json"
    captions_path.write_text(json.dumps({"info": info, "images": list(images), "licenses": [],
                                         "annotations": list(captions)}))
    instances_path.write_text(json.dumps({"info": info, "images": list(images), "licenses": [],
                                          "annotations": list(instances), "categories": list(categories)}))
    if photos:
        (root / f"{split}{year}").mkdir(exist_ok=True)
        for k, image in enumerate(images):
            photo(PHOTOS[k % len(PHOTOS)], image["width"], image["height"]).save(root / f"{split}{year}" /
                                                                               image["file_name"])
    return captions_path, instances_path


def write_karpathy(root: Path, splits: Mapping[int, str], names: Mapping[int, tuple[str, str]]) -> Path:
    """dataset_coco.json: each COCO id's split, with its `filepath` (e.g. val2014) and `filename`."""
    entries = [{"filepath": names[cocoid][0], "filename": names[cocoid][1], "cocoid": cocoid, "split": split,
                "imgid": k, "sentids": [], "sentences": [{"raw": "unused", "tokens": ["unused"]}]}
               for k, (cocoid, split) in enumerate(splits.items())]
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return path


def polygon_annotation(number: int, image_id: int, category: str, polygons: list[list[float]],
                       area: float = 100.0, iscrowd: int = 0) -> dict[str, Any]:
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    return {"id": number, "image_id": image_id, "category_id": CATEGORY_ID[category], "segmentation": polygons,
            "area": area, "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], "iscrowd": iscrowd}


def rle_annotation(number: int, image_id: int, category: str, mask: np.ndarray, compressed: bool,
                   iscrowd: int = 1) -> dict[str, Any]:
    """An annotation whose segmentation is `mask` as RLE: uncompressed (a list of run lengths, column-major,
    starting with zeros, as COCO's crowd regions are stored) or compressed (pycocotools' string)."""
    from pycocotools import mask as mask_utils

    height, width = mask.shape
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    else:
        segmentation = {"size": [height, width], "counts": run_lengths(mask)}
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    return {"id": number, "image_id": image_id, "category_id": CATEGORY_ID[category], "segmentation": segmentation,
            "area": float(mask.sum()), "bbox": bbox, "iscrowd": iscrowd}


def run_lengths(mask: np.ndarray) -> list[int]:
    """Column-major run lengths of a boolean mask, the first run of zeros (possibly empty)."""
    flat = mask.astype(bool).flatten(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def caption_annotations(start: int, captions: Mapping[int, Iterable[str]]) -> list[dict[str, Any]]:
    """Caption annotations, numbered from `start`, of image id -> its captions."""
    out = []
    for image_id, texts in captions.items():
        for text in texts:
            out.append({"id": start + len(out), "image_id": image_id, "caption": text})
    return out


def generated_coco(root: Path, images: int, seed: int = 0, year: str = "2014", split: str = "val",
                   size: tuple[int, int] = (640, 480), photo_size: tuple[int, int] | None = (8, 6),
                   objects_per_image: float = 7.2, crowd_share: float = 0.01, karpathy: bool = True) -> Path:
    """A random COCO-format split of `images` images of `size` (COCO's typical 640x480) with about
    `objects_per_image` instances each (COCO val2014's mean), polygons of 10-30 vertices, a `crowd_share`
    of crowd regions as uncompressed RLE, and five captions each naming some of the image's objects;
    image files of `photo_size` (None: none written), and a Karpathy file splitting the images in halves,
    "test" then "val". Returns `root`."""
    rng = np.random.default_rng(seed)
    width, height = size
    entries, instances, captions = [], [], {}
    for image_id in range(1, images + 1):
        entries.append({"id": image_id, "file_name": file_name(image_id, split, year), "width": width,
                        "height": height})
        names = []
        for _ in range(max(1, rng.poisson(objects_per_image))):
            category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]["name"]
            names.append(category)
            number = len(instances) + 1
            if rng.random() < crowd_share:
                mask = np.zeros((height, width), dtype=bool)
                x, y = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
                mask[y:y + 60, x:x + 60] = True
                instances.append(rle_annotation(number, image_id, category, mask, compressed=False))
                continue
            cx, cy = rng.uniform(50, width - 50), rng.uniform(50, height - 50)
            vertices = int(rng.integers(10, 31))
            angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
            radii = rng.uniform(10, 50, vertices)
            polygon = np.round(np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1), 2)
            instances.append(polygon_annotation(number, image_id, category, [polygon.ravel().tolist()],
                                                area=float(np.pi * radii.mean() ** 2)))
        captions[image_id] = [f"a picture of a {rng.choice(names)} next to a {rng.choice(names)}" for _ in range(5)]
    write_split(root, split, entries, instances, caption_annotations(1, captions), year, photos=False)
    if photo_size is not None:
        folder = root / f"{split}{year}"
        folder.mkdir(exist_ok=True)
        blank = Image.new("RGB", photo_size, (120, 130, 140))
        for entry in entries:
            blank.save(folder / entry["file_name"])
    if karpathy:
        write_karpathy(root, {e["id"]: "test" if e["id"] <= images // 2 else "val" for e in entries},
                       {e["id"]: (f"{split}{year}", e["file_name"]) for e in entries})
    return root
