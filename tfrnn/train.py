"""Training with Keras ``fit``: the study's optimiser and clipping, perplexity, timing, resume."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from tfrnn.config import TrainConfig, xla_setting
from tfrnn.data import Splits
from tfrnn.errors import TrainingDiverged
from tfrnn.models import build_model


@keras.saving.register_keras_serializable(package="tfrnn")
class Perplexity(keras.metrics.Metric):
    """exp(mean cross-entropy per character) over all the batches seen."""

    def __init__(self, name: str = "perplexity", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", dtype="float64")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype="float64")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        ce = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        self.total.assign_add(ops.cast(ops.sum(ce), "float64"))
        self.count.assign_add(ops.cast(ops.size(ce), "float64"))

    def result(self):
        return keras.ops.exp(self.total / keras.ops.maximum(self.count, 1.0))


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall clock, validation included) to each epoch's logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


class StopOnNaN(keras.callbacks.Callback):
    """Raise ``TrainingDiverged`` once a training or validation loss or perplexity is not finite.

    Raising (rather than only stopping) keeps the last good epoch's backup intact.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, where: str) -> None:
        for key in ("loss", "perplexity"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                raise TrainingDiverged(
                    f"{where} {key} became {float(value)} in epoch {self._epoch + 1}: "
                    "training stopped; try a lower --lr or a smaller --clip"
                )

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"training (batch {batch + 1})")

    def on_test_end(self, logs=None):
        self._check(logs, "validation")


def make_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Plain SGD (the study) or Adam, with clipping by the global norm of all gradients."""
    cls = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[config.optimizer]
    return cls(learning_rate=config.lr, global_clipnorm=config.clip or None)


#: ``auto`` compiles with XLA up to this layer width and sequence length, for runs long
#: enough to pay back the compiling (10-20 s once, growing with the sequence length).
#: Measured with tools/bench.py on a 2-core CPU, seconds per epoch with XLA / without:
#: GRU-32 0.70/1.04, LSTM-32 0.65/0.92, GRU 3x32 2.13/2.58, SimpleRNN-64 0.58/0.71, but
#: LSTM-128 4.58/3.13.
XLA_MAX_UNITS = 64
XLA_MAX_STEPS = 64
XLA_MIN_EPOCHS = 20


def use_xla(config: TrainConfig, setting: str | None = None) -> bool:
    """Whether the training step is compiled with XLA (``setting`` defaults to ``$TFRNN_XLA``).

    ``auto`` means: on a CPU, outside a ``tf.distribute`` strategy, for layers of at most
    ``XLA_MAX_UNITS`` units, sequences of at most ``XLA_MAX_STEPS`` steps, and runs of at
    least ``XLA_MIN_EPOCHS`` epochs.
    """
    import tensorflow as tf

    setting = xla_setting(setting)
    if setting != "auto":
        return setting == "on"
    return (
        config.units <= XLA_MAX_UNITS
        and config.num_steps <= XLA_MAX_STEPS
        and config.epochs >= XLA_MIN_EPOCHS
        and not tf.config.list_logical_devices("GPU")
        and not tf.distribute.has_strategy()
    )


def compile_model(config: TrainConfig, vocab_size: int, xla: str | None = None) -> keras.Model:
    """Build and compile the model of ``config`` (seeded when ``config.seed`` is set).

    ``xla``: ``auto``, ``on`` or ``off`` (default ``$TFRNN_XLA``, else auto): see ``use_xla``.
    """
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    model = build_model(config, vocab_size)
    model.compile(
        optimizer=make_optimizer(config),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[Perplexity()],
        jit_compile=use_xla(config, xla),
    )
    return model


@dataclass
class FitResult:
    model: keras.Model
    history_csv: Path


def fit(
    config: TrainConfig,
    splits: Splits,
    vocab_size: int,
    workdir: Path,
    tensorboard: Path | None = None,
    verbose: int | str = "auto",
    extra_callbacks: list | None = None,
    strategy=None,
    xla: str | None = None,
) -> FitResult:
    """Train ``config`` on ``splits``, logging each epoch to ``workdir/history.csv``.

    ``workdir/backup`` holds Keras ``BackupAndRestore`` state: a run interrupted after
    epoch k and started again with the same ``workdir`` continues at epoch k + 1.
    With a ``tf.distribute`` ``strategy`` the model is built in its scope: Keras splits
    each global batch across the replicas and aggregates the metrics.
    """
    import tensorflow as tf

    workdir.mkdir(parents=True, exist_ok=True)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = compile_model(config, vocab_size, xla)
    if strategy is not None:
        from tfrnn.distribute import is_multi_worker, prepare_multi_worker

        if is_multi_worker(strategy):
            prepare_multi_worker(model, next(iter(splits.train)))
    history_csv = workdir / "history.csv"
    callbacks = [
        StopOnNaN(),
        EpochTimer(),
        # The CSV row is written before the backup, so a crash between the two at worst
        # repeats an epoch (the repeated row is dropped when the run folder is written).
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.BackupAndRestore(str(workdir / "backup")),
        *(extra_callbacks or []),
    ]
    if tensorboard is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard)))
    model.fit(
        splits.train,
        validation_data=splits.val,
        epochs=config.epochs,
        shuffle=False,  # the pipeline reshuffles itself every epoch
        callbacks=callbacks,
        verbose=verbose,
    )
    return FitResult(model=model, history_csv=history_csv)
