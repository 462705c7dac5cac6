"""CHAIR against hand-computed cases for every rule (plural, two-word name, words that must not count,
an object present only in the reference captions, a crowd annotation), shown to separate captions of
present objects (0) from captions naming absent ones (high); the synonym table against COCO's own 80
categories; `captionlens chair` and `captionlens evaluate --chair` end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from captionlens.cli import main
from captionlens.data.coco import load_coco_annotations
from captionlens.data.shapes import generate_shapes
from captionlens.data.vocabulary import Vocabulary
from captionlens.evaluate import (
    ChairResult,
    SynonymTable,
    chair,
    chair_on_coco,
    coco_ground_truth,
    coco_synonyms,
    load_captions,
)
from captionlens.models import save_checkpoint
from coco_layout import (
    CATEGORIES,
    caption_annotations,
    file_name,
    generated_coco,
    polygon_annotation,
    rle_annotation,
    write_karpathy,
    write_split,
)
from zoo import tiny_captioner

SQUARE = [[5, 5, 25, 5, 25, 25, 5, 25]]
# id -> (instances as (category, crowd), reference captions)
IMAGES = {
    1: ([("person", False), ("dog", False)], ["a man walking his dog", "a person with a dog on a leash"]),
    2: ([("hot dog", False)], ["a hot dog on a plate", "two hotdogs with mustard"]),
    3: ([("cat", False)], ["a cat sleeping on a couch", "a kitten on a sofa"]),        # the couch: references only
    4: ([("person", True)], ["a busy street", "a market square at noon"]),               # persons: a crowd region only
    5: ([("teddy bear", False)], ["a teddy bear on a shelf", "a stuffed toy"]),
}
# The generated captions, and what CHAIR finds in each, by hand: (words, category, hallucinated?).
CAPTIONS = {
    1: "two dogs and a man playing with a frisbee",      # plural; the frisbee is absent
    2: "two hot dogs next to a dog",                      # "hot dogs" is one hot dog, not a dog; the dog is absent
    3: "a cat lying on a couch",                          # the couch is in the references only: present
    4: "a crowd of people walking down a street",         # people: the crowd annotation
    5: "a teddy bear sitting at a bus stop",              # neither a bear nor a bus
}
EXPECTED = {
    1: [("dogs", "dog", False), ("man", "person", False), ("frisbee", "frisbee", True)],
    2: [("hot dogs", "hot dog", False), ("dog", "dog", True)],
    3: [("cat", "cat", False), ("couch", "couch", False)],
    4: [("people", "person", False)],
    5: [("teddy bear", "teddy bear", False)],
}


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    images = [{"id": i, "file_name": file_name(i, "val"), "width": 40, "height": 30} for i in IMAGES]
    instances = []
    for image_id, (objects, _) in IMAGES.items():
        for category, crowd in objects:
            number = len(instances) + 1
            if crowd:
                mask = np.zeros((30, 40), dtype=bool)
                mask[10:30, :] = True
                instances.append(rle_annotation(number, image_id, category, mask, compressed=False, iscrowd=1))
            else:
                instances.append(polygon_annotation(number, image_id, category, SQUARE))
    write_split(root, "val", images, instances, caption_annotations(1, {i: refs for i, (_, refs) in IMAGES.items()}))
    write_karpathy(root, dict.fromkeys(IMAGES, "test"), {i: ("val2014", file_name(i, "val")) for i in IMAGES})
    return root


def test_every_rule_against_a_hand_computed_case(coco):
    annotations = load_coco_annotations(coco)
    truth = coco_ground_truth(annotations.images.values())
    assert truth[file_name(3, "val")] == {"cat", "couch"}          # couch: from the reference captions
    assert truth[file_name(4, "val")] == {"person"}                # the crowd region
    assert truth[file_name(2, "val")] == {"hot dog"}               # "hot dog" / "hotdogs" name no dog
    assert truth[file_name(5, "val")] == {"teddy bear"}            # a "stuffed toy" is not in the table
    result = chair({file_name(i, "val"): text for i, text in CAPTIONS.items()}, truth)
    for image_id, expected in EXPECTED.items():
        found = result.per_caption[image_id - 1]
        assert found.image_id == file_name(image_id, "val") and found.caption == CAPTIONS[image_id]
        assert [(m.words, m.category) for m in found.objects] == [(w, c) for w, c, _ in expected]
        assert [(m.words, m.category) for m in found.hallucinated] == [(w, c) for w, c, h in expected if h]
    # 9 mentions, 2 hallucinated (the frisbee, the dog); 2 of 5 captions hallucinate.
    counts = (result.mentions, result.mentions_hallucinated, result.captions, result.captions_hallucinating)
    assert counts == (9, 2, 5, 2)
    assert result.chair_i == pytest.approx(2 / 9) and result.chair_s == pytest.approx(2 / 5)
    assert result.categories["dog"].mentions == 2 and result.categories["dog"].hallucinated == 1
    assert result.categories["frisbee"].hallucinated == 1 and result.categories["person"].hallucinated == 0
    # the same by COCO id, as a user's file may key them
    by_id = chair_on_coco({str(i): text for i, text in CAPTIONS.items()}, annotations)
    assert (by_id.chair_i, by_id.chair_s) == (result.chair_i, result.chair_s) and by_id.per_caption[0].image_id == "1"


def test_phrases_that_must_not_count_and_the_token_spans():
    table = coco_synonyms()
    cases = {
        "a baby elephant and an adult giraffe": [("baby elephant", "elephant"), ("adult giraffe", "giraffe")],
        "a toilet seat and a toilet bowl": [("toilet seat", "toilet"), ("toilet bowl", "toilet")],
        "a man on a jet ski": [("man", "person"), ("jet ski", "boat")],
        "a computer mouse and a computer keyboard": [("computer mouse", "mouse"), ("computer keyboard", "keyboard")],
        "a train on the train tracks": [("train", "train")],
        "a glass of orange juice": [],
        "a baseball bat and a cell phone": [("baseball bat", "baseball bat"), ("cell phone", "cell phone")],
        "Two Hot-Dogs, and a T.V.!": [("hotdogs", "hot dog"), ("tv", "tv")],
        "skiers on the ski slope": [("skiers", "person")],
        "a passenger train": [("passenger train", "train")],
    }
    for text, expected in cases.items():
        assert [(m.words, m.category) for m in table.mentions(text)] == expected, text
    (mention,) = table.find(["a", "hot", "dog", "stand"])
    assert (mention.start, mention.stop) == (1, 3)


def test_the_table_has_cocos_80_categories_each_named_by_itself():
    table = coco_synonyms()
    assert table.categories == {c["name"] for c in CATEGORIES} and len(table.categories) == 80
    for category in table.categories:
        assert table.phrases[tuple(category.split())] == category
    assert table.phrases[("bus", "stop")] is None


def test_it_separates_captions_of_present_objects_from_captions_of_absent_ones(tmp_path):
    annotations = load_coco_annotations(generated_coco(tmp_path / "coco", images=60, photo_size=None))
    truth = coco_ground_truth(annotations.images.values())
    names = sorted(c["name"] for c in CATEGORIES)
    rng = np.random.default_rng(0)
    present = {key: f"a photo of a {sorted(objects)[0]}" for key, objects in truth.items()}
    absent = {key: f"a photo of a {rng.choice([n for n in names if n not in objects])}"
              for key, objects in truth.items()}
    good, bad = chair(present, truth), chair(absent, truth)
    assert good.chair_i == 0 and good.chair_s == 0 and good.mentions == 60
    assert bad.chair_i == 1 and bad.chair_s == 1 and bad.mentions_hallucinated == 60
    mixed = chair({key: f"{present[key]} and {absent[key][len('a photo of '):]}" for key in truth}, truth)
    assert mixed.chair_i == pytest.approx(0.5) and mixed.chair_s == 1


def test_result_round_trips_through_json_with_its_documented_keys(coco):
    result = chair_on_coco({file_name(i, "val"): t for i, t in CAPTIONS.items()}, load_coco_annotations(coco))
    data = json.loads(json.dumps(result.to_json()))
    assert list(data) == ["chair_i", "chair_s", "captions", "captions_hallucinating", "mentions",
                          "mentions_hallucinated", "categories", "per_caption", "synonyms"]
    assert list(data["per_caption"][0]) == ["image_id", "caption", "objects", "hallucinated", "ground_truth"]
    assert data["per_caption"][1]["hallucinated"] == [{"words": "dog", "category": "dog", "start": 6, "stop": 7}]
    assert ChairResult.from_json(data) == result
    assert data["synonyms"] == "captionlens/evaluate/data/coco_synonyms.txt"
    assert chair({"x": "a street at night"}, {"x": set()}).chair_i is None  # nothing mentioned: nothing measured


def test_bad_input_is_named(tmp_path, coco):
    with pytest.raises(ValueError, match="no captions to score"):
        chair({}, {})
    with pytest.raises(ValueError, match=r"no ground truth for image 'b' \(and 1 more\)"):
        chair({"a": "a dog", "b": "a cat", "c": "x"}, {"a": {"dog"}})
    with pytest.raises(ValueError, match="names 'doggo', which is not a category of the synonym table"):
        chair({"a": "a dog"}, {"a": {"doggo"}})
    with pytest.raises(ValueError, match=r"2 captioned images are not in .* \(first: 98, 99\)"):
        chair_on_coco({"98": "a dog", "99": "a dog", "1": "a dog"}, load_coco_annotations(coco))
    path = tmp_path / "captions.json"
    for data, message in [([{"image_id": 1}], r"\[0\] is not an object with 'image_id' and 'caption'"),
                          ({"1": 5}, "the caption of image '1' is not text"),
                          ([{"image_id": 1, "caption": "a"}, {"image_id": "1", "caption": "b"}], "has two captions"),
                          ({}, "no captions"), ("x", "expected")]:
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message):
            load_captions(path)
    path.write_text(json.dumps([{"image_id": 1, "caption": "a dog"}, {"image_id": 2, "caption": "a cat"}]))
    assert load_captions(path) == {"1": "a dog", "2": "a cat"}


@pytest.mark.parametrize("text, message", [
    ("dog: dog, dogs\ncat: cat, dogs\n", r"t\.txt:2: phrase 'dogs' is also on line 1"),
    ("dog: dog, Dogs\n", r"t\.txt:1: phrase 'Dogs' is not written as the tokenizer writes it"),
    ("dog: puppy\n", r"t\.txt:1: category 'dog' is not among its own phrases"),
    ("dog: dog\ndog: dog\n", r"t\.txt:2: category 'dog' is also on line 1"),
    ("dog dog\n", r"t\.txt:1: expected '<category>: <phrase>, <phrase>, ...'"),
    ("# nothing\n", r"t\.txt: no categories"),
])
def test_table_errors_name_the_line(tmp_path, text, message):
    (tmp_path / "t.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        SynonymTable.load(tmp_path / "t.txt")


def test_chair_command_on_captions_a_user_brings(coco, tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps([{"image_id": i, "caption": t} for i, t in CAPTIONS.items()]))  # COCO's results format
    runner = CliRunner()
    printed = runner.invoke(main, ["chair", "--captions", str(path), "--data", str(coco)])
    assert printed.exit_code == 0, printed.output
    assert "CHAIR_i  0.2222  (2 of 9 object mentions" in printed.stdout
    assert "CHAIR_s  0.4000  (2 of 5 captions" in printed.stdout
    assert "hallucinated most: dog 1 of 2, frisbee 1 of 1" in printed.stdout
    as_json = runner.invoke(main, ["chair", "--captions", str(path), "--data", str(coco), "--json"])
    assert json.loads(as_json.stdout) == chair_on_coco(load_captions(path), load_coco_annotations(coco)).to_json()
    path.write_text(json.dumps({"7": "a dog"}))
    failed = runner.invoke(main, ["chair", "--captions", str(path), "--data", str(coco)])
    assert failed.exit_code == 2 and failed.stderr.startswith("error: 1 captioned images are not in")


def test_evaluate_with_chair_on_a_coco_folder(coco, tmp_path):
    words = ["a", "dog", "cat", "man", "frisbee", "couch", "on", "with", "the", "bus", "stop", "teddy", "bear"]
    vocab = Vocabulary(words)
    model = tiny_captioner("show-tell", vocab=vocab, hidden_size=16, calibrate=False, attach_vocab=False)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", model, vocab)
    runner = CliRunner()
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(coco), "--format", "coco", "--split", "test",
            "--metric", "BLEU", "--beam-size", "1", "--max-length", "8", "--chair"]
    evaluated = runner.invoke(main, [*args, "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)
    assert sorted(result["predictions"]) == sorted(file_name(i, "val") for i in IMAGES)
    expected = chair_on_coco(result["predictions"], load_coco_annotations(coco))
    assert result["chair"] == expected.to_json() and result["chair"]["captions"] == 5
    assert [c["caption"] for c in result["chair"]["per_caption"]] == [result["predictions"][c.image_id]
                                                                      for c in expected.per_caption]
    printed = runner.invoke(main, args)
    assert printed.exit_code == 0 and f"CHAIR_s  {expected.chair_s:.4f}" in printed.stdout
    shapes = generate_shapes(tmp_path / "shapes", n_train=1, n_val=1, n_test=1, image_size=32, seed=0)
    refused = runner.invoke(main, ["evaluate", "--checkpoint", str(checkpoint), "--data", str(shapes), "--chair"])
    assert refused.exit_code == 2 and "CHAIR needs COCO's instance annotations" in refused.stderr
