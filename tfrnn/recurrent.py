"""A Keras SimpleRNN whose CPU path is an unrolled loop with a hand-written gradient.

Keras runs a recurrent layer as a ``tf.while_loop`` over its cell and lets TensorFlow
differentiate that loop. For SimpleRNN on a CPU, ``SimpleRNN`` here keeps Keras' weights
and configuration and replaces only ``inner_loop``: the input projection ``x @ W + b`` is
one matrix product over all time steps, the recurrence is unrolled when the number of steps
is known while tracing (a ``tf.while_loop`` otherwise), and its gradient is written out:
a backward loop doing only ``dA @ Uᵀ`` per step, then one product for the kernel gradient.
Under XLA (``tfrnn.train.use_xla``) that trains RNN-64 about 20% faster than Keras' own
layer (``tools/bench.py``); without XLA the two are level. (GRU and LSTM stay Keras' layers:
the same treatment as a loop was no faster, and unrolled under XLA a fused GRU trained epochs
8-13% faster but compiled for 20 s instead of 6-11, a net loss over a 50-epoch run.)

The fused path applies to the layer in its standard form (tanh, bias, no dropout, not
unrolled, forward, no mask); otherwise the layer is exactly Keras' own.

Faster still, where it compiles: ``use_kernel(model)`` switches a model's SimpleRNN, GRU and
LSTM layers to tfrnn's compiled recurrence (``tfrnn.kernel``: the whole sequence and its
gradient as two ops built for this CPU), for training and evaluation. Only the models that
train and evaluate are switched; the ones exported are not, so SavedModels hold TensorFlow's
own ops.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers as kl

from tfrnn import kernel
from tfrnn.cpu import has_gpu


def _project(x_tm: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """``x @ kernel + bias`` for a ``(T, B, D)`` (or ``(B, T, D)``) input, as one matrix product."""
    shape = tf.shape(x_tm)
    flat = tf.nn.bias_add(tf.matmul(tf.reshape(x_tm, [-1, shape[2]]), kernel), bias)
    return tf.reshape(flat, [shape[0], shape[1], -1])


def _loop(step, inputs: list[tf.Tensor], carry: tf.Tensor, reverse: bool = False):
    """Run ``step(inputs_t, carry) -> (carry, output_t)`` over the time axis; stack the outputs.

    Python-unrolled when the number of steps is known when tracing, else a ``tf.while_loop``
    over ``TensorArray``s. Either way TensorFlow's own gradient is never taken through it.
    """
    length = inputs[0].shape[0]
    if length is not None:
        steps = [tf.unstack(x) for x in inputs]
        outs = [None] * length
        for t in reversed(range(length)) if reverse else range(length):
            carry, outs[t] = step([x[t] for x in steps], carry)
        return carry, tf.stack(outs)
    length = tf.shape(inputs[0])[0]
    in_tas = [tf.TensorArray(x.dtype, size=length).unstack(x) for x in inputs]

    def body(i, carry, out):
        t = length - 1 - i if reverse else i
        carry, value = step([ta.read(t) for ta in in_tas], carry)
        return i + 1, carry, out.write(t, value)

    out = tf.TensorArray(carry.dtype, size=length)
    _, carry, out = tf.while_loop(
        lambda i, *_: i < length, body, (tf.constant(0), carry, out), parallel_iterations=1
    )
    return carry, out.stack()


def _standard_form(layer: kl.RNN, mask) -> bool:
    """The layer in the form the fused loops implement: TensorFlow backend, tanh, biases,
    no cell dropout, forward, not unrolled, no mask."""
    cell = layer.cell
    return (
        keras.backend.backend() == "tensorflow"
        and mask is None
        and not layer.go_backwards
        and not layer.unroll
        and not cell.dropout
        and not cell.recurrent_dropout
        and cell.use_bias
        and cell.activation is keras.activations.tanh
    )


def _one_hot_ids(x: tf.Tensor, depth: int) -> tf.Tensor | None:
    """The ids ``x`` one-hot encodes (a traced ``OneHot`` op of ``depth`` on the last axis,
    on 1 and off 0, as ``models.OneHot`` makes), or None."""
    op = getattr(x, "op", None)  # eager tensors have none
    if op is None or op.type != "OneHot" or x.dtype != tf.float32:
        return None
    if op.get_attr("axis") != -1:
        return None
    depth_, on, off = (tf.get_static_value(t) for t in op.inputs[1:4])
    return op.inputs[0] if (depth_, on, off) == (depth, 1, 0) else None


class KernelMixin:
    """``fused_kernel`` (not part of the configuration; off until ``use_kernel`` sets it):
    run the layer's recurrence as tfrnn's compiled op (``tfrnn.kernel``) where it applies."""

    kernel_cell = ""
    fused_kernel = False
    kernel_bf16 = False  # training steps' recurrent products in bfloat16 (``use_kernel``)

    def _kernel_applies(self, mask) -> bool:
        cell = self.cell
        return (
            self.fused_kernel
            and self.compute_dtype == "float32"
            and _standard_form(self, mask)
            and getattr(cell, "recurrent_activation", keras.activations.sigmoid) is keras.activations.sigmoid
            and getattr(cell, "reset_after", True)
        )

    def _kernel_loop(self, sequences, initial_state, recurrent_kernel, training):
        cell, name = self.cell, self.kernel_cell
        if name == "gru":  # reset_after: input and recurrent biases, (2, 3H)
            bias_in, bias_rec = cell.bias[0], cell.bias[1]
        else:
            bias_in, bias_rec = cell.bias, tf.zeros(tf.shape(recurrent_kernel)[1:])
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        h0 = states[0]
        c0 = states[1] if name == "lstm" else h0
        ids = _one_hot_ids(sequences, cell.kernel.shape[0])
        if ids is not None:  # the kernel's rows, not a product with one-hot vectors
            xp = kernel.gather_rows(cell.kernel, ids)
        else:
            width = tf.shape(sequences)
            xp = tf.matmul(tf.reshape(sequences, [-1, width[2]]), cell.kernel)  # biases: in the op
            xp = tf.reshape(xp, [width[0], width[1], -1])
        bf16 = self.kernel_bf16 and bool(training)  # evaluation stays float32
        hs, last = kernel.recurrence(name, xp, h0, c0, recurrent_kernel, bias_in, bias_rec, training, bf16)
        h_last = hs[:, -1] if name == "lstm" else last
        outputs = hs if self.return_sequences else h_last[:, None]
        return h_last, outputs, [h_last, last] if name == "lstm" else [h_last]


def use_kernel(model: keras.Model, batch_size: int, bf16: bool = False) -> bool:
    """Switch ``model``'s recurrent layers to the compiled recurrence when it can run
    batches of ``batch_size`` rows here (``kernel.unavailable``); whether it was. (Training
    asks ``tfrnn.plan`` first; this check is then the same one, cached.) ``bf16``: training
    steps multiply by the recurrent kernels in bfloat16 (``tfrnn.kernel_products``)."""
    if kernel.unavailable(batch_size):
        return False
    layers = [layer for layer in model.layers if isinstance(layer, KernelMixin)]
    for layer in layers:
        layer.fused_kernel, layer.kernel_bf16 = True, bf16
    return bool(layers)


# --- SimpleRNN: h = tanh(x W + b + h U)


def _rnn_forward(xp, h0, rk):
    def step(inputs, h):
        h = tf.tanh(inputs[0] + tf.matmul(h, rk))
        return h, h

    return _loop(step, [xp], h0)[1]


@tf.custom_gradient
def _rnn_train(xp, h0, rk):
    hs = _rnn_forward(xp, h0, rk)

    def grad(dhs):
        def step(inputs, dh_next):
            da = (inputs[0] + dh_next) * inputs[1]
            return tf.matmul(da, rk, transpose_b=True), da

        dh0, das = _loop(step, [dhs, 1.0 - hs * hs], tf.zeros_like(h0), reverse=True)
        h_prev = tf.concat([h0[None], hs[:-1]], axis=0)  # the state before each step
        units = tf.shape(hs)[-1]
        d_rk = tf.matmul(tf.reshape(h_prev, [-1, units]), tf.reshape(das, [-1, units]), transpose_a=True)
        return das, dh0, d_rk

    return hs, grad


@keras.saving.register_keras_serializable(package="tfrnn")
class SimpleRNN(KernelMixin, kl.SimpleRNN):
    """``keras.layers.SimpleRNN`` with the fused CPU loop (see the module docstring)."""

    kernel_cell = "rnn"

    def _fused_applies(self, mask) -> bool:
        return _standard_form(self, mask)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if self._kernel_applies(mask):
            return self._kernel_loop(sequences, initial_state, self.cell.recurrent_kernel, training)
        if not self._fused_applies(mask):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        h0 = initial_state[0] if isinstance(initial_state, (list, tuple)) else initial_state
        cell = self.cell
        xp = _project(tf.transpose(sequences, [1, 0, 2]), cell.kernel, cell.bias)
        hs = (_rnn_train if training else _rnn_forward)(xp, h0, tf.convert_to_tensor(cell.recurrent_kernel))
        last = hs[-1]
        outputs = tf.transpose(hs, [1, 0, 2]) if self.return_sequences else last[:, None]
        return last, outputs, [last]


# --- LSTM: z = x W + b + h U; i, f, o = sigmoid(z_i, z_f, z_o), g = tanh(z_g);
#     c = f c + i g; h = o tanh(c)  (Keras' gate order i, f, g, o)


@tf.custom_gradient
def _lstm_train(xp, h0, c0, rk):
    """Unrolled LSTM over batch-major ``xp = x W + b`` ``(B, T, 4H)``; returns every ``h``
    ``(B, T, H)`` and the last ``c``.

    Its gradient runs one backward loop doing ``dz @ Uᵀ`` per step and leaves the weight
    gradients to large products after the loop (``U``'s here, ``W``'s and the input's
    through the projection outside), as cuDNN does.
    """
    h, c = h0, c0
    hs, cs, gates, tcs = [], [], [], []
    for x in tf.unstack(xp, axis=1):
        i, f, g, o = tf.split(x + tf.matmul(h, rk), 4, axis=-1)
        i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        c = f * c + i * g
        tc = tf.tanh(c)
        h = o * tc
        hs.append(h)
        cs.append(c)
        gates.append((i, f, g, o))
        tcs.append(tc)

    def grad(dhs, dc_last):
        dhs = tf.unstack(dhs, axis=1)
        dh_next = tf.zeros_like(h0)
        dc_next = tf.zeros_like(c0) if dc_last is None else dc_last
        dzs = [None] * len(hs)
        for t in reversed(range(len(hs))):
            i, f, g, o = gates[t]
            tc = tcs[t]
            dh = dhs[t] + dh_next
            dc = dh * o * (1.0 - tc * tc) + dc_next
            c_prev = cs[t - 1] if t else c0
            dz = tf.concat(
                [
                    dc * g * i * (1.0 - i),
                    dc * c_prev * f * (1.0 - f),
                    dc * i * (1.0 - g * g),
                    dh * tc * o * (1.0 - o),
                ],
                axis=-1,
            )
            dc_next = dc * f
            dh_next = tf.matmul(dz, rk, transpose_b=True)
            dzs[t] = dz
        d_rk = tf.matmul(tf.concat([h0, *hs[:-1]], axis=0), tf.concat(dzs, axis=0), transpose_a=True)
        return tf.stack(dzs, axis=1), dh_next, dc_next, d_rk

    return (tf.stack(hs, axis=1), c), grad


@keras.saving.register_keras_serializable(package="tfrnn")
class LSTM(KernelMixin, kl.LSTM):
    """``keras.layers.LSTM`` whose CPU training path is ``_lstm_train`` (same weights and
    configuration); inference and non-standard settings run Keras' own loop, GPUs cuDNN.

    ``weight_drop``: DropConnect on the recurrent kernel during training (AWD-LSTM's
    WeightDrop): one dropout mask on ``U`` per batch, shared by every step, so the
    recurrence itself stays a plain LSTM and keeps the cuDNN kernel on a GPU.
    """

    kernel_cell = "lstm"

    def __init__(self, units, weight_drop: float = 0.0, **kwargs) -> None:
        super().__init__(units, **kwargs)
        self.weight_drop = float(weight_drop)
        if self.weight_drop:
            self.weight_drop_seed = keras.random.SeedGenerator()

    def _fused_applies(self, sequences, mask, training) -> bool:
        return (
            training
            and sequences.shape[-1] >= FUSED_LSTM_MIN_INPUT
            and sequences.shape[1] is not None
            and _standard_form(self, mask)
            and self.cell.recurrent_activation is keras.activations.sigmoid
            and not has_gpu()
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        cell = self.cell
        dropped = training and self.weight_drop > 0
        rk = tf.convert_to_tensor(cell.recurrent_kernel)
        if dropped:
            rk = keras.random.dropout(rk, self.weight_drop, seed=self.weight_drop_seed)
        if self._kernel_applies(mask):
            return self._kernel_loop(sequences, initial_state, rk, training)
        if self._fused_applies(sequences, mask, training):
            h0, c0 = initial_state
            hs, c = _lstm_train(_project(sequences, cell.kernel, cell.bias), h0, c0, rk)
            last = hs[:, -1]
            return last, hs if self.return_sequences else last[:, None], [last, c]
        if not dropped:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        # a GPU: cuDNN with the dropped kernel (Keras' own loop cannot take one)
        return keras.src.backend.lstm(
            sequences,
            initial_state[0],
            initial_state[1],
            mask,
            kernel=cell.kernel,
            recurrent_kernel=rk,
            bias=cell.bias,
            activation=cell.activation,
            recurrent_activation=cell.recurrent_activation,
            return_sequences=self.return_sequences,
            go_backwards=self.go_backwards,
            unroll=self.unroll,
        )

    def get_config(self) -> dict:
        return {**super().get_config(), "weight_drop": self.weight_drop}


#: ``_lstm_train`` trains LSTM layers whose input is at least this wide: there the input
#: projection, moved out of the loop into one large product, is a good part of the work
#: (an embedding or a layer below). One-hot input (28, the study's models) is left to
#: Keras' loop, which is as fast there and keeps the study's numbers bit for bit.
FUSED_LSTM_MIN_INPUT = 64


@keras.saving.register_keras_serializable(package="tfrnn")
class GRU(KernelMixin, kl.GRU):
    """``keras.layers.GRU``, which ``use_kernel`` can switch to the compiled recurrence."""

    kernel_cell = "gru"

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if self._kernel_applies(mask):
            return self._kernel_loop(sequences, initial_state, self.cell.recurrent_kernel, training)
        return super().inner_loop(sequences, initial_state, mask, training=training)
