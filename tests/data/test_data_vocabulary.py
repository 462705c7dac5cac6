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


def test_other_spellings_and_positions_of_the_special_tokens():
    """sgrvinod's word map: <pad> first, the words, then <unk> <start> <end>."""
    words = ["<pad>", "a", "dog", "<unk>", "<start>", "<end>"]
    vocab, order = Vocabulary.from_index_words(words)
    assert [vocab.idx2word[i] for i in range(len(vocab))] == [PAD, START, END, UNK, "a", "dog"]
    assert [words[i] for i in order] == ["<pad>", "<start>", "<end>", "<unk>", "a", "dog"]
    vocab, order = Vocabulary.from_index_words(["<PAD>", "<Start>", "<EOS>", "<unknown>", "x"])
    assert order == [0, 1, 2, 3, 4] and vocab("x") == 4


def test_special_token_problems_are_named():
    with pytest.raises(ValueError, match="lacks the special token.*<UNK>"):
        Vocabulary.from_index_words(["<pad>", "<start>", "<end>", "a"])
    with pytest.raises(ValueError, match="two <START> tokens: '<start>' at 1 and '<START>' at 4"):
        Vocabulary.from_index_words(["<pad>", "<start>", "<end>", "<unk>", "<START>"])
    with pytest.raises(ValueError, match="the word 'a' twice"):
        Vocabulary.from_index_words(["<pad>", "<start>", "<end>", "<unk>", "a", "a"])
