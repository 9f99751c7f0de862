"""Size, FLOPs and speed of a model: tf.profiler counts that cover every time step.

Two independent counts of the recurrent part's forward pass, per sequence of T steps:

- **Profiler.** ``tf.compat.v1.profiler`` with ``float_operation()`` on the graph of an
  *unrolled* copy of the recurrent layers. A normal Keras recurrent layer runs as a
  ``While`` op whose body the profiler counts as zero FLOPs, so counting the trained model
  directly would miss every step; unrolling writes each step into the graph, so the count
  covers all T of them. (Unrolled weights are fresh copies: FLOPs depend on shapes only.)
- **Analytic**, per step and layer, with input size d and H units, in FLOPs (a multiply-add
  is 2, an element-wise add or multiply 1, activations 0, as the profiler counts them):

  ======  =================================  ============================================
  cell    matrix products (input, state)     biases and gate element-wise work
  ======  =================================  ============================================
  rnn     2·H·d + 2·H·H                      2H   (bias, sum of the two products)
  gru     2·3H·d + 2·3H·H                    14H  (2 bias vectors 6H, z and r sums 2H,
                                                   r·(Uh) H, candidate sum H, 1−z, two
                                                   products and the final sum 4H)
  lstm    2·4H·d + 2·4H·H                    12H  (bias 4H, sum of products 4H, c update 3H,
                                                   o·tanh(c) H)
  ======  =================================  ============================================

The study's MACs (``ptflops`` on PyTorch modules, PROTOCOL.md) count per step the two
weight matrices, both bias vectors, and H (rnn), 7H (gru) or 10H (lstm) of element-wise
work; ``study_macs`` reproduces that convention exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfrnn.config import GATES
from tfrnn.data import VOCAB_SIZE

_ELEMENTWISE_FLOPS = {"rnn": 2, "gru": 14, "lstm": 12}
_STUDY_ELEMENTWISE = {"rnn": 1, "gru": 7, "lstm": 10}
STUDY_SEQUENCE = 1024


def _layer_inputs(input_dim: int, units: int, layers: int) -> list[int]:
    return [input_dim] + [units] * (layers - 1)


def analytic_flops(cell: str, units: int, layers: int, input_dim: int, steps: int = 1, batch: int = 1) -> int:
    """Forward FLOPs of the recurrent layers for ``batch`` sequences of ``steps`` (see module doc)."""
    g, h = GATES[cell], units
    per_step = sum(
        2 * g * h * (d + h) + _ELEMENTWISE_FLOPS[cell] * h for d in _layer_inputs(input_dim, units, layers)
    )
    return per_step * steps * batch


def study_macs(cell: str, units: int, layers: int, input_dim: int, steps: int = STUDY_SEQUENCE) -> int:
    """MACs of the recurrent layers as the study counted them (ptflops on torch.nn.GRU/LSTM/RNN)."""
    g, h = GATES[cell], units
    per_step = sum(
        g * h * (d + h) + 2 * g * h + _STUDY_ELEMENTWISE[cell] * h
        for d in _layer_inputs(input_dim, units, layers)
    )
    return per_step * steps


def _count(fn, *specs) -> int:
    import tensorflow as tf

    graph = tf.function(fn).get_concrete_function(*specs).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the v1 profiler warns about its own deprecated helpers
    try:
        info = tf.compat.v1.profiler.profile(
            graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=opts
        )
    finally:
        logger.setLevel(level)
    return int(info.total_float_ops)


def _unrolled(config, vocab_size: int):
    """Input layer, unrolled recurrent layers and output layer of ``config``'s model."""
    import keras

    from tfrnn.models import build_model, recurrent_layers

    model = build_model(config, vocab_size)
    unrolled = []
    for layer in recurrent_layers(model):
        cfg = layer.get_config()
        cfg["unroll"] = True
        unrolled.append(layer.__class__.from_config(cfg))
    return model.layers[1], unrolled, model.get_layer("logits"), keras


def profiler_flops(config, vocab_size: int, steps: int, batch: int = 1, part: str = "recurrent") -> int:
    """tf.profiler FLOPs of a forward pass (``part``: "recurrent" or "model") or a training step
    (``part="train_step"``: forward, loss and gradients) on ``batch`` x ``steps`` tokens."""
    import tensorflow as tf

    embed, rec, dense, keras = _unrolled(config, vocab_size)
    input_dim = config.embedding or vocab_size

    def recurrent(x):
        for layer in rec:
            x = layer(x)
        return x

    if part == "recurrent":
        return _count(recurrent, tf.TensorSpec([batch, steps, input_dim], tf.float32))

    def forward(ids):
        return dense(recurrent(embed(ids)))

    spec = tf.TensorSpec([batch, steps], tf.int32)
    if part == "model":
        return _count(forward, spec)
    if part != "train_step":
        raise ValueError(f"unknown part {part!r}")
    forward(tf.zeros([batch, steps], tf.int32))  # build the weights
    weights = [w.value for layer in (embed, *rec, dense) for w in layer.trainable_weights]

    def train_step(ids):
        with tf.GradientTape() as tape:
            logits = forward(ids)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(ids, logits, from_logits=True))
        return tape.gradient(loss, weights)

    return _count(train_step, spec)


