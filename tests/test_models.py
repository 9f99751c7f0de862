"""Models: the cuDNN-compatible configuration, parameter counts, each cell trains."""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest

from tfrnn.config import TrainConfig
from tfrnn.models import CUDNN_REQUIREMENTS, build_model, parameter_counts, recurrent_layers
from tfrnn.train import compile_model


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 3])
def test_recurrent_layers_keep_the_cudnn_configuration(cell, layers):
    # Keras' own argument checks, the ones its TensorFlow backend runs before using cuDNN.
    tf_rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")

    model = build_model(TrainConfig.resolve(cell=cell, layers=layers, units=16), 28)
    rec = recurrent_layers(model)
    assert len(rec) == layers
    for layer in rec:
        c = layer.cell
        if cell == "gru":
            ok = tf_rnn._do_gru_arguments_support_cudnn(
                c.activation, c.recurrent_activation, layer.unroll, c.use_bias, c.reset_after
            )
        else:
            ok = tf_rnn._do_lstm_arguments_support_cudnn(
                c.activation, c.recurrent_activation, layer.unroll, c.use_bias
            )
        assert ok, f"{layer.name} left the cuDNN configuration"
        assert layer.use_cudnn in ("auto", True)
        assert layer.cell.recurrent_dropout == 0  # Keras skips cuDNN with recurrent dropout
        config = layer.get_config()
        for key, value in CUDNN_REQUIREMENTS.items():
            assert config[key] == value, (layer.name, key)


def test_dropout_sits_between_stacked_layers_only():
    model = build_model(TrainConfig.resolve(cell="gru", layers=3, units=8), 28)
    names = [layer.name for layer in model.layers]
    assert names == ["tokens", "one_hot", "gru_0", "dropout_0", "gru_1", "dropout_1", "gru_2", "logits"]
    assert model.get_layer("dropout_0").rate == 0.5  # the study's default for stacks
    single = build_model(TrainConfig.resolve(cell="gru", units=8), 28)
    assert not any("dropout" in layer.name for layer in single.layers)


@pytest.mark.parametrize(
    "cell, units, layers, keras_rec, study_rec",
    [
        ("gru", 8, 1, 912, 912),
        ("gru", 32, 1, 5_952, 5_952),
        ("gru", 128, 1, 60_672, 60_672),
        ("lstm", 32, 1, 7_808, 7_936),
        ("lstm", 128, 1, 80_384, 80_896),
        ("rnn", 64, 1, 5_952, 6_016),
        ("gru", 32, 3, 18_624, 18_624),
        ("lstm", 32, 5, 41_088, 41_728),
    ],
)
def test_parameter_counts_in_both_conventions(cell, units, layers, keras_rec, study_rec):
    model = build_model(TrainConfig.resolve(cell=cell, units=units, layers=layers), 28)
    counts = parameter_counts(model)
    assert counts["recurrent_keras"] == keras_rec
    assert counts["recurrent_study"] == study_rec
    assert counts["total"] == keras_rec + units * 28 + 28


SLOW = pytest.mark.slow  # the fast tier trains each cell once (2-3 s a case on 2 cores)


@pytest.mark.parametrize(
    "cell, embedding",
    [
        ("rnn", None),
        ("gru", 6),
        ("lstm", None),
        pytest.param("rnn", 6, marks=SLOW),
        pytest.param("gru", None, marks=SLOW),
        pytest.param("lstm", 6, marks=SLOW),
    ],
)
def test_each_cell_builds_and_trains_a_few_steps(cell, embedding):
    config = TrainConfig.resolve(cell=cell, units=8, layers=2, embedding=embedding, lr=1.0)
    model = compile_model(config, 28)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 28, size=(16, 12)).astype("int32")
    y = np.roll(x, -1, axis=1)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0).history
    logits = model.predict(x, verbose=0)
    assert logits.shape == (16, 12, 28)
    assert all(np.isfinite(history["loss"]))
    assert history["loss"][-1] < history["loss"][0]
    # Keras' loss is the mean cross-entropy per character, uneven batches included: its exp
    # is the perplexity (tfrnn.train.PerplexityLogs)
    ce = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    loss = model.evaluate(x, y, batch_size=5, verbose=0)
    assert loss == pytest.approx(float(np.mean(ce)), rel=1e-5)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.slow
def test_importing_tfrnn_leaves_the_process_as_it_was(tmp_path):
    """No environment variable set, no matplotlib backend switched (a notebook keeps its own)."""
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    code = f"""
import os, matplotlib
matplotlib.use("svg")
before = dict(os.environ)
import tfrnn, tfrnn.train, tfrnn.experiment, tfrnn.report, tuner.search
from tfrnn.plots import plot_curves
plot_curves([dict(epoch=1, perplexity=3.0, val_perplexity=4.0)], {str(tmp_path / "c.png")!r}, "t")
assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
print("ok")
"""
    env = subprocess_env()
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # trains and exports (7 s each on the 2-core EPYC): not for the fast tier
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_mixed_precision_computes_in_bfloat16_and_serves_in_float32(cell, tmp_path, book):
    """--precision mixed_bfloat16: bfloat16 layers over float32 weights, float32 logits and
    loss; the SavedModel serves a float32 copy whose score is Keras' float32 figure."""
    import tensorflow as tf

    from tfrnn.data import Corpus
    from tfrnn.export import export_saved_model
    from tfrnn.models import float32_copy, recurrent_layers

    config = TrainConfig.resolve(cell=cell, units=8, layers=2, lr=1.0, precision="mixed_bfloat16")
    model = compile_model(config, 28)
    layer = recurrent_layers(model)[0]
    assert layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 28, size=(16, 12)).astype("int32")
    history = model.fit(x, np.roll(x, -1, axis=1), epochs=2, batch_size=8, verbose=0).history
    assert all(np.isfinite(history["loss"]))
    assert model(x[:2]).dtype == "float32"

    copy = float32_copy(model)
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    for a, b in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    # bfloat16 keeps 8 bits of mantissa: the two models' logits agree to its precision
    np.testing.assert_allclose(model(x[:2]), copy(x[:2]), atol=0.1)

    vocab = Corpus.load(book).vocab
    text = "the time traveller smiled"
    loaded = tf.saved_model.load(str(export_saved_model(model, vocab, tmp_path / "sm")))
    served = float(loaded.score(tf.constant([text]))["cross_entropy"][0])
    ids = np.array([vocab.tokens.index(c) for c in text])[None]
    logits = copy(ids[:, :-1])
    expected = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(ids[:, 1:], logits)))
    assert served == pytest.approx(expected, rel=1e-5)
