"""Vocabulary: tokenisation, frequency order, encode/decode and JSON round trip."""
from __future__ import annotations

import pytest

from captionlens.data.vocabulary import END, PAD, START, UNK, Vocabulary, tokenize


def test_tokenize_matches_karpathy_tokens():
    assert tokenize("A dog's ball, red!") == ["a", "dogs", "ball", "red"]


def test_build_orders_by_frequency_then_alphabet_and_drops_rare_words():
    vocab = Vocabulary.build(["b a", "a c", "a b d"], min_freq=2)
    assert [vocab.idx2word[i] for i in range(len(vocab))] == [PAD, START, END, UNK, "a", "b"]
    with pytest.raises(ValueError, match="min_freq"):
        Vocabulary.build([], min_freq=0)


def test_encode_decode():
    vocab = Vocabulary(["a", "dog"])
    ids = vocab.encode("A dog barks")
    assert ids == [vocab.start_idx, vocab("a"), vocab("dog"), vocab.unk_idx, vocab.end_idx]
    assert vocab.decode(ids + [vocab.pad_idx]) == "a dog <UNK>"
    assert vocab.decode([vocab.start_idx, vocab("dog"), vocab.end_idx, vocab("a")]) == "dog"


def test_json_round_trip_and_errors(tmp_path):
    vocab = Vocabulary(["a", "dog"])
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").word2idx == vocab.word2idx
    (tmp_path / "bad.json").write_text('{"idx2word": ["a"]}')
    with pytest.raises(ValueError, match=r"bad\.json: vocabulary JSON must hold"):
        Vocabulary.load(tmp_path / "bad.json")
