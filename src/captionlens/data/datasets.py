"""Caption datasets in one shape, whatever file layout they came from, and their training view.

Every loader (Kaggle / original Flickr8k, Karpathy JSON, the synthetic shapes) returns a
`CaptionDataset` of `CaptionRecord`s; `CaptionTrainingSet` turns one into (image, caption) pairs.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from captionlens.data.images import load_image, make_transform, normalize_uint8, resize_uint8
from captionlens.data.vocabulary import Vocabulary

SPLITS = ("train", "val", "test", "restval")
FORMATS = ("kaggle", "flickr", "karpathy", "shapes")


@dataclass
class CaptionRecord:
    """One image and its reference captions."""

    image_path: Path
    captions: list[str]
    split: str
    image_id: str


class CaptionDataset:
    """A list of `CaptionRecord`s; `missing_images` lists images the source named but lacked."""

    def __init__(self, records: Iterable[CaptionRecord], missing_images: Sequence[Path] = ()) -> None:
        self.records = list(records)
        self.missing_images = list(missing_images)

    @classmethod
    def from_records(cls, records: Sequence[CaptionRecord], source: Path) -> CaptionDataset:
        """Dataset of the records whose image exists; the others are dropped with one warning.

        Raises `FileNotFoundError` when none of the images exists (a wrong image folder, usually).
        """
        exists = _existing([r.image_path for r in records])
        present = [r for r, ok in zip(records, exists) if ok]
        missing = [r.image_path for r, ok in zip(records, exists) if not ok]
        if records and not present:
            folders = sorted({str(p.parent) for p in missing})
            raise FileNotFoundError(f"none of the {len(records)} images listed in {source} exists; "
                                    f"expected them in {', '.join(folders[:3])}")
        if missing:
            names = ", ".join(p.name for p in missing[:5])
            warnings.warn(f"{source}: {len(missing)} of {len(records)} listed images are missing and "
                          f"were dropped (first: {names})", stacklevel=3)
        return cls(present, missing)

    def split(self, name: str, include_restval: bool = True) -> CaptionDataset:
        """The records of one split; "train" also takes Karpathy's "restval" unless told not to."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        wanted = {name, "restval"} if name == "train" and include_restval else {name}
        return CaptionDataset([r for r in self.records if r.split in wanted], self.missing_images)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[CaptionRecord]:
        return iter(self.records)

    def all_captions(self) -> list[str]:
        return [caption for record in self.records for caption in record.captions]

    def check_images(self) -> list[Path]:
        """Image paths of the records whose file does not exist (now)."""
        return [r.image_path for r in self.records if not r.image_path.is_file()]


def _existing(paths: Sequence[Path]) -> list[bool]:
    """`path.is_file()` for each path, listing each folder once: far faster on 100k-image datasets."""
    listings: dict[Path, set[str]] = {}
    for folder in {p.parent for p in paths}:
        try:
            listings[folder] = {entry.name for entry in os.scandir(folder) if entry.is_file()}
        except OSError:
            listings[folder] = set()
    return [p.name in listings[p.parent] for p in paths]


def read_text(path: Path) -> str:
    """UTF-8 text of a file (a BOM is dropped); errors name the file and, for bad bytes, the line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text") from None


def load_dataset(path: str | os.PathLike, format: str | None = None,
                 image_root: str | os.PathLike | None = None) -> CaptionDataset:
    """Load a caption dataset; `format` is guessed from the files when None (see `detect_format`)."""
    # Imported here because the loaders import this module for CaptionRecord/CaptionDataset.
    from captionlens.data.flickr import load_flickr8k, load_kaggle_flickr8k
    from captionlens.data.karpathy import find_karpathy_json, load_karpathy
    from captionlens.data.shapes import SHAPES_JSON

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
    if format == "shapes":
        return load_karpathy(path if path.is_file() else path / SHAPES_JSON, image_root)
    raise ValueError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")


def detect_format(path: str | os.PathLike) -> str:
    """The format of a dataset file or folder: captions.txt -> "kaggle", Flickr8k.token.txt ->
    "flickr", a .json file or a folder with dataset_*.json (shapes included) -> "karpathy"."""
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
    elif any(path.glob("dataset_*.json")):
        return "karpathy"
    raise ValueError(f"{path}: cannot tell the dataset format (expected captions.txt, "
                     "Flickr8k.token.txt, a .json file or dataset_*.json); pass format=")


class CaptionTrainingSet(Dataset):
    """One item per (image, caption) pair: (image (3, s, s) float, LongTensor of vocab.encode(caption)).

    `preload=True` decodes every image once into a uint8 cache, so epochs after the first cost no
    JPEG/PNG decoding; that is most of the time of a small model's CPU training step.
    """

    def __init__(self, dataset: CaptionDataset, vocab: Vocabulary, image_size: int = 224,
                 preload: bool = False) -> None:
        self.image_paths = [record.image_path for record in dataset]
        self.pairs = [(i, torch.tensor(vocab.encode(caption), dtype=torch.long))
                      for i, record in enumerate(dataset) for caption in record.captions]
        self.transform = make_transform(image_size)
        self.cache: torch.Tensor | None = None
        if preload:
            images = [resize_uint8(load_image(p), image_size) for p in self.image_paths]
            self.cache = (torch.stack(images) if images
                          else torch.empty((0, 3, image_size, image_size), dtype=torch.uint8))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_index, caption = self.pairs[index]
        if self.cache is not None:
            return normalize_uint8(self.cache[image_index]), caption
        return self.transform(load_image(self.image_paths[image_index])), caption


def collate_captions(batch: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_idx: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (B, 3, s, s), captions (B, L) padded with `pad_idx`, lengths (B,)), batch order kept."""
    images, captions = zip(*batch)
    lengths = torch.tensor([len(c) for c in captions], dtype=torch.long)
    return torch.stack(images), pad_sequence(list(captions), batch_first=True, padding_value=pad_idx), lengths
