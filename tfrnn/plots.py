"""Figures: one helper that sets up, labels and saves a plot, and the run folder's curves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CELL_COLOURS = {"rnn": "tab:green", "gru": "tab:blue", "lstm": "tab:orange"}


@contextmanager
def figure(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    xlog: bool | int = False,
    ylog: bool = False,
    legend_size: int | None = None,
) -> Iterator:
    """Yield a matplotlib axis; on exit label it, add grid and legend, and save a PNG.

    Uses matplotlib's ``Figure`` directly (no pyplot, no backend switch): a notebook's
    backend is left as it is, and nothing stays open.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.add_subplot()
    yield ax
    if xlog:
        ax.set_xscale("log", base=10 if xlog is True else xlog)
    if ylog:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path)


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """Train and validation perplexity against epoch (log scale), saved as a PNG."""
    with figure(path, title, "epoch", "perplexity (log scale)", ylog=True) as ax:
        epochs = [row["epoch"] for row in history]
        ax.plot(epochs, [row["perplexity"] for row in history], marker=".", label="train")
        ax.plot(epochs, [row["val_perplexity"] for row in history], marker=".", label="validation")
        best = min(history, key=lambda row: row["val_perplexity"])
        ax.annotate(
            f"best val {best['val_perplexity']:.2f} (epoch {best['epoch']})",
            (best["epoch"], best["val_perplexity"]),
            textcoords="offset points",
            xytext=(-10, 12),
            ha="right",
            fontsize=9,
        )
