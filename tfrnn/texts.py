"""Where texts come from: the book that ships inside tfrnn (or ``$TFRNN_DATA``), and text
files read in the encoding they declare. (``tfds:`` sources: ``tfrnn.tfds_source``.)"""

from __future__ import annotations

import codecs
import hashlib
import os
from pathlib import Path

from tfrnn.errors import DataError

#: How ``--data`` names a TensorFlow Datasets source (``tfrnn.tfds_source``).
PREFIX = "tfds:"


def is_tfds(source: object) -> bool:
    """Whether ``source`` (a ``--data`` value) names a TFDS dataset."""
    return isinstance(source, str) and source.startswith(PREFIX)


#: Where d2l.ai serves the book (the embedded copy is that file, byte for byte).
BOOK_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
BOOK_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
BOOK_FILENAME = "timemachine.txt"
#: Environment variable naming another copy of the book (checked against its SHA-1).
DATA_ENV = "TFRNN_DATA"


def sha1_of(path: Path) -> str:
    """SHA-1 hex digest of a file."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def local_book() -> Path | None:
    """The copy named by ``$TFRNN_DATA`` (not yet checksummed), or None if unset."""
    local = os.environ.get(DATA_ENV)
    if not local:
        return None
    path = Path(local).expanduser()
    if not path.is_file():
        raise DataError(f"${DATA_ENV} points to {path}, which is not a file")
    return path


def embedded_book() -> Path:
    """The copy of The Time Machine that ships inside tfrnn (public domain, 178 KB)."""
    from importlib.resources import files

    return Path(str(files("tfrnn") / "texts" / BOOK_FILENAME))


def book_path() -> Path:
    """Path of a verified copy of The Time Machine: ``$TFRNN_DATA`` when set, else the copy
    embedded in the package (no network). Either way its SHA-1 must be the study's copy's."""
    path = local_book() or embedded_book()
    if not path.is_file():
        raise DataError(f"the book that ships with tfrnn is missing at {path}: reinstall tfrnn")
    digest = sha1_of(path)
    if digest != BOOK_SHA1:
        raise DataError(f"checksum mismatch for {path}: SHA-1 {digest}, expected {BOOK_SHA1}")
    return path


def read_text(path: str | os.PathLike, what: str = "data file") -> str:
    """Read a UTF-8 text file, refusing missing, empty, binary and non-UTF-8 files
    (``what`` names the file in the messages: a data file, a text file to score...)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    if not path.is_file():
        raise DataError(f"{what} is not a file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return decode_text(raw, what, path)


#: Byte-order marks and their encodings, the longer first (UTF-32 LE starts like UTF-16 LE).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def bom_encoding(head: bytes) -> str | None:
    """The encoding the byte-order mark ``head`` starts with names, or None (no mark)."""
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), None)


def encoding_label(encoding: str) -> str:
    """How messages name an encoding: UTF-8 (with or without its mark), UTF-16, UTF-32."""
    return {"utf-16": "UTF-16", "utf-32": "UTF-32"}.get(encoding, "UTF-8")


def decode_text(raw: bytes, what: str = "text", path: object = "") -> str:
    """Decode a text file's bytes: UTF-8, or UTF-8/16/32 with a byte-order mark (the mark
    itself is not part of the text); refuse empty, binary and undecodable bytes in one line."""
    encoding = bom_encoding(raw)
    if encoding is None:
        if not raw.strip():
            raise DataError(f"{what} is empty: {path}")
        if b"\x00" in raw:
            raise DataError(
                f"{what} looks binary, not text (UTF-16 or UTF-32 text needs a byte-order mark): {path}"
            )
        encoding = "utf-8"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} is not {encoding_label(encoding)} text (byte {exc.start}): {path}") from None
    if not text.strip():
        raise DataError(f"{what} is empty: {path}")
    if "\x00" in text:
        raise DataError(f"{what} looks binary, not text: {path}")
    return text


def is_study_text(source: str | os.PathLike | None) -> bool:
    """Whether ``source`` is the study's own text, The Time Machine (the default, its TFDS
    builder, or a file with its SHA-1): the texts whose default vocabulary under the hw4
    preset is the study's letters."""
    if source is None:
        return True
    if isinstance(source, (list, tuple)):
        return False
    if is_tfds(source):
        return str(source).removeprefix("tfds:").split(":")[0] in ("time_machine", "time_machine/default")
    path = Path(source).expanduser()
    try:
        return path.is_file() and path.stat().st_size < 10_000_000 and sha1_of(path) == BOOK_SHA1
    except OSError:
        return False
