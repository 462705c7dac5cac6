"""Caption vocabulary: tokenisation, word <-> index maps, JSON persistence (never pickle)."""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from captionlens.data.records import read_json

PAD, START, END, UNK = "<PAD>", "<START>", "<END>", "<UNK>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
# Spellings other vocabularies use for the special tokens (matched case-insensitively): the tutorials'
# lower-case <pad> <start> <end> <unk>, and the common sequence-model names.
SPECIAL_SPELLINGS = {PAD: ("<pad>", "<null>"), START: ("<start>", "<sos>", "<bos>"), END: ("<end>", "<eos>"),
                     UNK: ("<unk>", "<unknown>")}

_NON_WORD = re.compile(r"[^a-z0-9\s]")


def tokenize(text: str) -> list[str]:
    """Lower-case, strip punctuation (anything but a-z, 0-9 and white space), split on white space.

    "A dog's ball, red!" -> ["a", "dogs", "ball", "red"]. Apostrophes are dropped rather than
    split so that "dog's" stays one token, as in the Karpathy splits' `tokens` field.
    """
    return _NON_WORD.sub("", text.lower()).split()


class Vocabulary:
    """Word <-> index maps with the four special tokens at indices 0..3.

    `idx2word` is a dict (index -> word) so that the seed notebook's `vocab.idx2word[i]` works.
    """

    def __init__(self, words: Iterable[str] = ()) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: dict[int, str] = {}
        for word in (*SPECIAL_TOKENS, *words):
            self.add_word(word)

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            index = len(self.word2idx)
            self.word2idx[word] = index
            self.idx2word[index] = word
        return self.word2idx[word]

    @classmethod
    def build(cls, captions: Iterable[str], min_freq: int = 1) -> Vocabulary:
        """Vocabulary of the words seen at least `min_freq` times, most frequent first (ties alphabetical)."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        counts = Counter(token for caption in captions for token in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_freq and w not in SPECIAL_TOKENS),
                      key=lambda w: (-counts[w], w))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.word2idx)

    def __contains__(self, word: str) -> bool:
        return word in self.word2idx

    def __call__(self, word: str) -> int:
        return self.word2idx.get(word, self.word2idx[UNK])

    @property
    def pad_idx(self) -> int:
        return self.word2idx[PAD]

    @property
    def start_idx(self) -> int:
        return self.word2idx[START]

    @property
    def end_idx(self) -> int:
        return self.word2idx[END]

    @property
    def unk_idx(self) -> int:
        return self.word2idx[UNK]

    def encode(self, caption: str | Sequence[str], add_special: bool = True) -> list[int]:
        """Indices of a caption (string or token list); unknown words map to <UNK>."""
        tokens = tokenize(caption) if isinstance(caption, str) else list(caption)
        ids = [self(t) for t in tokens]
        return [self.start_idx, *ids, self.end_idx] if add_special else ids

    def decode_tokens(self, ids: Iterable[int]) -> list[str]:
        """Words of an index sequence: stops at <END>, skips <START> and <PAD>."""
        words = []
        for i in ids:
            word = self.idx2word[int(i)]
            if word == END:
                break
            if word not in (START, PAD):
                words.append(word)
        return words

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.decode_tokens(ids))

    def to_dict(self) -> dict:
        return {"idx2word": [self.idx2word[i] for i in range(len(self))]}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        words = data.get("idx2word") if isinstance(data, dict) else None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("vocabulary JSON must hold 'idx2word': a list of words")
        if list(words[:4]) != list(SPECIAL_TOKENS):
            raise ValueError("vocabulary JSON must hold 'idx2word': a list starting with "
                             f"{list(SPECIAL_TOKENS)}")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary JSON has duplicate words")
        return cls(words[4:])

    @classmethod
    def from_index_words(cls, words: Sequence[str]) -> tuple[Vocabulary, list[int]]:
        """A vocabulary from another model's index -> word list, whose special tokens may be spelt
        otherwise (`SPECIAL_SPELLINGS`) and sit anywhere. Returns (vocabulary, order): the special
        tokens move to 0..3 and the other words keep their relative order, and `order[new] = old`
        index, the permutation a model's embedding and output rows need to match the vocabulary."""
        roles: dict[str, int] = {}
        for index, word in enumerate(words):
            role = special_role(word)
            if role is None:
                continue
            if role in roles:
                raise ValueError(f"vocabulary has two {role} tokens: {words[roles[role]]!r} at {roles[role]} "
                                 f"and {word!r} at {index}")
            roles[role] = index
        missing = [role for role in SPECIAL_TOKENS if role not in roles]
        if missing:
            raise ValueError(f"vocabulary lacks the special token(s) {', '.join(missing)} "
                             f"(looked for {', '.join(s for m in missing for s in SPECIAL_SPELLINGS[m])}, any case)")
        others = [i for i in range(len(words)) if i not in roles.values()]
        plain = [words[i] for i in others]
        if len(set(plain)) != len(plain):
            duplicate = next(w for w in plain if plain.count(w) > 1)
            raise ValueError(f"vocabulary has the word {duplicate!r} twice")
        return cls(plain), [roles[role] for role in SPECIAL_TOKENS] + others

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def special_role(word: str) -> str | None:
    """The special token `word` spells (`<start>`, `<SOS>` -> `<START>`), or None for an ordinary word."""
    lowered = word.lower()
    return next((role for role, spellings in SPECIAL_SPELLINGS.items() if lowered in spellings), None)
