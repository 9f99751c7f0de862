"""The book preset's recipe for a time budget, chosen by the epochs the budget buys here.

The book preset's recipe (AdamW 3e-3 warmed up over the first epoch, then a cosine decay
to zero at the end of the budget, dropout 0.5 on the input, between and after the layers,
LSTM 2 x 512) was measured best for 14.5 minutes of an Intel Xeon with AVX-512: about 40
epochs. A budget that buys far fewer spends a third of them warming up and the rest
decaying, with a dropout that slows learning, on a model too big to learn in that time.
Measured on an AMD EPYC with 2 cores and AVX2 (the book, chars vocabulary, `tfrnn fit
--preset book --time-budget B`; epochs run, test perplexity):

- LSTM 2 x 512, 3 minutes (3 epochs): the preset's recipe 12.49; dropout 0.2 11.59; dropout
  0.2 and a constant rate 7.96. 7 minutes (7-8 epochs): the preset's recipe 7.11; dropout 0.2
  and a constant 3e-3 5.24. 14.5 minutes, letters (15 epochs): the preset's recipe 4.36,
  behind the PyTorch peer's flat Adam (3.85).
- LSTM 2 x 256 over 6 epochs (best validation): dropout 0.5, Adam 3e-3 6.45; Adam 5e-3 6.24;
  dropout 0.2, AdamW 3e-3 5.77; dropout 0.2, 5e-3 5.33 (the peer, dropout 0.5: 6.97).
- Dropout 0.2, a constant 5e-3: 3 minutes: 2 x 256 (10 epochs) 4.955, **2 x 128 (33) 4.794**;
  7 minutes: **2 x 256 (19) 4.449**, 2 x 128 (60, the preset's cap) 4.527, 2 x 512 5.24.

- The rate halved after each epoch whose validation does not improve (``--schedule
  plateau``) instead of held constant, side by side with the peer each time: 14.5 minutes,
  letters, 2 x 256: 3.710 (best epoch the last, 50) against 3.771 (best epoch 35 of 51: a
  constant rate overfits late); 3 minutes, chars, 2 x 128: 4.815 against 4.825; 7 minutes,
  chars, 2 x 256: 4.367 (23 epochs) against 4.348 (24).

- 14.5 minutes, the plateau recipe (validation / test perplexity): letters, tfrnn alone,
  2 x 256 (50 epochs) dropout 0.2 3.617 / 3.710, dropout 0.3 3.615 / 3.715; 2 x 384 (25
  epochs) dropout 0.3 3.586 / 3.721 (overfits from epoch 19), dropout 0.4 3.585 / 3.676. But
  with every character kept (chars, the default) 2 x 384 at dropout 0.4 gave 4.011 / 4.332
  against 2 x 256's 3.968 / 4.258: no 384-unit width, and no wider-model dropout.

So a budget estimated to buy the preset's model fewer than ``SHORT_EPOCHS`` epochs trains
with ``SHORT`` and, unless --units is given, on the widest of ``WIDTHS`` that the estimate
gives ``SIZE_EPOCHS`` epochs (its estimates there: 2 x 256 13.4 epochs in 3 minutes, 31.6
in 7; 2 x 128 42.9 in 3: 20 lies between the widths that lost and won). A longer budget
keeps the preset's recipe.

On a larger text a wider model pays with fewer passes (nothing repeats enough to
overfit): the passes asked fall as ``(book / n) ** 0.75`` with the training part's n
characters (``size_epochs``), 20 at the book's size, so the book's choices are unchanged.
Fitted on 3-minute runs of three texts (AMD EPYC Zen 4, 2 cores; `python tools/bench_recipe.py
--budgets 3`, test bits per character, the estimate's passes in brackets): the book
(161,081 training characters) 2 x 128 2.551 (115, capped at 60 epochs), **2 x 256 2.096**
(36), 2 x 512 2.114 (9.7); Vim's manuals (1.4 M) 2 x 128 2.097 (13), **2 x 256 2.022** (4.5),
2 x 512 2.078 (1.2); Python's standard library source (11.3 M) **2 x 128 2.023** (1.7),
2 x 256 2.116 (0.54), 2 x 512 3.603 (0.14). The powers that choose every winner lie in
0.70-0.85 (20 passes needed of 2 x 256 on the book, 4.0 on the manuals, 0.82 on the
source). At 15 minutes (the same machine, `--budgets 15`) the recipe's choice was the best
measured on each text: the book 2 x 512 (the long recipe) 2.081 against 2 x 256 2.153 and 2 x
128 2.493 (both at the 60-epoch cap); the manuals 2 x 512 (6.2 passes) 1.889 against 1.907 and
2.153; the source 2 x 256 (2.7) 1.757 against 2 x 128's 1.835 (2 x 512 not run). Those manuals
were their files by name, which left the digraph table as the validation part; with the
files in the order of their names' SHA-1 (``tools/bench_texts.py``) the recipe chose the best
at 3 minutes (2 x 256 1.934; 2 x 128 1.961, 2 x 512 2.205) and was 1.6% behind it at 15
(2 x 512 1.718, 2 x 256 1.691): within 2%, and no one threshold chooses both winners (4.5
estimated passes won at 3 minutes, 6.2 lost at 15). At 60 minutes on the book the epoch cap
ends every width's run; the recipe's 2 x 512 was the best of the three (2.077).

The estimate is made on this machine, for this model and text: the training step's
arithmetic (three times the forward pass's matrix products) over the rate TensorFlow's
matrix product reaches here at the model's input-projection shape, so a fast CPU gets the
long recipe (or a wider model) for a budget that a slow one spends on the short one. It
over-counts narrow models' epochs (their steps are further from the matrix product's
peak): the thresholds are on the estimate. It is made once, when a run starts; a resumed
run keeps what its start chose.
"""

