"""Greedy and beam-search decoding checked against independent oracles: a plain per-image beam search
written with Python lists, an exhaustive search over every short caption, and teacher forcing."""
from __future__ import annotations

import itertools

import pytest
import torch

from captionlens.models import beam_search, decode, greedy


def _reference_beam(model, features, vocab, k, max_length, length_penalty=0.0):
    """Textbook beam search for one image: expand every live hypothesis by every word, keep the k best;
    a hypothesis ends at <END>; the ended one with the best score / length**length_penalty wins
    (the best live one if none ended). <START> and <PAD> are never words."""
    never = {vocab.start_idx, vocab.pad_idx}
    beams = [(0.0, [], model.init_state(features), False)]
    for _ in range(max_length):
        candidates = []
        for score, ids, state, ended in beams:
            if ended:
                candidates.append((score, ids, state, True))
                continue
            token = torch.tensor([ids[-1] if ids else vocab.start_idx])
            logits, new_state, _ = model.step(token, state)
            for word, lp in enumerate(logits.log_softmax(-1)[0].tolist()):
                if word in never:
                    continue
                candidates.append((score + lp, ids + [word], new_state, word == vocab.end_idx))
        beams = sorted(candidates, key=lambda c: -c[0])[:k]
        if all(b[3] for b in beams):
            break
    ended = [b for b in beams if b[3]]
    score, ids, _, _ = max(ended or beams, key=lambda b: b[0] / max(len(b[1]), 1) ** length_penalty)
    return score, [i for i in ids if i != vocab.end_idx]


def decode_from_features(model, feats, vocab, beam, max_length=12):
    """`decode` from features rather than images (random features give varied captions)."""
    if beam == 1:
        return greedy(model, feats, vocab, max_length)
    return beam_search(model, feats, vocab, beam, max_length)


def _word_log_probs(model, features, captions):
    """log p(captions[:, i+1] | image, captions[:, :i+1]) for every position, (B, L-1), and the alphas."""
    hidden, alphas = model.teacher_forced_hidden(features, captions)
    log_probs = model.output_logits(hidden).log_softmax(-1).gather(-1, captions[:, 1:, None]).squeeze(-1)
    return log_probs, alphas


def _teacher_forced(model, features, ids, ended, vocab):
    """log p of each word (and of <END> when the caption ended) by one teacher-forced pass."""
    caption = torch.tensor([[vocab.start_idx, *ids, *([vocab.end_idx] if ended else [])]])
    with torch.no_grad():
        log_probs, alphas = _word_log_probs(model, features, caption)
    return log_probs[0], alphas


def test_beam_size_one_is_greedy(kind, make_model, features, vocab):
    model = make_model(kind)
    feats = features(model, 6)
    for g, b in zip(greedy(model, feats, vocab, 12), beam_search(model, feats, vocab, beam_size=1, max_length=12)):
        assert g.token_ids == b.token_ids
        assert g.log_probs == pytest.approx(b.log_probs, abs=1e-5)
        assert g.ended == b.ended


@pytest.mark.parametrize("beam", [3, 5])
def test_batched_beam_search_equals_one_image_at_a_time(kind, beam, make_model, features, vocab):
    model = make_model(kind)
    feats = features(model, 5)
    batched = beam_search(model, feats, vocab, beam, 12)
    assert len({tuple(d.token_ids) for d in batched}) > 1, "images should get different captions"
    for i, together in enumerate(batched):
        alone = beam_search(model, feats[i:i + 1], vocab, beam, 12)[0]
        assert together.token_ids == alone.token_ids
        assert together.score == pytest.approx(alone.score, abs=1e-4)


# (kind, seed, sharpen, end_bias, max_length, beam, length_penalty); in the last four a caption that
# ended must win over a better-scoring one that max_length cut short, or length_penalty changes the winner.
TEXTBOOK_CASES = [("show-tell", 2, 1.5, 0.0, 10, 3, 0.0), ("show-tell", 2, 1.5, 0.0, 10, 5, 0.0),
                  ("show-attend-tell", 2, 1.5, 0.0, 10, 3, 0.0), ("show-attend-tell", 2, 1.5, 0.0, 10, 5, 0.0),
                  ("show-tell", 4, 1.5, 0.0, 4, 5, 0.0), ("show-attend-tell", 7, 1.5, 0.0, 4, 5, 0.0),
                  ("show-tell", 0, 1.5, 0.0, 10, 5, 1.0), ("show-attend-tell", 0, 1.5, 0.5, 10, 5, 1.0)]


