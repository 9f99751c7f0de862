"""Character language models: one-hot or embedding input, stacked SimpleRNN/GRU/LSTM, dense logits.

Every recurrent layer stays in the configuration for which Keras runs the cuDNN kernel on
a GPU (``CUDNN_REQUIREMENTS``): tanh/sigmoid, no recurrent dropout, not unrolled, biases on,
and GRU with ``reset_after=True``. ``tests/test_models.py`` fails if a default drifts.
"""

from __future__ import annotations

import keras
from keras import layers as kl

from tfrnn import recurrent
from tfrnn.config import TrainConfig

#: GRU and LSTM are Keras' own; SimpleRNN is Keras' with a faster CPU loop (tfrnn.recurrent).
RECURRENT = {"rnn": recurrent.SimpleRNN, "gru": kl.GRU, "lstm": kl.LSTM}

#: Layer settings Keras requires before it picks the cuDNN kernel (GRU and LSTM).
CUDNN_REQUIREMENTS = {
    "activation": "tanh",
    "recurrent_activation": "sigmoid",
    "recurrent_dropout": 0.0,
    "unroll": False,
    "use_bias": True,
}


@keras.saving.register_keras_serializable(package="tfrnn")
class OneHot(kl.Layer):
    """Token ids ``(batch, time)`` to one-hot float vectors ``(batch, time, depth)``."""

    def __init__(self, depth: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.depth = depth

    def call(self, inputs):
        return keras.ops.one_hot(keras.ops.cast(inputs, "int32"), self.depth, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.depth)

    def get_config(self) -> dict:
        return {**super().get_config(), "depth": self.depth}


def recurrent_layer(cell: str, units: int, name: str) -> kl.Layer:
    """One recurrent layer returning the whole sequence, in its cuDNN-compatible form."""
    cls = RECURRENT[cell]
    kwargs = {"return_sequences": True, "name": name}
    if cell == "gru":
        kwargs["reset_after"] = True
    return cls(units, **kwargs)


def build_model(config: TrainConfig, vocab_size: int) -> keras.Model:
    """The model of ``config``: input ids ``(batch, time)`` to logits ``(batch, time, vocab)``.

    Dropout sits between stacked recurrent layers only, as ``torch.nn.GRU(dropout=p)``
    in the study.
    """
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    if config.embedding:
        x = kl.Embedding(vocab_size, config.embedding, name="embedding")(tokens)
    else:
        x = OneHot(vocab_size, name="one_hot")(tokens)
    for i in range(config.layers):
        x = recurrent_layer(config.cell, config.units, name=f"{config.cell}_{i}")(x)
        if config.dropout and i < config.layers - 1:
            x = kl.Dropout(config.dropout, name=f"dropout_{i}")(x)
    logits = kl.Dense(vocab_size, name="logits")(x)
    return keras.Model(tokens, logits, name=config.name)


def recurrent_layers(model: keras.Model) -> list[kl.Layer]:
    """The model's recurrent layers, bottom to top."""
    return [layer for layer in model.layers if isinstance(layer, tuple(RECURRENT.values()))]


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """Parameters: Keras' total, and the recurrent part alone in Keras' and the study's convention.

    The study (PyTorch, ``ptflops``) counted the recurrent module only, and PyTorch keeps
    two bias vectors per layer: Keras GRU (``reset_after=True``) has both, Keras LSTM and
    SimpleRNN have one, so the study counts 4H (LSTM) or H (RNN) more per layer.
    """
    recurrent = recurrent_layers(model)
    keras_rec = sum(layer.count_params() for layer in recurrent)
    extra = 0
    for layer in recurrent:
        if isinstance(layer, kl.LSTM):
            extra += 4 * layer.units
        elif isinstance(layer, kl.SimpleRNN):
            extra += layer.units
    return {
        "total": model.count_params(),
        "recurrent_keras": keras_rec,
        "recurrent_study": keras_rec + extra,
    }
