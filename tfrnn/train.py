"""Training with Keras ``fit``: the study's optimiser and clipping, perplexity, timing, resume."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import keras

from tfrnn.config import TrainConfig
from tfrnn.data import Splits
from tfrnn.errors import ConfigError, TrainingDiverged, diverged
from tfrnn.models import build_model
from tfrnn.plan import plan
from tfrnn.progress import ProgressLine
from tfrnn.recurrent import use_kernel
from tfrnn.rundir import BACKUP_DIR, BEST_WEIGHTS, TRAINED_WEIGHTS, read_history


class PerplexityLogs(keras.callbacks.Callback):
    """Adds ``perplexity`` (and ``val_perplexity``) = exp(loss) to each batch's and epoch's logs.

    Keras' loss is the mean cross-entropy per character over the batches seen (each batch
    weighted by its size; every window has the same length and these models add no other
    loss terms), so its exponential is the perplexity. A metric would compute the
    cross-entropy a second time in every step: 13% of a SimpleRNN-64 epoch on a 2-core CPU
    once the recurrence is compiled (tools/bench.py).
    """

    @staticmethod
    def _add(logs) -> None:
        for prefix in ("", "val_"):
            loss = (logs or {}).get(prefix + "loss")
            if loss is not None and prefix + "perplexity" not in logs:
                loss = float(loss)
                logs[prefix + "perplexity"] = math.exp(loss) if loss < 700 else math.inf

    def on_train_batch_end(self, batch, logs=None):
        self._add(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add(logs)


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall clock, validation included) and the learning rate at the
    epoch's end (``learning_rate``) to each epoch's logs; with ``budget_minutes``, also
    stops training after the epoch that brings the training time past it and drives a
    ``BudgetCosine`` learning rate by the share of the budget spent (one clock for both).

    ``spent`` seconds of an interrupted run's earlier epochs count toward the budget. Each
    epoch's learning rate is the one at the middle of the epoch, estimated from the last
    epoch's length. ``epochs``: the run's epoch cap; where the cap ends the run before the
    budget does (a long budget on a small text), the share of the epochs run drives the
    schedule instead, so the rate still decays to zero by the run's last epoch.
    """

    def __init__(
        self, budget_minutes: float | None = None, spent: float = 0.0, epochs: int | None = None
    ) -> None:
        super().__init__()
        self.budget = 60.0 * budget_minutes if budget_minutes else None
        self.spent, self.last, self.epochs = spent, 0.0, epochs

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        schedule = getattr(self.model.optimizer, "_learning_rate", None)
        if self.budget and isinstance(schedule, BudgetCosine):
            share = (self.spent + self.last / 2) / self.budget
            if self.epochs:  # whichever ends the run first: the budget or the epoch cap
                share = max(share, (epoch + 0.5) / self.epochs)
            schedule.progress.assign(share)

    def on_epoch_end(self, epoch, logs=None):
        self.last = time.perf_counter() - self._start
        self.spent += self.last
        if logs is not None:
            logs["epoch_seconds"] = self.last
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if self.budget and self.spent >= self.budget:
            self.model.stop_training = True


class StopOnNaN(keras.callbacks.Callback):
    """Raise ``TrainingDiverged`` once an epoch's training loss is not finite (Keras' own
    figure: no other callback's), or its validation loss, where Keras computes one.

    Checked at the end of each epoch (a NaN in any batch makes the epoch's mean NaN), before
    the backup is written: raising keeps the last good epoch's backup intact, and no
    per-batch Python callback slows Keras' asynchronous training loop. (The carried-state
    validation of the book preset checks its own figure: ``tfrnn.evaluate.CarriedValidation``.)
    """

    def __init__(self, clip: float | None = None) -> None:
        super().__init__()
        self.advice = divergence_advice(clip)

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            what = diverged(float(value)) if value is not None else None
            if what:
                where = "validation" if key.startswith("val_") else "training"
                stopped = f"in epoch {epoch + 1}: training stopped; try {self.advice}"
                raise TrainingDiverged(f"{where} {what} {stopped}")