@pytest.mark.parametrize("case", TEXTBOOK_CASES)
def test_beam_search_matches_textbook_beam_search(case, make_model, features, vocab):
    kind, seed, sharpen, end_bias, max_length, beam, penalty = case
    model = make_model(kind, seed=seed, sharpen=sharpen, end_bias=end_bias)
    feats = features(model, 4)
    with torch.no_grad():
        for i, decoded in enumerate(beam_search(model, feats, vocab, beam, max_length, penalty)):
            score, ids = _reference_beam(model, feats[i:i + 1], vocab, beam, max_length, penalty)
            assert decoded.token_ids == ids
            assert decoded.score == pytest.approx(score, abs=1e-4)


def test_wide_beam_finds_the_exhaustive_optimum_and_beats_greedy(kind, make_model, features, vocab):
    """With <END> ruled out, max_length 3 and beam V**2 nothing is pruned: beam search must return
    the best of all (V-1)**3 three-word captions, each scored by brute-force teacher forcing."""
    model = make_model(kind, seed=0, sharpen=3.0, end_bias=-1e4)
    feats = features(model, 2)
    words = [i for i in range(len(vocab)) if i not in (vocab.end_idx, vocab.start_idx, vocab.pad_idx)]
    captions = torch.tensor([[vocab.start_idx, *ids] for ids in itertools.product(words, repeat=3)])
    beam = beam_search(model, feats, vocab, beam_size=len(vocab) ** 2, max_length=3)
    greedy_result = greedy(model, feats, vocab, 3)
    for i in range(2):
        with torch.no_grad():
            scores, _ = _word_log_probs(model, feats[i:i + 1].expand(len(captions), *feats.shape[1:]), captions)
        best = int(scores.sum(1).argmax())
        assert beam[i].token_ids == captions[best, 1:].tolist()
        assert beam[i].score == pytest.approx(float(scores[best].sum()), abs=1e-4)
        assert beam[i].score >= greedy_result[i].score - 1e-5
    assert any(b.score > g.score + 0.1 for b, g in zip(beam, greedy_result)), "greedy should miss an optimum"


@pytest.mark.parametrize("beam", [1, 3])
def test_caption_without_end_stops_at_max_length(kind, beam, make_model, features, vocab):
    model = make_model(kind)
    with torch.no_grad():
        model.decoder.fc.bias[vocab.end_idx] = -1e4
    for decoded in decode(model, torch.randn(3, 3, 32, 32), vocab, max_length=7, beam_size=beam):
        assert len(decoded.words) == len(decoded.log_probs) == 7
        assert not decoded.ended and decoded.end_log_prob is None
        assert "<END>" not in decoded.words
        if model.has_attention:
            assert decoded.alphas.shape == (7, 9)
    feats = features(model, 3)
    for i, decoded in enumerate(decode_from_features(model, feats, vocab, beam, max_length=7)):
        expected, _ = _teacher_forced(model, feats[i:i + 1], decoded.token_ids, False, vocab)
        assert decoded.log_probs == pytest.approx(expected.tolist(), abs=1e-4)


@pytest.mark.parametrize("beam", [1, 3])
def test_decoded_log_probs_equal_teacher_forced_ones(kind, beam, make_model, features, vocab):
    model = make_model(kind, seed=12, end_bias=0.5)
    feats = features(model, 5)
    results = decode_from_features(model, feats, vocab, beam)
    assert any(d.ended and d.token_ids for d in results)
    for i, decoded in enumerate(results):
        expected, alphas = _teacher_forced(model, feats[i:i + 1], decoded.token_ids, decoded.ended, vocab)
        got = decoded.log_probs + ([decoded.end_log_prob] if decoded.ended else [])
        assert got == pytest.approx(expected.tolist(), abs=1e-4)
        if model.has_attention:
            torch.testing.assert_close(decoded.alphas, alphas[0, :len(decoded.token_ids)], atol=1e-5, rtol=0)


@pytest.mark.parametrize("beam", [1, 3])
def test_attention_weights_of_every_word_sum_to_one(beam, make_model, features, vocab):
    model = make_model("show-attend-tell", seed=5)
    for decoded in decode_from_features(model, features(model, 4), vocab, beam):
        assert decoded.alphas.shape == (len(decoded.words), 9)
        assert (decoded.alphas >= 0).all()
        torch.testing.assert_close(decoded.alphas.sum(1), torch.ones(len(decoded.words)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("beam", [1, 3])
def test_start_and_pad_are_never_generated(kind, beam, make_model, vocab):
    """Even when the model prefers them (an untrained model can), <START> and <PAD> are not words."""
    model = make_model(kind)
    with torch.no_grad():
        model.decoder.fc.bias[[vocab.start_idx, vocab.pad_idx]] = 50.0
        model.decoder.fc.bias[vocab.end_idx] = -1e4  # so real words must be chosen
    for decoded in decode(model, torch.randn(3, 3, 32, 32), vocab, max_length=5, beam_size=beam):
        assert len(decoded.token_ids) == 5
        assert not {vocab.start_idx, vocab.pad_idx} & set(decoded.token_ids)
