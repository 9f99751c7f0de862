"""``time_machine``: H. G. Wells' *The Time Machine* as one TFDS example holding the raw text.

The text is the copy embedded in tfrnn (``tfrnn/texts/timemachine.txt``), or
``$TFRNN_DATA`` when set: nothing is downloaded. It is checked the TFDS way (size and SHA-256
in ``checksums.tsv`` beside this file: the file whose SHA-1 tfrnn pins). tfrnn's presets do
the splitting, so the dataset has one split, ``train``, with one example.

    tfds build tfrnn/datasets/time_machine            # or, from Python:
    tfds.builder("time_machine").download_and_prepare()   # after importing this module
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import tensorflow_datasets as tfds

from tfrnn.errors import DataError
from tfrnn.texts import BOOK_URL, embedded_book, local_book


def _matches(path: Path, size: int, sha256: str) -> bool:
    raw = path.read_bytes()
    return len(raw) == size and hashlib.sha256(raw).hexdigest() == sha256


class Builder(tfds.core.GeneratorBasedBuilder):
    """The Time Machine, by H. G. Wells, as served by d2l.ai."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "The book as d2l.ai serves it (178,979 bytes)."}

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

    def _local_copy(self, dl_manager) -> Path:
        """The book from ``$TFRNN_DATA``, else the copy embedded in tfrnn, checked."""
        path = local_book() or embedded_book()
        info = self.url_infos[BOOK_URL]
        if not _matches(path, info.size, info.checksum):
            raise DataError(
                f"checksum mismatch for {path}: not the {info.size:,}-byte book whose SHA-256 "
                f"is {info.checksum}"
            )
        return path

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(self._local_copy(dl_manager))}

    def _generate_examples(self, path: Path):
        # bytes decoded as they are: the stored text is the file's, byte for byte
        yield "book", {"text": Path(path).read_bytes().decode("utf-8")}
