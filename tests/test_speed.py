"""What makes training fast stays correct: one trace per run, XLA's policy, the fused SimpleRNN."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_cli
from tfrnn import kernel
from tfrnn.config import TrainConfig
from tfrnn.errors import ConfigError
from tfrnn.recurrent import SimpleRNN
from tfrnn.rundir import read_history
from tfrnn.train import use_xla


class TraceCounter(keras.callbacks.Callback):
    """Counts how often Keras traces the training step, as of each epoch's end."""

    def set_model(self, model):
        super().set_model(model)
        self.traces, self.per_epoch, step = 0, [], model.train_step

        def counted(data):
            self.traces += 1  # runs only while tracing: the compiled step skips Python
            return step(data)

        model.train_step = counted

    def on_epoch_end(self, epoch, logs=None):
        self.per_epoch.append(self.traces)


@pytest.mark.slow
def test_training_step_is_traced_in_the_first_epoch_only(tmp_path):
    from tfrnn.experiment import load_data
    from tfrnn.train import fit

    config = TrainConfig.resolve("hw4", cell="gru", units=8, epochs=3)
    corpus, splits = load_data(config, None)
    counter = TraceCounter()
    fit(config, splits, len(corpus.vocab), tmp_path, verbose=0, extra_callbacks=[counter])
    # Full batches and the last, smaller one: at most two traces, and none after epoch 1.
    assert 1 <= counter.per_epoch[0] <= 2
    assert counter.per_epoch == [counter.per_epoch[0]] * 3


def test_xla_policy(monkeypatch):
    from tfrnn.cpu import has_gpu
    from tfrnn.plan import plan

    monkeypatch.delenv("TFRNN_XLA", raising=False)
    gru = TrainConfig.resolve("hw4", cell="gru", units=32)
    if has_gpu():  # a GPU: Keras' cuDNN kernel, no XLA unless asked for
        assert plan(gru).implementation == "cudnn" and not use_xla(gru) and use_xla(gru, "on")
        return
    if kernel.load() is not None:  # the compiled recurrence trains it instead (XLA can't compile it)
        assert not use_xla(gru) and not use_xla(gru, "off") and use_xla(gru, "on")
    monkeypatch.setenv("TFRNN_KERNEL", "off")  # where it is not available: Keras' loops
    assert use_xla(TrainConfig.resolve("hw4", cell="gru", units=32))
    assert use_xla(TrainConfig.resolve("hw4", cell="rnn", units=64))
    assert not use_xla(TrainConfig.resolve("hw4", cell="lstm", units=128))
    assert not use_xla(TrainConfig.resolve("book", cell="gru", units=32, epochs=50))  # 100 steps
    assert not use_xla(TrainConfig.resolve("hw4", cell="gru", units=32, epochs=5))  # compiling won't pay
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert not use_xla(TrainConfig.resolve("hw4", cell="gru", units=32))
    lstm = TrainConfig.resolve("hw4", cell="lstm", units=128)
    assert use_xla(lstm, "on") and not use_xla(TrainConfig.resolve("hw4"), "off")
    monkeypatch.setenv("TFRNN_XLA", "on")
    assert use_xla(lstm)
    monkeypatch.setenv("TFRNN_XLA", "fast")
    with pytest.raises(ConfigError, match="TFRNN_XLA"):
        use_xla(lstm)


# without XLA: tfrnn's compiled recurrence, rows and cross-entropy (where they compile)
@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_fit_with_and_without_xla_gives_the_same_perplexity(tmp_path, cell):
    args = ["fit", "--cell", cell, "--units", 8, "--epochs", 1, "-q", "--no-profile"]
    vals = {}
    for xla in ("on", "off"):
        result = run_cli(*args, "--xla", xla, "--out", tmp_path / xla)
        assert result.exit_code == 0, result.output
        vals[xla] = read_history(tmp_path / xla / "history.csv", one_based=True)[0]["val_perplexity"]
    assert vals["on"] == pytest.approx(vals["off"], rel=1e-3)