@dataclass
class Profile:
    """The figures ``tfrnn profile`` prints and ``metrics.json`` stores."""

    params_total: int
    params_recurrent_keras: int
    params_recurrent_study: int
    macs_per_char_study: int
    macs_1024_study: int
    flops_1024_profiler: int
    flops_1024_analytic: int
    flops_train_step_profiler: int
    train_step_tokens: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def linear_count(count, steps: int, probe: tuple[int, int] = (4, 8)) -> int:
    """``count(steps)`` from two small unrolled graphs: the profiler's count is exactly linear
    in the number of steps (a per-step cost plus a constant; ``tests/test_profile.py`` checks
    it), so two short graphs give the figure of a long one without building it."""
    a, b = probe
    ca, cb = count(a), count(b)
    per_step, rest = divmod(cb - ca, b - a)
    if rest:
        raise ArithmeticError("the profiler count is not linear in the number of steps")
    return ca + per_step * (steps - a)


def profile_config(config, vocab_size: int = VOCAB_SIZE) -> Profile:
    """Parameters and FLOPs of ``config`` (no training needed)."""
    from tfrnn.models import build_model, parameter_counts

    params = parameter_counts(build_model(config, vocab_size))
    d = config.embedding or vocab_size
    args = (config.cell, config.units, config.layers, d)
    return Profile(
        params_total=params["total"],
        params_recurrent_keras=params["recurrent_keras"],
        params_recurrent_study=params["recurrent_study"],
        macs_per_char_study=study_macs(*args, steps=1),
        macs_1024_study=study_macs(*args),
        flops_1024_profiler=linear_count(lambda t: profiler_flops(config, vocab_size, t), STUDY_SEQUENCE),
        flops_1024_analytic=analytic_flops(*args, steps=STUDY_SEQUENCE),
        flops_train_step_profiler=linear_count(
            lambda t: profiler_flops(config, vocab_size, t, config.batch_size, "train_step"),
            config.num_steps,
        ),
        train_step_tokens=config.num_steps * config.batch_size,
    )


def measure_speed(saved_model, chars: int = 200, batch: int = 256, steps: int = 32, repeats: int = 3) -> dict:
    """Inference latency (ms per generated character, batch 1, greedy) and scoring throughput
    (characters per second over ``batch`` texts of ``steps + 1`` characters) of a SavedModel."""
    import tensorflow as tf

    from tfrnn.measure import median_seconds

    prompt = tf.constant(["the time traveller"])
    texts = tf.fill([batch], ("the time machine by h g wells " * 3)[: steps + 1])
    # one warm-up call each: the first builds the graph
    gen = median_seconds(lambda: saved_model.generate(prompt, chars, 0.0, 0)["text"].numpy(), repeats)
    sc = median_seconds(lambda: saved_model.score(texts)["perplexity"].numpy(), repeats)
    return {"generate_ms_per_char": 1000 * gen / chars, "score_chars_per_s": batch * steps / sc}


def speed_of_config(config, vocab_size: int = VOCAB_SIZE) -> dict:
    """``measure_speed`` of an untrained model of ``config`` (speed does not depend on weights)."""
    import tempfile
    from pathlib import Path

    import tensorflow as tf

    from tfrnn.export import export_saved_model
    from tfrnn.models import build_model
    from tfrnn.vocab import Vocab

    with tempfile.TemporaryDirectory() as tmp:
        vocab = Vocab.of_size(vocab_size)
        path = export_saved_model(build_model(config, vocab_size), vocab, Path(tmp) / "sm")
        return measure_speed(tf.saved_model.load(str(path)))


def report_rows(profile: dict, speed: dict | None, training: dict | None) -> list[tuple[str, str, str]]:
    """(figure, value, how it was obtained) rows of ``tfrnn profile``'s table."""
    p = profile
    diff = 100 * (p["flops_1024_profiler"] - p["flops_1024_analytic"]) / p["flops_1024_analytic"]
    rows = [
        ("parameters, whole model", f"{p['params_total']:,}", "Keras count_params"),
        ("parameters, recurrent (Keras)", f"{p['params_recurrent_keras']:,}", "one bias vector in LSTM/RNN"),
        ("parameters, recurrent (study)", f"{p['params_recurrent_study']:,}", "PyTorch's two bias vectors"),
        ("MACs per character (study)", f"{p['macs_per_char_study']:,}", "ptflops convention, recurrent"),
        ("MACs, 1,024 steps (study)", f"{p['macs_1024_study'] / 1e6:,.2f}M", "ptflops convention, recurrent"),
        (
            "FLOPs, 1,024 steps: profiler",
            f"{p['flops_1024_profiler'] / 1e6:,.2f}M",
            "tf.profiler, unrolled recurrent layers",
        ),
        (
            "FLOPs, 1,024 steps: analytic",
            f"{p['flops_1024_analytic'] / 1e6:,.2f}M",
            f"formula in tfrnn/profile.py ({diff:+.2f}% profiler vs analytic)",
        ),
        (
            "FLOPs of a training step",
            f"{p['flops_train_step_profiler'] / 1e9:,.3f}G",
            f"tf.profiler: forward + loss + gradients, {p['train_step_tokens']:,} tokens",
        ),
    ]
    if training:
        rows.append(
            (
                "training time",
                f"{training['training_seconds']:.1f} s",
                f"{training['epochs_run']} epochs, {training['median_epoch_seconds']:.2f} s/epoch",
            )
        )
    if speed:
        rows += [
            (
                "generation latency",
                f"{speed['generate_ms_per_char']:.3f} ms/char",
                "SavedModel, batch 1, greedy",
            ),
            (
                "scoring throughput",
                f"{speed['score_chars_per_s']:,.0f} chars/s",
                "SavedModel, batch 256 x 32",
            ),
        ]
    return rows
