"""COCO as distributed: reference captions and instance segmentations, with Karpathy's split when present.

Layout, all in one folder:
  annotations/captions_train2014.json  annotations/instances_train2014.json   (and/or the val2014 pair;
  annotations/captions_val2014.json    annotations/instances_val2014.json      or the 2017 names)
  train2014/  val2014/                 the images, as COCO's `file_name`s (train2017/ val2017/ for 2017)
  dataset_coco.json                    optional: Karpathy's split file, whose train / val / test / restval
                                       then give each image's split (matched by `cocoid`); else the
                                       official split, train and val (no test)

Every split read needs both of its files. When 2014 files are there they are used (Karpathy's split is
defined on them), else the 2017 ones. `load_coco_annotations` reads the files alone (no image needed);
`load_coco` adds the images as a `CocoDataset`, the `CaptionDataset` every loader gives, with the ground
truth of each record's image (`dataset.image(record.image_id)`: a `CocoImage`). Records' `image_id` is
COCO's `file_name`, as in the Karpathy loader.

Segmentations (polygons, RLE uncompressed or compressed, `iscrowd` regions) become compressed RLE when
read, through pycocotools (`frPyObjects`, `merge`, as `COCO.annToRLE`), and masks come out of its
`decode`. Each segmentation is checked first, because pycocotools does not: a polygon of 4 numbers is
taken for a box, and RLE run lengths that do not add up to height x width decode to uninitialised
memory. A bad file, key, value or segmentation is one error naming the file and the annotation id.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from captionlens.data.images import max_image_pixels
from captionlens.data.records import SPLITS, CaptionDataset, CaptionRecord, read_json

ANNOTATIONS = "annotations"
KARPATHY_FILE = "dataset_coco.json"
YEARS = ("2014", "2017")
OFFICIAL_SPLITS = ("train", "val")
# COCO's object sizes by annotated area (pixels of the original image), as its detection evaluation uses.
SMALL_AREA = 32 ** 2
MEDIUM_AREA = 96 ** 2
# pycocotools rasterises a polygon through arrays of five points per pixel of its outline, and crashes on
# vertices whose scaled coordinates overflow an int: polygons are held to the image's surroundings and to a
# length no real outline comes near.
MAX_POLYGON_PERIMETER = 2_000_000
Rle = dict  # pycocotools' compressed RLE: {"size": [height, width], "counts": bytes}


@dataclass(frozen=True, slots=True)
class CocoCategory:
    """A category as the instances file defines it."""

    id: int
    name: str
    supercategory: str


@dataclass(frozen=True, slots=True)
class CocoInstance:
    """One annotated object: its category, annotated `area` and `bbox` ([x, y, width, height], pixels of
    the original image), whether it is a crowd region, and its segmentation as compressed RLE."""

    id: int
    category: CocoCategory
    area: float
    bbox: tuple[float, float, float, float]
    iscrowd: bool
    rle: Rle

    @property
    def size_class(self) -> str:
        """"small" (area < 32²), "medium" (< 96²) or "large", COCO's thresholds."""
        return "small" if self.area < SMALL_AREA else "medium" if self.area < MEDIUM_AREA else "large"

    def mask(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """Boolean mask, (height, width) of the image or `size` = (height, width) (see `resize_mask`)."""
        return resize_mask(mask_utils.decode(self.rle).astype(bool), size)


@dataclass(frozen=True, slots=True)
class CocoImage:
    """The ground truth of one image: its captions and its annotated objects (crowd regions included)."""

    id: int
    file_name: str
    folder: str          # the image folder the file is in: "train2014", "val2017", ...
    width: int
    height: int
    split: str
    captions: tuple[str, ...]
    instances: tuple[CocoInstance, ...]

    @property
    def categories(self) -> frozenset[str]:
        """Names of the categories with at least one instance (crowd regions count)."""
        return frozenset(instance.category.name for instance in self.instances)

    def instances_of(self, category: str) -> tuple[CocoInstance, ...]:
        return tuple(instance for instance in self.instances if instance.category.name == category)

    def category_rle(self, category: str) -> Rle:
        """Compressed RLE of the union of the category's instances (all zero when it has none)."""
        rles = [instance.rle for instance in self.instances_of(category)]
        if not rles:
            return mask_utils.encode(np.zeros((self.height, self.width), dtype=np.uint8, order="F"))
        return mask_utils.merge(rles, intersect=False)

    def category_mask(self, category: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """Boolean mask of the union of the category's instances, at the image's size or `size`."""
        return resize_mask(mask_utils.decode(self.category_rle(category)).astype(bool), size)


def resize_mask(mask: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """`mask` at `size` = (height, width), each output pixel the input pixel under its centre (nearest
    neighbour, exact for integer factors); the mask itself when `size` is None or its own size."""
    if size is None or tuple(size) == mask.shape:
        return mask
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"mask size must be positive, got {size}")
    rows = ((np.arange(height) + 0.5) * mask.shape[0] / height).astype(int)
    cols = ((np.arange(width) + 0.5) * mask.shape[1] / width).astype(int)
    return mask[np.ix_(rows, cols)]


@dataclass(frozen=True)
class CocoAnnotations:
    """What the annotation files say: the categories by id, each image by file name, the files read, and
    whether the splits are Karpathy's ("karpathy") or COCO's own ("official")."""

    root: Path
    year: str
    categories: Mapping[int, CocoCategory]
    images: Mapping[str, CocoImage]
    files: tuple[Path, ...]
    split_source: str

    def image(self, key: str | int) -> CocoImage:
        """An image by file name ("COCO_val2014_000000391895.jpg") or COCO id (391895 or "391895")."""
        if isinstance(key, str) and key in self.images:
            return self.images[key]
        by_id = self.by_id
        number = key if isinstance(key, int) else int(key) if str(key).isdigit() else None
        if number is None or number not in by_id:
            raise KeyError(f"{self.root}: no image {key!r} in {', '.join(p.name for p in self.files)}")
        return by_id[number]

    @cached_property
    def by_id(self) -> dict[int, CocoImage]:
        """The images by COCO id."""
        return {image.id: image for image in self.images.values()}


class CocoDataset(CaptionDataset):
    """A `CaptionDataset` of COCO images that keeps their ground truth (`annotations`, `image`)."""

    def __init__(self, records: Iterable[CaptionRecord], annotations: CocoAnnotations,
                 missing_images: Sequence[Path] = ()) -> None:
        super().__init__(records, missing_images)
        self.annotations = annotations

    def image(self, image_id: str) -> CocoImage:
        """The ground truth of a record's image (`record.image_id`, COCO's file name)."""
        return self.annotations.images[image_id]

    def split(self, name: str, include_restval: bool = True) -> CocoDataset:
        part = super().split(name, include_restval)
        return CocoDataset(part.records, self.annotations, part.missing_images)


def is_coco_folder(path: Path) -> bool:
    """Whether `path` holds annotations/captions_* or instances_* files of a year COCO published."""
    folder = path / ANNOTATIONS
    return any((folder / f"{kind}_{split}{year}.json").is_file()
               for kind in ("captions", "instances") for split in OFFICIAL_SPLITS for year in YEARS)


def load_coco(root: str | os.PathLike, image_root: str | os.PathLike | None = None) -> CocoDataset:
    """The images of the COCO folder `root` with their reference captions and ground truth.

    Images are looked for in `image_root/<folder>/<file_name>` (`image_root` defaults to `root`; the
    folder is e.g. val2014/); images the captions name but the folder lacks are left out with one
    warning (their count and first names), and none at all is an error.
    """
    annotations = load_coco_annotations(root)
    base = Path(image_root) if image_root is not None else annotations.root
    records = [CaptionRecord(base / image.folder / image.file_name, list(image.captions), image.split,
                             image.file_name) for image in annotations.images.values()]
    loaded = CaptionDataset.from_records(records, annotations.root / ANNOTATIONS)
    return CocoDataset(loaded.records, annotations, loaded.missing_images)


def load_coco_annotations(root: str | os.PathLike) -> CocoAnnotations:
    """Categories, captions and instances of every split whose two files are in `root/annotations/`,
    with Karpathy's split from `root/dataset_coco.json` when present. Reads no image."""
    root = Path(root)
    year, pairs = _annotation_files(root)
    karpathy = _karpathy_splits(root / KARPATHY_FILE) if (root / KARPATHY_FILE).is_file() else None
    categories: dict[int, CocoCategory] = {}
    images: dict[str, CocoImage] = {}
    unsplit: list[str] = []
    for split, captions_path, instances_path in pairs:
        instances = read_json(instances_path)
        _merge_categories(categories, _categories(instances, instances_path), instances_path)
        sizes = _image_sizes(instances, instances_path)
        objects = _instances(instances, instances_path, sizes, categories)
        del instances
        captions = read_json(captions_path)
        entries = _caption_images(captions, captions_path)
        texts = _captions(captions, captions_path, entries)
        del captions
        absent = [image_id for image_id in entries if image_id not in sizes]
        if absent:
            raise ValueError(f"{captions_path}: {len(absent)} images are not in {instances_path.name} "
                             f"(first ids: {', '.join(map(str, absent[:5]))})")
        uncaptioned = [image_id for image_id in entries if image_id not in texts]
        if uncaptioned:
            raise ValueError(f"{captions_path}: {len(uncaptioned)} images have no caption "
                             f"(first ids: {', '.join(map(str, uncaptioned[:5]))})")
        for image_id, file_name in entries.items():
            image_split = split if karpathy is None else karpathy.get(image_id)
            if image_split is None:
                unsplit.append(file_name)
                continue
            if file_name in images:
                raise ValueError(f"{captions_path}: image {image_id} has the file name {file_name!r} of "
                                 f"image {images[file_name].id} of another split")
            width, height = sizes[image_id]
            images[file_name] = CocoImage(image_id, file_name, f"{split}{year}", width, height, image_split,
                                          tuple(texts.get(image_id, ())), tuple(objects.get(image_id, ())))
    if not images:
        where = root / KARPATHY_FILE if karpathy is not None else root / ANNOTATIONS
        raise ValueError(f"{where}: no image with a split ({len(unsplit)} in the annotation files, none of them in "
                         f"{KARPATHY_FILE})" if karpathy is not None else f"{where}: the captions files list no image")
    if unsplit:
        warnings.warn(f"{root / KARPATHY_FILE}: {len(unsplit)} images of the annotation files have no split "
                      f"there and were left out (first: {', '.join(unsplit[:5])})", stacklevel=2)
    files = tuple(path for _, captions_path, instances_path in pairs for path in (captions_path, instances_path))
    return CocoAnnotations(root, year, categories, images, files, "official" if karpathy is None else "karpathy")


def _annotation_files(root: Path) -> tuple[str, list[tuple[str, Path, Path]]]:
    """(year, [(split, captions file, instances file)]) of the splits present; a half pair is an error."""
    folder = root / ANNOTATIONS
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (COCO's annotation files go there)")
    for year in YEARS:
        pairs = []
        for split in OFFICIAL_SPLITS:
            captions, instances = folder / f"captions_{split}{year}.json", folder / f"instances_{split}{year}.json"
            if captions.is_file() != instances.is_file():
                have, lack = (captions, instances) if captions.is_file() else (instances, captions)
                raise FileNotFoundError(f"{lack}: no such file ({have.name} is there; each split needs both)")
            if captions.is_file():
                pairs.append((split, captions, instances))
        if pairs:
            return year, pairs
    raise FileNotFoundError(f"{folder}: no captions_{{train,val}}{{2014,2017}}.json with its instances_*.json")


def _karpathy_splits(path: Path) -> dict[int, str]:
    """COCO id -> split from Karpathy's dataset_coco.json (`images[].cocoid` and `.split`)."""
    data = read_json(path)
    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON object with an 'images' list")
    splits: dict[int, str] = {}
    for index, entry in enumerate(entries):
        where = f"{path}: images[{index}]"
        cocoid = _integer(_key(entry, "cocoid", where), "cocoid", where)
        split = _key(entry, "split", where)
        if split not in SPLITS:
            raise ValueError(f"{where} has split {split!r}; expected one of {', '.join(SPLITS)}")
        splits[cocoid] = split
    return splits


def _list(data: Any, key: str, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ValueError(f"{path}: expected a JSON object with a '{key}' list")
    return data[key]


def _key(entry: Any, key: str, where: str) -> Any:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not a JSON object")
    if key not in entry:
        raise ValueError(f"{where} has no '{key}'")
    return entry[key]


def _integer(value: Any, key: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where}: '{key}' is not an integer: {value!r:.40}")
    return value


def _number(value: Any, key: str, where: str) -> float:
    if not _is_number(value):
        raise ValueError(f"{where}: '{key}' is not a finite number: {value!r:.40}")
    return float(value)


def _is_number(value: Any) -> bool:
    """A finite JSON number that a float holds (JSON allows integers of any number of digits)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _categories(data: Any, path: Path) -> dict[int, CocoCategory]:
    found: dict[int, CocoCategory] = {}
    for index, entry in enumerate(_list(data, "categories", path)):
        where = f"{path}: categories[{index}]"
        number = _integer(_key(entry, "id", where), "id", where)
        name, supercategory = _key(entry, "name", where), entry.get("supercategory", "")
        if not isinstance(name, str) or not name or not isinstance(supercategory, str):
            raise ValueError(f"{where}: 'name' and 'supercategory' must be text")
        if number in found:
            raise ValueError(f"{where}: category id {number} is defined twice")
        found[number] = CocoCategory(number, name, supercategory)
    return found


def _merge_categories(known: dict[int, CocoCategory], found: dict[int, CocoCategory], path: Path) -> None:
    for number, category in found.items():
        if known.setdefault(number, category) != category:
            raise ValueError(f"{path}: category {number} is {category.name!r} here but {known[number].name!r} in "
                             "the other split's file")


def _image_sizes(data: Any, path: Path) -> dict[int, tuple[int, int]]:
    """COCO id -> (width, height) of the images an instances file lists."""
    sizes: dict[int, tuple[int, int]] = {}
    for index, entry in enumerate(_list(data, "images", path)):
        where = f"{path}: images[{index}]"
        number = _integer(_key(entry, "id", where), "id", where)
        width = _integer(_key(entry, "width", where), "width", where)
        height = _integer(_key(entry, "height", where), "height", where)
        if width < 1 or height < 1 or width * height > max_image_pixels():
            raise ValueError(f"{where}: image {number} has size {width}x{height} (at most "
                             f"{max_image_pixels()} pixels, Pillow's decompression-bomb limit)")
        sizes[number] = (width, height)
    return sizes


def _caption_images(data: Any, path: Path) -> dict[int, str]:
    """COCO id -> file name of the images a captions file lists, in its order."""
    names: dict[int, str] = {}
    for index, entry in enumerate(_list(data, "images", path)):
        where = f"{path}: images[{index}]"
        number = _integer(_key(entry, "id", where), "id", where)
        file_name = _key(entry, "file_name", where)
        if not isinstance(file_name, str) or not file_name or "/" in file_name or "\\" in file_name:
            raise ValueError(f"{where}: 'file_name' is not a file name: {file_name!r:.60}")
        names[number] = file_name
    return names


def _captions(data: Any, path: Path, images: Mapping[int, str]) -> dict[int, list[str]]:
    texts: dict[int, list[str]] = {}
    for index, entry in enumerate(_list(data, "annotations", path)):
        where = f"{path}: annotations[{index}]"
        number = _integer(_key(entry, "id", where), "id", where)
        where = f"{path}: annotation {number}"
        image_id = _integer(_key(entry, "image_id", where), "image_id", where)
        caption = _key(entry, "caption", where)
        if image_id not in images:
            raise ValueError(f"{where} is of image {image_id}, which the file's 'images' do not list")
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"{where}: 'caption' is not text: {caption!r:.60}")
        texts.setdefault(image_id, []).append(caption.strip())
    return texts


def _instances(data: Any, path: Path, sizes: Mapping[int, tuple[int, int]],
               categories: Mapping[int, CocoCategory]) -> dict[int, list[CocoInstance]]:
    """COCO id -> the instances an instances file annotates on that image."""
    found: dict[int, list[CocoInstance]] = {}
    for index, entry in enumerate(_list(data, "annotations", path)):
        where = f"{path}: annotations[{index}]"
        number = _integer(_key(entry, "id", where), "id", where)
        where = f"{path}: annotation {number}"
        image_id = _integer(_key(entry, "image_id", where), "image_id", where)
        category_id = _integer(_key(entry, "category_id", where), "category_id", where)
        if image_id not in sizes:
            raise ValueError(f"{where} is of image {image_id}, which the file's 'images' do not list")
        if category_id not in categories:
            raise ValueError(f"{where} has category_id {category_id}, which the file's 'categories' do not list")
        iscrowd = _key(entry, "iscrowd", where)
        if iscrowd not in (0, 1) or isinstance(iscrowd, float):
            raise ValueError(f"{where}: 'iscrowd' is not 0 or 1: {iscrowd!r:.20}")
        bbox = _key(entry, "bbox", where)
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise ValueError(f"{where}: 'bbox' is not [x, y, width, height]: {bbox!r:.60}")
        width, height = sizes[image_id]
        rle = _segmentation_rle(_key(entry, "segmentation", where), height, width, where)
        instance = CocoInstance(number, categories[category_id], _number(_key(entry, "area", where), "area", where),
                                (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])), bool(iscrowd), rle)
        found.setdefault(image_id, []).append(instance)
    return found


def _segmentation_rle(segmentation: Any, height: int, width: int, where: str) -> Rle:
    """Compressed RLE of a checked segmentation (polygons, uncompressed or compressed RLE), as
    pycocotools' `COCO.annToRLE` makes it."""
    def malformed(why: str) -> ValueError:
        return ValueError(f"{where} has a malformed segmentation: {why}")

    if isinstance(segmentation, list):
        if not segmentation:
            raise malformed("no polygon")
        perimeter = 0.0
        for k, polygon in enumerate(segmentation):
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                count = len(polygon) if isinstance(polygon, list) else "no list of"
                raise malformed(f"polygon {k} has {count} coordinates; expected x, y pairs, at least 3")
            try:
                values = np.asarray(polygon)  # one C pass: a non-number makes a text or object array
            except (ValueError, TypeError, OverflowError):  # nested lists of several lengths, huge integers
                values = np.asarray([], dtype=object)
            if values.ndim != 1 or values.dtype.kind not in "iuf" or not np.isfinite(values).all():
                raise malformed(f"polygon {k} has a value that is not a finite number")
            xs, ys = values[0::2].astype(float), values[1::2].astype(float)
            if xs.min() < -width or xs.max() > 2 * width or ys.min() < -height or ys.max() > 2 * height:
                raise malformed(f"polygon {k} has a vertex far outside the {width}x{height} image")
            perimeter += float(np.maximum(np.abs(xs - np.roll(xs, 1)), np.abs(ys - np.roll(ys, 1))).sum())
        if perimeter > MAX_POLYGON_PERIMETER:
            raise malformed(f"polygons {perimeter:.0f} pixels long (at most {MAX_POLYGON_PERIMETER})")
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width), intersect=False)
    if not isinstance(segmentation, dict):
        raise malformed("neither a list of polygons nor an RLE object")
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if size != [height, width]:
        raise malformed(f"RLE size {size!r:.30} is not the image's [height, width] [{height}, {width}]")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise malformed("RLE counts are not all non-negative integers")
        runs = counts
    elif isinstance(counts, str):
        try:
            runs = rle_string_counts(counts)
        except ValueError as exc:
            raise malformed(f"compressed RLE counts do not decode ({exc})") from None
    else:
        raise malformed("RLE counts are neither a list of run lengths nor a compressed string")
    if sum(runs) != height * width:
        raise malformed(f"RLE run lengths add up to {sum(runs)}, not height x width = {height * width}")
    if isinstance(counts, list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": [height, width], "counts": counts.encode("ascii")}


def rle_string_counts(text: str) -> list[int]:
    """The run lengths of COCO's compressed RLE string (the format of pycocotools' `rleToString`: each
    count in 5-bit groups, low first, as characters from '0', 0x20 meaning more groups follow and 0x10 in
    the last group the sign; counts after the third stored as the difference from the count two before).

    pycocotools decodes these without checking that the runs fill the mask; this reads them to check.
    """
    counts: list[int] = []
    position = 0
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"character {text[exc.start]!r} at {exc.start} is not a count digit") from None
    while position < len(data):
        value = shift = 0
        more = True
        while more:
            if position >= len(data):
                raise ValueError("the string ends inside a count")
            code = data[position] - 48
            if not 0 <= code < 64:
                raise ValueError(f"character {chr(data[position])!r} at {position} is not a count digit")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise ValueError(f"count {len(counts)} is negative")
        counts.append(value)
    return counts
