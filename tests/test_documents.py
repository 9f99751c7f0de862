"""Several documents as one text: a folder, or several --data values."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tfrnn.data import Corpus
from tfrnn.documents import SEPARATOR, document_parts, read_documents
from tfrnn.errors import DataError


def _tree(root, book, n=14, size=2500):
    """A source-tree-like folder: ``n`` documents of the book in nested folders, a binary
    file, a hidden file and a hidden folder (neither read)."""
    text = book.read_text(encoding="utf-8")
    docs = {}
    for i in range(n):
        path = root / f"pkg{i % 3}" / f"mod{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        docs[path] = text[i * size : (i + 1) * size]
        path.write_text(docs[path], encoding="utf-8")
    (root / "pkg0" / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    (root / ".hidden.txt").write_text("hidden " * 50, encoding="utf-8")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    return docs


def test_a_folder_is_every_text_file_under_it_in_a_stable_order(tmp_path, book):
    docs = _tree(tmp_path / "tree", book)
    read = read_documents(tmp_path / "tree")
    assert list(read.names) == sorted(str(p) for p in docs)  # by path, nested folders included
    assert list(read.texts) == [docs[p] for p in sorted(docs)]
    assert read.skipped == {"binary or not UTF-8": 1}  # the hidden file and folder are not counted
    assert "14 documents" in read.source


def test_many_documents_split_into_whole_documents_and_the_vocabulary_holds_the_separator(tmp_path, book):
    docs = _tree(tmp_path / "tree", book)
    corpus = Corpus.load(tmp_path / "tree", "chars", "book", 50, min_count=1)
    rare = Corpus.load(tmp_path / "tree", "chars", "book", 50, min_count=len(docs))
    assert SEPARATOR in rare.vocab.tokens  # held though it occurs fewer than min_count times
    parts = corpus.book_parts(50)
    # each document as the vocabulary reads it (a character training lacks is <unk>)
    texts = {corpus.vocab.decode(corpus.vocab.encode(doc)) for doc in docs.values()}
    sizes = {}
    for name in ("train", "val", "test"):
        pieces = corpus.vocab.decode(parts[name]).split(SEPARATOR)
        assert all(piece in texts for piece in pieces), name  # whole documents, none cut
        sizes[name] = len(pieces)
    assert sizes["val"] >= 1 and sizes["test"] >= 1 and sum(sizes.values()) == len(docs)
    again = Corpus.load(tmp_path / "tree", "chars", "book", 50, min_count=1)
    assert again.fingerprint == corpus.fingerprint and again.bounds == corpus.bounds


def test_few_documents_are_split_by_characters_and_several_values_are_read_in_order(tmp_path, book):
    text = book.read_text(encoding="utf-8")
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(text[:30000], encoding="utf-8")
    b.write_text(text[30000:60000], encoding="utf-8")
    corpus = Corpus.load((b, a), "chars", "book", 50, min_count=1)
    assert corpus.bounds is None  # two documents: the preset's 90/5/5 split by characters
    assert len(corpus.ids) == 60001
    # in the order given, one separator between them (the training part's 54,000 characters
    # hold every character they use)
    joined = text[30000:60000] + SEPARATOR + text[:30000]
    assert corpus.vocab.decode(corpus.ids[:54000]) == joined[:54000]
    assert document_parts(("x",) * 9, [10] * 9) is None


def test_a_folder_without_text_and_a_tfds_source_among_others_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.bin").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="no text files"):
        read_documents(tmp_path / "empty")
    result = run_cli("fit", "--data", tmp_path / "empty", "--epochs", 1)
    assert result.exit_code != 0 and "no text files" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(DataError, match="cannot be combined"):
        read_documents((tmp_path / "empty", "tfds:tiny_shakespeare"))


@pytest.mark.slow
def test_fit_on_a_folder_trains_on_whole_documents_and_says_what_it_skipped(tmp_path, book):
    _tree(tmp_path / "tree", book, n=20, size=3000)
    out = tmp_path / "run"
    args = ["fit", "--preset", "book", "--data", tmp_path / "tree", "--units", 16, "--layers", 1]
    args += ["--embedding", 8, "--batch-size", 8, "--num-steps", 50, "--epochs", 1, "--no-profile"]
    result = run_cli(*args, "--out", out)
    assert result.exit_code == 0, result.output
    assert "20 documents" in result.output and "1 binary or not UTF-8" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert "20 documents" in metrics["data"]["source"]
    assert SEPARATOR in json.loads((out / "vocab.json").read_text())["tokens"]
    # the process's peak memory, beside the text's size (what a user of a large text watches)
    assert metrics["peak_rss_mib"] > 0
    assert f"peak memory {metrics['peak_rss_mib']:,.0f} MiB, for a text of" in result.output


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_a_large_file_read_in_chunks_is_the_corpus_of_the_whole_file(tmp_path, book, monkeypatch, encoding):
    from tfrnn import bigtext

    # multi-byte characters cut by the chunks' edges, characters training never sees
    text = book.read_text(encoding="utf-8")[:40000] + " naïve café — ελληνικά ✓" * 30 + "末尾"
    path = tmp_path / "big.txt"
    path.write_text(text, encoding=encoding)
    whole = Corpus.load(path, "chars", "book", 50)
    monkeypatch.setattr(bigtext, "CHUNKED_BYTES", 1000)
    monkeypatch.setattr(bigtext, "CHUNK_BYTES", 777)
    chunked = Corpus.load(path, "chars", "book", 50)
    assert chunked.vocab == whole.vocab and chunked.fingerprint == whole.fingerprint
    assert (chunked.ids == whole.ids).all() and chunked.unknown == whole.unknown
    assert chunked.unknown["rest"]["末"] == 1  # the counts are there to compare
    given = Corpus.load(path, whole.vocab, "book", 50)  # a run's own vocabulary (fine-tuning)
    assert (given.ids == whole.ids).all()


def test_a_large_binary_or_broken_file_is_refused_in_one_line(tmp_path, monkeypatch):
    from tfrnn import bigtext

    monkeypatch.setattr(bigtext, "CHUNKED_BYTES", 10)
    monkeypatch.setattr(bigtext, "CHUNK_BYTES", 16)
    cases = {"bin": b"some text\x00\x01\x02" * 10, "latin": "ok " * 20 + "caf\xe9", "blank": "   \n" * 20}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("latin-1"))
        with pytest.raises(DataError) as info:
            Corpus.load(path, "chars", "book", 5)
        assert {"bin": "looks binary", "latin": "not UTF-8 text (byte 63)", "blank": "is empty"}[name] in str(
            info.value
        )


def test_epoch_chars_is_the_book_presets_and_a_positive_count():
    hw4 = run_cli("fit", "--epoch-chars", 1000, "--epochs", 1)
    assert hw4.exit_code != 0 and "--epoch-chars needs --preset book" in hw4.output
    zero = run_cli("fit", "--preset", "book", "--epoch-chars", 0)
    assert zero.exit_code != 0 and "--epoch-chars must be a positive integer" in zero.output
    assert "Traceback" not in hw4.output + zero.output
