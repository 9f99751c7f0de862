"""Perplexity as language models are evaluated: a held-out text read as one sequence.

The recurrent state is carried from chunk to chunk through the whole text, so every
character is predicted from everything before it (not from a zero state at each window).

``StreamScorer`` reads the text as ``streams`` parallel rows of a stateful copy of the
model. With one stream that is exactly the one-sequence figure (``tfrnn score`` on the same
text gives it too). With several, stream ``s`` covers its own slice of the text but starts
reading ``burn_in`` characters before it, uncounted, so its state is warm when its slice
begins: the figure then stays within a small fraction of a percent of the one-stream one
(``tests/test_wholetext.py``: ``test_book_run_reports_one_sequence_figures_of_its_best_epoch``)
at a fraction of the time, which is how validation runs after every epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from tfrnn import kernel
from tfrnn.config import TrainConfig
from tfrnn.errors import TrainingDiverged, diverged
from tfrnn.models import build_model, reset_states
from tfrnn.recurrent import use_kernel

#: Per-epoch validation: parallel streams, and the uncounted characters each reads first.
VALIDATION_STREAMS = 8
VALIDATION_BURN_IN = 256
#: Characters per stream read in one call (the state is carried between calls).
CHUNK = 1024
#: A validation part of more than ``VALIDATION_STREAMS`` times this many characters is read in
#: one stream per this many (``validation_streams``), up to the training batch's rows: a
#: step's matrix products cost about the same for 8 rows as for 64, so 8 streams over a large
#: text's validation part (600,000 characters of 12 M) took a wide model longer than its
#: epoch's training (stop 48: 2 x 512 at 3 minutes, about two thirds of each epoch).
STREAM_CHARS = 16_384


def validation_streams(chars: int, most: int) -> int:
    """Streams the per-epoch validation reads a part of ``chars`` characters in: 8 up to
    8 x ``STREAM_CHARS`` (the book, Vim's manuals), then one per ``STREAM_CHARS``, at most
    ``most`` (the training batch) and never fewer than 8."""
    return max(VALIDATION_STREAMS, min(most, chars // STREAM_CHARS))


def validation_chunk(streams: int) -> int:
    """Steps one call of the per-epoch validation reads in ``streams`` streams: as many
    positions as 8 streams of ``CHUNK`` (a call holds its gates' pre-activations for all of
    them: 36 streams of 1,024 steps raised 2 x 512's peak memory by 280 MiB)."""
    return max(1, CHUNK * VALIDATION_STREAMS // streams)


def stream_layout(n: int, streams: int, burn_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each stream reads, and which of its positions count, for ``n`` predictions.

    Returns ``index`` ``(streams, R)``: the position of the text each row reads at each step
    (-1 past the end), and ``weight`` ``(streams, R)``: 1 where that prediction counts.
    Every counted position is counted exactly once.
    """
    streams = max(1, min(streams, n))
    span = -(-n // streams)  # counted positions per stream
    first = np.arange(streams) * span  # first counted position of each stream
    start = np.maximum(first - burn_in, 0)  # where each stream starts reading
    width = span + int((first - start).max())
    index = start[:, None] + np.arange(width)[None, :]
    weight = (index >= first[:, None]) & (index < np.minimum(first + span, n)[:, None])
    index = np.where(index < n, index, -1)
    return index, weight.astype(np.float32)


class StreamScorer:
    """Cross-entropy of a text under a model's weights, the state carried through it.

    ``model``: score with this stateful model of ``streams`` rows (its weights as they are)
    instead of a copy built here, whose weights ``take_weights`` loads."""

    def __init__(
        self,
        config: TrainConfig,
        vocab_size: int,
        streams: int = 1,
        burn_in: int = 0,
        chunk: int = CHUNK,
        model: keras.Model | None = None,
    ) -> None:
        import tensorflow as tf

        self.streams, self.burn_in, self.chunk = streams, burn_in, chunk
        # Its own model (build it outside any tf.distribute strategy): weights are copied in.
        self.model = model or build_model(config, vocab_size, stateful_batch=streams)
        # never exported: it may run tfrnn's compiled recurrence and cross-entropy
        if use_kernel(self.model, streams):
            cross_entropy = kernel.cross_entropy
        else:
            cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits

        @tf.function(reduce_retracing=True)
        def chunk_cross_entropy(x, y):
            return cross_entropy(y, tf.cast(self.model(x, training=False), tf.float32))

        self._chunk_cross_entropy = chunk_cross_entropy

    def take_weights(self, model: keras.Model) -> None:
        """Evaluate with ``model``'s weights (a model of the same configuration, stateful or
        not, trained under any strategy), or with their moving average when its optimizer
        keeps one (``use_ema``)."""
        optimizer = getattr(model, "optimizer", None)
        if getattr(optimizer, "use_ema", False) and getattr(optimizer, "built", False):
            average = optimizer._model_variables_moving_average  # in trainable_variables' order
            for mine, value in zip(self.model.trainable_variables, average, strict=True):
                mine.assign(keras.ops.convert_to_numpy(value))
        else:
            self.model.set_weights(model.get_weights())

    def cross_entropy(self, ids: np.ndarray, weights_of: keras.Model | None = None) -> float:
        """Mean nats per predicted character of ``ids`` (``ids[1:]`` predicted from the past).

        ``weights_of``: take that model's weights first (``take_weights``); default: the
        weights already loaded.
        """
        if weights_of is not None:
            self.take_weights(weights_of)
        weight, ce = self._read(ids)
        return float((ce * weight).sum() / weight.sum())

    def log_probs(self, ids: np.ndarray) -> np.ndarray:
        """log p(ids[t + 1] | ids[: t + 1]) for every t, read as one stream (``streams=1``)."""
        if self.streams != 1:
            raise ValueError("per-character log-probabilities are read from one stream")
        return -self._read(ids)[1][0].astype(np.float32)

    def _read(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``stream_layout``'s weight for ``ids`` (1 where a prediction counts), and the
        cross-entropy of each position read (float64, ``(rows, width)``)."""
        ids = np.asarray(ids, np.int32)
        n = len(ids) - 1
        if n < 1:
            raise ValueError("a text of at least two characters is needed to predict one")
        index, weight = stream_layout(n, self.streams, self.burn_in)
        rows = len(index)
        if rows < self.streams:  # fewer predictions than streams: pad with uncounted rows
            pad = self.streams - rows
            index = np.vstack([index, np.full((pad, index.shape[1]), -1)])
            weight = np.vstack([weight, np.zeros((pad, index.shape[1]), np.float32)])
        safe = np.maximum(index, 0)
        x, y = ids[:-1][safe], ids[1:][safe]
        reset_states(self.model)
        ce = [
            self._chunk_cross_entropy(x[:, t : t + self.chunk], y[:, t : t + self.chunk]).numpy()
            for t in range(0, index.shape[1], self.chunk)
        ]
        reset_states(self.model)
        return weight, np.concatenate(ce, axis=1).astype(np.float64)

    def perplexity(self, ids: np.ndarray, weights_of: keras.Model | None = None) -> float:
        return math.exp(self.cross_entropy(ids, weights_of))


class CarriedValidation(keras.callbacks.Callback):
    """Sets ``val_loss`` and ``val_perplexity`` at each epoch's end from ``scorer`` on ``ids``,
    and saves the weights it evaluated to ``best_file`` whenever they beat ``best``; raises
    ``TrainingDiverged`` when the figure is not finite (``advice``: what to try).

    Keras' early stopping and plateau schedule, and Keras Tuner, read the figures it writes
    into the epoch's logs: they come after it.
    """

    def __init__(
        self,
        scorer: StreamScorer,
        ids: np.ndarray,
        best_file: Path | None = None,
        best: float = math.inf,
        advice: str = "a lower --lr",
    ) -> None:
        super().__init__()
        self.scorer, self.ids, self.best_file, self.best = scorer, ids, best_file, best
        self.advice = advice

    def on_epoch_end(self, epoch, logs=None):
        ce = self.scorer.cross_entropy(self.ids, self.model)
        if diverged(ce):
            raise TrainingDiverged(
                f"validation {diverged(ce)} in epoch {epoch + 1}: training stopped; try {self.advice}"
            )
        if logs is not None:
            logs["val_loss"] = ce
            logs["val_perplexity"] = math.exp(ce) if ce < 700 else math.inf
        if self.best_file is not None and ce < self.best:
            self.best = ce
            self.scorer.model.save_weights(str(self.best_file))


class ResetStates(keras.callbacks.Callback):
    """Zeroes a stateful model's carried state at the start of every epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        reset_states(self.model)
