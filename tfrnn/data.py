"""The text as token ids (a ``Corpus``) and the tf.data pipelines of the two presets.

The vocabulary (the study's letters, or the text's own characters) is ``tfrnn.vocab``'s;
it is built from the training part alone, so this module also says where each preset's
training part ends (``train_length``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfrnn.errors import DataError
from tfrnn.texts import (  # noqa: F401  (re-exported: where texts come from)
    BOOK_FILENAME,
    BOOK_SHA1,
    BOOK_URL,
    DATA_ENV,
    book_path,
    decode_text,
    embedded_book,
    is_study_text,
    local_book,
    read_text,
    sha1_of,
)
from tfrnn.vocab import (  # noqa: F401  (re-exported: the vocabulary's names as data's)
    CHARS,
    LETTERS,
    MAX_SIZE,
    MIN_COUNT,
    NON_LETTERS,
    TOKENS,
    UNK,
    VOCAB_SIZE,
    Vocab,
    clean,
    code_points,
)

# The study's split of the hw4 preset: windows 0-9,999 train, 10,000-14,999 validation.
HW4_TRAIN_WINDOWS = 10_000
HW4_VAL_WINDOWS = 5_000


def train_length(n: int, preset: str, num_steps: int, bounds: tuple[int, int] | None = None) -> int:
    """How many leading tokens of an ``n``-token text the preset trains on (where its
    vocabulary is built): the characters its training windows span (hw4), or its
    training part (book)."""
    if preset == "book":
        return bounds[0] if bounds is not None else int(0.9 * n)
    windows = n - num_steps
    return hw4_sizes(windows)[0] + num_steps if windows >= 2 else n


def hw4_sizes(windows: int) -> tuple[int, int]:
    """Training and validation windows of the hw4 split of a text with ``windows`` windows:
    the study's 10,000 and 5,000, or two thirds and one third of a shorter text."""
    if windows >= HW4_TRAIN_WINDOWS + HW4_VAL_WINDOWS:
        return HW4_TRAIN_WINDOWS, HW4_VAL_WINDOWS
    n_train = max(1, (2 * windows) // 3)
    return n_train, windows - n_train


@dataclass(frozen=True)
class Corpus:
    """A text as token ids, its vocabulary, and where it came from.

    ``bounds`` are where a source's own validation and test parts start in ``ids`` (a TFDS
    dataset with those splits); None lets the preset split the text itself. ``unknown``:
    per part ("train", and "rest": everything after it), the characters read as ``<unk>``
    (``chars``) or letters the study's cleaning turned into spaces (``letters``).
    """

    ids: np.ndarray
    source: str
    vocab: Vocab
    bounds: tuple[int, int] | None = None
    unknown: dict = dataclasses.field(default_factory=dict, compare=False)
    #: files under a data folder not read as text, by reason (``tfrnn.documents``)
    skipped: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def fingerprint(self) -> str:
        """SHA-1 of the text's token ids (and of its parts' bounds, if it has them; and of a
        ``chars`` vocabulary's characters): what a run trained on, whatever the file."""
        digest = hashlib.sha1(memoryview(np.ascontiguousarray(self.ids, np.int32)).cast("B"))
        if self.bounds is not None:
            digest.update(repr(self.bounds).encode())
        if self.vocab.kind != LETTERS:
            digest.update(json.dumps(self.vocab.tokens).encode())
        return digest.hexdigest()

    @property
    def unknown_total(self) -> int:
        return sum(sum(c.values()) for c in self.unknown.values())

    @classmethod
    def load(
        cls,
        source: str | os.PathLike | None = None,
        vocab: str | Vocab = LETTERS,
        preset: str = "hw4",
        num_steps: int = 32,
        min_count: int = MIN_COUNT,
        max_size: int = MAX_SIZE,
    ) -> Corpus:
        """Load ``source``: a text file, a folder or several paths (``tfrnn.documents``: one
        document each), a ``tfds:`` dataset (``tfrnn.tfds_source``), or the verified book
        when None, as ids of ``vocab``: "letters", "chars" (built from the training part of
        ``preset``), or a given ``Vocab`` (a run's own, to fine-tune)."""
        from tfrnn.documents import SEPARATOR, is_documents, joined_parts, read_documents
        from tfrnn.tfds_source import is_tfds

        kind = vocab.kind if isinstance(vocab, Vocab) else vocab
        separator, skipped = "", {}
        if is_tfds(source):
            from tfrnn.tfds_source import load_texts

            texts = list(load_texts(source).values())
        elif is_documents(source):
            documents = read_documents(source)
            texts, source, skipped = joined_parts(documents), documents.source, documents.skipped
            separator = SEPARATOR if len(documents.texts) > 1 else ""
        else:
            from tfrnn.bigtext import is_large, load_chunked

            source = Path(source) if source is not None else book_path()
            path = source.expanduser()
            if kind != LETTERS and is_large(path):
                given = vocab if isinstance(vocab, Vocab) else None
                ids, given, unknown = load_chunked(
                    path,
                    given,
                    lambda n: train_length(n, preset, num_steps),
                    min_count,
                    max_size,
                )
                return cls(ids, str(source), given, None, unknown)
            texts = [read_text(source)]
        if kind == LETTERS:
            given = vocab if isinstance(vocab, Vocab) else Vocab()
            parts = [given.encode(text) for text in texts]
            lengths = [len(p) for p in parts]
            ids = np.concatenate(parts)
            if not (ids > given.unk).any():
                raise DataError(f"data has no letters A-Z to learn from: {source}")
        else:
            codes = [code_points(text) for text in texts]
            lengths = [len(c) for c in codes]
            all_codes = np.concatenate(codes)
        bounds = None
        if len(texts) == 3:
            bounds = (lengths[0], lengths[0] + lengths[1])
        end = train_length(sum(lengths), preset, num_steps, bounds)
        if kind == LETTERS:
            joined = "\n".join(texts)
            unknown = {"all": given.unknown(joined)} if any(not t.isascii() for t in texts) else {}
            return cls(ids, str(source), given, bounds, unknown, skipped)
        given = (
            vocab
            if isinstance(vocab, Vocab)
            else Vocab.build(all_codes[:end], min_count, max_size, keep=separator)
        )
        ids = given.encode_codes(all_codes)
        unknown = {}
        for part, span in (("train", slice(0, end)), ("rest", slice(end, None))):
            missing = all_codes[span][ids[span] == given.unk]
            values, counts = np.unique(missing, return_counts=True)
            unknown[part] = Counter({chr(int(v)): int(n) for v, n in zip(values, counts)})
        return cls(ids, str(source), given, bounds, unknown, skipped)

    def book_parts(self, num_steps: int) -> dict[str, np.ndarray]:
        """The book preset's train/validation/test parts: the source's own, else 90/5/5."""
        return book_parts(self.ids, num_steps, self.bounds)


@dataclass(frozen=True)
class Splits:
    """tf.data pipelines of one preset and the size of each part.

    The training data of epoch ``e`` (0-based) is ``epoch_data(e)``: its order (shuffle,
    offset) is a function of the seed and ``e`` alone, so a run resumed at epoch k sees
    what an uninterrupted one would. ``hw4`` validates on windows (``val``). ``book`` keeps
    its validation and test parts as token ids (``streams``): they are read as one sequence
    each, the state carried through (``tfrnn.evaluate``), so ``val`` and ``test`` are None.
    """

    epoch_data: Callable
    val: object | None
    test: object | None
    sizes: dict[str, int]
    #: what ``sizes`` counts: "windows" (hw4) or "characters" (book)
    unit: str
    #: training batches per epoch
    steps_per_epoch: int
    streams: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def epochs(self, first: int, last: int):
        """The training batches of epochs ``first`` .. ``last - 1``, one after the other
        (give Keras ``steps_per_epoch``: it then reads one epoch's worth per epoch)."""
        import tensorflow as tf

        ds = tf.data.Dataset.range(first, max(first, last)).flat_map(self.epoch_data)
        return _options(ds.prefetch(2))

    @property
    def train(self):
        """The first epoch's training batches."""
        return self.epochs(0, 1)

    @property
    def unit_key(self) -> str:
        """The key under which ``metrics.json`` records ``sizes``."""
        return "windows" if self.unit == "windows" else "part_characters"


def hw4_window_bytes(num_steps: int) -> int:
    """Memory the hw4 preset's windows take at most (inputs and targets, int32)."""
    return (HW4_TRAIN_WINDOWS + HW4_VAL_WINDOWS) * num_steps * 4 * 2


def _windows(ids: np.ndarray, num_steps: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and one-step-shifted targets of every ``num_steps + 1`` window at ``stride``."""
    win = np.lib.stride_tricks.sliding_window_view(ids, num_steps + 1)[::stride]
    return np.ascontiguousarray(win[:, :-1]), np.ascontiguousarray(win[:, 1:])


def _options(ds):
    """Keep tf.data's thread pools small: on 2 cores they fight the training step."""
    import tensorflow as tf

    o = tf.data.Options()
    o.threading.private_threadpool_size = 1
    o.threading.max_intra_op_parallelism = 1
    o.autotune.enabled = False
    o.deterministic = True
    # Under multi-worker training every worker reads the whole (small, in-memory) pipeline
    # and keeps its own share of the batches.
    o.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(o)


#: Validation and test batches hold up to this many tokens, and at most this many floats in
#: one layer's outputs (64 MiB): evaluation keeps no activations for a backward pass, and
#: fewer, larger batches evaluate faster (hw4 GRU-32 with XLA: the 5,000 validation windows
#: in one batch take 78 ms, in five batches of 1,024 118 ms).
EVAL_MAX_TOKENS = 2**18
EVAL_MAX_FLOATS = 2**24


def eval_batch_size(batch_size: int, num_steps: int, units: int) -> int:
    """Windows per validation/test batch: at least the training batch, else the budgets above."""
    return max(batch_size, min(EVAL_MAX_TOKENS // num_steps, EVAL_MAX_FLOATS // (num_steps * units)))


def _eval_ds(x: np.ndarray, y: np.ndarray, batch_size: int):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache().prefetch(2)
    return _options(ds)


def hw4_windows(ids: np.ndarray, num_steps: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The study's split: overlapping windows, 0-9,999 train and 10,000-14,999 validation.

    A text with fewer than 15,000 windows is split two thirds / one third instead.
    """
    n = len(ids) - num_steps  # number of (num_steps + 1)-token windows
    if n < 2:
        raise DataError(
            f"text too short: {len(ids)} characters after cleaning, need at least "
            f"{num_steps + 2} for one training and one validation window of {num_steps} steps"
        )
    n_train, n_val = hw4_sizes(n)
    # only the windows used: the text they span, not the whole text
    x, y = _windows(ids[: n_train + n_val + num_steps], num_steps, stride=1)
    return {
        "train": (x[:n_train], y[:n_train]),
        "val": (x[n_train : n_train + n_val], y[n_train : n_train + n_val]),
    }


def book_parts(
    ids: np.ndarray, num_steps: int, bounds: tuple[int, int] | None = None
) -> dict[str, np.ndarray]:
    """Contiguous train/validation/test parts of the whole text: 90/5/5, or cut at ``bounds``
    (where validation and test start)."""
    n = len(ids)
    a, b = bounds if bounds is not None else (int(0.9 * n), int(0.95 * n))
    parts = {"train": ids[:a], "val": ids[a:b], "test": ids[b:]}
    for name, part in parts.items():
        if len(part) < num_steps + 1:
            raise DataError(
                f"text too short for the book preset: its {name} part has {len(part)} "
                f"characters, need at least {num_steps + 1} (use a longer text or --num-steps)"
            )
    return parts


def stream_batches_per_epoch(n: int, num_steps: int, batch_size: int) -> int:
    """Batches per epoch when ``n`` training tokens are read as ``batch_size`` streams."""
    return (n - num_steps - 1) // (batch_size * num_steps)


def book_steps_per_epoch(n: int, num_steps: int, batch_size: int, carry_state: bool = False) -> int:
    """Training batches per epoch of the book preset over ``n`` training tokens: carried
    streams, or non-overlapping windows from a fresh offset (the same number whatever it is)."""
    if carry_state:
        return stream_batches_per_epoch(n, num_steps, batch_size)
    return -(-((n - num_steps) // num_steps) // batch_size)


def _epoch_seed(seed: int, epoch, stream: int = 0):
    """The stateless seed of one epoch's random choices (``stream`` tells them apart)."""
    import tensorflow as tf

    return tf.stack([tf.constant(seed + stream, tf.int64), tf.cast(epoch, tf.int64)])


def _shuffled(n: int, seed: int, epoch, stream: int = 1):
    """A permutation of ``range(n)`` that depends only on ``seed`` and ``epoch``."""
    import tensorflow as tf

    return tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), _epoch_seed(seed, epoch, stream)
    )


def _offset(num_steps: int, seed: int, epoch):
    """Where epoch ``epoch`` starts cutting the training text: 0 .. ``num_steps - 1``."""
    import tensorflow as tf

    return tf.random.stateless_uniform([], _epoch_seed(seed, epoch), 0, num_steps, dtype=tf.int64)


def _batches(x, y, batch_size: int):
    """``Dataset.from_tensor_slices((x, y)).batch(batch_size)``, sliced a batch at a time
    rather than a window at a time: the same batches, without the per-window work (hw4's
    10,000 windows took 40 ms of CPU time an epoch, on 2 cores taken from training)."""
    import tensorflow as tf

    count = (tf.shape(x, out_type=tf.int64)[0] + batch_size - 1) // batch_size
    return tf.data.Dataset.range(count).map(
        lambda i: (x[i * batch_size : (i + 1) * batch_size], y[i * batch_size : (i + 1) * batch_size])
    )


def _numpy_take(ids: np.ndarray, width: int):
    """A function of index rows (int64, ``(rows, width)``) to the tokens at them, read from
    ``ids`` in place: the training text is never copied into a tensor (a 50 MB text's ids
    stay one array), each batch gathers only its own windows."""
    import tensorflow as tf

    dtype = tf.as_dtype(ids.dtype)

    def take(index):
        out = tf.numpy_function(lambda i: ids[i], [index], dtype, stateful=False)
        return tf.ensure_shape(out, [None, width])

    return take


def _pass_batches(train: np.ndarray, num_steps: int, batch_size: int, per_pass: int, seed: int, carry: bool):
    """``batches(p, first, last)``: batches ``first .. last - 1`` of pass ``p`` over the
    training text (one pass: the epoch of a run without ``epoch_chars``).

    A pass cuts the text from a fresh offset (``_offset``). Carried state: the text is cut
    into ``batch_size`` contiguous streams; batch ``j`` holds characters ``j*T .. (j+1)*T`` of
    every stream, so row ``b`` of each batch continues row ``b`` of the one before.
    Otherwise: non-overlapping windows, shuffled (``_shuffled``), ``batch_size`` a batch.
    """
    import tensorflow as tf

    take = _numpy_take(train, num_steps + 1)
    span = tf.range(num_steps + 1, dtype=tf.int64)[None, :]

    def pair(starts):
        win = take(starts[:, None] + span)
        return win[:, :-1], win[:, 1:]

    if carry:
        rows = tf.range(batch_size, dtype=tf.int64) * (per_pass * num_steps)

        def batches(p, first, last):
            starts = _offset(num_steps, seed, p) + rows
            return tf.data.Dataset.range(first, last).map(lambda j: pair(starts + j * num_steps))

        return batches
    n_windows = (len(train) - num_steps) // num_steps

    def batches(p, first, last):
        starts = _offset(num_steps, seed, p) + _shuffled(n_windows, seed, p) * num_steps
        return tf.data.Dataset.range(first, last).map(
            lambda j: pair(starts[j * batch_size : (j + 1) * batch_size])
        )

    return batches


def epoch_steps(per_pass: int, num_steps: int, batch_size: int, epoch_chars: int | None) -> int:
    """Training steps of an epoch: a pass over the training text, or ``epoch_chars``
    characters' worth of it (at least one step, at most a pass)."""
    if not epoch_chars:
        return per_pass
    return max(1, min(per_pass, epoch_chars // (batch_size * num_steps)))


def make_splits(
    corpus: Corpus,
    preset: str,
    num_steps: int,
    batch_size: int,
    seed: int | None,
    eval_batch: int | None = None,
    carry_state: bool = False,
    epoch_chars: int | None = None,
) -> Splits:
    """Build the batched, shuffled (per epoch), prefetched pipelines of ``preset``.

    hw4 validation comes in batches of ``eval_batch`` windows (default ``batch_size``; see
    ``eval_batch_size``): perplexity is a mean over all their tokens, so the batching
    changes only the speed. ``carry_state`` (book): training batches continue each other
    (``_pass_batches``) instead of holding independent shuffled windows. ``epoch_chars``
    (book): an epoch is that many training characters, the passes over the text read on
    from epoch to epoch, instead of one pass.
    """
    import tensorflow as tf

    if seed is None:
        seed = int(np.random.default_rng().integers(2**31))
    eval_batch = eval_batch or batch_size
    streams: dict[str, np.ndarray] = {}
    if preset == "hw4":
        parts = hw4_windows(corpus.ids, num_steps)
        (xt, yt), (xv, yv) = parts["train"], parts["val"]
        x_train, y_train = tf.constant(xt), tf.constant(yt)

        def epoch_data(epoch):
            order = _shuffled(len(xt), seed, epoch)
            return _batches(tf.gather(x_train, order), tf.gather(y_train, order), batch_size)

        sizes, unit = {"train": len(xt), "val": len(xv)}, "windows"
        steps = -(-len(xt) // batch_size)
        val, test = _eval_ds(xv, yv, eval_batch), None
    elif preset == "book":
        parts = corpus.book_parts(num_steps)
        n = len(parts["train"])
        per_pass = book_steps_per_epoch(n, num_steps, batch_size, carry_state)
        if carry_state and per_pass < 1:
            raise DataError(
                f"text too short for carried-state training: its training part has {n:,} "
                f"characters, need at least {batch_size * num_steps + num_steps + 1:,} for "
                f"{batch_size} streams of {num_steps} steps (use a smaller --batch-size or "
                "--num-steps, or --no-carry-state)"
            )
        steps = epoch_steps(per_pass, num_steps, batch_size, epoch_chars)
        batches = _pass_batches(parts["train"], num_steps, batch_size, per_pass, seed, carry_state)

        def epoch_data(epoch):
            # epoch e is steps e*S .. (e+1)*S - 1 of the passes one after the other (S =
            # steps, a pass's own when the epoch is one pass)
            first = tf.cast(epoch, tf.int64) * steps
            last = first + steps
            return tf.data.Dataset.range(first // per_pass, (last - 1) // per_pass + 1).flat_map(
                lambda p: batches(
                    p, tf.maximum(first - p * per_pass, 0), tf.minimum(last - p * per_pass, per_pass)
                )
            )

        sizes = {name: len(part) for name, part in parts.items()}
        unit = "characters"
        streams = {"val": parts["val"], "test": parts["test"]}
        val = test = None
    else:
        raise DataError(f"unknown preset {preset!r}")
    return Splits(epoch_data, val, test, sizes, unit, steps, streams)
