"""Errors that reach the user as one line (the CLI prints them without a traceback)."""

import math
import sys


class TfrnnError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""

    exit_code = 1


class DataError(TfrnnError):
    """The text to train on is missing, unreadable, too short or corrupt."""


class ConfigError(TfrnnError):
    """A training option is out of range or inconsistent."""


class TrainingDiverged(TfrnnError):
    """The loss became NaN or infinite during training."""


class Interrupted(TfrnnError):
    """The user interrupted a long job (Ctrl-C); what was finished is kept."""

    exit_code = 130


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """``exc``'s message on one line, cut at ``limit`` characters; its type's name if it has
    none. (TensorFlow's errors keep their bare message in ``.message``.)"""
    message = getattr(exc, "message", None)
    text = " ".join(str(message if isinstance(message, str) and message else exc).split())
    return text[:limit] or type(exc).__name__


def diverged(loss: float) -> str | None:
    """What a mean cross-entropy says of a diverged training (not finite, or a perplexity
    past the largest float), or None when it is a number to go on with."""
    if not math.isfinite(loss):
        return f"loss became {loss}"
    return "perplexity became inf" if loss > math.log(sys.float_info.max) else None
