"""Flickr8k in Kaggle's and the original layout, with the mistakes real copies contain."""
from __future__ import annotations

import warnings
from collections import Counter

import pytest

from captionlens.data.flickr import SPLIT_FILES, hash_split, load_flickr8k, load_kaggle_flickr8k

KAGGLE_CSV = '''image,caption
a.jpg,A dog runs .
a.jpg,"A dog, brown, runs on ""grass"" ."
b.jpg,A child plays, unquoted comma .
b.jpg,Another caption .
c.jpg,A cat sleeps .
'''


def test_kaggle_captions_with_commas_and_quotes(tmp_path, make_images):
    (tmp_path / "captions.txt").write_text(KAGGLE_CSV)
    make_images(tmp_path / "Images", ["a.jpg", "b.jpg", "c.jpg"])
    dataset = load_kaggle_flickr8k(tmp_path)
    records = {r.image_id: r for r in dataset}
    assert records["a.jpg"].captions == ["A dog runs .", 'A dog, brown, runs on "grass" .']
    assert records["b.jpg"].captions == ["A child plays, unquoted comma .", "Another caption ."]
    assert records["c.jpg"].image_path == tmp_path / "Images" / "c.jpg"
    assert all(r.split == hash_split(r.image_id) for r in dataset)


def test_kaggle_uses_official_split_files_when_present(tmp_path, make_images):
    (tmp_path / "captions.txt").write_text(KAGGLE_CSV)
    make_images(tmp_path / "Images", ["a.jpg", "b.jpg", "c.jpg"])
    for name, image in zip(SPLIT_FILES.values(), ["b.jpg", "a.jpg", ""]):
        (tmp_path / name).write_text(image + "\n")
    splits = {r.image_id: r.split for r in load_kaggle_flickr8k(tmp_path)}
    assert splits == {"a.jpg": "val", "b.jpg": "train"}   # c.jpg is in no split: left out


def test_kaggle_needs_all_three_split_files(tmp_path, make_images):
    (tmp_path / "captions.txt").write_text(KAGGLE_CSV)
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("a.jpg\n")
    with pytest.raises(FileNotFoundError, match="not Flickr_8k.devImages.txt, Flickr_8k.testImages.txt"):
        load_kaggle_flickr8k(tmp_path)


def test_kaggle_bad_header_names_file_and_line(tmp_path):
    (tmp_path / "captions.txt").write_text("a.jpg,A dog .\n")
    with pytest.raises(ValueError, match=r"captions\.txt:1: expected the header 'image,caption'"):
        load_kaggle_flickr8k(tmp_path)


def test_kaggle_row_without_caption_names_file_and_line(tmp_path):
    (tmp_path / "captions.txt").write_text("image,caption\na.jpg,A dog .\n\nb.jpg\n")
    with pytest.raises(ValueError, match=r"captions\.txt:4: expected 'image,caption', got 'b.jpg'"):
        load_kaggle_flickr8k(tmp_path)


def test_kaggle_missing_images_are_dropped_with_a_warning(tmp_path, make_images):
    (tmp_path / "captions.txt").write_text(KAGGLE_CSV)
    make_images(tmp_path / "Images", ["a.jpg"])
    with pytest.warns(UserWarning, match=r"2 of 3 listed images are missing .*first: b\.jpg, c\.jpg"):
        dataset = load_kaggle_flickr8k(tmp_path)
    assert [r.image_id for r in dataset] == ["a.jpg"]
    assert dataset.missing_images == [tmp_path / "Images" / "b.jpg", tmp_path / "Images" / "c.jpg"]


def test_kaggle_all_images_missing_is_an_error_saying_where(tmp_path):
    (tmp_path / "captions.txt").write_text(KAGGLE_CSV)
    with pytest.raises(FileNotFoundError, match=f"none of the 3 images .* expected them in {tmp_path / 'Images'}"):
        load_kaggle_flickr8k(tmp_path)


TOKENS = (
    "a.jpg#1\tA dog runs , fast .\n"
    "a.jpg#0\tThe first caption .\n"
    "b.jpg#0\tA cat .\n"
    "\n"
    "b.jpg.1#0\tDangling one .\n"
    "b.jpg.1#1\tDangling two .\n"
    "c.jpg#0\tA bird .\n"
)


def _flickr(tmp_path, make_images, folder="Flicker8k_Dataset"):
    (tmp_path / "Flickr8k.token.txt").write_text(TOKENS)
    for split, name in SPLIT_FILES.items():
        (tmp_path / name).write_text({"train": "a.jpg\n", "val": "b.jpg\n", "test": "c.jpg\n"}[split])
    make_images(tmp_path / folder, ["a.jpg", "b.jpg", "c.jpg"])


@pytest.mark.parametrize("folder", ["Flicker8k_Dataset", "Images"])
def test_flickr8k_original_layout(tmp_path, make_images, folder):
    _flickr(tmp_path, make_images, folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_flickr8k(tmp_path)
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / 'Flickr8k.token.txt'}: skipped 2 captions of dangling '*.jpg.1' entries"]
    records = {r.image_id: r for r in dataset}
    assert records["a.jpg"].captions == ["The first caption .", "A dog runs , fast ."]
    assert {k: r.split for k, r in records.items()} == {"a.jpg": "train", "b.jpg": "val", "c.jpg": "test"}
    assert records["b.jpg"].image_path == tmp_path / folder / "b.jpg"


def test_flickr8k_malformed_line(tmp_path, make_images):
    _flickr(tmp_path, make_images)
    with open(tmp_path / "Flickr8k.token.txt", "a") as fh:
        fh.write("d.jpg A caption without a tab or number\n")
    with pytest.raises(ValueError, match=r"Flickr8k\.token\.txt:8: expected 'name\.jpg#k<TAB>caption', "
                                         r"got 'd\.jpg A caption"):
        load_flickr8k(tmp_path)


def test_flickr8k_without_image_folder(tmp_path):
    (tmp_path / "Flickr8k.token.txt").write_text(TOKENS)
    with pytest.raises(FileNotFoundError, match="no image folder"):
        load_flickr8k(tmp_path)


def test_hash_split_is_stable_with_the_official_proportions():
    names = [f"{k:010d}_abcdef.jpg" for k in range(8000)]
    counts = Counter(hash_split(n) for n in names)
    assert abs(counts["train"] / 8000 - 0.75) < 0.02
    assert abs(counts["val"] / 8000 - 0.125) < 0.015 and abs(counts["test"] / 8000 - 0.125) < 0.015
    # Pinned: a change here would silently move images between train and test.
    assert [hash_split(n) for n in ["1000268201_693b08cb0e.jpg", "1007320043_627395c3d8.jpg"]] == ["train", "test"]
