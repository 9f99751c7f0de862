"""The book preset's recipe for a time budget, chosen by the epochs the budget buys here.

The book preset's recipe (AdamW 3e-3 warmed up over the first epoch, then a cosine decay
to zero at the end of the budget, dropout 0.5 on the input, between and after the layers)
was measured best for 14.5 minutes of an Intel Xeon with AVX-512 (about 40 epochs of LSTM
2 x 512). A budget that buys only a few epochs spends a third of them warming up and the
rest decaying, with a dropout that slows learning. Measured (LSTM 2 x 512, the book, chars
vocabulary, `tfrnn fit --preset book --time-budget 3`, AMD EPYC with 2 cores and AVX2,
3 epochs each; test perplexity): that recipe 12.49; dropout 0.2 under the same schedule
11.59; dropout 0.2 and a constant rate 7.96. At 7 minutes (7-8 epochs): that recipe 7.11,
dropout 0.2 and a constant rate 5.24 (the PyTorch peer, 9 epochs: 4.98). So a budget
estimated to buy fewer than ``SHORT_EPOCHS`` epochs trains with ``SHORT``; a longer one
keeps the preset's recipe (between 8 and ~40 epochs the crossing is not measured).

The estimate is made on this machine, for this model and text: the training step's
arithmetic (three times the forward pass's matrix products) over the rate TensorFlow's
matrix product reaches here at the model's input-projection shape, so a fast CPU gets the
long recipe for a budget that a slow one spends on the short one. It is made once, when a
run starts; a resumed run keeps what its start chose.
"""

from __future__ import annotations

import dataclasses
import time

from tfrnn.config import GATES, TrainConfig

#: Budgets estimated to buy fewer epochs than this train with ``SHORT``.
SHORT_EPOCHS = 12
SHORT = {"dropout": 0.2, "schedule": "constant"}


def step_flops(config: TrainConfig, vocab_size: int) -> float:
    """Floating-point operations of one training step (forward and backward: 3x the forward
    pass's matrix products, the recurrent, input and output ones)."""
    g, h = GATES[config.cell], config.units
    d = config.embedding or vocab_size
    forward = 0
    for _ in range(config.layers):
        forward += 2 * g * h * (d + h)
        d = h
    forward += 2 * h * vocab_size
    return 3.0 * forward * config.batch_size * config.num_steps


def matmul_rate(config: TrainConfig, repeats: int = 3) -> float:
    """FLOP/s of TensorFlow's matrix product here at the model's input-projection shape
    (all of a batch's steps times the input weights), the best of ``repeats``."""
    import tensorflow as tf

    g, h = GATES[config.cell], config.units
    rows = config.batch_size * config.num_steps
    a, b = tf.random.normal((rows, h)), tf.random.normal((h, g * h))
    tf.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2.0 * rows * h * g * h / best


def budget_epochs(config: TrainConfig, vocab_size: int, steps_per_epoch: int) -> float:
    """About how many epochs ``config.time_budget`` minutes buy here."""
    seconds = steps_per_epoch * step_flops(config, vocab_size) / matmul_rate(config)
    return 60.0 * config.time_budget / seconds


def for_budget(
    config: TrainConfig, vocab_size: int, steps_per_epoch: int, saved: dict | None = None
) -> tuple[TrainConfig, str | None]:
    """``config`` with the recipe its time budget calls for, and a line saying what was
    chosen (None when nothing changes). ``saved``: the configuration an interrupted run
    started with (its choice is kept)."""
    if saved is not None:
        kept = {k: saved[k] for k in SHORT if k in saved}
        return dataclasses.replace(config, **kept), None
    epochs = budget_epochs(config, vocab_size, steps_per_epoch)
    if epochs >= SHORT_EPOCHS:
        return config, None
    return dataclasses.replace(config, **SHORT), (
        f"recipe: {config.time_budget:g} minutes buy about {epochs:.0f} epochs here, fewer than "
        f"{SHORT_EPOCHS}: dropout {SHORT['dropout']}, a constant learning rate (no warm-up, no "
        "decay); pass --dropout or --schedule to choose yourself"
    )