class StopOnInterrupt(keras.callbacks.Callback):
    """End training at the next epoch's end once a Ctrl-C has been seen (``noting_interrupts``
    marks it), in case the ``KeyboardInterrupt`` it raised was swallowed on its way out. A
    defence only: the one run seen training on after a Ctrl-C had SIGINT ignored (inherited
    from a background shell), which no handler sees. Checked before the epoch's row and
    backup are written, so the last completed epoch stays resumable."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def on_epoch_end(self, epoch, logs=None):
        if self.seen:
            raise KeyboardInterrupt


@contextlib.contextmanager
def noting_interrupts(callback: StopOnInterrupt):
    """While the block runs, a SIGINT raises ``KeyboardInterrupt`` as Python's own handler
    does and also marks ``callback``. Only in the main thread, and only where SIGINT has
    Python's own handler (a caller's handler, or an ignored SIGINT, is left alone)."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return

    def handler(signum, frame):
        callback.seen = True
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def divergence_advice(clip: float | None) -> str:
    """What to try when training diverges, given the clipping in use."""
    return "a lower --lr or a smaller --clip" if clip else "a lower --lr or --clip 1 (clipping is off)"


@keras.saving.register_keras_serializable(package="tfrnn")
class BudgetCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over ``warmup_steps``, then cosine decay from ``peak`` to zero as the
    ``progress`` variable goes from 0 to 1: the share of a time budget spent (or of the
    epoch cap run, where that is larger), which ``EpochTimer`` sets at the start of every
    epoch. The schedule of a run that trains for a number of minutes rather than a number
    of epochs."""

    def __init__(self, peak: float, warmup_steps: int) -> None:
        self.peak, self.warmup_steps = float(peak), int(warmup_steps)
        self.progress = keras.Variable(0.0, trainable=False, name="budget_progress")

    def __call__(self, step):
        ops = keras.ops
        warm = ops.minimum(1.0, ops.cast(step + 1, "float32") / max(1, self.warmup_steps))
        decay = 0.5 * (1.0 + ops.cos(math.pi * ops.clip(self.progress.value, 0.0, 1.0)))
        return self.peak * warm * decay

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


def make_optimizer(config: TrainConfig, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """SGD (the study), Adam or AdamW, clipped by the global norm of all gradients.

    ``schedule="cosine"``: a linear warm-up over the first epoch, then cosine decay to zero
    at the last step of ``config.epochs`` (``steps_per_epoch`` batches each), or at the
    end of ``config.time_budget`` when there is one, or of the epoch cap if that comes
    first (``BudgetCosine``). Weight decay
    (decoupled, as AdamW) spares the biases. ``config.ema``: the optimizer also keeps an
    exponential moving average of the weights, which validation evaluates and keeps.
    """
    lr = config.lr
    if config.schedule == "cosine" and config.time_budget:
        lr = BudgetCosine(config.lr, steps_per_epoch)
    elif config.schedule == "cosine":
        total = max(2, config.epochs * steps_per_epoch)
        warmup = min(steps_per_epoch, total // 2)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0,
            decay_steps=total - warmup,
            alpha=0.0,
            warmup_target=config.lr,
            warmup_steps=warmup,
        )
    cls = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW}
    kwargs = (
        {"weight_decay": config.weight_decay} if config.weight_decay or config.optimizer == "adamw" else {}
    )
    if config.ema:
        kwargs.update(use_ema=True, ema_momentum=config.ema)
    optimizer = cls[config.optimizer](learning_rate=lr, global_clipnorm=config.clip or None, **kwargs)
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer


def use_xla(config: TrainConfig, setting: str | None = None) -> bool:
    """Whether the training step is compiled with XLA (``tfrnn.plan``: ``setting`` defaults
    to ``$TFRNN_XLA``; ``auto`` only where the compiled recurrence cannot train the model)."""
    return plan(config, setting).xla


def compile_model(
    config: TrainConfig,
    vocab_size: int,
    xla: str | None = None,
    steps_per_epoch: int = 1,
    stateful_batch: int | None = None,
) -> keras.Model:
    """Build and compile the model of ``config`` (seeded when ``config.seed`` is set).

    ``xla``: ``auto``, ``on`` or ``off`` (default ``$TFRNN_XLA``, else auto): the recurrence
    that trains it is ``tfrnn.plan``'s.
    ``steps_per_epoch`` sizes the learning-rate schedule; ``stateful_batch`` makes the model
    carry its state between batches of that many streams (``build_model``).
    """
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    model = build_model(config, vocab_size, stateful_batch=stateful_batch)
    chosen = plan(config, xla)
    fused = chosen.compiled and use_kernel(model, config.batch_size, bf16=chosen.bf16)
    _compile(model, config, steps_per_epoch, chosen.xla, compiled_ops=fused)
    return model


#: At most this many training batches run per call into the compiled step (Keras'
#: ``steps_per_execution``): fewer returns to Python. An hw4 epoch (10 batches) is one
#: call: 4% shorter epochs for GRU-32 and SimpleRNN-64, the same perplexity
#: (tools/bench.py, README "Training speed"); the progress bar moves once per call.
MAX_STEPS_PER_EXECUTION = 10


def steps_per_execution(steps_per_epoch: int) -> int:
    """Batches per call: the largest divisor of ``steps_per_epoch`` up to
    ``MAX_STEPS_PER_EXECUTION``, so that no call runs into the next epoch's batches; 1 inside
    a ``tf.distribute`` strategy (Keras' multi-batch loop failed under MirroredStrategy
    with an InvalidArgumentError in its ``while/cond``)."""
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return 1
    return max(n for n in range(1, MAX_STEPS_PER_EXECUTION + 1) if steps_per_epoch % n == 0)


@keras.saving.register_keras_serializable(package="tfrnn")
class CompiledCrossEntropy(keras.losses.Loss):
    """Keras' sparse categorical cross-entropy from logits, computed by tfrnn's compiled op
    (``tfrnn.kernel.cross_entropy``): the loss of the models the compiled recurrence trains."""

    def __init__(self, name: str = "sparse_categorical_crossentropy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        from tfrnn import kernel

        return kernel.cross_entropy(y_true, y_pred)


def _compile(
    model: keras.Model,
    config: TrainConfig,
    steps_per_epoch: int,
    jit: bool = False,
    compiled_ops: bool = False,
) -> None:
    """Compile for training; ``compiled_ops``: the loss is tfrnn's compiled softmax
    cross-entropy (``tfrnn.kernel``; TensorFlow's took 20% of a SimpleRNN-64 epoch), else
    Keras' own (the models saved in run folders: they load without tfrnn's kernel)."""
    if compiled_ops:
        loss = CompiledCrossEntropy()
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=loss,
        jit_compile=jit,
        steps_per_execution=steps_per_execution(steps_per_epoch),
    )


def _trained_model(config: TrainConfig, vocab_size: int, steps_per_epoch: int, weights) -> keras.Model:
    """A stateless model outside any strategy holding ``weights`` (a list or a weights file),
    compiled as for training, with a fresh optimizer."""
    model = build_model(config, vocab_size)
    if isinstance(weights, Path):
        model.load_weights(str(weights))
    else:
        model.set_weights(weights)
    _compile(model, config, steps_per_epoch)
    model.optimizer.build(model.trainable_variables)  # saved whole, so it loads without warnings
    return model


@dataclass
class FitResult:
    #: the trained model, holding the best epoch's weights when validation picked one
    model: keras.Model
    history_csv: Path
    #: how the training step ran here (``step_settings``), for metrics.json
    settings: dict


def step_settings(config: TrainConfig, xla: str | None, steps_per_epoch: int) -> dict:
    """What the training step of ``config`` uses on this machine: the CPU and its vector
    units, XLA, the recurrence (``tfrnn.plan``: its implementation and why),
    batches per call, precision, oneDNN and thread settings.
    Call it inside the run's ``tf.distribute`` scope, as XLA's choice depends on it."""
    import os

    import tensorflow as tf

    from tfrnn.cpu import cpu_summary

    threading = tf.config.threading
    chosen = plan(config, xla)
    return {
        "cpu": cpu_summary(),
        "xla": chosen.xla,
        # compiled, keras-xla, cudnn or keras, and why (tfrnn.plan)
        "recurrence": chosen.as_dict(),
        "steps_per_execution": steps_per_execution(steps_per_epoch),
        "precision": config.precision,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default"),
        "threads": {  # 0: TensorFlow's choice (all cores)
            "intra_op": threading.get_intra_op_parallelism_threads(),
            "inter_op": threading.get_inter_op_parallelism_threads(),
        },
    }


class EpochDropoutSeeds(keras.callbacks.Callback):
    """Sets each dropout seed's counter to where an uninterrupted run has it at each epoch.

    Keras' dropout draws from (layer seed, counter), the counter growing by one per
    training batch; a resumed run would restart it at 0. Set to epoch x batches per epoch
    at each epoch's start, a resumed run draws the masks an uninterrupted one would, and
    an uninterrupted run is unchanged.
    """

    def __init__(self, steps_per_epoch: int) -> None:
        super().__init__()
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        for layer in self.model.layers:
            for name in ("seed_generator", "weight_drop_seed"):  # Dropout, tfrnn's LSTM
                generator = getattr(layer, name, None)
                if isinstance(generator, keras.random.SeedGenerator):
                    state = generator.state
                    seed = keras.ops.convert_to_numpy(state.value)[0]
                    counter = epoch * self.steps_per_epoch
                    state.assign(keras.ops.convert_to_tensor([seed, counter], dtype=state.dtype))


def resumed_epoch(backup: Path) -> int:
    """The epoch ``BackupAndRestore`` resumes at from ``backup`` (0 when there is none)."""
    import json

    try:
        return int(json.loads((backup / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def best_weights_file(workdir: Path) -> Path:
    """The weights of the best validation epoch so far (``keeps_best_epoch`` runs)."""
    return workdir / BEST_WEIGHTS


def trained_weights_file(workdir: Path) -> Path:
    """The weights a finished ``fit`` returned; a resumed run finds training already done."""
    return workdir / TRAINED_WEIGHTS


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
    initial_weights: list | None = None,
) -> FitResult:
    """Train ``config`` on ``splits``, logging each epoch to ``workdir/history.csv``.

    ``workdir/backup`` holds Keras ``BackupAndRestore`` state: a run interrupted after
    epoch k and started again with the same ``workdir`` continues at epoch k + 1; one
    interrupted after training returns its trained weights at once.
    ``workdir/best.weights.h5`` holds the weights of the epoch with the lowest validation
    loss so far. The returned model is a stateless one holding them
    (``keeps_best_epoch``), or the last epoch's (hw4, as the study). With a
    ``tf.distribute`` ``strategy`` the model is built in its scope: Keras splits each
    global batch across the replicas and aggregates the metrics; a carried-state model
    keeps one state per stream on each replica.
    ``initial_weights``: start from these (fine-tuning) instead of a fresh initialisation.
    """
    import tensorflow as tf

    workdir.mkdir(parents=True, exist_ok=True)
    history_csv = workdir / "history.csv"
    trained = trained_weights_file(workdir)
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        settings = step_settings(config, xla, splits.steps_per_epoch)
    if trained.is_file():  # interrupted after training (export, profiling): nothing to redo
        final = _trained_model(config, vocab_size, splits.steps_per_epoch, trained)
        return FitResult(model=final, history_csv=history_csv, settings=settings)
    batch = stateful_batch(config, strategy.num_replicas_in_sync)
    with strategy.scope():
        model = compile_model(config, vocab_size, xla, splits.steps_per_epoch, batch)
        if initial_weights is not None:
            model.set_weights(initial_weights)
    if strategy is not tf.distribute.get_strategy():
        from tfrnn.distribute import is_multi_worker, prepare_multi_worker

        if is_multi_worker(strategy):
            prepare_multi_worker(model, next(iter(splits.train)))
    done = read_history(history_csv) if history_csv.is_file() else []
    best = best_weights_file(workdir)
    interrupt = StopOnInterrupt()
    callbacks = [
        interrupt,
        *epoch_callbacks(config, splits, vocab_size, best, done),
        # The CSV row is written before the backup, so a crash between the two at worst
        # repeats an epoch (the repeated row is dropped when the run folder is written).
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        # kept after training: the run folder's commit removes it (tfrnn.rundir)
        keras.callbacks.BackupAndRestore(str(workdir / BACKUP_DIR), delete_checkpoint=False),
        *(extra_callbacks or []),
    ]
    if tensorboard is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard)))
    if verbose not in (0, "0"):  # tfrnn's progress line in the epoch, Keras' line at its end
        timer = next(c for c in callbacks if isinstance(c, EpochTimer))
        chars = config.batch_size * config.num_steps
        terminal = None if verbose in (1, "auto") else False
        callbacks.append(ProgressLine(chars, splits.steps_per_epoch, timer, terminal))
        verbose = 2
    first = resumed_epoch(workdir / BACKUP_DIR)
    with noting_interrupts(interrupt):
        model.fit(
            splits.epochs(first, config.epochs),  # each epoch's order depends on its number only
            steps_per_epoch=splits.steps_per_epoch,
            shuffle=False,  # the order is the pipeline's
            validation_data=splits.val,
            epochs=config.epochs,
            callbacks=callbacks,
            verbose=verbose,
        )
    weights = best if keeps_best_epoch(config) and best.is_file() else model.get_weights()
    final = _trained_model(config, vocab_size, splits.steps_per_epoch, weights)
    final.save_weights(str(trained))
    return FitResult(model=final, history_csv=history_csv, settings=settings)


def stateful_batch(config: TrainConfig, replicas: int = 1) -> int | None:
    """Streams per replica of a carried-state model (None: a stateless one)."""
    if not config.carry_state:
        return None
    if config.batch_size % replicas:
        raise ConfigError(
            f"--batch-size {config.batch_size} must be a multiple of the {replicas} replicas "
            "to carry the state of each stream"
        )
    return config.batch_size // replicas


def epoch_callbacks(
    config: TrainConfig, splits: Splits, vocab_size: int, best: Path | None = None, done: list | None = None
) -> list:
    """The callbacks every training of ``config`` uses.

    tfrnn's own read nothing another callback writes, so their order does not matter: each
    computes what it needs (perplexity from Keras' loss, the carried-state validation, the
    epoch's time and the time budget on one clock, the NaN checks of Keras' loss and of the
    validation figure where it is computed). Keras' early stopping and plateau schedule
    read the validation loss, so they come after the carried-state validation, which
    writes it (Keras Tuner's callbacks, added by the tuner, come after all of these).
    ``best``: where validation keeps the best epoch's weights (book); ``done``: the history
    rows of an interrupted run being resumed.
    """
    from tfrnn.evaluate import (
        VALIDATION_BURN_IN,
        CarriedValidation,
        ResetStates,
        StreamScorer,
        validation_chunk,
        validation_streams,
    )

    done = done or []
    callbacks: list = [PerplexityLogs()]
    if "val" in splits.streams:
        streams = validation_streams(len(splits.streams["val"]), config.batch_size)
        scorer = StreamScorer(config, vocab_size, streams, VALIDATION_BURN_IN, validation_chunk(streams))
        keep = best if best is not None and keeps_best_epoch(config) else None
        so_far = min((r["val_loss"] for r in done), default=math.inf) if keep and keep.is_file() else math.inf
        advice = divergence_advice(config.clip)
        callbacks.append(CarriedValidation(scorer, splits.streams["val"], keep, so_far, advice))
    if config.carry_state:
        callbacks.append(ResetStates())
    spent = sum(r["epoch_seconds"] for r in done)
    callbacks += [StopOnNaN(config.clip), EpochTimer(config.time_budget, spent, config.epochs)]
    if config.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", patience=config.patience)
        )
    if config.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=1, min_lr=config.lr / 64
            )
        )
    return [*callbacks, EpochDropoutSeeds(splits.steps_per_epoch)]


def keeps_best_epoch(config: TrainConfig) -> bool:
    """Whether a run keeps its best epoch's weights (book, whose validation saves them) or
    its last (hw4, as the study)."""
    return config.preset == "book"
