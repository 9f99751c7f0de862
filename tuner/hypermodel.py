"""The Keras Tuner hypermodel: a tfrnn character model built from sampled hyperparameters."""

from __future__ import annotations

import math

import keras
import keras_tuner as kt

from tfrnn.config import TrainConfig
from tfrnn.data import VOCAB_SIZE
from tfrnn.train import compile_model, epoch_callbacks, stateful_batch
from tuner.space import LR_RANGES, SearchSpace


def config_from_values(
    values: dict, preset: str, epochs: int | None = None, seed: int | None = 0, **fixed
) -> TrainConfig:
    """The ``TrainConfig`` of a trial's hyperparameter values."""
    optimizer = values["optimizer"]
    layers = values["layers"]
    return TrainConfig.resolve(
        preset,
        cell=values["cell"],
        units=values["units"],
        layers=layers,
        dropout=(values.get("dropout") or 0.0) if layers > 1 else 0.0,
        embedding=values.get("embedding") or None,
        optimizer=optimizer,
        lr=values[f"lr_{optimizer}"],
        epochs=epochs,
        seed=seed,
        **fixed,
    )


class ParamsLogger(keras.callbacks.Callback):
    """Adds the model's parameter count to each epoch's logs (recorded with the trial)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["params"] = float(self.model.count_params())


class CharLMHyperModel(kt.HyperModel):
    """Samples cell, depth, width, dropout (stacks only), optimizer, learning rate, embedding.

    Each trial trains as ``tfrnn fit`` would on ``splits`` (the book preset validating on
    its whole validation part, the state carried), and stops early after ``patience``
    epochs without a better validation loss. ``fixed``: options every trial shares.
    """

    def __init__(
        self,
        space: SearchSpace,
        preset: str,
        splits,
        vocab_size: int = VOCAB_SIZE,
        patience: int = 3,
        **fixed,
    ) -> None:
        super().__init__(name="tfrnn")
        self.space, self.preset, self.splits, self.vocab_size = space, preset, splits, vocab_size
        self.patience, self.fixed = patience, fixed

    def declare(self, hp: kt.HyperParameters) -> dict:
        """Register the space's hyperparameters in ``hp``; returns the sampled values."""
        s = self.space
        values = {
            "cell": hp.Choice("cell", list(s.cells)),
            "layers": hp.Int("layers", s.layers[0], s.layers[1]),
            "units": hp.Choice("units", s.unit_choices),
        }
        stacks = list(range(max(2, s.layers[0]), s.layers[1] + 1))
        if stacks:
            with hp.conditional_scope("layers", stacks):
                lo, hi = s.dropout
                values["dropout"] = hp.Float("dropout", lo, hi, step=0.1) if hi > lo else lo
        values["optimizer"] = hp.Choice("optimizer", list(s.optimizers))
        for opt in s.optimizers:
            with hp.conditional_scope("optimizer", [opt]):
                values[f"lr_{opt}"] = hp.Float(f"lr_{opt}", *LR_RANGES[opt], sampling="log")
        if s.embeddings:
            values["embedding"] = hp.Choice("embedding", [0, *s.embeddings])
        return values

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        import tensorflow as tf

        config = config_from_values(self.declare(hp), self.preset, **self.fixed)
        batch = stateful_batch(config, tf.distribute.get_strategy().num_replicas_in_sync)
        return compile_model(
            config, self.vocab_size, steps_per_epoch=self.splits.steps_per_epoch, stateful_batch=batch
        )

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        config = config_from_values(hp.values, self.preset, **self.fixed)
        callbacks = [
            *epoch_callbacks(config, self.splits, self.vocab_size),
            ParamsLogger(),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience),
            *(callbacks or []),
        ]
        # the trial's epochs, each in the order its number gives (Hyperband may resume one)
        kwargs.pop("x", None)
        first, last = kwargs.get("initial_epoch", 0), kwargs.get("epochs", 1)
        kwargs["steps_per_epoch"] = self.splits.steps_per_epoch
        kwargs["shuffle"] = False  # the order is the pipeline's
        history = model.fit(self.splits.epochs(first, last), *args[1:], callbacks=callbacks, **kwargs)
        return trial_figures(history.history)


def trial_figures(logs: dict[str, list[float]]) -> dict[str, float]:
    """What Keras Tuner records for a trial: its best epoch's figures (objective val_loss),
    plus the epochs it ran and their seconds (from a History, Keras Tuner would keep only
    the best epoch's values, so a 3-epoch trial read as 1 epoch of one epoch's time)."""
    val = logs["val_loss"]
    best = min(range(len(val)), key=lambda i: (not math.isfinite(val[i]), val[i]))
    figures = {name: float(values[best]) for name, values in logs.items()}
    figures["epochs_run"] = len(val)
    figures["trial_seconds"] = float(sum(logs.get("epoch_seconds", [])))
    return figures