from __future__ import annotations

import dataclasses
import time

from tfrnn.config import GATES, TrainConfig

#: Budgets estimated to buy the preset's model fewer epochs than this train with ``SHORT``.
SHORT_EPOCHS = 40
SHORT = {"dropout": 0.2, "schedule": "plateau", "lr": 0.005}
#: Widths a short budget chooses among (when --units is not given): the widest whose
#: budget buys at least ``SIZE_EPOCHS`` epochs, else the narrowest.
WIDTHS = (512, 256, 128)
SIZE_EPOCHS = 20
#: ... on a text of the book's training size (characters); a text of n characters asks
#: ``SIZE_EPOCHS * (SIZE_TEXT / n) ** SIZE_POWER`` passes (``size_epochs``): on a larger text
#: a wider model pays with fewer passes, as nothing repeats enough to overfit.
SIZE_TEXT = 161_081
SIZE_POWER = 0.75
#: A budget estimated to buy fewer passes over the training text than this is cut into
#: about this many epochs (``--epoch-chars``), each validated and a point to resume from.
BUDGET_EPOCHS = 10
#: A budget estimated to buy this many times the epoch cap is said to be cut short by the cap
#: (the estimate over-counts epochs by up to a third: tfrnn.recipe's docstring).
CAP_SAID = 1.5
#: What the budget chooses: a resumed run keeps its start's.
CHOSEN = ("units", *SHORT, "epoch_chars")


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


def size_epochs(train_chars: int | None = None) -> float:
    """The passes over a training text of ``train_chars`` characters (None: the book's) that a
    width must get for a short budget to choose it."""
    return SIZE_EPOCHS * (SIZE_TEXT / (train_chars or SIZE_TEXT)) ** SIZE_POWER


def for_budget(
    config: TrainConfig,
    vocab_size: int,
    steps_per_epoch: int,
    choose_size: bool = False,
    train_chars: int | None = None,
) -> tuple[TrainConfig, str | None]:
    """``config`` with the recipe its time budget calls for, and a line saying what was
    chosen (None when nothing changes). ``choose_size``: a short budget may also narrow the
    model (to the widest of ``WIDTHS`` that gets ``size_epochs(train_chars)`` passes)."""
    epochs = budget_epochs(config, vocab_size, steps_per_epoch)
    if epochs >= SHORT_EPOCHS:
        return config, _capped(config, epochs)
    chosen = dataclasses.replace(config, **SHORT)
    said = (
        f"recipe: {config.time_budget:g} minutes buy {config.name} about {_about(epochs)} epochs here, "
        f"fewer than {SHORT_EPOCHS}: dropout {SHORT['dropout']}, a learning rate of {SHORT['lr']:g} "
        "(no warm-up, halved when the validation stops improving)"
    )
    if choose_size:
        enough = size_epochs(train_chars)
        for width in (w for w in WIDTHS if w < config.units):
            if epochs >= enough:
                break
            chosen = dataclasses.replace(chosen, units=width)
            epochs = budget_epochs(chosen, vocab_size, steps_per_epoch)
        if chosen.units != config.units:
            said += (
                f", {chosen.units} units a layer (about {_about(epochs)} epochs; a width is chosen "
                f"where it gets {_about(enough)} on this text)"
            )
    return chosen, said + "; pass --units, --dropout, --lr or --schedule to choose yourself"


def epoch_for_budget(
    config: TrainConfig, vocab_size: int, steps_per_pass: int, train_chars: int
) -> tuple[TrainConfig, str | None]:
    """``config`` with epochs of ``--epoch-chars`` characters when its time budget buys
    fewer than ``BUDGET_EPOCHS`` passes over the ``train_chars`` of the training part (a
    large text), and a line saying so; else ``config`` as it is and None."""
    if config.epoch_chars:
        return config, None
    passes = budget_epochs(config, vocab_size, steps_per_pass)
    if passes >= BUDGET_EPOCHS:
        return config, None
    step = config.batch_size * config.num_steps
    chars = max(step, int(train_chars * passes / BUDGET_EPOCHS) // step * step)
    line = (
        f"epochs: {config.time_budget:g} minutes buy {config.name} about {_about(passes)} passes over "
        f"the {train_chars:,}-character training part here: an epoch is {chars:,} characters "
        f"(about {BUDGET_EPOCHS} epochs, each validated and a point to resume from); "
        "pass --epoch-chars to choose"
    )
    return dataclasses.replace(config, epoch_chars=chars), line


def _capped(config: TrainConfig, epochs: float) -> str | None:
    """A line saying that the epoch cap will end the run long before its budget (a long budget
    on a small text), or None."""
    if epochs < CAP_SAID * config.epochs:
        return None
    minutes = config.time_budget * config.epochs / epochs
    return (
        f"recipe: {config.time_budget:g} minutes buy {config.name} about {_about(epochs)} epochs here: "
        f"its cap of {config.epochs} epochs ends the run first, after about {minutes:.0f} minutes"
        + (" (the learning rate decays over the epochs)" if config.schedule == "cosine" else "")
        + "; pass --epochs to train for the whole budget"
    )


def _about(epochs: float) -> str:
    return f"{epochs:.0f}" if epochs >= 10 else f"{epochs:.1f}"


def started_with(config: TrainConfig, saved: dict) -> TrainConfig:
    """``config`` with what the budget chose when the interrupted run ``saved`` (its
    configuration) started, whatever the estimate says now."""
    return dataclasses.replace(config, **{k: saved[k] for k in CHOSEN if k in saved})
