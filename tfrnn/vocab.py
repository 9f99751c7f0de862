"""Vocabularies: the study's 28 letters, or every character of the user's text.

``letters`` (the reference study, PROTOCOL.md): every run of characters outside ``A-Za-z``
becomes one space, then lower-case; tokens ``' '``=0, ``'<unk>'``=1, ``a``=2 ... ``z``=27,
exactly the study's ``sorted(set(chars) | {'<unk>'})`` for The Time Machine.

``chars``: the Unicode characters (code points) of the training part as they are (case,
punctuation, digits, line breaks, any script), ``'<unk>'``=0 then the characters by code
point. Characters seen fewer than ``min_count`` times in training, beyond the ``max_size``
most frequent, or never seen in training are read as ``<unk>`` and counted.

Building and encoding are vectorised (numpy over the text's code points): no Python loop
per character, a 20 MB text in seconds.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter

import numpy as np

from tfrnn.errors import DataError

LETTERS, CHARS = "letters", "chars"
VOCABS = (LETTERS, CHARS)
UNK = "<unk>"
#: The letters vocabulary's tokens (the study's indices).
TOKENS: tuple[str, ...] = (" ", UNK, *string.ascii_lowercase)
#: The letters vocabulary's size (28).
VOCAB_SIZE = len(TOKENS)
#: The study's cleaning rule: every run of these becomes one space, then lower-case. Python
#: (``clean``) and the exported graph (``tfrnn.export``) use this one pattern.
NON_LETTERS = "[^A-Za-z]+"
_NON_LETTERS = re.compile(NON_LETTERS)
#: ``chars``: a character is kept when training has at least this many (else ``<unk>``) ...
MIN_COUNT = 2
#: ... and the vocabulary holds at most this many tokens (``<unk>`` included): a text rich in
#: stray symbols cannot grow the softmax without bound.
MAX_SIZE = 1024
#: How ``<unk>`` is shown when text is decoded: the study's '?', U+FFFD for ``chars``
#: (generation never writes it: its logit is masked).
SHOWN_UNK = {LETTERS: "?", CHARS: "\ufffd"}

#: Token id of every byte value for the letters vocabulary (``<unk>`` but for ' ', a-z).
_ASCII_IDS = np.full(256, TOKENS.index(UNK), np.int32)
for _i, _t in enumerate(TOKENS):
    if len(_t) == 1:
        _ASCII_IDS[ord(_t)] = _i


def clean(text: str) -> str:
    """Collapse every run of non-letters to one space and lower-case (the study's rule)."""
    return _NON_LETTERS.sub(" ", text).lower()


def code_points(text: str) -> np.ndarray:
    """The text's Unicode code points as uint32, in one pass."""
    return np.frombuffer(text.encode("utf-32-le"), "<u4")


def shown(chars: Counter, limit: int = 12) -> str:
    """Characters and their counts as a user reads them: ``'é' x3, '\\n' x1``."""
    items = chars.most_common()
    text = ", ".join(f"{c!r} x{n:,}" for c, n in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


class Vocab:
    """A character vocabulary: ``letters`` (the study's 28 tokens) or ``chars``."""

    def __init__(
        self, tokens: tuple[str, ...] = TOKENS, kind: str = LETTERS, min_count: int | None = None
    ) -> None:
        if kind not in VOCABS:
            raise DataError(f"unknown vocabulary {kind!r}: choose one of {', '.join(VOCABS)}")
        self.kind = kind
        self.tokens = tuple(tokens)
        self.min_count = min_count
        self._index = {t: i for i, t in enumerate(self.tokens)}
        self.unk = self._index[UNK]
        if kind == CHARS:
            if self.unk != 0 or any(len(t) != 1 for t in self.tokens[1:]):
                raise DataError("a chars vocabulary is <unk> followed by single characters")
            self._codes = np.array([ord(t) for t in self.tokens[1:]], np.uint32)
            if np.any(np.diff(self._codes.astype(np.int64)) <= 0):
                raise DataError("a chars vocabulary's characters must be sorted and distinct")

    @classmethod
    def build(
        cls, codes: np.ndarray, min_count: int = MIN_COUNT, max_size: int = MAX_SIZE, keep: str = ""
    ) -> Vocab:
        """The ``chars`` vocabulary of a training text given as code points; the characters
        of ``keep`` (a document separator) are held however often they occur."""
        values, counts = np.unique(codes, return_counts=True)
        return cls.from_counts(values, counts, min_count, max_size, keep)

    @classmethod
    def from_counts(
        cls,
        values: np.ndarray,
        counts: np.ndarray,
        min_count: int = MIN_COUNT,
        max_size: int = MAX_SIZE,
        keep: str = "",
    ) -> Vocab:
        """``build`` from the training text's distinct code points (sorted) and their counts
        (a text read in chunks, ``tfrnn.bigtext``)."""
        forced = np.array(sorted({ord(c) for c in keep}), values.dtype)
        often = (counts >= min_count) & ~np.isin(values, forced)
        values, counts = values[often], counts[often]
        room = max_size - 1 - len(forced)
        if len(values) > room:  # the most frequent; ties by code point
            order = np.lexsort((values, -counts))[:room]
            values = np.sort(values[order])
        if len(values) == 0:
            raise DataError(
                f"no character occurs {min_count} times in the training text: nothing to learn "
                "(a longer text, or a smaller --min-count)"
            )
        values = np.union1d(values, forced)
        return cls((UNK, *(chr(int(v)) for v in values)), CHARS, min_count)

    @classmethod
    def of_size(cls, size: int) -> Vocab:
        """A vocabulary of ``size`` tokens for measuring a model (its characters do not
        matter): the study's letters when ``size`` is theirs, else ``chars``."""
        if size == VOCAB_SIZE:
            return cls()
        return cls((UNK, *(chr(0x20 + i) for i in range(size - 1))), CHARS)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and (self.kind, self.tokens) == (other.kind, other.tokens)

    def __hash__(self) -> int:
        return hash((self.kind, self.tokens))

    def encode_codes(self, codes: np.ndarray) -> np.ndarray:
        """``chars``: code points to int32 ids (``<unk>`` for characters not in the vocabulary)."""
        idx = np.searchsorted(self._codes, codes)
        found = idx < len(self._codes)
        found[found] = self._codes[idx[found]] == codes[found]
        return np.where(found, idx + 1, self.unk).astype(np.int32)

    def encode(self, text: str) -> np.ndarray:
        """Map ``text`` to int32 token ids (``letters``: cleaned first, as the study)."""
        if self.kind == CHARS:
            return self.encode_codes(code_points(text))
        cleaned = clean(text)
        if self.tokens == TOKENS:  # cleaned text is ' ' and a-z only: map its bytes at once
            return _ASCII_IDS[np.frombuffer(cleaned.encode("ascii"), np.uint8)]
        return np.array([self._index.get(c, self.unk) for c in cleaned], dtype=np.int32)

    def unknown(self, text: str) -> Counter:
        """The characters of ``text`` this vocabulary does not keep as they are, with counts:
        ``chars``: those read as ``<unk>``; ``letters``: letters outside a-z/A-Z (é, ß, я),
        which the study's cleaning turns into spaces (other characters becoming spaces is the
        rule itself, not a surprise)."""
        if self.kind == CHARS:
            codes = code_points(text)
            missing = codes[self.encode_codes(codes) == self.unk]
            values, counts = np.unique(missing, return_counts=True)
            return Counter({chr(int(v)): int(n) for v, n in zip(values, counts)})
        return Counter({c: text.count(c) for c in set(text) if c.isalpha() and not ("a" <= c.lower() <= "z")})

    def decode(self, ids) -> str:
        """Map token ids back to text (``<unk>`` shows as ``SHOWN_UNK``)."""
        shown_tokens = self.shown_tokens
        return "".join(shown_tokens[i] for i in np.asarray(ids).ravel())

    @property
    def shown_tokens(self) -> list[str]:
        """The tokens as text, ``<unk>`` shown as ``SHOWN_UNK``."""
        return [SHOWN_UNK[self.kind] if t == UNK else t for t in self.tokens]

    @property
    def start_token(self) -> int:
        """What an empty prompt starts from: a space (else a line break, else the first character)."""
        for t in (" ", "\n"):
            if t in self._index:
                return self._index[t]
        return 1 if len(self.tokens) > 1 else 0

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.kind == LETTERS:
            return f"letters ({len(self)} tokens: space, a-z and <unk>; the study's cleaning)"
        return f"chars ({len(self)} tokens: {len(self) - 1} characters of the training text and <unk>)"

    def as_dict(self) -> dict:
        """What ``metrics.json`` records of the vocabulary."""
        return {"kind": self.kind, "size": len(self), "min_count": self.min_count}

    def to_json(self) -> str:
        data = {"kind": self.kind, "tokens": list(self.tokens)}
        if self.kind == LETTERS:
            data["cleaning"] = f"{NON_LETTERS} -> ' ', lower"
        else:
            data["min_count"] = self.min_count
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        data = json.loads(text)
        return cls(tuple(data["tokens"]), data.get("kind", LETTERS), data.get("min_count"))
