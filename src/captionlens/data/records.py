"""Caption datasets in one shape, whatever file layout they came from: `CaptionRecord`s in a `CaptionDataset`.

The leaf every loader (Kaggle / original Flickr8k, Karpathy JSON, the synthetic shapes) builds on;
`datasets` sits above the loaders and picks one by format.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test", "restval")


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


def _existing(paths: Sequence[Path]) -> list[bool]:
    """`path.is_file()` for each path, listing each folder once: far faster on 100k-image datasets."""
    listings: dict[Path, set[str]] = {}
    for folder in {p.parent for p in paths}:
        try:
            listings[folder] = {entry.name for entry in os.scandir(folder) if entry.is_file()}
        except OSError:
            listings[folder] = set()
    return [p.name in listings[p.parent] for p in paths]


def read_bytes(path: Path) -> bytes:
    """A file's bytes; a missing file is one FileNotFoundError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None


def read_text(path: Path) -> str:
    """UTF-8 text of a file (a BOM is dropped); errors name the file and, for bad bytes, the line."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text") from None


def read_json(path: Path) -> Any:
    """A JSON file's content; errors name the file and, for bad JSON, the line."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def image_folder(root: Path, image_root: str | os.PathLike | None, names: Sequence[str]) -> Path:
    """`image_root` when given, else the first of `names` that is a folder in `root`; the error lists them."""
    if image_root is not None:
        return Path(image_root)
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root}: no image folder (looked for {', '.join(names)})")
