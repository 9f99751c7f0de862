"""A progress line during an epoch: how far it is, characters per second, when the epoch
ends and how much of the time budget is left.

On a terminal the line is rewritten in place a few times a second; in a log (standard
output not a terminal) a line is written once a minute, so an epoch of a large text says
how it goes without filling the log, and a short epoch writes none.
"""

from __future__ import annotations

import sys
import time

import keras


def clock(seconds: float) -> str:
    """Seconds as ``H:MM:SS`` (or ``M:SS`` under an hour)."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressLine(keras.callbacks.Callback):
    """Writes the progress line of each training epoch (see the module's docstring).

    ``chars_per_step``: characters predicted per training step (batch x sequence length);
    ``timer``: the run's ``tfrnn.train.EpochTimer``, whose clock the time budget runs on.
    """

    def __init__(
        self,
        chars_per_step: int,
        steps_per_epoch: int,
        timer,
        terminal: bool | None = None,
        stream=None,
        interval: float | None = None,
    ) -> None:
        super().__init__()
        self.chars_per_step, self.steps = chars_per_step, steps_per_epoch
        self.timer = timer
        self.stream = stream or sys.stdout
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.interval = interval if interval is not None else (0.5 if self.terminal else 60.0)
        self._width = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.start = epoch, time.perf_counter()
        self.last = self.start

    def line(self, done: int, elapsed: float, logs: dict | None = None) -> str:
        """The progress line after ``done`` steps and ``elapsed`` seconds of the epoch."""
        rate = done * self.chars_per_step / elapsed if elapsed > 0 else 0.0
        parts = [
            f"epoch {self.epoch + 1}: {done:,}/{self.steps:,} steps ({100 * done / self.steps:.0f}%)",
            f"{rate:,.0f} chars/s",
            f"epoch ends in {clock((self.steps - done) * elapsed / done)}" if done else "",
        ]
        budget = getattr(self.timer, "budget", None)
        if budget:
            left = budget - self.timer.spent - elapsed
            parts.append(f"budget {clock(left)} left" if left > 0 else "budget spent: last epoch")
        ppl = (logs or {}).get("perplexity")
        if isinstance(ppl, float):
            parts.append(f"perplexity {ppl:.3f}")
        return ", ".join(p for p in parts if p)

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if now - self.last < self.interval:
            return
        self.last = now
        text = self.line(min(batch + 1, self.steps), now - self.start, logs)
        if self.terminal:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        if self.terminal and self._width:  # cleared: Keras' epoch line is written in its place
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
