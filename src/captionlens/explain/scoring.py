"""The score every method explains, computed for many images or rows at once.

The score of word t is log p(word_t | image, words_<t) under teacher forcing (option: the raw logit),
so one decoder pass over a batch of images scores every word of the caption at once. Every function
takes optional `targets`: the word scored at each position when it is not the caption's own (the caption
stays the prefix), e.g. another word of the vocabulary at the same place: (N, T) word ids, or (N, T, 2)
(word, foil) pairs for a contrast (`explain.contrast`), where a position with a foil is scored
log p(word) - log p(foil), which is logit(word) - logit(foil) for either score (the softmax's normaliser
cancels), and a position whose foil is `NO_FOIL` keeps the word's own score.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from captionlens.data.vocabulary import Vocabulary
from captionlens.models.protocol import Captioner

Score = Literal["log_prob", "logit"]
SCORES = ("log_prob", "logit")
NO_FOIL = -1   # the foil of a (word, foil) target pair that has none: the word keeps its own score


def caption_tensor(token_ids: Sequence[int], vocab: Vocabulary, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, T + 2) `<START> w1 .. wT <END>` for a caption's word ids."""
    return torch.tensor([[vocab.start_idx, *token_ids, vocab.end_idx]], dtype=torch.long, device=device)


def padded_captions(captions: Sequence[Sequence[int]], vocab: Vocabulary,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, max T + 2) `<START> words <END>` rows, right-padded with <PAD>."""
    rows = [caption_tensor(ids, vocab, device)[0] for ids in captions]
    return nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=vocab.pad_idx)


def scores_from_features(model: Captioner, features: torch.Tensor, captions: torch.Tensor,
                         score: Score = "log_prob", targets: torch.Tensor | None = None) -> torch.Tensor:
    """(N, T) score of each of the T words (the <END> position excluded) for N feature rows.

    `captions` is (1, T + 2) or (N, T + 2); a single caption is broadcast over the batch, and so are
    `targets` ((1, T) or (N, T) word ids scored instead of the caption's own, or (1 or N, T, 2) (word, foil)
    pairs: see the module docstring).
    """
    if captions.size(0) != features.size(0):
        captions = captions.expand(features.size(0), -1)
    words = captions[:, 1:-1] if targets is None else targets.expand(features.size(0), *targets.shape[1:])
    hidden, _ = model.teacher_forced_hidden(features, captions)
    logits = _scored(model.output_logits(hidden), score)
    return scored_words(logits[:, :words.size(1)], words)


def scores_at(model: Captioner, features: torch.Tensor, captions: torch.Tensor, positions: torch.Tensor,
              score: Score = "log_prob", targets: torch.Tensor | None = None) -> torch.Tensor:
    """(R,) score of word `positions[r]` of row r (or of the target `targets[r]`, a word id or a (word, foil)
    pair, at that position): the
    vocabulary projection runs at that position only (T times less output-layer work than
    `scores_from_features` when each row needs one word)."""
    hidden, _ = model.teacher_forced_hidden(features, captions)
    rows = torch.arange(hidden.size(0), device=hidden.device)
    logits = _scored(model.output_logits(hidden[rows, positions]), score)
    words = captions[rows, positions + 1] if targets is None else targets
    return scored_words(logits[:, None], words[:, None])[:, 0]


def scored_words(scores: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """(N, T) the score of each position's target from (N, T, V) scores of every word: `words` (N, T) word
    ids, or (N, T, 2) (word, foil) pairs, scored as the word's score minus the foil's (`NO_FOIL`: the word's)."""
    if words.dim() == 2:
        return scores.gather(-1, words[:, :, None]).squeeze(-1)
    values = scores.gather(-1, words.clamp(min=0))
    return torch.where(words[..., 1] == NO_FOIL, values[..., 0], values[..., 0] - values[..., 1])


def next_word_log_probs(model: Captioner, features: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
    """(N, T + 1, V) the distribution of the next word (log-probabilities) at every position of teacher-forced
    `<START> w1 .. wT <END>` rows: position t is what could follow words_<t, the last one what could follow
    the whole caption (<END> among it)."""
    hidden, _ = model.teacher_forced_hidden(features, captions)
    return _scored(model.output_logits(hidden), "log_prob")


def _scored(logits: torch.Tensor, score: Score) -> torch.Tensor:
    """Logits as the explained score, log-probabilities (log_softmax) or the raw logits, in at least float32
    (half-precision logits are upcast; a float64 model keeps float64)."""
    check_score(score)
    if logits.dtype != torch.float64:
        logits = logits.float()
    return logits.log_softmax(-1) if score == "log_prob" else logits


def check_score(score: str) -> None:
    if score not in SCORES:
        raise ValueError(f"score must be 'log_prob' or 'logit', got {score!r}")


CPU_BATCH_PIXELS = 8 * 224 * 224  # input pixels per CPU batch: the best batch for a ResNet-50 on 2 cores
ACCELERATOR_BATCH = 64


def auto_batch_size(images: torch.Tensor) -> int:
    """Images per forward pass for batches shaped like `images` (.., 3, H, W): 64 on an accelerator; on a
    CPU as many as fill `CPU_BATCH_PIXELS` (8 at 224 px, 43 at 96 px): larger CPU batches
    spill the caches (a ResNet-50 at 224 px ran 1.6x slower per image at 24 than at 8 on 2 cores)."""
    if images.device.type != "cpu":
        return ACCELERATOR_BATCH
    return max(1, CPU_BATCH_PIXELS // (images.size(-2) * images.size(-1)))


@torch.no_grad()
def batched_word_scores(model: Captioner, images: torch.Tensor, captions: torch.Tensor,
                        score: Score = "log_prob", batch_size: int | None = None,
                        targets: torch.Tensor | None = None) -> torch.Tensor:
    """Scores (N, T) of every word for N (perturbed) images, in chunks of `batch_size` forward passes
    (default `auto_batch_size`)."""
    batch_size = auto_batch_size(images) if batch_size is None else batch_size
    chunks = [scores_from_features(model, model.encode(chunk), captions, score, targets)
              for chunk in images.split(batch_size)]
    return torch.cat(chunks)
