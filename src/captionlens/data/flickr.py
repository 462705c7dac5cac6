"""Flickr8k in its two common layouts: Kaggle's (captions.txt + Images/) and the original
(Flickr8k.token.txt + Flickr_8k.*Images.txt split files + Flicker8k_Dataset/)."""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import warnings
from pathlib import Path

from captionlens.data.records import CaptionDataset, CaptionRecord, image_folder, read_text

SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
               "test": "Flickr_8k.testImages.txt"}
# Both spellings of the original image folder exist in the wild, as does Kaggle's Images/.
IMAGE_FOLDERS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images")
_TOKEN_LINE = re.compile(r"^(?P<name>[^\t#]+)#(?P<k>\d+)\t(?P<caption>.*\S.*)$")


def hash_split(name: str) -> str:
    """Deterministic split of an image name: 75% "train", 12.5% "val", 12.5% "test".

    The proportions of the official 6000/1000/1000 split; each image's split depends on its name
    alone (MD5), so it is the same on every machine and does not move when images are added.
    """
    fraction = int.from_bytes(hashlib.md5(name.encode("utf-8"), usedforsecurity=False).digest()[:8], "big") / 2**64
    return "train" if fraction < 0.75 else "val" if fraction < 0.875 else "test"


def read_split_files(root: Path) -> dict[str, str] | None:
    """Image name -> split from the official split files in `root`, or None when there are none."""
    present = {split: root / name for split, name in SPLIT_FILES.items() if (root / name).is_file()}
    if not present:
        return None
    if len(present) < len(SPLIT_FILES):
        absent = [name for split, name in SPLIT_FILES.items() if split not in present]
        raise FileNotFoundError(f"{root}: has {', '.join(p.name for p in present.values())} but not "
                                f"{', '.join(absent)}; give all three split files or none")
    return {line.strip(): split for split, path in present.items()
            for line in read_text(path).splitlines() if line.strip()}


def _assign_splits(captions: dict[str, list[str]], root: Path, image_dir: Path, source: Path
                   ) -> list[CaptionRecord]:
    """Records with the official split when the split files exist (images they omit are left out,
    as in every published Flickr8k result), else with `hash_split`; an error naming `source` (the
    captions' file) when the split files leave out every image."""
    official = read_split_files(root)
    records = [CaptionRecord(image_dir / name, texts, official[name] if official else hash_split(name), name)
               for name, texts in captions.items() if official is None or name in official]
    if not records:
        raise ValueError(f"{source}: none of its {len(captions)} images is listed in the split files "
                         f"{', '.join(SPLIT_FILES.values())} in {root}")
    return records


def load_kaggle_flickr8k(root: str | os.PathLike, image_root: str | os.PathLike | None = None
                         ) -> CaptionDataset:
    """Kaggle's Flickr8k: `root/captions.txt` (CSV, header `image,caption`), images in `root/Images/`.

    Kaggle ships no split: official split files in `root` are used when present, else `hash_split`.
    """
    root = Path(root)
    path = root / "captions.txt"
    reader = csv.reader(io.StringIO(read_text(path)))
    captions: dict[str, list[str]] = {}
    try:
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["image", "caption"]:
            raise ValueError(f"{path}:1: expected the header 'image,caption', got {','.join(header or [])[:60]!r}")
        for row in reader:
            if not row:
                continue
            # An image name has no comma, so extra fields are an unquoted caption's own commas.
            name, caption = row[0].strip(), ",".join(row[1:]).strip()
            if not name or not caption:
                raise ValueError(f"{path}:{reader.line_num}: expected 'image,caption', "
                                 f"got {','.join(row)[:60]!r}")
            captions.setdefault(name, []).append(caption)
    except csv.Error as exc:
        raise ValueError(f"{path}:{reader.line_num}: {exc}") from None
    if not captions:
        raise ValueError(f"{path}: no captions after the header")
    image_dir = Path(image_root) if image_root is not None else root / "Images"
    return CaptionDataset.from_records(_assign_splits(captions, root, image_dir, path), path)


def load_flickr8k(root: str | os.PathLike, image_root: str | os.PathLike | None = None) -> CaptionDataset:
    """Original Flickr8k: `Flickr8k.token.txt` lines `name.jpg#k<TAB>caption`, the three split files
    (dev -> "val"; `hash_split` when absent) and images in Flicker8k_Dataset/ (or Images/).

    The token file's dangling `*.jpg.1` entries (captions of no existing image) are skipped with
    one warning.
    """
    root = Path(root)
    path = root / "Flickr8k.token.txt"
    image_dir = image_folder(root, image_root, IMAGE_FOLDERS)
    captions: dict[str, list[tuple[int, str]]] = {}
    dangling = 0
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        match = _TOKEN_LINE.match(line.rstrip("\r"))
        if match is None:
            raise ValueError(f"{path}:{lineno}: expected 'name.jpg#k<TAB>caption', got {line[:60]!r}")
        if match["name"].endswith(".jpg.1"):
            dangling += 1
            continue
        captions.setdefault(match["name"], []).append((int(match["k"]), match["caption"].strip()))
    if dangling:
        warnings.warn(f"{path}: skipped {dangling} captions of dangling '*.jpg.1' entries", stacklevel=2)
    if not captions:
        raise ValueError(f"{path}: no captions")
    ordered = {name: [text for _, text in sorted(pairs)] for name, pairs in captions.items()}
    return CaptionDataset.from_records(_assign_splits(ordered, root, image_dir, path), path)

