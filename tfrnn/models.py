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

#: Keras' layers with tfrnn's CPU paths (tfrnn.recurrent): SimpleRNN's and LSTM's fused
#: loops, and for all three the compiled recurrence that ``recurrent.use_kernel`` turns on.
RECURRENT = {"rnn": recurrent.SimpleRNN, "gru": recurrent.GRU, "lstm": recurrent.LSTM}

#: Layer settings Keras requires before it picks the cuDNN kernel (GRU and LSTM).
CUDNN_REQUIREMENTS = {
    "activation": "tanh",
    "recurrent_activation": "sigmoid",
    "recurrent_dropout": 0.0,
    "unroll": False,
    "use_bias": True,
}


#: Embedding vectors start as N(0, 1) draws, like PyTorch's nn.Embedding, not Keras' uniform
#: +-0.05: inputs that small make the first epochs of a whole-book model crawl (LSTM 256x2,
#: validation perplexity after 5 epochs 5.12 instead of 7.36).
EMBEDDING_STDDEV = 1.0


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


def recurrent_layer(
    cell: str,
    units: int,
    name: str,
    stateful: bool = False,
    weight_drop: float = 0.0,
    dtype: str = "float32",
) -> kl.Layer:
    """One recurrent layer returning the whole sequence, in its cuDNN-compatible form.

    A ``stateful`` layer starts each batch from the state the previous batch ended in;
    ``weight_drop`` (LSTM) drops recurrent weights in training (``tfrnn.recurrent.LSTM``);
    ``dtype``: its Keras dtype policy.
    """
    cls = RECURRENT[cell]
    kwargs = {"return_sequences": True, "name": name, "stateful": stateful, "dtype": dtype}
    if cell == "gru":
        kwargs["reset_after"] = True
    if weight_drop:
        kwargs["weight_drop"] = weight_drop
    return cls(units, **kwargs)


def build_model(config: TrainConfig, vocab_size: int, stateful_batch: int | None = None) -> keras.Model:
    """The model of ``config``: input ids ``(batch, time)`` to logits ``(batch, time, vocab)``.

    Dropout sits between stacked recurrent layers, as ``torch.nn.GRU(dropout=p)`` in the
    study; with ``config.dropout_at == "all"`` also on the input embedding and on the last
    recurrent layer's output. With ``stateful_batch`` the model reads batches of exactly
    that many parallel streams and carries its recurrent state from batch to batch
    (``reset_states`` starts over); every other model is stateless. Both have the same
    weights, so one's weights load into the other. Every layer computes in
    ``config.precision`` except the logits, which stay float32 (so do loss and perplexity).
    """
    dtype = config.precision
    if stateful_batch:
        tokens = keras.Input(batch_shape=(stateful_batch, None), dtype="int32", name="tokens")
    else:
        tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    everywhere = config.dropout and config.dropout_at == "all"
    if config.embedding:
        x = kl.Embedding(
            vocab_size,
            config.embedding,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=EMBEDDING_STDDEV),
            name="embedding",
            dtype=dtype,
        )(tokens)
        if everywhere:
            x = kl.Dropout(config.dropout, name="dropout_input", dtype=dtype)(x)
    else:
        x = OneHot(vocab_size, name="one_hot", dtype=dtype)(tokens)
    for i in range(config.layers):
        name = f"{config.cell}_{i}"
        x = recurrent_layer(config.cell, config.units, name, bool(stateful_batch), config.weight_drop, dtype)(
            x
        )
        if config.dropout and (i < config.layers - 1 or everywhere):
            x = kl.Dropout(config.dropout, name=f"dropout_{i}", dtype=dtype)(x)
    logits = kl.Dense(vocab_size, name="logits", dtype="float32")(x)
    return keras.Model(tokens, logits, name=config.name)


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` itself when every layer computes in float32, else a float32 copy holding
    its weights (what export serves: float32 in and out whatever the training precision)."""
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model

    def as_float32(layer: kl.Layer) -> kl.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=as_float32)
    copy.set_weights(model.get_weights())
    return copy


def reset_states(model: keras.Model) -> None:
    """Zero the carried state of a stateful model's recurrent layers."""
    for layer in recurrent_layers(model):
        if layer.stateful:
            layer.reset_state()


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


def serving_layers(model: keras.Model):
    """The input layer, recurrent cells and logits layer that serve ``model``, in float32.

    Only layers and cells are tracked, never the Keras model: saving a model also traces its
    own forward pass, whose recurrent layers may pick cuDNN on a GPU."""
    model = float32_copy(model)  # a mixed-precision model serves in float32
    names = [layer.name for layer in model.layers]
    input_layer = model.get_layer("embedding" if "embedding" in names else "one_hot")
    return input_layer, [layer.cell for layer in recurrent_layers(model)], model.get_layer("logits")


def step(input_layer, cells, output_layer, ids, states):
    """One character for every row: ids ``[B]`` -> logits ``[B, V]`` and new states."""
    x = input_layer(ids[:, None])[:, 0, :]
    new_states = []
    for cell, state in zip(cells, states):
        x, state = cell(x, state, training=False)
        new_states.append(list(state) if isinstance(state, (list, tuple)) else [state])
    return output_layer(x), new_states
