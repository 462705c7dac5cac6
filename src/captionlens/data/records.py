"""Caption datasets in one shape, whatever file layout they came from: `CaptionRecord`s in a `CaptionDataset`.

The leaf every loader (Kaggle / original Flickr8k, Karpathy JSON, the synthetic shapes) builds on;
`datasets` sits above the loaders and picks one by format.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import typing
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typeguard import CollectionCheckStrategy, TypeCheckError, check_type

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
        except (OSError, ValueError):  # no such folder, or a name no folder can have (a NUL in it)
            listings[folder] = set()
    return [p.name in listings[p.parent] for p in paths]


def read_bytes(path: Path) -> bytes:
    """A file's bytes; a missing file is one FileNotFoundError naming it, an unreadable one a ValueError."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # a folder, no permission, a NUL in the name
        raise ValueError(f"{path}: cannot read ({describe(exc)})") from None


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
    return parse_json(read_text(path), str(path))


def parse_json(text: str | bytes, name: str) -> Any:
    """JSON text's value; a ValueError naming `name` (a file, or a file and key) and the line when it is not
    JSON or nests deeper than Python's parser goes."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError(f"{name}: JSON nested too deeply") from None
    except (UnicodeDecodeError, TypeError) as exc:
        raise ValueError(f"{name}: not JSON text ({describe(exc)})") from None


def describe(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line of at most `limit` characters (its type, and its message with white space
    collapsed), for an error message that quotes what a library said of a bad file."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_types(value: Any, name: str) -> None:
    """ValueError naming `name` and the field when a dataclass built from a file's JSON (`value`), or one of
    the dataclasses it holds, has a field whose value is not of its annotated type (a string for a number,
    a list for a mapping): a reader hands out whole results or none."""
    try:
        _check_fields(value, name)
    except RecursionError:
        raise ValueError(f"{name}: nested too deeply") from None


def _check_fields(value: Any, where: str) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        hints = _field_types(type(value))
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            try:
                check_type(item, hints[field.name], collection_check_strategy=CollectionCheckStrategy.ALL_ITEMS)
                if isinstance(item, bool) and not _allows_bool(hints[field.name]):  # bool is an int to Python
                    raise TypeCheckError("a bool")
            except TypeCheckError:
                shown = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
                raise ValueError(f"{where}: '{field.name}' is {shown}, expected {_type_name(hints[field.name])}"
                                 ) from None
            if _has_huge_int(item):
                raise ValueError(f"{where}: '{field.name}' holds an integer beyond 64 bits")
            _check_fields(item, f"{where}.{field.name}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_fields(item, f"{where}[{key!r:.40}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_fields(item, f"{where}[{index}]")


def _has_huge_int(value: Any) -> bool:
    """Whether `value`, or a list, tuple or mapping in it, holds an int past 64 bits (JSON allows any number
    of digits: no count is that large, and no float field can hold it)."""
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, Mapping):
        return any(_has_huge_int(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_huge_int(item) for item in value)
    return False


def _allows_bool(hint: Any) -> bool:
    return hint in (bool, Any, object) or any(_allows_bool(arg) for arg in typing.get_args(hint))


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass; a name imported for type checkers only (under TYPE_CHECKING)
    counts as Any, so that field's value is not checked."""
    unknown: dict[str, Any] = {}
    while True:
        try:
            return typing.get_type_hints(cls, localns=unknown)
        except NameError as exc:
            if exc.name is None or exc.name in unknown:
                raise
            unknown[exc.name] = Any


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("collections.abc.", "").replace("typing.", "")


def image_folder(root: Path, image_root: str | os.PathLike | None, names: Sequence[str]) -> Path:
    """`image_root` when given, else the first of `names` that is a folder in `root`; the error lists them."""
    if image_root is not None:
        return Path(image_root)
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root}: no image folder (looked for {', '.join(names)})")