# eager; traced with the number of steps known (unrolled); traced without it (tf.while_loop)
@pytest.mark.parametrize("compiled", ["eager", "static", pytest.param("dynamic", marks=pytest.mark.slow)])
@pytest.mark.parametrize("training", [False, True])
def test_fused_simple_rnn_matches_keras_outputs_and_gradients(training, compiled):
    x = tf.random.stateless_normal((5, 7, 6), seed=(0, 1))
    ours = SimpleRNN(4, return_sequences=True, return_state=True)
    theirs = keras.layers.SimpleRNN(4, return_sequences=True, return_state=True)
    ours.build(x.shape)
    theirs.build(x.shape)
    for i, w in enumerate(ours.weights):
        w.assign(tf.random.stateless_normal(w.shape, seed=(2, i)) * 0.5)
    theirs.set_weights(ours.get_weights())
    if compiled == "eager":
        call = lambda: ours(x, training=training)  # noqa: E731
    else:
        spec = [tf.TensorSpec((5, None if compiled == "dynamic" else 7, 6))]
        traced = tf.function(lambda v: ours(v, training=training), input_signature=spec)
        call = lambda: traced(x)  # noqa: E731
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        mine, ref = call(), theirs(x, training=training)
        weights = [tf.random.stateless_normal(o.shape, seed=(3, i)) for i, o in enumerate(ref)]
        loss_mine = sum(tf.reduce_sum(o * w) for o, w in zip(mine, weights))
        loss_ref = sum(tf.reduce_sum(o * w) for o, w in zip(ref, weights))
    for a, b in zip(mine, ref):
        np.testing.assert_allclose(a, b, atol=1e-5)
    grads = tape.gradient(loss_mine, [*ours.trainable_weights, x])
    expected = tape.gradient(loss_ref, [*theirs.trainable_weights, x])
    for a, b in zip(grads, expected):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_fused_simple_rnn_keeps_keras_form_and_falls_back_when_masked():
    layer = SimpleRNN(4, return_sequences=True)
    clone = SimpleRNN.from_config(layer.get_config())
    assert isinstance(clone, keras.layers.SimpleRNN) and clone.units == 4
    x = tf.random.stateless_normal((2, 5, 3), seed=(0, 4))
    mask = tf.constant([[True] * 5, [True, True, True, False, False]])
    assert not layer._fused_applies(mask)
    ref = keras.layers.SimpleRNN(4, return_sequences=True)
    out = layer(x, mask=mask)
    ref.build(x.shape)
    ref.set_weights(layer.get_weights())
    np.testing.assert_allclose(out, ref(x, mask=mask), atol=1e-6)


@pytest.mark.parametrize("stateful", [False, True])
def test_fused_lstm_matches_keras_outputs_states_and_gradients(stateful):
    from tfrnn import recurrent

    x = tf.random.stateless_normal((5, 7, 64), seed=(0, 5))  # wide enough for the fused path
    ours = recurrent.LSTM(6, return_sequences=True, return_state=True)
    theirs = keras.layers.LSTM(6, return_sequences=True, return_state=True)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    assert ours._fused_applies(x, None, training=True) and not ours._fused_applies(x, None, False)
    h0, c0 = (tf.random.stateless_normal((5, 6), seed=(1, i)) for i in range(2))
    traced = tf.function(lambda v, s: ours(v, initial_state=s, training=True))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, h0, c0])
        mine = traced(x, [h0, c0])
        ref = theirs(x, initial_state=[h0, c0], training=True)
        weights = [tf.random.stateless_normal(o.shape, seed=(3, i)) for i, o in enumerate(ref)]
        loss_mine = sum(tf.reduce_sum(o * w) for o, w in zip(mine, weights))
        loss_ref = sum(tf.reduce_sum(o * w) for o, w in zip(ref, weights))
    for a, b in zip(mine, ref):  # sequence, last h, last c
        np.testing.assert_allclose(a, b, atol=1e-5)
    grads = tape.gradient(loss_mine, [*ours.trainable_weights, x, h0, c0])
    expected = tape.gradient(loss_ref, [*theirs.trainable_weights, x, h0, c0])
    for a, b in zip(grads, expected):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_lstm_weight_drop_masks_recurrent_weights_in_training_only():
    from tfrnn import recurrent

    x = tf.random.stateless_normal((4, 7, 64), seed=(0, 6))
    layer = recurrent.LSTM(6, return_sequences=True, weight_drop=0.5)
    plain = keras.layers.LSTM(6, return_sequences=True)
    layer.build(x.shape)
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x, training=False), plain(x), atol=1e-6)  # inference: all weights
    a, b = layer(x, training=True), layer(x, training=True)
    assert not np.allclose(a, b)  # a new mask per batch
    assert not np.allclose(a, plain(x, training=True))
    assert recurrent.LSTM.from_config(layer.get_config()).weight_drop == 0.5
