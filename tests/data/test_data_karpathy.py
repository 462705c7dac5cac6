"""Karpathy split JSON: COCO filepaths, restval, tokens fallback and errors that say where."""
from __future__ import annotations

import json

import pytest

from captionlens.data.karpathy import load_karpathy


def _entry(filename, split, raw="A dog .", **extra):
    return {"filename": filename, "split": split, "sentences": [{"raw": raw, "tokens": ["a", "dog"]}], **extra}


def test_coco_layout_with_filepath_and_restval(tmp_path, make_images):
    data = {"images": [_entry("x.jpg", "train", filepath="train2014"),
                       _entry("y.jpg", "restval", filepath="val2014"),
                       _entry("z.jpg", "test", filepath="val2014")]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(data))
    make_images(tmp_path / "coco" / "train2014", ["x.jpg"])
    make_images(tmp_path / "coco" / "val2014", ["y.jpg", "z.jpg"])
    dataset = load_karpathy(tmp_path / "dataset_coco.json", image_root=tmp_path / "coco")
    assert [r.image_path for r in dataset] == [tmp_path / "coco" / "train2014" / "x.jpg",
                                               tmp_path / "coco" / "val2014" / "y.jpg",
                                               tmp_path / "coco" / "val2014" / "z.jpg"]
    assert [r.split for r in dataset] == ["train", "restval", "test"]
    assert [r.image_id for r in dataset.split("train")] == ["x.jpg", "y.jpg"]
    assert [r.image_id for r in dataset.split("train", include_restval=False)] == ["x.jpg"]


@pytest.mark.parametrize("in_images", [True, False])
def test_default_image_root(tmp_path, make_images, in_images):
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps({"images": [_entry("x.jpg", "val")]}))
    folder = tmp_path / "Images" if in_images else tmp_path
    make_images(folder, ["x.jpg"])
    (record,) = load_karpathy(tmp_path / "dataset_flickr8k.json")
    assert record.image_path == folder / "x.jpg"


def test_tokens_are_joined_when_raw_is_absent(tmp_path, make_images):
    entry = {"filename": "x.jpg", "split": "val", "sentences": [{"tokens": ["two", "dogs"]}, {"raw": " A cat . "}]}
    (tmp_path / "d.json").write_text(json.dumps({"images": [entry]}))
    make_images(tmp_path, ["x.jpg"])
    assert load_karpathy(tmp_path / "d.json").records[0].captions == ["two dogs", "A cat ."]


def test_malformed_json_names_file_and_line(tmp_path):
    (tmp_path / "d.json").write_text('{"images": [\n  {"filename": "x.jpg",,}\n]}')
    with pytest.raises(ValueError, match=r"d\.json:2: not valid JSON"):
        load_karpathy(tmp_path / "d.json")


@pytest.mark.parametrize("key", ["filename", "split", "sentences"])
def test_missing_key_names_file_index_and_key(tmp_path, key):
    second = _entry("y.jpg", "val")
    del second[key]
    (tmp_path / "d.json").write_text(json.dumps({"images": [_entry("x.jpg", "val"), second]}))
    with pytest.raises(ValueError, match=rf"d\.json: images\[1\] has no '{key}'"):
        load_karpathy(tmp_path / "d.json")


@pytest.mark.parametrize("data, message", [
    ({"images": [_entry("x.jpg", "dev")]}, r"images\[0\] has split 'dev'; expected one of train, val"),
    ({"images": [{"filename": "x.jpg", "split": "val", "sentences": [{"sentid": 3}]}]},
     r"images\[0\]\.sentences\[0\] has no 'raw' or 'tokens'"),
    ({"images": [{"filename": 7, "split": "val", "sentences": []}]}, r"images\[0\]\['filename'\] is not a str"),
    ([1, 2], "expected a JSON object with an 'images' list"),
])
def test_bad_content_is_named(tmp_path, data, message):
    (tmp_path / "d.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        load_karpathy(tmp_path / "d.json")
