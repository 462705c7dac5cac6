"""Which loader reads a dataset (`load_dataset`, `detect_format`), and the training view of a dataset.

The loaders (`flickr`, `karpathy`, `coco`, `flickr30k_entities`, the synthetic `shapes`) each build a
`records.CaptionDataset`;
this module sits above them. `CaptionTrainingSet` turns a dataset into (image, caption) pairs.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from captionlens.data.coco import is_coco_folder, load_coco
from captionlens.data.flickr import load_flickr8k, load_kaggle_flickr8k
from captionlens.data.flickr30k_entities import ANNOTATIONS, SENTENCES, load_flickr30k_entities
from captionlens.data.images import Preprocessing, load_image
from captionlens.data.karpathy import find_karpathy_json, load_karpathy
from captionlens.data.records import CaptionDataset
from captionlens.data.shapes import SHAPES_JSON
from captionlens.data.vocabulary import Vocabulary

FORMATS = ("kaggle", "flickr", "karpathy", "coco", "shapes", "flickr30k-entities")


def load_dataset(path: str | os.PathLike, format: str | None = None,
                 image_root: str | os.PathLike | None = None) -> CaptionDataset:
    """Load a caption dataset; `format` is guessed from the files when None (see `detect_format`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    format = format or detect_format(path)
    root = path.parent if path.is_file() else path
    if format == "kaggle":
        return load_kaggle_flickr8k(root, image_root)
    if format == "flickr":
        return load_flickr8k(root, image_root)
    if format == "karpathy":
        return load_karpathy(path if path.is_file() else find_karpathy_json(path), image_root)
    if format == "coco":
        if path.is_file():
            raise ValueError(f"{path}: --format coco reads a folder (the one holding annotations/), not a file")
        return load_coco(path, image_root)
    if format == "shapes":
        return load_karpathy(path if path.is_file() else path / SHAPES_JSON, image_root)
    if format == "flickr30k-entities":
        return load_flickr30k_entities(root, image_root)
    raise ValueError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")


def detect_format(path: str | os.PathLike) -> str:
    """The format of a dataset file or folder: captions.txt -> "kaggle", Flickr8k.token.txt ->
    "flickr", a folder of synthetic shapes (dataset_shapes.json) -> "shapes", a folder with COCO's
    annotations/captions_* or instances_* files -> "coco" (Karpathy's dataset_coco.json beside them
    or not), another .json file or a folder with dataset_*.json -> "karpathy", a folder with
    Sentences/ and Annotations/ (and no dataset_*.json) -> "flickr30k-entities"."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".json":
            return "karpathy"
        if path.name == "captions.txt":
            return "kaggle"
        if path.name == "Flickr8k.token.txt":
            return "flickr"
    elif (path / "captions.txt").is_file():
        return "kaggle"
    elif (path / "Flickr8k.token.txt").is_file():
        return "flickr"
    elif (path / SHAPES_JSON).is_file():
        return "shapes"
    elif is_coco_folder(path):
        return "coco"
    elif any(path.glob("dataset_*.json")):
        return "karpathy"
    elif (path / SENTENCES).is_dir() and (path / ANNOTATIONS).is_dir():
        return "flickr30k-entities"
    raise ValueError(f"{path}: cannot tell the dataset format (expected captions.txt, "
                     "Flickr8k.token.txt, a .json file, dataset_*.json, annotations/captions_*.json or Sentences/ "
                     "and Annotations/); "
                     "pass format=")


class CaptionTrainingSet(Dataset):
    """One item per (image, caption) pair: (image (3, s, s) float, LongTensor of vocab.encode(caption)).

    `preload=True` decodes and resizes every image once into a uint8 cache, so epochs after the first
    cost no JPEG/PNG decoding; that is most of the time of a small model's CPU training step.
    """

    def __init__(self, dataset: CaptionDataset, vocab: Vocabulary, preprocessing: Preprocessing,
                 preload: bool = False) -> None:
        self.image_paths = [record.image_path for record in dataset]
        self.pairs = [(i, torch.tensor(vocab.encode(caption), dtype=torch.long))
                      for i, record in enumerate(dataset) for caption in record.captions]
        self.preprocessing = preprocessing
        self.cache: torch.Tensor | None = None
        if preload:
            size = preprocessing.image_size
            images = [preprocessing.resize_uint8(load_image(p)) for p in self.image_paths]
            self.cache = torch.stack(images) if images else torch.empty((0, 3, size, size), dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_index, caption = self.pairs[index]
        if self.cache is not None:
            return self.preprocessing.normalize_uint8(self.cache[image_index]), caption
        return self.preprocessing.transform(load_image(self.image_paths[image_index])), caption
