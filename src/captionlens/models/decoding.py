"""Greedy and beam-search decoding, batched over images (and beams).

Both return, per image, the words, the per-word log-probabilities (the <END> token's included as
`end_log_prob` when the caption ended) and, for attention models, the per-word attention weights. Both
can continue a given `prefix` of words instead of starting from nothing: the prefix is read as teacher
forcing reads it (its log-probabilities are the teacher-forced ones) and the search goes on from there.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from captionlens.data.vocabulary import Vocabulary
from captionlens.models.protocol import Captioner, State


@dataclass
class Decoded:
    """One image's caption: token ids without <START>/<END>, their log-probs, and attention maps (T, N)."""

    token_ids: list[int]
    words: list[str]
    log_probs: list[float]
    ended: bool                     # False when max_length cut the caption before <END>
    end_log_prob: float | None
    alphas: torch.Tensor | None

    @property
    def caption(self) -> str:
        return " ".join(self.words)

    @property
    def score(self) -> float:
        return sum(self.log_probs) + (self.end_log_prob or 0.0)


def _word_log_probs(logits: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """Log-probabilities of the next word, with <START> and <PAD> ruled out: they are never words."""
    log_probs = logits.float().log_softmax(-1)
    log_probs[:, [vocab.start_idx, vocab.pad_idx]] = float("-inf")
    return log_probs


def _reorder(state: tuple[torch.Tensor, ...], index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(s.index_select(0, index) for s in state)


def _finish(ids: list[int], logps: list[float], alphas: torch.Tensor | None, end_idx: int,
            vocab: Vocabulary) -> Decoded:
    ended = end_idx in ids
    n = ids.index(end_idx) if ended else len(ids)
    return Decoded(ids[:n], [vocab.idx2word[i] for i in ids[:n]], logps[:n], ended,
                   logps[n] if ended else None, None if alphas is None else alphas[:n])


def check_prefix(prefix: Sequence[int], vocab: Vocabulary) -> list[int]:
    """The prefix's word ids; one ValueError for an id that is not a word (<START>, <END>, <PAD>, out of range)."""
    ids = [int(i) for i in prefix]
    never = {vocab.start_idx, vocab.end_idx, vocab.pad_idx}
    bad = [i for i in ids if i in never or not 0 <= i < len(vocab)]
    if bad:
        raise ValueError(f"a caption prefix holds words only; got token id(s) {bad} "
                         f"({', '.join(vocab.idx2word.get(i, '?') for i in bad)})")
    return ids


def _read_prefix(model: Captioner, features: torch.Tensor, vocab: Vocabulary, prefix: Sequence[int]
                 ) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Teacher-force `<START> prefix` for every image: (the state before the prefix's last word is read,
    the token to read next (that word, or <START> for an empty prefix), the prefix words' log-probs
    (B, P), their attention weights (B, P, N) or None)."""
    batch, device = features.size(0), features.device
    state = model.init_state(features)
    tokens = torch.full((batch,), vocab.start_idx, dtype=torch.long, device=device)
    logps, alphas = [], []
    for word in prefix:
        logits, next_state, alpha = model.step(tokens, state)
        tokens = torch.full_like(tokens, word)
        logps.append(_word_log_probs(logits, vocab).gather(1, tokens[:, None])[:, 0])
        if alpha is not None:
            alphas.append(alpha.float())
        state = next_state
    logp = torch.stack(logps, 1) if logps else features.new_zeros(batch, 0, dtype=torch.float32)
    return state, tokens, logp, torch.stack(alphas, 1) if alphas else None


@torch.no_grad()
def greedy(model: Captioner, features: torch.Tensor, vocab: Vocabulary, max_length: int = 20,
           prefix: Sequence[int] = ()) -> list[Decoded]:
    """Pick the most likely word at every step (after `prefix`, which counts towards `max_length`);
    batched over images."""
    prefix = check_prefix(prefix, vocab)
    batch = features.size(0)
    state, tokens, prefix_logp, prefix_alpha = _read_prefix(model, features, vocab, prefix)
    ids = [torch.full_like(tokens, word) for word in prefix]
    logps = list(prefix_logp.unbind(1))
    alphas = [] if prefix_alpha is None else list(prefix_alpha.unbind(1))
    done = torch.zeros(batch, dtype=torch.bool, device=features.device)
    for _ in range(max_length - len(prefix)):
        logits, state, alpha = model.step(tokens, state)
        logp, tokens = _word_log_probs(logits, vocab).max(-1)
        ids.append(tokens)
        logps.append(logp)
        if alpha is not None:
            alphas.append(alpha.float())
        done |= tokens == vocab.end_idx
        if done.all():
            break
    ids_t, logps_t = torch.stack(ids, 1).tolist(), torch.stack(logps, 1).tolist()
    alphas_t = torch.stack(alphas, 1).cpu() if alphas else None
    return [_finish(ids_t[b], logps_t[b], None if alphas_t is None else alphas_t[b], vocab.end_idx, vocab)
            for b in range(batch)]


@torch.no_grad()
def beam_search(model: Captioner, features: torch.Tensor, vocab: Vocabulary, beam_size: int = 3,
                max_length: int = 20, length_penalty: float = 0.0, prefix: Sequence[int] = ()) -> list[Decoded]:
    """Beam search over all images at once: (B images x K beams) rows advance in one decoder step.

    Finished beams stay in the batch and can only be extended by <PAD> at zero cost, so shapes stay
    fixed. The best finished (or, failing that, longest-lived) beam is chosen by
    score / length**length_penalty (0 = raw log-probability, 1 = per-word average). Every beam starts
    with `prefix` (its words count towards `max_length` and the length, and its log-probs towards the score).
    """
    prefix = check_prefix(prefix, vocab)
    batch, k = features.size(0), beam_size
    device = features.device
    state, start, prefix_logp, prefix_alpha = _read_prefix(model, features, vocab, prefix)
    state = tuple(s.repeat_interleave(k, dim=0) for s in state)
    vocab_size = len(vocab)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = prefix_logp.sum(1)                     # all beams start identical: expand only the first
    tokens = start.repeat_interleave(k, dim=0)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.full((batch * k,), float(len(prefix)), device=device)
    hist_ids = torch.tensor(prefix, dtype=torch.long, device=device).view(1, -1).expand(batch * k, -1)
    hist_logp = prefix_logp.repeat_interleave(k, dim=0)
    hist_alpha = None if prefix_alpha is None else prefix_alpha.repeat_interleave(k, dim=0)
    offsets = (torch.arange(batch, device=device) * k).unsqueeze(1)
    for _ in range(max_length - len(prefix)):
        logits, state, alpha = model.step(tokens, state)
        log_probs = _word_log_probs(logits, vocab)
        frozen = torch.full_like(log_probs, float("-inf"))
        frozen[:, vocab.pad_idx] = 0.0
        log_probs = torch.where(finished.unsqueeze(1), frozen, log_probs)
        total = (scores.view(-1, 1) + log_probs).view(batch, k * vocab_size)
        scores, flat = total.topk(k, dim=1)
        origin = (flat // vocab_size + offsets).view(-1)
        tokens = (flat % vocab_size).view(-1)
        step_logp = log_probs[origin, tokens]
        state = _reorder(state, origin)
        finished = finished[origin]
        lengths = lengths[origin] + (~finished).float()
        hist_ids = torch.cat([hist_ids[origin], tokens.unsqueeze(1)], 1)
        hist_logp = torch.cat([hist_logp[origin], step_logp.unsqueeze(1)], 1)
        if alpha is not None:
            step_alpha = alpha.float()[origin].unsqueeze(1)
            hist_alpha = step_alpha if hist_alpha is None else torch.cat([hist_alpha[origin], step_alpha], 1)
        finished = finished | (tokens == vocab.end_idx)
        if finished.all():
            break
    normalised = scores.view(-1) / lengths.clamp(min=1) ** length_penalty
    # Prefer beams that reached <END>; a caption cut at max_length only wins when none did.
    normalised = torch.where(finished, normalised, normalised - 1e9).view(batch, k)
    best = (normalised.argmax(1) + offsets.squeeze(1)).tolist()
    ids, logps = hist_ids.tolist(), hist_logp.tolist()
    alphas = None if hist_alpha is None else hist_alpha.cpu()
    return [_finish(ids[r], logps[r], None if alphas is None else alphas[r], vocab.end_idx, vocab) for r in best]


def decode_features(model: Captioner, features: torch.Tensor, vocab: Vocabulary, max_length: int = 20,
                    beam_size: int = 1, length_penalty: float = 0.0, prefix: Sequence[int] = ()) -> list[Decoded]:
    """Caption encoded images: greedy when beam_size == 1, else beam search; every caption continues
    `prefix` (word ids; empty: from the start)."""
    check_decoding(beam_size, max_length)
    if beam_size == 1:
        return greedy(model, features, vocab, max_length, prefix)
    return beam_search(model, features, vocab, beam_size, max_length, length_penalty, prefix)


def check_decoding(beam_size: int, max_length: int) -> None:
    """One ValueError naming a decoding setting out of range."""
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be an integer >= 1, got {max_length!r}")


def decode(model: Captioner, images: torch.Tensor, vocab: Vocabulary, max_length: int = 20,
           beam_size: int = 1, length_penalty: float = 0.0) -> list[Decoded]:
    """Caption a batch of image tensors (B, 3, H, W)."""
    with torch.no_grad():
        features = model.encode(images)
    return decode_features(model, features, vocab, max_length, beam_size, length_penalty)
