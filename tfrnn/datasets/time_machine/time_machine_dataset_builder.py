"""``time_machine``: H. G. Wells' *The Time Machine* as one TFDS example holding the raw text.

The download is checked the TFDS way (size and SHA-256 in ``checksums.tsv`` beside this
file: the same file whose SHA-1 tfrnn pins). Offline, the book comes from ``$TFRNN_DATA``
when set, else from TFDS's manual folder (``$TFDS_DATA_DIR/downloads/manual/timemachine.txt``),
each checked against the same size and SHA-256. tfrnn's presets do the splitting, so the
dataset has one split, ``train``, with one example.

    tfds build tfrnn/datasets/time_machine            # or, from Python:
    tfds.builder("time_machine").download_and_prepare()   # after importing this module
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import tensorflow_datasets as tfds

from tfrnn.data import BOOK_FILENAME, BOOK_URL, DATA_ENV, local_book
from tfrnn.errors import DataError, one_line
from tfrnn.tfds_source import unreachable


def _matches(path: Path, size: int, sha256: str) -> bool:
    raw = path.read_bytes()
    return len(raw) == size and hashlib.sha256(raw).hexdigest() == sha256


class Builder(tfds.core.GeneratorBasedBuilder):
    """The Time Machine, by H. G. Wells, as served by d2l.ai."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The book as d2l.ai serves it (178,979 bytes)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Offline, put {BOOK_FILENAME} ({BOOK_URL}) in the manual folder, or set ${DATA_ENV} to its path."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "The Time Machine (H. G. Wells, 1895), the Project Gutenberg text as d2l.ai "
                "serves it for character-level language models: one example, the raw text."
            ),
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            homepage="https://www.gutenberg.org/ebooks/35",
            citation=(
                "@book{wells1895time,\n  title={The Time Machine},\n  author={Wells, H. G.},\n"
                "  year={1895},\n  publisher={William Heinemann}\n}"
            ),
        )

    def _local_copy(self, dl_manager) -> Path | None:
        """The book from ``$TFRNN_DATA`` or the manual folder, checked; None if neither."""
        path = local_book()
        if path is None:
            try:
                path = Path(dl_manager.manual_dir) / BOOK_FILENAME
            except (AssertionError, ValueError):  # no manual folder, or an empty one
                return None
            if not path.is_file():
                return None
        info = self.url_infos[BOOK_URL]
        if not _matches(path, info.size, info.checksum):
            raise DataError(
                f"checksum mismatch for {path}: not the {info.size:,}-byte book whose SHA-256 "
                f"is {info.checksum}"
            )
        return path

    def _split_generators(self, dl_manager):
        path = self._local_copy(dl_manager)
        if path is None:
            reason = unreachable(BOOK_URL)  # one try: TFDS would retry for minutes
            if reason is None:
                try:
                    path = Path(dl_manager.download(BOOK_URL))
                except Exception as exc:  # network errors come in many types
                    reason = one_line(exc, 200)
            if path is None:
                manual = self.data_dir_root / "downloads" / "manual" / BOOK_FILENAME
                raise DataError(
                    f"could not download the book from {BOOK_URL} ({reason}); "
                    f"set ${DATA_ENV} to a local copy or put it at {manual}"
                )
        return {"train": self._generate_examples(path)}

    def _generate_examples(self, path: Path):
        # bytes decoded as they are: the stored text is the file's, byte for byte
        yield "book", {"text": Path(path).read_bytes().decode("utf-8")}
