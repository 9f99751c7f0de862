"""The compiled recurrence's self-check, run once per library in a child process.

    python -m tfrnn.kernel_check PATH/recurrence-KEY.so

Loads the library and compares, on two small problems, each cell's outputs, states and
gradients with Keras' own loops, and the row and cross-entropy ops with TensorFlow's.
Exits 0 when all agree, 1 (with what differed) when not. A library that cannot run on
this CPU kills this process, not the run that asked (``tfrnn.kernel``). Where the library
has bfloat16 products (AVX512_BF16) they are compared too, within bfloat16's rounding: the
line ``bf16: ok`` lets them be used; anything else keeps them off.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

#: How close the compiled ops must come to Keras' loops (float32, a tiny problem).
ATOL_FORWARD, ATOL_GRADIENT = 1e-5, 1e-4
#: (batch rows, units) of the problems compared: weights of scale 1 / sqrt(units).
PROBLEMS = ((5, 4), (19, 40))
#: bfloat16 products (8 significant bits, float32 sums): outputs and gradients within this
#: fraction of their largest magnitude (measured: 1e-3 to 1e-2 at 4 to 1,024 units).
BF16_RTOL = 3e-2


def _differences(cell: str, rows: int, units: int, bf16: bool) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Each output and gradient of tfrnn's ``cell`` layer on the compiled op beside Keras' own."""
    import keras
    import tensorflow as tf

    from tfrnn import recurrent

    keras_layers = {"rnn": keras.layers.SimpleRNN, "gru": keras.layers.GRU, "lstm": keras.layers.LSTM}
    ours = {"rnn": recurrent.SimpleRNN, "gru": recurrent.GRU, "lstm": recurrent.LSTM}
    x = tf.random.stateless_normal((rows, 4, 3), seed=(0, 1))
    mine_layer = ours[cell](units, return_sequences=True, return_state=True)
    ref_layer = keras_layers[cell](units, return_sequences=True, return_state=True)
    mine_layer.build(x.shape)
    ref_layer.build(x.shape)
    for i, w in enumerate(mine_layer.weights):
        w.assign(tf.random.stateless_normal(w.shape, seed=(2, i)) / units**0.5)
    ref_layer.set_weights(mine_layer.get_weights())
    mine_layer.fused_kernel, mine_layer.kernel_bf16 = True, bf16
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        mine, ref = mine_layer(x, training=True), ref_layer(x)
        weights = [tf.random.stateless_normal(o.shape, seed=(3, i)) for i, o in enumerate(ref)]
        loss_mine = sum(tf.reduce_sum(o * w) for o, w in zip(mine, weights))
        loss_ref = sum(tf.reduce_sum(o * w) for o, w in zip(ref, weights))
    grads = tape.gradient(loss_mine, [*mine_layer.trainable_weights, x])
    expected = tape.gradient(loss_ref, [*ref_layer.trainable_weights, x])
    where = f"{cell} ({rows} x {units})"
    return [(f"{where} forward", np.asarray(a), np.asarray(b)) for a, b in zip(mine, ref)] + [
        (f"{where} gradient", np.asarray(a), np.asarray(b)) for a, b in zip(grads, expected)
    ]


def check(path: Path) -> list[str]:
    """What differs between the library at ``path`` and TensorFlow's own computation."""
    import tensorflow as tf

    from tfrnn import kernel

    module, status = kernel._import(path)
    if module is None:
        return [status]
    kernel._state.update(module=module, status=status)
    problems = []
    # a tiny problem, and one with full and partial panels and row blocks of the packed product
    for rows, units in PROBLEMS:
        for cell in ("rnn", "gru", "lstm"):
            for what, a, b in _differences(cell, rows, units, bf16=False):
                atol = ATOL_FORWARD if what.endswith("forward") else ATOL_GRADIENT
                if not np.allclose(a, b, atol=atol):
                    problems.append(f"{what} differs by {np.abs(a - b).max():.3g}")
    table = tf.random.stateless_normal((7, 6), seed=(5, 0))
    ids = tf.constant([[0, 3, 6], [2, 2, 1]])
    if not np.allclose(kernel.gather_rows(table, ids), tf.gather(table, ids), atol=ATOL_FORWARD):
        problems.append("row gather differs")
    logits = tf.random.stateless_normal((2, 3, 7), seed=(6, 0))
    expected_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(ids, logits)
    if not np.allclose(kernel.cross_entropy(ids, logits), expected_ce, atol=ATOL_FORWARD):
        problems.append("cross-entropy differs")
    return problems


def check_bf16() -> str:
    """The library's bfloat16 products (after ``check``): "ok", "not built (...)" where it has
    none, or what differed from Keras' float32 loops by more than bfloat16's rounding allows."""
    from tfrnn import kernel

    if "avx512_bf16" not in kernel.features():
        return "not built (the compiler's target has no AVX512_BF16)"
    problems = []
    for rows, units in PROBLEMS:
        for cell in ("rnn", "gru", "lstm"):
            for what, a, b in _differences(cell, rows, units, bf16=True):
                scale = max(float(np.abs(b).max()), 1.0)
                if np.abs(a - b).max() > BF16_RTOL * scale:
                    problems.append(f"{what} differs by {np.abs(a - b).max() / scale:.3g} of its scale")
    return "; ".join(problems) or "ok"


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_file():
        raise SystemExit("usage: python -m tfrnn.kernel_check PATH/recurrence-KEY.so (built by tfrnn.kernel)")
    problems = check(Path(sys.argv[1]))
    if problems:
        print("; ".join(problems))
        raise SystemExit(1)
    print("ok: outputs, states and gradients equal Keras' loops")
    print(f"bf16: {check_bf16()}")  # recorded by tfrnn.kernel; a failure here costs only bfloat16


if __name__ == "__main__":
    main()
