"""The data pipeline follows PROTOCOL.md: cleaning, vocabulary, split sizes, shifted targets."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import tfrnn as tfrnn_pkg
from tfrnn.data import BOOK_SHA1, Corpus, Vocab, book_path, clean, make_splits
from tfrnn.errors import DataError


@pytest.fixture(scope="module")
def corpus(book):
    return Corpus.load(book)


def test_vocabulary_and_indices_match_the_study(book, corpus):
    text = re.sub("[^A-Za-z]+", " ", book.read_text()).lower()  # the study's own rule
    study_vocab = sorted(set(text) | {"<unk>"})
    assert list(corpus.vocab.tokens) == study_vocab
    assert len(corpus.vocab) == 28
    assert corpus.vocab.tokens[:3] == (" ", "<unk>", "a") and corpus.vocab.tokens[27] == "z"
    assert corpus.vocab.encode("the ").tolist() == [21, 9, 6, 0]
    assert len(corpus.ids) == 173_428
    assert corpus.vocab.decode(corpus.ids[:200]) == text[:200]


def test_cleaning_collapses_non_letters_and_lowercases():
    assert clean("The  Time--Machine, 1895!\n") == "the time machine "
    assert Vocab().encode("Ünïcode 42").tolist() == Vocab().encode(" n code ").tolist()


def test_hw4_split_sizes_windows_and_shifted_targets(corpus):
    splits = make_splits(corpus, "hw4", num_steps=32, batch_size=1024, seed=0)
    assert splits.sizes == {"train": 10_000, "val": 5_000}
    assert splits.steps_per_epoch == 10
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in splits.val])
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.shape == (5_000, 32) and y.shape == (5_000, 32)
    # validation is windows 10,000-14,999 in order: overlapping, targets shifted by one
    assert (x[0] == corpus.ids[10_000:10_032]).all()
    assert (y[0] == corpus.ids[10_001:10_033]).all()
    assert (x[-1] == corpus.ids[14_999:15_031]).all()
    assert (x[1:, :-1] == x[:-1, 1:]).all()


def test_hw4_training_batches_cover_the_windows_and_reshuffle_each_epoch(corpus):
    splits = make_splits(corpus, "hw4", num_steps=32, batch_size=1024, seed=0)
    epochs = [[x.numpy() for x, _ in splits.epochs(e, e + 1)] for e in range(2)]
    assert [len(b) for b in epochs[0]] == [1024] * 9 + [784]
    windows = np.lib.stride_tricks.sliding_window_view(corpus.ids, 32)[:10_000]
    rows = [np.concatenate(e) for e in epochs]
    # every training window (0-9,999) exactly once per epoch, in a different order
    for epoch in rows:
        assert sorted(map(bytes, epoch)) == sorted(map(bytes, windows))
    assert not (rows[0] == rows[1]).all()
    for x, y in splits.train.take(1):
        assert (x.numpy()[:, 1:] == y.numpy()[:, :-1]).all()
    # an epoch's order is a function of the seed and its number: the same when made again,
    # and epochs 0-1 read in one go are epochs 0 and 1
    again = make_splits(corpus, "hw4", num_steps=32, batch_size=1024, seed=0)
    assert all((a == b).all() for a, b in zip(epochs[1], [x.numpy() for x, _ in again.epochs(1, 2)]))
    both = [x.numpy() for x, _ in splits.epochs(0, 2)]
    assert all((a == b).all() for a, b in zip(both, epochs[0] + epochs[1], strict=True))
    other = make_splits(corpus, "hw4", num_steps=32, batch_size=1024, seed=1)
    assert not (next(iter(other.train))[0].numpy() == epochs[0][0]).all()


def test_book_split_is_contiguous_90_5_5_with_a_test_part(corpus):
    n = len(corpus.ids)
    for carry in (True, False):
        splits = make_splits(corpus, "book", num_steps=100, batch_size=64, seed=0, carry_state=carry)
        a, b = int(0.9 * n), int(0.95 * n)
        assert splits.sizes == {"train": a, "val": b - a, "test": n - b} and splits.unit == "characters"
        # validation and test are kept whole, to be read as one sequence each
        assert (splits.streams["val"] == corpus.ids[a:b]).all()
        assert (splits.streams["test"] == corpus.ids[b:]).all()
        assert splits.val is None and splits.test is None
        batches = [x.numpy() for x, _ in splits.train]
        assert len(batches) == splits.steps_per_epoch
        # training batches come from the training part only
        train_text = corpus.vocab.decode(corpus.ids[:a])
        assert all(corpus.vocab.decode(row) in train_text for row in batches[0][:3])
    # independent windows: every non-overlapping window of the training part once per epoch,
    # cut from one offset
    n_windows = (a - 100) // 100
    assert splits.steps_per_epoch == -(-n_windows // 64)
    text = corpus.vocab.decode(corpus.ids[:a])
    starts = sorted(text.find(corpus.vocab.decode(row)) for batch in batches for row in batch)
    assert len(starts) == n_windows and len(set(starts)) == n_windows
    assert {s % 100 for s in starts} == {starts[0] % 100}


@pytest.mark.parametrize("carry", [True, False])
def test_epochs_of_epoch_chars_read_the_passes_on_one_after_the_other(corpus, carry):
    import tensorflow as tf

    passes = make_splits(corpus, "book", num_steps=100, batch_size=64, seed=0, carry_state=carry)
    per_pass = passes.steps_per_epoch
    short = make_splits(
        corpus, "book", num_steps=100, batch_size=64, seed=0, carry_state=carry, epoch_chars=64 * 100 * 7 + 5
    )
    assert short.steps_per_epoch == 7  # whole steps of the characters asked for
    whole = [x.numpy() for x, _ in passes.epochs(0, 2)]
    assert len(whole) == 2 * per_pass
    # epochs 0 .. k of 7 steps are the first 7(k+1) steps of the passes, a pass's end
    # followed by the next one's start (epoch 3 here crosses from pass 0 into pass 1)
    read = [x.numpy() for x, _ in short.epochs(0, 2 * per_pass // 7)]
    assert len(read) == 7 * (2 * per_pass // 7)
    assert all((a == b).all() for a, b in zip(read, whole))
    resumed = [x.numpy() for x, _ in short.epochs(3, 4)]  # a resumed run: the same epoch 3
    assert all((a == b).all() for a, b in zip(resumed, whole[21:28]))
    assert tf.reduce_all(
        next(iter(short.epochs(0, 1)))[1][:, :-1] == next(iter(short.epochs(0, 1)))[0][:, 1:]
    )
    one = make_splits(corpus, "book", num_steps=100, batch_size=64, seed=0, carry_state=carry, epoch_chars=1)
    more = make_splits(
        corpus, "book", num_steps=100, batch_size=64, seed=0, carry_state=carry, epoch_chars=10**9
    )
    assert (one.steps_per_epoch, more.steps_per_epoch) == (1, per_pass)


def test_short_text_is_refused(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("a tiny text")
    with pytest.raises(DataError, match="too short"):
        make_splits(Corpus.load(short), "hw4", num_steps=32, batch_size=8, seed=0)


def test_the_book_ships_inside_tfrnn_and_is_used_without_tfrnn_data(monkeypatch, book):
    from tfrnn.data import embedded_book

    monkeypatch.delenv("TFRNN_DATA")
    path = book_path()
    assert path == embedded_book() and path.is_relative_to(Path(tfrnn_pkg.__file__).parent)
    assert path.read_bytes() == book.read_bytes()
    assert Corpus.load(None).source == str(path)


def test_a_damaged_embedded_book_is_refused(tmp_path, monkeypatch):
    from tfrnn import texts

    bad = tmp_path / "timemachine.txt"
    bad.write_text("something else")
    monkeypatch.delenv("TFRNN_DATA")
    monkeypatch.setattr(texts, "embedded_book", lambda: bad)
    with pytest.raises(DataError, match=f"checksum mismatch.*expected {BOOK_SHA1}"):
        book_path()


def test_local_copy_is_verified(tmp_path, monkeypatch, book):
    copy = tmp_path / "timemachine.txt"
    shutil.copy(book, copy)
    monkeypatch.setenv("TFRNN_DATA", str(copy))
    assert book_path() == copy
    copy.write_text("something else")
    with pytest.raises(DataError, match="checksum mismatch"):
        book_path()


def test_validation_batches_are_sized_to_the_model(book):
    from tfrnn.config import TrainConfig
    from tfrnn.experiment import load_data

    _, small = load_data(TrainConfig.resolve("hw4", cell="gru", units=32), book)
    assert [len(x) for x, _ in small.val] == [5_000]  # one batch, not five
    _, wide = load_data(TrainConfig.resolve("hw4", cell="lstm", units=1024), book)
    assert [len(x) for x, _ in wide.val] == [1024] * 4 + [904]  # never below the training batch
