"""Figures written into run folders."""

from __future__ import annotations

from pathlib import Path


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """Train and validation perplexity against epoch (log scale), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
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
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
