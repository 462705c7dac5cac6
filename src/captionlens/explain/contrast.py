"""Contrastive targets: "why this word and not that one?".

`explain(..., contrast={position: foil})` explains, at word `position` (0-based, in the explained caption),
the score log p(word | image, words_<t) - log p(foil | image, words_<t) instead of log p(word). Both
log-probabilities share the softmax's normaliser, so the difference is logit(word) - logit(foil) whatever
`score` says. A positive map region raises the word against the foil. Every other position keeps its own
score. `Foil` is how a result records one such position.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from captionlens.data.vocabulary import PAD, START, Vocabulary
from captionlens.explain.scoring import NO_FOIL

Contrast = Mapping[int, str]   # word position (0-based) -> the foil word it is explained against


@dataclass(frozen=True)
class Foil:
    """Word `position` of the caption was explained against the word `word` (vocabulary id `token_id`)."""

    position: int
    word: str
    token_id: int

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "word": self.word, "token_id": self.token_id}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Foil:
        return cls(int(data["position"]), str(data["word"]), int(data["token_id"]))


def check_contrast(contrast: Contrast | None) -> None:
    """One ValueError for a contrast that is not {position (int >= 0): foil (a word)}; nothing else is
    known before the caption is."""
    if contrast is None:
        return
    if not isinstance(contrast, Mapping):
        raise ValueError(f"contrast must map word positions to foil words, e.g. {{2: 'yellow'}}, got {contrast!r}")
    for position, foil in contrast.items():
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise ValueError(f"contrast position must be an integer >= 0 (0 is the first word), got {position!r}")
        if not isinstance(foil, str) or not foil:
            raise ValueError(f"contrast foil at position {position} must be a word, got {foil!r}")


def resolve_contrast(contrast: Contrast | None, token_ids: Sequence[int], vocab: Vocabulary) -> tuple[Foil, ...]:
    """The foils of `contrast` for the words `token_ids` each position explains, in position order; one
    ValueError naming the position or word for a position past the caption, a foil the vocabulary lacks
    or a foil that is the word itself (whose difference is zero everywhere)."""
    check_contrast(contrast)
    foils = []
    words = [vocab.idx2word[i] for i in token_ids]
    for position, foil in sorted((contrast or {}).items()):
        if position >= len(token_ids):
            raise ValueError(f"contrast position {position} is past the caption's last word "
                             f"({len(token_ids)} words: {' '.join(words)!r}; positions start at 0)")
        if foil not in vocab or foil in (PAD, START):
            raise ValueError(f"contrast foil {foil!r} (position {position}) is not a word of the model's vocabulary")
        if vocab(foil) == token_ids[position]:
            raise ValueError(f"contrast foil {foil!r} is the word at position {position} itself: "
                             "log p(word) - log p(foil) would be 0 everywhere")
        foils.append(Foil(position, foil, vocab(foil)))
    return tuple(foils)


def foil_ids(foils: Sequence[Foil], num_words: int) -> list[int] | None:
    """Per word of a caption of `num_words`, its foil's id (`scoring.NO_FOIL` where it keeps its own score),
    or None without foils: what `ExplainContext.foils` holds."""
    if not foils:
        return None
    ids = [NO_FOIL] * num_words
    for foil in foils:
        ids[foil.position] = foil.token_id
    return ids
