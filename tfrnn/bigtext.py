"""Large text files read and encoded in chunks: the file is never held whole as bytes, as a
string or as code points; what grows with its size is the encoded text alone (its int32
ids), so a 50 MB text trains in about its ids' 200 MB beyond a small one.

The result equals ``Corpus.load``'s of the whole file (the same vocabulary, ids and
``<unk>`` counts): three passes over the file, one to count its characters (where the
training part ends), one to count the training part's (the vocabulary), one to encode.
Used for ``chars`` vocabularies (the study's ``letters`` cleaning joins runs of characters
across any cut) of files over ``CHUNKED_BYTES``.
"""

from __future__ import annotations

import codecs
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tfrnn.errors import DataError
from tfrnn.texts import bom_encoding, encoding_label
from tfrnn.vocab import Vocab, code_points

#: Files larger than this are read in chunks (with a chars vocabulary).
CHUNKED_BYTES = 32 * 2**20
#: Bytes read at a time.
CHUNK_BYTES = 2**18
#: Code points Unicode has (U+0000 .. U+10FFFF).
CODE_POINTS = 0x110000


def is_large(path: Path) -> bool:
    """Whether ``path`` is a file large enough to be read in chunks."""
    try:
        return path.is_file() and path.stat().st_size > CHUNKED_BYTES
    except OSError:
        return False


def chunks(path: Path, what: str = "data file") -> Iterator[np.ndarray]:
    """The file's text as code points, a chunk at a time, with ``read_text``'s checks: a
    byte-order mark chooses UTF-16/32, else UTF-8; binary, undecodable and empty (or
    whitespace-only) files are refused in one line."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with handle:
        head = handle.read(4)
        encoding = bom_encoding(head) or "utf-8"
        decoder = codecs.getincrementaldecoder(encoding)("strict")
        handle.seek(0)
        done, printable = 0, False
        while True:
            raw = handle.read(CHUNK_BYTES)
            pending = len(decoder.getstate()[0])  # bytes of a character the last chunk cut
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:
                at = done - pending + exc.start
                raise DataError(
                    f"{what} is not {encoding_label(encoding)} text (byte {at}): {path}"
                ) from None
            if "\x00" in text:
                raise DataError(
                    f"{what} looks binary, not text (UTF-16 or UTF-32 text needs a byte-order mark): {path}"
                )
            printable = printable or bool(text.strip())
            done += len(raw)
            if text:
                yield code_points(text)
            if not raw:
                break
        if not printable:
            raise DataError(f"{what} is empty: {path}")


def release_freed_memory() -> None:
    """Hand the memory of freed chunks back to the system. glibc keeps freed blocks of up to
    32 MiB in its heap once one such block has been freed (its mmap threshold rises), and a
    heap is given back only from its top: the chunks' temporaries would stay resident,
    about 50 MiB for a 50 MB text. ``malloc_trim`` returns them; elsewhere, nothing to do."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        pass


def load_chunked(path: Path, vocab: Vocab | None, end_of_training, min_count: int, max_size: int):
    """The file's ids (int32), its ``chars`` vocabulary (``vocab``, or built from the
    training part: the first ``end_of_training(n)`` of its ``n`` characters) and the
    characters read as ``<unk>`` in the training part and the rest."""
    total = sum(len(c) for c in chunks(path))
    end = end_of_training(total)
    if vocab is None:
        counts = np.zeros(CODE_POINTS, np.int64)
        pos = 0
        for codes in chunks(path):
            if pos >= end:
                break
            counts += np.bincount(codes[: end - pos], minlength=CODE_POINTS)
            pos += len(codes)
        values = np.flatnonzero(counts)
        vocab = Vocab.from_counts(values.astype(np.uint32), counts[values], min_count, max_size)
        del counts
        release_freed_memory()
    ids = np.empty(total, np.int32)
    unknown = {"train": Counter(), "rest": Counter()}
    pos = 0
    for codes in chunks(path):
        part = ids[pos : pos + len(codes)]
        part[:] = vocab.encode_codes(codes)
        for name, span in (("train", slice(0, max(0, end - pos))), ("rest", slice(max(0, end - pos), None))):
            missing = codes[span][part[span] == vocab.unk]
            if len(missing):
                values, counts = np.unique(missing, return_counts=True)
                unknown[name].update({chr(int(v)): int(n) for v, n in zip(values, counts)})
        pos += len(codes)
        release_freed_memory()
    return ids, vocab, unknown
