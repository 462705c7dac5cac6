"""Karpathy split files (dataset_flickr8k.json, dataset_coco.json, ... and the synthetic shapes):
the standard splits used by published captioning results."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from captionlens.data.records import SPLITS, CaptionDataset, CaptionRecord, read_json


def find_karpathy_json(folder: Path) -> Path:
    """The one dataset_*.json in `folder`."""
    found = sorted(folder.glob("dataset_*.json"))
    if not found:
        raise FileNotFoundError(f"{folder}: no dataset_*.json file")
    if len(found) > 1:
        raise ValueError(f"{folder}: several Karpathy files ({', '.join(p.name for p in found)}); "
                         "pass the one to load")
    return found[0]


def load_karpathy(json_path: str | os.PathLike, image_root: str | os.PathLike | None = None
                  ) -> CaptionDataset:
    """Records of a Karpathy JSON: `images[]` with `filename`, optional `filepath` (COCO's
    train2014/ val2014), `split` and `sentences[].raw` (or `.tokens`, joined, when raw is absent).

    Images are looked for in `image_root/filepath/filename`; `image_root` defaults to the JSON's
    folder's Images/ when that exists, else the JSON's folder.
    """
    path = Path(json_path)
    data = read_json(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{path}: expected a JSON object with an 'images' list")
    if not images:
        raise ValueError(f"{path}: its 'images' list is empty")
    if image_root is None:
        image_root = path.parent / "Images" if (path.parent / "Images").is_dir() else path.parent
    records = []
    for i, entry in enumerate(images):
        filename = _field(entry, "filename", str, path, i)
        split = _field(entry, "split", str, path, i)
        if split not in SPLITS:
            raise ValueError(f"{path}: images[{i}] has split {split!r}; expected one of {', '.join(SPLITS)}")
        sentences = _field(entry, "sentences", list, path, i)
        if not sentences:
            raise ValueError(f"{path}: images[{i}] has no sentences")
        captions = [_sentence_text(s, path, i, j) for j, s in enumerate(sentences)]
        folder = _field(entry, "filepath", str, path, i) if entry.get("filepath") is not None else ""
        records.append(CaptionRecord(Path(image_root) / folder / filename, captions, split, filename))
    return CaptionDataset.from_records(records, path)


def _field(entry: Any, key: str, kind: type, path: Path, index: int) -> Any:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: images[{index}] is not a JSON object")
    if key not in entry:
        raise ValueError(f"{path}: images[{index}] has no '{key}'")
    if not isinstance(entry[key], kind):
        raise ValueError(f"{path}: images[{index}]['{key}'] is not a {kind.__name__}: {entry[key]!r:.60}")
    return entry[key]


def _sentence_text(sentence: Any, path: Path, index: int, number: int) -> str:
    if isinstance(sentence, dict):
        if isinstance(sentence.get("raw"), str) and sentence["raw"].strip():
            return sentence["raw"].strip()
        if isinstance(sentence.get("tokens"), list) and sentence["tokens"]:
            return " ".join(str(token) for token in sentence["tokens"])
    raise ValueError(f"{path}: images[{index}].sentences[{number}] has no 'raw' or 'tokens'")
