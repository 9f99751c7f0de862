"""Several texts as one corpus: a folder (every text file under it) or several ``--data``
values, read in a stable order, one document each, joined by ``SEPARATOR``.

Where there are many documents the book preset's validation and test parts are whole
documents (``document_parts``), chosen by a hash of each document's name, so adding a file
to a folder moves no other file between the parts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tfrnn.errors import DataError
from tfrnn.texts import decode_text, read_text

#: Between two documents: U+001C, ASCII's file separator (a ``chars`` vocabulary always
#: holds it when the text has several documents; ``letters`` reads it as a space).
SEPARATOR = "\x1c"
#: At least this many documents for the validation and test parts to be whole documents
#: (fewer: the joined text is split by characters, as one text is).
MIN_DOCUMENTS = 10
#: The share of the characters each of the validation and test parts aims at (the book
#: preset's 90/5/5 split) and the least share that counts as filled.
PART_SHARE, LEAST_SHARE = 0.05, 0.025
#: A file larger than this is not taken as a document when walking a folder (a data dump,
#: not a text someone wrote); named on its own as ``--data`` it is read whatever its size.
LARGEST_FILE = 64 * 2**20


@dataclass(frozen=True)
class Documents:
    """Texts read from a folder or several files: ``names`` (paths as the user wrote them
    or relative to their folder) and ``texts``, in reading order; ``skipped``: files under a
    folder that were not read as text (binary, not UTF-8, empty, or too large), by reason."""

    names: tuple[str, ...]
    texts: tuple[str, ...]
    skipped: dict
    #: how the run names its data: the path, or the first and how many more, and the count
    source: str = ""


def is_documents(source: object) -> bool:
    """Whether a ``--data`` value names several documents: a folder, or several values."""
    if isinstance(source, (list, tuple)):
        return True
    return isinstance(source, (str, os.PathLike)) and Path(source).expanduser().is_dir()


def sources_of(source) -> list[Path]:
    """The paths a ``--data`` value names, one or several."""
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    for item in items:
        if isinstance(item, str) and item.startswith("tfds:"):
            raise DataError(f"a tfds: source has its own parts and cannot be combined with others: {item}")
    return [Path(item).expanduser() for item in items]


def text_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """The regular files under ``folder`` in a stable order (by path, byte-wise), hidden
    files and folders (a leading dot) left out, symbolic links to folders not followed; and
    the files larger than ``LARGEST_FILE``."""
    found, large = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or not path.is_file():
                continue
            (large if path.stat().st_size > LARGEST_FILE else found).append(path)
    key = lambda p: p.relative_to(folder).as_posix().encode("utf-8", "surrogateescape")  # noqa: E731
    return sorted(found, key=key), sorted(large, key=key)


def _read_listed(path: Path) -> str | None:
    """A file found in a folder, as text, or None when it is not text (it is skipped)."""
    try:
        return decode_text(path.read_bytes(), "text file", path)
    except (DataError, OSError):
        return None


def read_documents(source) -> Documents:
    """Read every document ``source`` names: files as they are (a bad one stops with its
    one-line error), folders as every text file under them (files that are not text are
    skipped and counted). Refuses a source with no text at all in one line."""
    names: list[str] = []
    texts: list[str] = []
    skipped: dict[str, int] = {}
    paths = sources_of(source)
    for path in paths:
        if not path.is_dir():
            names.append(str(path))
            texts.append(read_text(path))
            continue
        files, large = text_files(path)
        if large:
            skipped["larger than 64 MiB"] = skipped.get("larger than 64 MiB", 0) + len(large)
        for file in files:
            text = _read_listed(file)
            if text is None:
                skipped["binary or not UTF-8"] = skipped.get("binary or not UTF-8", 0) + 1
                continue
            names.append(str(file))
            texts.append(text)
    if not texts:
        where = ", ".join(str(p) for p in paths)
        raise DataError(f"no text files (UTF-8, not empty) under {where}")
    label = str(paths[0]) if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"
    if len(texts) > 1 or any(p.is_dir() for p in paths):
        label += f", {len(texts):,} document{'s' if len(texts) > 1 else ''}"
    return Documents(tuple(names), tuple(texts), skipped, label)


def _rank(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()


def document_parts(
    names: tuple[str, ...], lengths: list[int]
) -> tuple[list[int], list[int], list[int]] | None:
    """Which documents make the training, validation and test parts (indices, each in
    reading order): documents taken in the order of their names' hashes fill validation to
    ``PART_SHARE`` of the characters, then test (a document that alone is over twice that
    share is left to training). None when there are fewer than ``MIN_DOCUMENTS``, or the
    parts could not be filled to ``LEAST_SHARE``: the text is then split by characters."""
    if len(names) < MIN_DOCUMENTS:
        return None
    total = sum(lengths)
    parts: list[list[int]] = [[], []]
    filled = [0, 0]
    for i in sorted(range(len(names)), key=lambda i: _rank(names[i])):
        if lengths[i] > 2 * PART_SHARE * total:
            continue
        part = 0 if filled[0] < PART_SHARE * total else 1
        if filled[part] >= PART_SHARE * total:
            break
        parts[part].append(i)
        filled[part] += lengths[i]
    if min(filled) < LEAST_SHARE * total:
        return None
    held = set(parts[0]) | set(parts[1])
    train = [i for i in range(len(names)) if i not in held]
    return train, sorted(parts[0]), sorted(parts[1])


def joined_parts(documents: Documents) -> list[str]:
    """The documents as the texts ``Corpus.load`` reads: three (training, validation and
    test parts of whole documents, each joined by ``SEPARATOR``) or one (all of them,
    joined, split later by characters)."""
    texts = documents.texts
    chosen = document_parts(documents.names, [len(t) for t in texts])
    if chosen is None:
        return [SEPARATOR.join(texts)]
    return [SEPARATOR.join(texts[i] for i in part) for part in chosen]


def skipped_line(skipped: dict) -> str | None:
    """One line naming the files under a data folder that were not read (``skipped``: how
    many, by reason), or None."""
    if not skipped:
        return None
    said = ", ".join(f"{n:,} {why}" for why, n in skipped.items())
    return f"note: files skipped under the data folder: {said}"
