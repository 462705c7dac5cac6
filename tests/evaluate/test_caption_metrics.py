"""Caption metrics against hand-computed BLEU, and checkpoint evaluation against captioning one image at a time."""
from __future__ import annotations

import math
import shutil

import pytest

from captionlens.data.datasets import load_dataset
from captionlens.data.images import ImageLoadError, Preprocessing, load_image_tensor
from captionlens.data.shapes import generate_shapes
from captionlens.data.vocabulary import Vocabulary
from captionlens.evaluate import caption_metrics, evaluate_checkpoint, score_captions
from captionlens.models import caption_files, save_checkpoint
from zoo import tiny_captioner


def test_bleu_matches_a_hand_computation():
    predictions = {"img1": "A red circle!", "img2": "the the the blue"}
    references = {"img1": ["a small red circle on grey", "there is a red square here"],
                  "img2": ["the blue sky"]}
    scores = score_captions(predictions, references, metrics=("BLEU",))
    # Clipped unigram matches 3/3 and 2/4 (the "the"s count once); hypothesis length 3 + 4 = 7 against
    # the closest reference lengths 6 + 3 = 9, so the brevity penalty is exp(1 - 9/7).
    brevity = math.exp(1 - 9 / 7)
    assert scores["BLEU-1"] == pytest.approx(5 / 7 * brevity, rel=1e-6)
    # Bigrams: "a red", "red circle" both in some reference; "the the" x2 unmatched, "the blue" matched.
    assert scores["BLEU-2"] == pytest.approx(math.sqrt(5 / 7 * 3 / 5) * brevity, rel=1e-6)


def test_identical_captions_score_one_and_disjoint_ones_zero():
    refs = {1: ["a small red circle left of a blue square"], 2: ["a large green triangle above a red circle"]}
    same = score_captions({k: v[0] for k, v in refs.items()}, refs, metrics=("BLEU", "ROUGE-L"))
    assert same["BLEU-4"] == pytest.approx(1.0, abs=1e-6) and same["ROUGE-L"] == pytest.approx(1.0)
    other = score_captions({1: "yellow dogs run", 2: "cats sleep"}, refs, metrics=("BLEU", "ROUGE-L"))
    assert other["BLEU-1"] < 1e-6 and other["BLEU-4"] < 1e-6 and other["ROUGE-L"] == 0.0


def test_cider_is_reported_raw_under_the_name_of_the_variant_computed():
    refs = {i: [f"a {c} {s}", f"there is a {c} {s}"] for i, (c, s) in
            enumerate([("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "circle")])}
    exact = score_captions({i: r[0] for i, r in refs.items()}, refs, metrics=("CIDEr",))
    wrong = score_captions({i: refs[(i + 1) % 4][0] for i in refs}, refs, metrics=("CIDEr",))
    name = exact["cider_variant"]
    assert name in ("CIDEr", "CIDEr-D") and exact[name] > 1.0 > wrong[name]   # raw scale, not 0-1


def test_meteor_is_skipped_with_a_reason_without_java(monkeypatch):
    monkeypatch.setattr(caption_metrics.shutil, "which", lambda name: None)
    scores = score_captions({1: "a red circle"}, {1: ["a red circle"]}, metrics=("METEOR",))
    assert scores["METEOR"] is None
    assert scores["skipped"]["METEOR"] == "java not found"
    assert "CoreNLP" in scores["skipped"]["SPICE"]


def test_meteor_runs_when_java_is_there():
    """One real METEOR run (java loads its paraphrase table: about 10 s)."""
    captions = {1: "a red circle", 2: "a blue square left of a green triangle"}
    scores = score_captions(captions, {k: [v] for k, v in captions.items()}, metrics=("METEOR",))
    if shutil.which("java") is None:
        assert scores["METEOR"] is None and scores["skipped"]["METEOR"] == "java not found"
    else:
        assert "METEOR" not in scores["skipped"] and scores["METEOR"] == pytest.approx(1.0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no reference captions for image 'b'"):
        score_captions({"a": "x", "b": "y"}, {"a": ["x"]})
    with pytest.raises(ValueError, match="unknown metric"):
        score_captions({"a": "x"}, {"a": ["x"]}, metrics=("SPICE",))


@pytest.fixture
def shapes_checkpoint(tmp_path):
    data = generate_shapes(tmp_path / "shapes", n_train=6, n_val=2, n_test=5, image_size=32, seed=1)
    vocab = Vocabulary.build(load_dataset(data, "shapes").split("train").all_captions())
    model = tiny_captioner("show-attend-tell", vocab=vocab, hidden_size=32, grid_size=7, calibrate=False,
                           attach_vocab=False)
    return save_checkpoint(tmp_path / "m.safetensors", model, vocab), data, model, vocab


def test_evaluate_checkpoint_captions_each_test_image_as_one_image_decoding_does(shapes_checkpoint):
    path, data, model, vocab = shapes_checkpoint
    result = evaluate_checkpoint(path, data, split="test", beam_size=2, max_length=6, limit=4, metrics=("BLEU",))
    records = load_dataset(data, "shapes").split("test").records[:4]
    assert result["decoding"] == {"beam_size": 2, "max_length": 6, "length_penalty": 0.0}
    assert result["split"] == "test" and result["metrics"]["images"] == 4
    for record in records:
        tensor, _ = load_image_tensor(record.image_path, Preprocessing(image_size=32))
        assert result["predictions"][record.image_id] == model.generate_caption(tensor, vocab, max_length=6,
                                                                                beam_size=2)
    expected = score_captions(result["predictions"], {r.image_id: r.captions for r in records}, ("BLEU",))
    assert result["metrics"]["BLEU-4"] == expected["BLEU-4"]


def test_caption_files_reports_a_bad_file_in_its_place(shapes_checkpoint, tmp_path):
    _, data, model, vocab = shapes_checkpoint
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    good = sorted((data / "Images").glob("test_*.png"))[:2]
    results = caption_files(model, [good[0], bad, good[1]], vocab, beam_size=1, max_length=5, batch_size=2)
    assert isinstance(results[1], ImageLoadError) and "bad.png" in str(results[1])
    for path, result in zip(good, (results[0], results[2])):
        tensor, _ = load_image_tensor(path, Preprocessing(image_size=32))
        assert result.caption == model.generate_caption(tensor, vocab, max_length=5, beam_size=1)
