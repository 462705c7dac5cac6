"""Fuzzing the Flickr30k Entities readers: a Sentences/<id>.txt file and an Annotations/<id>.xml file
(`load_entities`), and the split files (`load_flickr30k_entities`). XML is also given entity expansion
(billion laughs), external entities and deep nesting. See harness.py for the contract."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from harness import assert_typed, byte_mutations, check_reader, check_refused, fuzz_settings, text_mutations, write
from hypothesis import given
from hypothesis import strategies as st

from captionlens.data.flickr30k_entities import ImageEntities, load_entities, load_flickr30k_entities, word_grounding
from captionlens.data.records import CaptionDataset

# its row in the table of `make fuzz`
READER = "Flickr30k Entities: `load_entities` (Sentences/*.txt, Annotations/*.xml), split files"

IMAGE = "1000092795"
SENTENCES = (
    "[/EN#1/people Two young guys] with [/EN#2/bodyparts shaggy hair] look at [/EN#3/bodyparts their hands] .\n"
    "[/EN#1/people Two young , White males] are outside near [/EN#4/scene many bushes] .\n"
    "[/EN#0/notvisual Nobody] sits on [/EN#5/other/clothing a T-shirt] .\n")
XML = """<annotation>
  <filename>1000092795.jpg</filename>
  <size><width>500</width><height>333</height><depth>3</depth></size>
  <object><name>1</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>100</xmax><ymax>200</ymax></bndbox></object>
  <object><name>1</name><name>2</name><bndbox><xmin>150</xmin><ymin>20</ymin><xmax>300</xmax><ymax>90</ymax></bndbox>
  </object>
  <object><name>3</name><nobndbox>1</nobndbox></object>
  <object><name>4</name><scene>1</scene></object>
  <object><name>5</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>
</annotation>
"""
XML_TOKENS = ("<object>", "</object>", "<name>", "</name>", "<bndbox>", "<xmin>", "</xmax>", "<size>", "<width>",
              "<nobndbox>", "<scene>", "annotation", "-5", "2147483648", "<!DOCTYPE a [<!ENTITY e 'x'>]>", "&e;")
SENTENCE_TOKENS = ("[/EN#", "/people", "/EN#99/other", "[/EN#1/people", "]", "[[", "EN#x/y")
ENTITY_BOMB = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a0 "lol">'
               + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
               + ']><annotation><size><width>&a9;</width></size></annotation>')
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<annotation><size><width>&x;</width><height>1</height></size></annotation>')
DEEP = "<annotation>" + "<a>" * 200_000 + "</a>" * 200_000 + "</annotation>"


def _dataset(root: Path, sentences: bytes = SENTENCES.encode(), xml: bytes = XML.encode()) -> Path:
    write(root / "Sentences" / f"{IMAGE}.txt", sentences)
    write(root / "Annotations" / f"{IMAGE}.xml", xml)
    write(root / "flickr30k-images" / f"{IMAGE}.jpg", b"")
    for split, ids in (("train", IMAGE), ("val", ""), ("test", "")):
        write(root / f"{split}.txt", ids.encode())
    return root


def accept_entities(entities: ImageEntities) -> None:
    """Loaded entities are whole: typed, each box inside the declared size's bounds as integers, each
    phrase's chain named by the XML, and the grounding and mask of every caption word computable."""
    assert_typed(entities, "entities")
    assert 0 < entities.width * entities.height <= 2 * 89_478_485  # at most what an image may hold
    for phrase in entities.phrases:
        assert phrase.chain == 0 or phrase.chain in entities.chains
    for caption in entities.captions:
        for grounded in word_grounding(entities, caption.split()):
            if grounded is not None:
                assert entities.mask(grounded.chains).shape == (entities.height, entities.width)


def accept_dataset(dataset: CaptionDataset) -> None:
    assert len(dataset) == 1 and all(c.strip() and "[" not in c for c in dataset.records[0].captions)


def test_seed_loads(tmp_path):
    root = _dataset(tmp_path)
    accept_entities(load_entities(root, IMAGE))
    accept_dataset(load_flickr30k_entities(root))


@fuzz_settings()
@given(data=st.data())
def test_sentences(tmp_path, data):
    root = _dataset(tmp_path, sentences=data.draw(text_mutations(SENTENCES, SENTENCE_TOKENS), label="file"))
    names = {f"{IMAGE}.txt", f"{IMAGE}.xml"}
    check_reader(lambda: load_entities(root, IMAGE), names, accept_entities)
    check_reader(lambda: load_flickr30k_entities(root), names, accept_dataset)


@fuzz_settings()
@given(data=st.data())
def test_annotation_xml(tmp_path, data):
    seed = data.draw(st.sampled_from((XML, ENTITY_BOMB, EXTERNAL)), label="seed")
    xml = data.draw(st.one_of(text_mutations(seed, XML_TOKENS), st.just(seed.encode()), st.just(DEEP.encode())),
                    label="file")
    root = _dataset(tmp_path, xml=xml)
    check_reader(lambda: load_entities(root, IMAGE), {f"{IMAGE}.xml", f"{IMAGE}.txt"}, accept_entities)


@fuzz_settings()
@given(data=st.data())
def test_split_files(tmp_path, data):
    root = _dataset(tmp_path)
    name = data.draw(st.sampled_from(("train.txt", "val.txt", "test.txt")), label="mutated")
    seed = f"{IMAGE}\n" if name == "train.txt" else ""
    write(root / name, data.draw(st.one_of(text_mutations(seed or "\n", (IMAGE, "..", "/")),
                                           byte_mutations(seed.encode() or b"\n")), label="file"))
    check_reader(lambda: load_flickr30k_entities(root), {"train.txt", "val.txt", "test.txt", f"{IMAGE}.txt",
                                                         "Annotations"}, lambda d: np.testing.assert_(len(d) >= 0))


# Inputs the fuzzer found crashing a reader (or accepted whole when they are not), with what happened before the fix.
@pytest.mark.parametrize("sentences, xml", [
    pytest.param(SENTENCES, XML.replace("<name>5</name>", "<name>\u00b2</name>"),
                 id="ValueError naming no file: a chain id of a superscript digit, which isdigit() takes"),
    pytest.param(SENTENCES, XML.replace("<width>500<", "<width>99999999999<"),
                 id="accepted: a size of 33 terapixels, whose mask no memory holds"),
    pytest.param(SENTENCES.replace("EN#5/", "EN#" + "1" * 5000 + "/"), XML,
                 id="ValueError naming no file: a chain id past int()'s 4300 digits"),
])
def test_crashes_found_in_one_image(tmp_path, sentences, xml):
    root = _dataset(tmp_path, sentences.encode(), xml.encode())
    check_refused(lambda: load_entities(root, IMAGE), {f"{IMAGE}.xml", f"{IMAGE}.txt"})


@pytest.mark.parametrize("ids", [
    pytest.param(b"\x00\n", id="ValueError naming no file: an id with a NUL"),
    pytest.param(b"1" * 300, id="OSError: an id longer than a file name may be"),
])
def test_crashes_found_in_split_files(tmp_path, ids):
    root = _dataset(tmp_path)
    write(root / "val.txt", ids)
    check_refused(lambda: load_flickr30k_entities(root), {"val.txt"})
