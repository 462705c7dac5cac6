"""Decoding that continues a given prefix, against independent oracles: teacher forcing (the prefix's
log-probs, and greedy re-derived one word at a time from full teacher-forced passes), the plain decoder
(a prefix of its own caption changes nothing) and an exhaustive search over every short continuation."""
from __future__ import annotations

import itertools

import pytest
import torch

from captionlens.data.vocabulary import Vocabulary
from captionlens.models.decoding import beam_search, decode_features, greedy
from zoo import tiny_captioner

ARCHITECTURES = ("show-tell", "show-attend-tell")
WORDS = ("red", "blue", "circle", "square", "a", "the", "above", "left")


def _model(architecture: str, words=WORDS, seed: int = 0, end_bias: float = 0.0):
    model = tiny_captioner(architecture, vocab=Vocabulary(words), seed=seed, grid_size=2)
    with torch.no_grad():                      # sharper distributions: captions that end, choices that differ
        model.decoder.fc.weight.mul_(6.0)
        model.decoder.fc.bias[model.vocab.end_idx] += end_bias
    return model


def _features(model, n: int = 3, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.encode(torch.randn(n, 3, 32, 32))


def _teacher_forced_log_probs(model, features, ids):
    """(len(ids) + 1, V) log-probabilities of the next word after each prefix of `<START> ids`."""
    vocab = model.vocab
    caption = torch.tensor([[vocab.start_idx, *ids, vocab.end_idx]])
    with torch.no_grad():
        hidden, _ = model.teacher_forced_hidden(features, caption)
        return model.output_logits(hidden)[0].log_softmax(-1)


def _greedy_by_teacher_forcing(model, features, prefix, max_length):
    """Greedy continuation re-derived from scratch: a full teacher-forced pass per word, argmax over words."""
    vocab = model.vocab
    ids = list(prefix)
    while len(ids) < max_length:
        log_probs = _teacher_forced_log_probs(model, features, ids)[len(ids)]
        log_probs[[vocab.start_idx, vocab.pad_idx]] = float("-inf")
        word = int(log_probs.argmax())
        if word == vocab.end_idx:
            return ids, True
        ids.append(word)
    return ids, False


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_greedy_from_a_prefix_equals_teacher_forcing_word_by_word(architecture):
    model = _model(architecture)
    vocab = model.vocab
    features = _features(model)
    prefix = [vocab("the"), vocab("blue"), vocab("above")]   # words the model would not choose itself
    decoded = greedy(model, features, vocab, max_length=9, prefix=prefix)
    for b, result in enumerate(decoded):
        expected, ended = _greedy_by_teacher_forcing(model, features[b:b + 1], prefix, 9)
        assert result.token_ids == expected and result.ended == ended
        assert result.token_ids[:3] == prefix
        tf = _teacher_forced_log_probs(model, features[b:b + 1], result.token_ids)
        words = torch.tensor(result.token_ids + ([vocab.end_idx] if ended else []))
        expected_log_probs = tf[torch.arange(len(words)), words]
        got = torch.tensor(result.log_probs + ([result.end_log_prob] if ended else []))
        torch.testing.assert_close(got, expected_log_probs, rtol=1e-5, atol=1e-5)
        if architecture == "show-attend-tell":
            _, alphas = model.teacher_forced_hidden(features[b:b + 1], torch.tensor(
                [[vocab.start_idx, *result.token_ids, vocab.end_idx]]))
            torch.testing.assert_close(result.alphas, alphas[0, :len(result.token_ids)], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_prefix_of_the_models_own_caption_changes_nothing(architecture, beam_size):
    model = _model(architecture, end_bias=-4.0)
    features = _features(model, n=1)
    plain = decode_features(model, features, model.vocab, max_length=10, beam_size=beam_size)[0]
    assert len(plain.token_ids) >= 2
    for k in (1, len(plain.token_ids) // 2) if beam_size == 1 else (1,):
        again = decode_features(model, features, model.vocab, max_length=10, beam_size=beam_size,
                                prefix=plain.token_ids[:k])[0]
        if beam_size == 1:                         # greedy: the same choices after its own prefix
            assert again.token_ids == plain.token_ids
            torch.testing.assert_close(torch.tensor(again.log_probs), torch.tensor(plain.log_probs))
        else:                                      # beam: the best beam through that prefix scores no better
            assert again.token_ids[:k] == plain.token_ids[:k] and again.score <= plain.score + 1e-5


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_beam_search_from_a_prefix_equals_exhaustive_search(architecture):
    """With a beam wider than every continuation of up to 3 words over a 3-word vocabulary, beam search
    is exhaustive: it must return the best ended continuation, scored by teacher forcing."""
    model = _model(architecture, words=("x", "y", "z"), seed=3)
    vocab = model.vocab
    features = _features(model, n=2, seed=4)
    prefix, extra = [vocab("y")], 3
    words = [vocab(w) for w in ("x", "y", "z")] + [vocab.unk_idx]
    decoded = beam_search(model, features, vocab, beam_size=len(vocab) ** extra, max_length=len(prefix) + extra,
                          prefix=prefix)
    for b, result in enumerate(decoded):
        best = None
        for n in range(extra):
            for tail in itertools.product(words, repeat=n):
                ids = prefix + list(tail)
                log_probs = _teacher_forced_log_probs(model, features[b:b + 1], ids)
                score = float(sum(log_probs[i, w] for i, w in enumerate(ids)) + log_probs[len(ids), vocab.end_idx])
                if best is None or score > best[0]:
                    best = (score, ids)
        assert result.ended and result.token_ids == best[1]
        assert result.score == pytest.approx(best[0], abs=1e-4)


def test_a_prefix_of_special_tokens_is_refused():
    model = _model("show-tell")
    features = _features(model, n=1)
    vocab = model.vocab
    for bad in ([vocab.end_idx], [vocab("red"), vocab.start_idx], [len(vocab)]):
        with pytest.raises(ValueError, match="a caption prefix holds words only"):
            decode_features(model, features, vocab, beam_size=2, prefix=bad)
