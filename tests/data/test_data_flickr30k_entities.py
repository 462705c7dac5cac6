"""Flickr30k Entities: captions, phrases, boxes and word grounding from a tiny copy of the real layout."""
from __future__ import annotations

import pytest

from captionlens.data import (
    FORMATS,
    CaptionDataset,
    EntityCounts,
    Grounded,
    ImageEntities,
    Phrase,
    detect_format,
    entity_counts,
    load_dataset,
    load_entities,
    load_flickr30k_entities,
    word_grounding,
)

A, B, C, D = "1000092795", "2000000001", "3000000002", "4000000003"

SENTENCES = {
    A: [
        "[/EN#10/people Two young guys] with [/EN#11/bodyparts shaggy hair] look at [/EN#12/bodyparts their hands] "
        "while hanging out in [/EN#13/scene the yard] .",
        "[/EN#10/people Two young , White males] are outside near [/EN#14/other many bushes] .",
        "[/EN#15/people/other Two men] in [/EN#16/clothing green shirts] are standing in [/EN#13/scene a yard] .",
        "[/EN#17/people A man] in [/EN#18/clothing a blue shirt] standing in [/EN#19/scene a garden] .",
        "[/EN#10/people Two friends] enjoy [/EN#0/notvisual some time] near [/EN#15/people/other the man] .",
    ],
    # A blank line, as real files sometimes end with: no caption.
    B: ["[/EN#30/animals A brown dog] runs through [/EN#31/scene the snow] .", "",
        "[/EN#30/animals The dog] catches [/EN#32/other a frisbee] in [/EN#0/notvisual mid-air] ."],
    C: ["[/EN#50/animals A cat] sleeps ."],
    D: ["[/EN#40/vehicles A red car] ."],
}

# (chain ids, 1-based inclusive (xmin, ymin, xmax, ymax) or {"nobndbox": n, "scene": n})
OBJECTS = {
    A: [([10], (1, 1, 4, 5)), ([10], (3, 3, 6, 6)),          # chain 10: two boxes that overlap
        ([11], (2, 1, 3, 2)),
        ([12], {"nobndbox": 1, "scene": 0}),
        ([13], {"nobndbox": 0, "scene": 1}),                  # a scene chain
        ([14], (12, 1, 20, 10)),                              # reaches the image's right and bottom edges
        ([15, 17], (3, 2, 6, 4)),                             # one box, two chains
        ([17], (15, 6, 16, 7)),
        ([16], (3, 5, 6, 7)),
        ([18], (4, 5, 5, 8)),
        ([19], {"nobndbox": 1, "scene": 1})],
    B: [([30], (2, 2, 5, 4)), ([31], {"nobndbox": 0, "scene": 1}), ([32], (6, 1, 8, 2))],
    C: [([50], (1, 1, 2, 2))],
    D: [([40], (1, 1, 3, 3))],
}
SIZES = {A: (20, 10), B: (8, 6), C: (4, 4), D: (5, 5)}
SPLITS = {"train": [A], "val": [D], "test": [B]}   # C is in no split file


