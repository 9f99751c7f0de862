"""The progress line of long epochs: characters per second and the time budget left."""

from __future__ import annotations

import io
import types

import numpy as np

from tfrnn.progress import ProgressLine, clock


def _timer(budget_s=None, spent=0.0):
    return types.SimpleNamespace(budget=budget_s, spent=spent)


def test_the_line_says_the_rate_the_epochs_end_and_the_budget_left():
    line = ProgressLine(64 * 100, 1000, _timer(600.0, spent=120.0), terminal=False)
    line.on_epoch_begin(2)
    text = line.line(250, 50.0, {"perplexity": 3.14159})
    # 250 steps of 6,400 characters in 50 s; 750 steps left at 0.2 s; 600 - 120 - 50 s left
    assert text == (
        "epoch 3: 250/1,000 steps (25%), 32,000 chars/s, epoch ends in 2:30, "
        "budget 7:10 left, perplexity 3.142"
    )
    spent = ProgressLine(10, 10, _timer(60.0, spent=59.0), terminal=False)
    spent.on_epoch_begin(0)
    assert "budget spent: last epoch" in spent.line(5, 2.0)
    unbudgeted = ProgressLine(10, 10, _timer(), terminal=False)
    unbudgeted.on_epoch_begin(0)
    assert "budget" not in unbudgeted.line(5, 2.0)
    assert clock(3725) == "1:02:05" and clock(59.6) == "1:00"


def test_a_log_gets_whole_lines_and_a_terminal_one_line_rewritten_and_cleared():
    log, tty = io.StringIO(), io.StringIO()
    for stream, terminal in ((log, False), (tty, True)):
        progress = ProgressLine(100, 4, _timer(), terminal=terminal, stream=stream, interval=0.0)
        progress.on_epoch_begin(0)
        for step in range(4):
            progress.on_train_batch_end(step, {})
        progress.on_epoch_end(0)
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("epoch 1: 4/4 steps (100%)")
    assert "\r" not in log.getvalue() and "budget" not in log.getvalue()  # no budget: not named
    out = tty.getvalue()
    assert "\n" not in out and out.count("\repoch 1: ") == 4 and out.endswith("\r")
    assert out.rsplit("\r", 2)[-2].strip() == ""  # the last write blanks the line


def test_fit_writes_the_line_in_a_log_when_an_epoch_outlasts_the_interval(monkeypatch, capsys):
    import keras

    from tfrnn import progress

    # a clock that moves 100 s a step: every step is past the minute
    ticks = iter(np.arange(0, 10_000, 100.0))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(ticks)))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    line = ProgressLine(4, 3, _timer(), terminal=False)
    model.fit(np.zeros((6, 4)), np.zeros((6, 1)), batch_size=2, epochs=1, verbose=0, callbacks=[line])
    out = capsys.readouterr().out.splitlines()
    assert [o.split(",")[0] for o in out] == [
        "epoch 1: 1/3 steps (33%)",
        "epoch 1: 2/3 steps (67%)",
        "epoch 1: 3/3 steps (100%)",
    ]
