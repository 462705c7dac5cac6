"""Fuzzing the caption-dataset readers: Karpathy JSON (`load_karpathy`), Kaggle's `captions.txt`
(`load_kaggle_flickr8k`), the original Flickr8k token and split files (`load_flickr8k`). Each seed is a
small valid dataset whose images exist; one file of it is mutated. See harness.py for the contract."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import check_reader, check_refused, fuzz_settings, json_mutations, text_mutations, write
from hypothesis import given
from hypothesis import strategies as st

from captionlens.data.flickr import SPLIT_FILES, load_flickr8k, load_kaggle_flickr8k
from captionlens.data.karpathy import load_karpathy
from captionlens.data.records import SPLITS, CaptionDataset

# its row in the table of `make fuzz`
READER = "`load_karpathy`, `load_kaggle_flickr8k` (captions.txt), `load_flickr8k` (token and split files)"

IMAGES = ("a.jpg", "b.jpg", "c.jpg", "d.jpg")
CAPTIONS = ("A dog runs on the grass.", "two people, one ball", "a red car")


def _dataset(root: Path) -> Path:
    """root/Images/ with the images every seed names (empty files: the readers only check that they exist)."""
    for name in IMAGES:
        write(root / "Images" / name, b"")
        write(root / "Images" / "val2014" / name, b"")
    return root


KARPATHY = {"images": [
    {"filename": name, "split": SPLITS[i % 4], "filepath": "val2014" if i == 3 else "",
     "sentences": [{"raw": c, "tokens": c.lower().split()} for c in CAPTIONS[:i + 1]] if i != 2 else
     [{"tokens": ["a", "cat"]}]}
    for i, name in enumerate(IMAGES)], "dataset": "flickr8k"}
KAGGLE = ("image,caption\n" + "".join(f"{name},{c}\n" for name in IMAGES for c in CAPTIONS)
          + '"a.jpg","quoted, caption"\n')
TOKENS = "".join(f"{name}#{k}\t{c}\n" for name in IMAGES for k, c in enumerate(CAPTIONS)) + "x.jpg.1#0\tdangling\n"
SPLIT_LISTS = {"train": "a.jpg\nb.jpg\n", "val": "c.jpg\n", "test": "d.jpg\n"}


def accept(dataset: CaptionDataset) -> None:
    """A loaded dataset is whole: records of an existing image, a known split and non-empty string captions."""
    assert isinstance(dataset, CaptionDataset) and len(dataset) > 0
    for record in dataset:
        assert isinstance(record.image_path, Path) and record.image_path.is_file()
        assert record.split in SPLITS and isinstance(record.image_id, str)
        assert record.captions and all(isinstance(c, str) and c.strip() for c in record.captions)


def test_seeds_load(tmp_path):
    root = _dataset(tmp_path)
    write(root / "dataset_flickr8k.json", json.dumps(KARPATHY).encode())
    write(root / "captions.txt", KAGGLE.encode())
    write(root / "Flickr8k.token.txt", TOKENS.encode())
    for split, text in SPLIT_LISTS.items():
        write(root / "splits" / SPLIT_FILES[split], text.encode())
    accept(load_karpathy(root / "dataset_flickr8k.json"))
    accept(load_kaggle_flickr8k(root))
    with pytest.warns(UserWarning, match="dangling"):
        accept(load_flickr8k(root))


@fuzz_settings()
@given(data=st.data())
def test_karpathy(tmp_path, data):
    path = write(_dataset(tmp_path) / "dataset_flickr8k.json", data.draw(json_mutations(KARPATHY), label="file"))
    check_reader(lambda: load_karpathy(path), {path.name}, accept)


@fuzz_settings()
@given(data=st.data())
def test_kaggle_captions(tmp_path, data):
    root = _dataset(tmp_path)
    path = write(root / "captions.txt", data.draw(text_mutations(KAGGLE, ("image", "caption")), label="file"))
    check_reader(lambda: load_kaggle_flickr8k(root), {path.name}, accept)


@fuzz_settings()
@given(data=st.data())
def test_flickr8k_tokens_and_splits(tmp_path, data):
    root = _dataset(tmp_path)
    write(root / "Flickr8k.token.txt", TOKENS.encode())
    for split, text in SPLIT_LISTS.items():
        write(root / SPLIT_FILES[split], text.encode())
    # one file mutated: the token file, or one of the split files (which the Kaggle layout reads too)
    name = data.draw(st.sampled_from(["Flickr8k.token.txt", *SPLIT_FILES.values()]), label="mutated")
    seed = TOKENS if name == "Flickr8k.token.txt" else SPLIT_LISTS[next(s for s, n in SPLIT_FILES.items() if n == name)]
    write(root / name, data.draw(text_mutations(seed, (".jpg#", "#9", "\t")), label="file"))
    check_reader(lambda: load_flickr8k(root), {name}, accept)


# Files the fuzzer found breaking the contract, with what the reader did before the fix.
@pytest.mark.parametrize("edit", [
    pytest.param(lambda d: d.update(images=[]), id="loaded: no images, an empty dataset"),
    pytest.param(lambda d: d["images"][0].update(filepath=[""]), id="TypeError: a filepath that is a list"),
    pytest.param(lambda d: d["images"][0].update(sentences=[]), id="loaded: an image without captions"),
])
def test_karpathy_crashes_found(tmp_path, edit):
    data = json.loads(json.dumps(KARPATHY))
    edit(data)
    path = write(_dataset(tmp_path) / "dataset_flickr8k.json", json.dumps(data).encode())
    check_refused(lambda: load_karpathy(path), {path.name})


def test_kaggle_crash_found(tmp_path):
    """csv.Error (a carriage return inside the unquoted header) escaped: the header was read outside the try."""
    root = _dataset(tmp_path)
    write(root / "captions.txt", ("\r" + KAGGLE[len("image"):]).encode())
    check_refused(lambda: load_kaggle_flickr8k(root), {"captions.txt"})


def test_flickr8k_crash_found(tmp_path):
    """Loaded as an empty dataset: a token file none of whose images the split files list."""
    root = _dataset(tmp_path)
    write(root / "Flickr8k.token.txt", b"`.jpg#0\tA")
    for split, text in SPLIT_LISTS.items():
        write(root / SPLIT_FILES[split], text.encode())
    check_refused(lambda: load_flickr8k(root), {"Flickr8k.token.txt"})