def _xml(image_id: str) -> str:
    width, height = SIZES[image_id]
    lines = ["<annotation>", f"<filename>{image_id}.jpg</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for chains, what in OBJECTS[image_id]:
        lines.append("<object>")
        lines += [f"<name>{chain}</name>" for chain in chains]
        if isinstance(what, dict):
            lines += [f"<{tag}>{value}</{tag}>" for tag, value in what.items()]
        else:
            lines.append("<bndbox>" + "".join(f"<{tag}>{v}</{tag}>" for tag, v in
                                              zip(("xmin", "ymin", "xmax", "ymax"), what)) + "</bndbox>")
        lines.append("</object>")
    return "\n".join(lines + ["</annotation>"]) + "\n"


@pytest.fixture
def root(tmp_path, make_images):
    (tmp_path / "Sentences").mkdir()
    (tmp_path / "Annotations").mkdir()
    for image_id, lines in SENTENCES.items():
        (tmp_path / "Sentences" / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
        (tmp_path / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id))
        make_images(tmp_path / "flickr30k-images", [f"{image_id}.jpg"], SIZES[image_id])
    for split, ids in SPLITS.items():
        (tmp_path / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return tmp_path


def _one_line_error(excinfo, path, line=None):
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{line}: " if line is not None else f"{path}: "), message
    return message


# --- the dataset --------------------------------------------------------------------------------

def test_records_splits_and_plain_captions(root):
    dataset = load_flickr30k_entities(root)
    records = {r.image_id: r for r in dataset}
    assert sorted(records) == [f"{A}.jpg", f"{B}.jpg", f"{D}.jpg"]     # C: in no split file
    assert {k: r.split for k, r in records.items()} == {f"{A}.jpg": "train", f"{B}.jpg": "test",
                                                        f"{D}.jpg": "val"}
    assert records[f"{B}.jpg"].image_path == root / "flickr30k-images" / f"{B}.jpg"
    assert records[f"{A}.jpg"].captions == [
        "Two young guys with shaggy hair look at their hands while hanging out in the yard .",
        "Two young , White males are outside near many bushes .",
        "Two men in green shirts are standing in a yard .",
        "A man in a blue shirt standing in a garden .",
        "Two friends enjoy some time near the man .",
    ]
    assert records[f"{B}.jpg"].captions == ["A brown dog runs through the snow .",
                                            "The dog catches a frisbee in mid-air ."]
    assert [r.image_id for r in dataset.split("test")] == [f"{B}.jpg"]


def test_load_dataset_detects_the_layout(root):
    assert "flickr30k-entities" in FORMATS
    assert detect_format(root) == "flickr30k-entities"
    dataset = load_dataset(root)
    assert sorted(r.image_id for r in dataset) == [f"{A}.jpg", f"{B}.jpg", f"{D}.jpg"]
    assert load_dataset(root / "train.txt", format="flickr30k-entities").records[0].captions[1] == \
        "Two young , White males are outside near many bushes ."


def test_images_folder_and_image_root(root, make_images):
    (root / "flickr30k-images").rename(root / "Images")
    assert load_flickr30k_entities(root).records[0].image_path.parent == root / "Images"
    make_images(root / "elsewhere", [f"{i}.jpg" for i in (A, B, D)])
    dataset = load_dataset(root, image_root=root / "elsewhere")
    assert {r.image_path.parent for r in dataset} == {root / "elsewhere"}


def test_missing_images_are_dropped_as_by_the_other_loaders(root):
    (root / "flickr30k-images" / f"{D}.jpg").unlink()
    with pytest.warns(UserWarning, match=rf"1 of 3 listed images are missing .*first: {D}\.jpg"):
        dataset = load_flickr30k_entities(root)
    assert dataset.missing_images == [root / "flickr30k-images" / f"{D}.jpg"]


def test_split_files_are_all_needed_and_ids_listed_once(root):
    (root / "val.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"no val\.txt"):
        load_flickr30k_entities(root)
    (root / "val.txt").write_text(f"{D}\n\n{A}\n")
    with pytest.raises(ValueError) as excinfo:
        load_flickr30k_entities(root)
    assert _one_line_error(excinfo, root / "val.txt", 3).endswith(f"image {A} is also listed in "
                                                                  f"{root / 'train.txt'}:1")


# --- phrases and boxes --------------------------------------------------------------------------

def test_phrases_head_nouns_and_types(root):
    entities = load_entities(root, A)
    assert (entities.image_id, entities.width, entities.height) == (A, 20, 10)
    assert len(entities.phrases) == 15
    assert [p for p in entities.phrases if p.caption == 2] == [
        Phrase(2, 0, ("Two", "men"), 15, ("people", "other")),
        Phrase(2, 3, ("green", "shirts"), 16, ("clothing",)),
        Phrase(2, 8, ("a", "yard"), 13, ("scene",)),
    ]
    males = entities.phrases[4]
    assert (males.caption, males.first_word, males.words, males.head) == (1, 0, ("Two", "young", ",", "White",
                                                                                  "males"), "males")
    assert [(p.head, p.chain, p.types) for p in entities.phrases if p.caption == 4] == [
        ("friends", 10, ("people",)), ("time", 0, ("notvisual",)), ("man", 15, ("people", "other"))]
    assert [p.head for p in entities.phrases if p.caption == 0] == ["guys", "hair", "hands", "yard"]
    assert Phrase(0, 0, ("a", "T-Shirt", "."), 1, ("clothing",)).head == "tshirt"
    # load_entities takes the record's image_id as well; blank lines are not captions.
    other = load_entities(root, f"{B}.jpg")
    assert [(p.caption, p.first_word, p.text) for p in other.phrases] == [
        (0, 0, "A brown dog"), (0, 5, "the snow"), (1, 0, "The dog"), (1, 3, "a frisbee"), (1, 6, "mid-air")]


def test_boxes_are_converted_to_zero_based_exclusive(root):
    entities = load_entities(root, A)
    assert entities.boxes == {
        10: [[0, 0, 4, 5], [2, 2, 6, 6]], 11: [[1, 0, 3, 2]], 14: [[11, 0, 20, 10]],
        15: [[2, 1, 6, 4]], 17: [[2, 1, 6, 4], [14, 5, 16, 7]], 16: [[2, 4, 6, 7]], 18: [[3, 4, 5, 8]],
    }
    assert entities.nobox == {12, 19}
    assert entities.scene == {13, 19}
    assert entities.chains == {10, 11, 12, 13, 14, 15, 16, 17, 18, 19}
    # 1-based inclusive x 2..3, y 1..2 is four pixels: 0-based columns 1, 2 and rows 0, 1.
    hair = entities.mask([11])
    assert hair.shape == (10, 20) and hair.dtype == bool
    assert hair.sum() == 4 and hair[0:2, 1:3].all()
    bushes = entities.mask([14])
    assert bushes.sum() == 9 * 10 and bushes[:, 11:].all() and not bushes[:, 10].any()


def test_union_masks_of_multi_box_chains(root):
    entities = load_entities(root, A)
    # Chain 10: 4x5 + 4x4 boxes overlapping on 2x3 pixels.
    assert entities.mask([10]).sum() == 20 + 16 - 6
    # Chains 15 and 17 share one 4x3 box; 17 has a 2x2 box too.
    assert entities.chain_boxes([15, 17]) == [[2, 1, 6, 4], [14, 5, 16, 7]]
    assert entities.mask([15, 17]).sum() == 12 + 4
    assert entities.mask([10, 11]).sum() == 30   # hair lies inside the first box of chain 10
    assert entities.mask([12, 13, 0]).sum() == 0   # no boxes: nobndbox, scene, notvisual
    # Boxes past the image's edges (an XML xmin of 0 gives x0 = -1) are clipped, never wrapped.
    odd = ImageEntities("x", 5, 4, [], [], {1: [[-1, -1, 2, 30]]}, frozenset(), frozenset(), frozenset({1}))
    assert odd.mask([1]).sum() == 2 * 4 and odd.mask([1])[:, :2].all()


def test_word_grounding_of_a_generated_caption(root):
    entities = load_entities(root, A)
    tokens = "a man in a green shirt stands in the yard with Hair near two guys taking some time".split()
    grounded = word_grounding(entities, tokens)
    assert len(grounded) == len(tokens)
    named = {tokens[k]: g for k, g in enumerate(grounded) if g is not None}
    assert sorted(named) == ["Hair", "guys", "man", "shirt"]
    # "man" heads "the man" (chain 15) and "A man" (chain 17): the union of both chains' boxes.
    assert named["man"] == Grounded("man", (15, 17), [[2, 1, 6, 4], [14, 5, 16, 7]], ("other", "people"))
    assert named["man"].bbox == [2, 1, 16, 7]
    assert named["shirt"] == Grounded("shirt", (18,), [[3, 4, 5, 8]], ("clothing",))   # not "shirts" (16)
    assert named["Hair"].chains == (11,)
    assert named["guys"].boxes == [[0, 0, 4, 5], [2, 2, 6, 6]]
    assert entities.mask(named["guys"].chains).sum() == 30
    # "yard" (scene, no box), "time" (notvisual), "green" (not a head noun) name nothing.
    assert grounded[tokens.index("yard")] is None and grounded[tokens.index("time")] is None
    assert grounded[tokens.index("green")] is None
    assert word_grounding(entities, ["hands", "men", "males", "friends", "bushes"]) == [
        None,                                           # chain 12 is nobndbox
        Grounded("men", (15,), [[2, 1, 6, 4]], ("other", "people")),
        Grounded("males", (10,), [[0, 0, 4, 5], [2, 2, 6, 6]], ("people",)),
        Grounded("friends", (10,), [[0, 0, 4, 5], [2, 2, 6, 6]], ("people",)),
        Grounded("bushes", (14,), [[11, 0, 20, 10]], ("other",)),
    ]


def test_counts(root):
    assert entity_counts(root, "test") == EntityCounts(images=1, captions=2, phrases=5, phrases_with_boxes=3)
    assert entity_counts(root, "train") == EntityCounts(images=1, captions=5, phrases=15, phrases_with_boxes=10)
    assert entity_counts(root, load_flickr30k_entities(root)) == EntityCounts(3, 8, 21, 14)
    assert entity_counts(root, [C, f"{D}.jpg"]) == EntityCounts(2, 2, 2, 2)
    assert entity_counts(root, CaptionDataset([])) == EntityCounts(0, 0, 0, 0)
    with pytest.raises(ValueError, match="unknown split 'restval'"):
        entity_counts(root, "restval")


# --- malformed files ----------------------------------------------------------------------------

GOOD = SENTENCES[A][:2]


@pytest.mark.parametrize("line, message", [
    ("[/EN#10/people A man in [/EN#11/clothing a hat] .", "unbalanced brackets: '[/EN#11/clothing' inside the "
                                                         "phrase '[/EN#10/people' (phrases do not nest)"),
    ("[/EN#10/people A man] in a hat] .", "unbalanced brackets: 'hat]' outside a phrase"),
    ("[/EN#10/people A man in a hat .", "unbalanced brackets: the phrase '[/EN#10/people' at word 0 is not closed"),
    ("A man in [/EN#x/clothing a hat] .", "phrase marker '[/EN#x/clothing' does not parse (chain id 'x' is not "
                                          "a number)"),
    ("A man in [/EN#11 a hat] .", "phrase marker '[/EN#11' does not parse (expected '[/EN#<number>/<type>')"),
    ("A man in [a hat] .", "phrase marker '[a' does not parse (expected '[/EN#<number>/<type>')"),
    ("A man in [/EN#11/clothing] .", "phrase '[/EN#11/clothing]' has no words"),
])
def test_malformed_sentence_lines(root, line, message):
    path = root / "Sentences" / f"{A}.txt"
    path.write_text("\n".join([*GOOD, line, SENTENCES[A][2]]) + "\n")
    for load in (load_flickr30k_entities, lambda r: load_entities(r, A)):
        with pytest.raises(ValueError) as excinfo:
            load(root)
        assert _one_line_error(excinfo, path, 3) == f"{path}:3: {message}"


def test_unknown_chain_id(root):
    path = root / "Sentences" / f"{A}.txt"
    path.write_text("\n".join([*GOOD, "", "[/EN#99/animals A dog] and [/EN#0/notvisual nothing] ."]) + "\n")
    with pytest.raises(ValueError) as excinfo:
        load_entities(root, A)
    assert _one_line_error(excinfo, path, 4) == (f"{path}:4: phrase 'A dog' has unknown chain id 99 "
                                                 f"(no <object> in {root / 'Annotations' / (A + '.xml')} names it)")


def test_missing_sentences_file_names_the_split_file(root):
    (root / "test.txt").write_text(f"{B}\n5555\n")
    with pytest.raises(FileNotFoundError) as excinfo:
        load_flickr30k_entities(root)
    assert _one_line_error(excinfo, root / "test.txt", 2).endswith(
        f"image 5555 has no sentences file {root / 'Sentences' / '5555.txt'}")


def test_missing_xml(root):
    xml = root / "Annotations" / f"{B}.xml"
    xml.unlink()
    expected = f"{xml}: no such file (image {B} has sentences in {root / 'Sentences' / (B + '.txt')})"
    for load in (load_flickr30k_entities, lambda r: load_entities(r, B), lambda r: entity_counts(r, "test")):
        with pytest.raises(FileNotFoundError) as excinfo:
            load(root)
        assert _one_line_error(excinfo, xml) == expected


@pytest.mark.parametrize("text, line, message", [
    ("<annotation>\n<size><width>8</width>\n</annotation>\n", 3, "not valid XML (mismatched tag)"),
    ("<annotation>\n<filename>x.jpg</filename>\n</annotation>\n", 1, "<annotation> has no <size>"),
    ("<annotation>\n<size><width>8</width><depth>3</depth></size>\n</annotation>\n", 2, "<size> has no <height>"),
    ("<annotation>\n<size>\n<width>8</width>\n<height>six</height>\n</size>\n</annotation>\n", 4,
     "<height> is not an integer: 'six'"),
    ("<annotation>\n<size><width>8</width><height>6</height></size>\n<object>\n<name>30</name>\n"
     "<bndbox><xmin>2</xmin><ymin>2</ymin>\n<xmax>5</xmax></bndbox>\n</object>\n</annotation>\n", 5,
     "<bndbox> has no <ymax>"),
    ("<annotation>\n<size><width>8</width><height>6</height></size>\n<object>\n<name>30</name>\n"
     "</object>\n</annotation>\n", 3, "<object> has neither <bndbox> nor <nobndbox>/<scene>"),
    ("<annotation>\n<size><width>8</width><height>6</height></size>\n<object>\n<name>dog</name>\n"
     "<scene>1</scene></object>\n</annotation>\n", 4, "<name> is not a chain id: 'dog'"),
    ("<annotation>\n<size><width>8</width><height>6</height></size>\n<object><name>30</name>\n"
     "<bndbox><xmin>5</xmin><ymin>2</ymin><xmax>4</xmax><ymax>4</ymax></bndbox>\n</object>\n</annotation>\n", 4,
     "<bndbox> is empty: x 5..4, y 2..4"),
])
def test_malformed_xml(root, text, line, message):
    xml = root / "Annotations" / f"{B}.xml"
    xml.write_text(text)
    with pytest.raises(ValueError) as excinfo:
        load_entities(root, B)
    assert _one_line_error(excinfo, xml, line) == f"{xml}:{line}: {message}"


def test_xml_is_parsed_only_by_load_entities(root):
    """The dataset loader reads captions only, so a broken XML shows when its image's grounding is read."""
    (root / "Annotations" / f"{B}.xml").write_text("<annotation>")
    assert len(load_flickr30k_entities(root)) == 3
    with pytest.raises(ValueError, match="not valid XML"):
        load_entities(root, B)
