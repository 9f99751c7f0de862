"""tfrnn's compiled recurrence: compiled here, equal to Keras' layers, used for training and
evaluation only, and a clean fallback to Keras' loops where it cannot be compiled."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrnn import kernel, recurrent
from tfrnn.config import TrainConfig
from tfrnn.models import build_model, recurrent_layers
from tfrnn.train import compile_model, step_settings

KERAS = {"rnn": keras.layers.SimpleRNN, "gru": keras.layers.GRU, "lstm": keras.layers.LSTM}
OURS = {"rnn": recurrent.SimpleRNN, "gru": recurrent.GRU, "lstm": recurrent.LSTM}


@pytest.fixture(scope="module")
def compiled():
    if kernel._compiler() is None:
        pytest.skip("no C++ compiler on this machine: tfrnn runs Keras' loops")
    assert kernel.load() is not None, kernel.status()
    assert kernel.status().startswith("fused, compiled for this CPU")


# training: the op keeps the gates for the gradient; otherwise a gradient runs it again
@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("traced", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_compiled_recurrence_equals_keras_outputs_states_and_gradients(compiled, cell, traced, training):
    x = tf.random.stateless_normal((9, 7, 5), seed=(0, 1))
    ours = OURS[cell](6, return_sequences=True, return_state=True)
    theirs = KERAS[cell](6, return_sequences=True, return_state=True)
    ours.build(x.shape)
    theirs.build(x.shape)
    for i, w in enumerate(ours.weights):  # biases too, not left at zero
        w.assign(tf.random.stateless_normal(w.shape, seed=(2, i)) * 0.5)
    theirs.set_weights(ours.get_weights())
    ours.fused_kernel = True
    states = [tf.random.stateless_normal((9, 6), seed=(4, i)) for i in range(2 if cell == "lstm" else 1)]
    call = lambda v, s: ours(v, initial_state=s, training=training)  # noqa: E731
    call = tf.function(call) if traced else call
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, *states])
        mine, ref = call(x, states), theirs(x, initial_state=states)
        weights = [tf.random.stateless_normal(o.shape, seed=(3, i)) for i, o in enumerate(ref)]
        loss_mine = sum(tf.reduce_sum(o * w) for o, w in zip(mine, weights))
        loss_ref = sum(tf.reduce_sum(o * w) for o, w in zip(ref, weights))
    assert len(mine) == len(ref)
    for a, b in zip(mine, ref):
        np.testing.assert_allclose(a, b, atol=1e-5)
    grads = tape.gradient(loss_mine, [*ours.trainable_weights, x, *states])
    expected = tape.gradient(loss_ref, [*theirs.trainable_weights, x, *states])
    for a, b in zip(grads, expected):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow
def test_compiled_rows_and_cross_entropy_equal_tensorflow_s(compiled):
    ids = tf.constant([[0, 3, 5], [2, 7, -1]])  # 7 and -1 lie outside the table: zero rows
    table = tf.random.stateless_normal((6, 4), seed=(5, 0))
    weights = tf.random.stateless_normal((2, 3, 4), seed=(5, 1))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(table)
        rows, product = kernel.gather_rows(table, ids), tf.one_hot(ids, 6) @ table
        mine, ref = tf.reduce_sum(rows * weights), tf.reduce_sum(product * weights)
    np.testing.assert_array_equal(rows, product)
    np.testing.assert_allclose(tape.gradient(mine, table), tape.gradient(ref, table), atol=1e-6)

    logits = tf.random.stateless_normal((2, 3, 28), seed=(6, 0)) * 5
    labels = tf.constant([[0, 27, 4], [9, 9, 13]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        mine = kernel.cross_entropy(labels, logits)
        ref = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        loss_mine, loss_ref = (tf.reduce_sum(v * [[1.0], [2.0]]) for v in (mine, ref))
    np.testing.assert_allclose(mine, ref, rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss_mine, logits), tape.gradient(loss_ref, logits), atol=1e-5)
    assert kernel.cross_entropy(tf.constant([1.0]), tf.zeros((1, 3))).numpy()[0] == pytest.approx(np.log(3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="label 28 is not in"):
        kernel.cross_entropy(tf.constant([28]), tf.zeros((1, 28)))


def _op_types(model: keras.Model, training: bool) -> set[str]:
    spec = tf.TensorSpec((2, None), tf.int32)
    graph = tf.function(lambda ids: model(ids, training=training)).get_concrete_function(spec).graph
    types = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:  # Keras' while-loop bodies
        types |= {node.op for node in function.node_def}
    return types


@pytest.mark.slow
def test_training_and_evaluation_use_it_and_exported_models_do_not(compiled):
    config = TrainConfig.resolve("hw4", cell="lstm", units=8, layers=2, epochs=2)
    trained = compile_model(config, 28, "off")
    assert all(layer.fused_kernel for layer in recurrent_layers(trained))
    assert {"TfrnnRecurrence", "TfrnnGatherRows"} <= _op_types(trained, training=True)  # one-hot input
    assert "TfrnnRecurrence" in _op_types(trained, training=False)
    assert "TfrnnRecurrence" not in _op_types(compile_model(config, 28, "on"), training=True)  # XLA
    assert "TfrnnRecurrence" not in _op_types(build_model(config, 28), training=False)  # export's
    small = TrainConfig.resolve("book", units=8, layers=1, embedding=4, batch_size=1)  # any batch
    assert "TfrnnRecurrence" in _op_types(compile_model(small, 28, "off"), training=True)
    mixed = TrainConfig.resolve("book", units=8, layers=1, embedding=4, precision="mixed_bfloat16")
    assert "TfrnnRecurrence" not in _op_types(compile_model(mixed, 28, "off"), training=True)


def test_it_is_off_when_asked_and_reports_why(monkeypatch):
    small = TrainConfig.resolve("book", units=8, layers=1, embedding=4, precision="mixed_bfloat16")
    expected = {"implementation": "keras", "reason": "precision mixed_bfloat16; XLA off"}
    assert step_settings(small, "off", 10)["recurrence"] == expected
    monkeypatch.setenv("TFRNN_KERNEL", "off")
    assert kernel.load() is None and kernel.status().startswith("off ($TFRNN_KERNEL=off)")
    hw4 = TrainConfig.resolve("hw4", cell="gru", units=4, epochs=2)
    assert step_settings(hw4, "off", 10)["recurrence"] == {
        "implementation": "keras",
        "reason": "off ($TFRNN_KERNEL=off); XLA off",
    }
    auto = step_settings(TrainConfig.resolve("hw4", cell="gru", units=4, epochs=2), "auto", 10)
    assert auto["recurrence"]["reason"].endswith(
        "no XLA: 2 epochs, fewer than 20: compiling would not pay back"
    )
    model = compile_model(TrainConfig.resolve("hw4", cell="gru", units=4, epochs=2), 28, "off")
    assert "TfrnnRecurrence" not in _op_types(model, training=True)


def test_without_a_compiler_or_with_a_failing_build_keras_loops_train(monkeypatch, tmp_path):
    monkeypatch.setenv("TFRNN_KERNEL", "auto")  # (the fast tier sets it off: nothing here compiles)
    monkeypatch.setattr(kernel, "_state", {})
    monkeypatch.setattr(kernel, "_compiler", lambda: None)
    assert kernel.load() is None and kernel.status().startswith("no C++ compiler found")

    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(kernel, "_state", {})
    monkeypatch.setattr(kernel, "_compiler", lambda: "/bin/false")
    monkeypatch.setattr(kernel, "SOURCE", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert kernel.load() is None and kernel.status().startswith("not compiled (false failed")
    made = {p.suffix for p in kernel.cache_dir().iterdir()}
    assert made == {".lock", ".json", ".log"}  # the lock, the failure's record and its log: no library
    model = compile_model(TrainConfig.resolve("hw4", cell="rnn", units=4, epochs=2), 28, "off")
    assert not any(getattr(layer, "fused_kernel", False) for layer in model.layers)

    (tmp_path / "a-file").write_text("not a folder\n")  # a cache that cannot be written
    monkeypatch.setattr(kernel, "_state", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
    assert kernel.load() is None and kernel.status().startswith("not compiled (cannot write")
    assert (tmp_path / "a-file").read_text() == "not a folder\n"


def _products_machine(monkeypatch, features: set, check: str = "ok", timings=(10.0, 9.0)):
    """kernel_products' view of a machine: a loaded library with ``features``, its bfloat16
    self-check verdict, and what timing the two products gives (float32 ms, bfloat16 ms)."""
    from tfrnn import kernel_products

    monkeypatch.setattr(kernel_products, "_chosen", {})
    monkeypatch.setattr(kernel, "load", lambda: object())
    monkeypatch.setattr(kernel, "features", lambda: features)
    monkeypatch.setattr(kernel, "bf16_check", lambda: check)
    monkeypatch.setattr(kernel_products, "timed", lambda cell, batch, units: timings)
    monkeypatch.setattr(kernel, "remembered", lambda name, compute: compute())  # no library's record
    monkeypatch.setattr("tfrnn.cpu.l2_cache_bytes", lambda: (2 << 20, "sysfs"))
    return kernel_products


def test_a_measured_choice_is_kept_in_the_library_s_record_and_reused(monkeypatch, tmp_path):
    library = tmp_path / "recurrence-0.so"
    kernel._write_state(library, {"state": "ok", "sha256": "x", "key": {}})
    monkeypatch.setattr(kernel, "_state", {"library": library})
    assert kernel.remembered("products lstm 64x512", lambda: [True, "first"]) == [True, "first"]
    assert kernel.remembered("products lstm 64x512", lambda: [False, "second"]) == [True, "first"]
    assert kernel._read_state(library)["measured"] == {"products lstm 64x512": [True, "first"]}
    monkeypatch.setattr(kernel, "_state", {})  # no library loaded: nothing to keep it in
    assert kernel.remembered("products lstm 64x512", lambda: [False, "second"]) == [False, "second"]


def test_bfloat16_products_only_where_the_cpu_has_them_checked_and_faster(monkeypatch):
    from tfrnn.errors import ConfigError

    monkeypatch.delenv("TFRNN_KERNEL_BF16", raising=False)
    products = _products_machine(monkeypatch, set())  # an AVX2 CPU, an Arm one, ...
    bf16, why = products.choose("lstm", 64, 512)
    assert (
        not bf16 and why == "float32 products (bfloat16: the library's target (this CPU) has no AVX512_BF16)"
    )
    products = _products_machine(monkeypatch, {"avx512_bf16"}, check="rnn (19 x 40) forward differs by 0.5")
    assert products.choose("lstm", 64, 512) == (
        False,
        "float32 products (bfloat16: its self-check: rnn (19 x 40) forward differs by 0.5)",
    )
    products = _products_machine(monkeypatch, {"avx512_bf16"}, timings=(10.0, 9.0))
    bf16, why = products.choose("lstm", 32, 1024)
    assert bf16 and "in 9.0 ms against float32's 10.0" in why
    products = _products_machine(monkeypatch, {"avx512_bf16"}, timings=(10.0, 9.5))  # within noise
    bf16, why = products.choose("lstm", 64, 512)
    assert not bf16 and why.startswith("float32 products (bfloat16 measured no faster")
    products = _products_machine(monkeypatch, {"avx512_bf16"}, timings=(10.0, 1.0))
    bf16, why = products.choose("gru", 1024, 32)  # 12 KiB of kernel: bound by arithmetic, not timed
    assert not bf16 and "fits a core's 2 MiB level-2 cache (sysfs)" in why
    monkeypatch.setenv("TFRNN_KERNEL_BF16", "on")  # no timing: wherever the library has them
    products = _products_machine(monkeypatch, {"avx512_bf16"}, timings=(10.0, 20.0))
    assert products.choose("gru", 64, 512)[0]
    products = _products_machine(monkeypatch, set())
    assert not products.choose("gru", 64, 512)[0]  # on, but unsupported: never used
    monkeypatch.setenv("TFRNN_KERNEL_BF16", "off")
    products = _products_machine(monkeypatch, {"avx512_bf16"}, timings=(10.0, 1.0))
    assert products.choose("gru", 64, 512) == (False, "float32 products (bfloat16: $TFRNN_KERNEL_BF16=off)")
    monkeypatch.setenv("TFRNN_KERNEL_BF16", "fast")
    with pytest.raises(ConfigError, match=r"\$TFRNN_KERNEL_BF16 must be one of auto, on, off"):
        products.choose("rnn", 8, 8)


@pytest.mark.slow
def test_bfloat16_products_train_within_rounding_of_float32_and_are_named(compiled, monkeypatch):
    from tfrnn import kernel_check, kernel_products

    config = TrainConfig.resolve("book", cell="gru", units=40, layers=1, embedding=4, batch_size=19)
    if "avx512_bf16" not in kernel.features():
        # the op refuses bfloat16 where it was built without, and the plan never asks for it
        with pytest.raises(tf.errors.InvalidArgumentError, match="without AVX512_BF16"):
            z = tf.zeros((2, 3, 4))
            kernel.recurrence(
                "rnn", z, z[:, 0], z[:, 0], tf.zeros((4, 4)), tf.zeros(4), tf.zeros(4), bf16=True
            )
        assert step_settings(config, "off", 10)["recurrence"]["products"] == "float32"
        return
    assert kernel.bf16_check() == "ok"
    for cell in ("rnn", "gru", "lstm"):
        rounded = kernel_check._differences(cell, 19, 40, bf16=True)
        exact = kernel_check._differences(cell, 19, 40, bf16=False)
        for (what, a, b), (_, a32, _) in zip(rounded, exact):
            scale = max(float(np.abs(b).max()), 1.0)
            assert np.abs(a - b).max() <= kernel_check.BF16_RTOL * scale, what
            assert not np.array_equal(a, a32), what  # bfloat16 products did run
    monkeypatch.setenv("TFRNN_KERNEL_BF16", "on")
    monkeypatch.setattr(kernel_products, "_chosen", {})
    recurrence = step_settings(config, "off", 10)["recurrence"]
    assert recurrence["implementation"] == "compiled" and recurrence["products"] == "bfloat16"
    assert "AVX512_BF16" in recurrence["products_reason"]
    model = compile_model(config, 28, "off")
    assert all(layer.kernel_bf16 for layer in recurrent_layers(model))


def test_the_float32_peak_counts_zen4_avx512_at_half_width():
    """Zen 4 (AMD family 25) runs 512-bit FMAs on 256-bit units; Intel's AVX-512 and AVX2
    machines keep their own counts."""
    from tfrnn.cpu import FLAGS, fma_flops_per_cycle

    def info(vendor, family, *have):
        return {"flags": {f: f in have for f in FLAGS}, "vendor": vendor, "family": family}

    assert fma_flops_per_cycle(info("AuthenticAMD", 25, "avx2", "fma", "avx512f"))[0] == 32
    assert fma_flops_per_cycle(info("AuthenticAMD", 26, "avx2", "fma", "avx512f"))[0] == 64
    assert fma_flops_per_cycle(info("GenuineIntel", 6, "avx2", "fma", "avx512f"))[0] == 64
    assert fma_flops_per_cycle(info("AuthenticAMD", 23, "avx2", "fma"))[0] == 32
