"""load_dataset's format detection, CaptionDataset and the training view."""
from __future__ import annotations

import json

import pytest
import torch

from captionlens.data import (
    CaptionDataset,
    CaptionRecord,
    CaptionTrainingSet,
    Preprocessing,
    Vocabulary,
    load_dataset,
)


def _kaggle(root, make_images):
    (root / "captions.txt").write_text("image,caption\na.jpg,A dog .\nb.jpg,A big red dog runs .\n")
    make_images(root / "Images", ["a.jpg", "b.jpg"])


def _flickr(root, make_images):
    (root / "Flickr8k.token.txt").write_text("a.jpg#0\tA dog .\n")
    make_images(root / "Flicker8k_Dataset", ["a.jpg"])


def _karpathy(root, make_images):
    entry = {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "A dog ."}]}
    (root / "dataset_flickr8k.json").write_text(json.dumps({"images": [entry]}))
    make_images(root / "Images", ["a.jpg"])


@pytest.mark.parametrize("layout, target", [
    (_kaggle, "."), (_kaggle, "captions.txt"), (_flickr, "."), (_flickr, "Flickr8k.token.txt"),
    (_karpathy, "."), (_karpathy, "dataset_flickr8k.json"),
])
def test_format_is_detected(tmp_path, make_images, layout, target):
    layout(tmp_path, make_images)
    dataset = load_dataset(tmp_path / target)
    assert dataset.records[0].image_id == "a.jpg"
    assert dataset.records[0].captions[0] == "A dog ."


def test_explicit_format_and_image_root(tmp_path, make_images):
    (tmp_path / "captions.txt").write_text("image,caption\na.jpg,A dog .\n")
    make_images(tmp_path / "elsewhere", ["a.jpg"])
    dataset = load_dataset(tmp_path, format="kaggle", image_root=tmp_path / "elsewhere")
    assert dataset.records[0].image_path == tmp_path / "elsewhere" / "a.jpg"


def test_undetectable_folder_and_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="cannot tell the dataset format"):
        load_dataset(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset format 'pascal'"):
        load_dataset(tmp_path, format="pascal")
    with pytest.raises(FileNotFoundError, match="nowhere: no such file or folder"):
        load_dataset(tmp_path / "nowhere")


def test_several_karpathy_files_must_be_chosen(tmp_path):
    for name in ("dataset_coco.json", "dataset_flickr8k.json"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(ValueError, match="several Karpathy files"):
        load_dataset(tmp_path)


def test_dataset_views(tmp_path, make_images):
    make_images(tmp_path, ["a.png", "b.png", "c.png"])
    dataset = CaptionDataset([CaptionRecord(tmp_path / "a.png", ["x y", "y z"], "train", "a"),
                              CaptionRecord(tmp_path / "b.png", ["w"], "restval", "b"),
                              CaptionRecord(tmp_path / "c.png", ["v"], "val", "c")])
    assert len(dataset) == 3 and [r.image_id for r in dataset] == ["a", "b", "c"]
    assert dataset.all_captions() == ["x y", "y z", "w", "v"]
    assert len(dataset.split("train")) == 2 and len(dataset.split("train", include_restval=False)) == 1
    assert len(dataset.split("test")) == 0
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        dataset.split("dev")


@pytest.fixture
def training_records(tmp_path, make_images):
    make_images(tmp_path, ["a.png", "b.png"], size=(20, 14))
    return CaptionDataset([CaptionRecord(tmp_path / "a.png", ["a red dog", "a dog"], "train", "a"),
                           CaptionRecord(tmp_path / "b.png", ["a cat sits on a mat"], "train", "b")])


def test_training_set_pairs_and_preload(training_records):
    vocab = Vocabulary.build(training_records.all_captions())
    lazy = CaptionTrainingSet(training_records, vocab, Preprocessing(image_size=16))
    cached = CaptionTrainingSet(training_records, vocab, Preprocessing(image_size=16), preload=True)
    assert len(lazy) == len(cached) == 3
    assert cached.cache is not None and cached.cache.dtype == torch.uint8 and cached.cache.shape == (2, 3, 16, 16)
    for k in range(3):
        (image, caption), (cached_image, cached_caption) = lazy[k], cached[k]
        assert image.shape == (3, 16, 16) and torch.equal(image, cached_image)
        assert torch.equal(caption, cached_caption)
    assert lazy[2][1].tolist() == vocab.encode("a cat sits on a mat")
    assert torch.equal(lazy[0][0], lazy[1][0])      # two captions of one image
