"""Using an exported SavedModel: find it, load it, generate and score (TensorFlow only)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from tfrnn.config import POSITIVE_INT, Range
from tfrnn.errors import TfrnnError

SAVED_MODEL_DIR = "saved_model"
MAX_CHARS = 100_000
#: What generation takes (checked here, shown by `tfrnn generate --help`).
CHARS = Range(0, MAX_CHARS, integer=True, rule=f"between 0 and {MAX_CHARS:,}")
TEMPERATURE = Range(0.0, rule=">= 0 (0 is greedy)")
TOP_K = Range(0, integer=True, rule=">= 0 (0: no limit)")
#: What `tfrnn score` says of a window or stride that is not a positive integer.
WINDOW_MESSAGE = "--window and --stride must be positive integers"


def resolve_saved_model(path: str | Path) -> Path:
    """The SavedModel folder of a run folder, or ``path`` itself if it is one."""
    path = Path(path)
    for candidate in (path, path / SAVED_MODEL_DIR):
        if (candidate / "saved_model.pb").is_file():
            return candidate
    if not path.exists():
        raise TfrnnError(f"{path} does not exist")
    if (path / "model.keras").is_file():
        raise TfrnnError(f"{path} has no SavedModel yet: run `tfrnn export {path}` first")
    raise TfrnnError(f"{path} is not a tfrnn run folder or SavedModel")


def load(path: str | Path):
    """Load the exported model of a run folder or SavedModel folder."""
    import tensorflow as tf

    saved = resolve_saved_model(path)
    try:
        loaded = tf.saved_model.load(str(saved))
    except (OSError, ValueError, tf.errors.OpError) as exc:  # truncated or partly deleted
        run = saved.parent if saved.name == SAVED_MODEL_DIR else saved
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise TfrnnError(
            f"the SavedModel in {saved} cannot be loaded ({reason}): rebuild it with `tfrnn export {run}`"
        ) from None
    if not all(hasattr(loaded, name) for name in ("generate", "generate_top_k", "score")):
        raise TfrnnError(f"{saved} is a SavedModel, but not one exported by tfrnn")
    return loaded


def vocab_of(loaded):
    """The vocabulary a loaded SavedModel carries (one exported before it carried one: the
    study's letters)."""
    from tfrnn.vocab import Vocab

    if not hasattr(loaded, "vocab_tokens"):
        return Vocab()
    tokens = tuple(t.decode("utf-8") for t in loaded.vocab_tokens.numpy())
    return Vocab(tokens, loaded.vocab_kind.numpy().decode())


def unknown_note(vocab, texts: list[str], what: str) -> str | None:
    """One line saying how many characters of ``texts`` the vocabulary does not hold, and
    which (the model still reads them: as ``<unk>``, or as spaces under ``letters``)."""
    from collections import Counter

    from tfrnn.vocab import shown

    chars = Counter()
    for text in texts:
        chars.update(vocab.unknown(text))
    if not chars:
        return None
    how = "read as spaces (letters vocabulary)" if vocab.kind == "letters" else "read as <unk>"
    count = sum(chars.values())
    what = f"{count:,} character(s) of the {what}"
    return f"note: {what} are not in the model's vocabulary, {how}: {shown(chars)}"


def generate(
    loaded, prompts: list[str], num_chars: int = 20, temperature: float = 0.0, seed: int = 0, top_k: int = 0
) -> list[str]:
    """Prompt plus continuation for each prompt (temperature 0: greedy)."""
    CHARS.check("--chars", num_chars)
    TEMPERATURE.check("--temperature", temperature)
    TOP_K.check("--top-k", top_k)
    out = loaded.generate_top_k(prompts, num_chars, float(temperature), seed, top_k)
    return [t.decode() for t in out["text"].numpy()]


def score(loaded, texts: list[str]) -> dict[str, list]:
    """Per-text mean cross-entropy (nats per character), perplexity and characters predicted."""
    out = loaded.score(texts)
    return {k: v.numpy().tolist() for k, v in out.items()}


def windows(text: str, window: int | None = None, stride: int | None = None) -> list[str]:
    """The texts ``tfrnn score`` reads: ``text`` whole, or its ``window + 1``-character windows
    every ``stride`` characters (defaults 32 and ``window``), each from a zero state."""
    if window is None and stride is None:
        texts = [text]
    else:
        window = 32 if window is None else window
        stride = window if stride is None else stride
        if not (POSITIVE_INT.holds(window) and POSITIVE_INT.holds(stride)):
            raise TfrnnError(WINDOW_MESSAGE)
        texts = [text[i : i + window + 1] for i in range(0, len(text) - window, stride)]
        if not texts:
            raise TfrnnError(f"the text is shorter than one window of {window + 1} characters")
    if len(text) < 2:
        raise TfrnnError("the text has fewer than 2 characters after cleaning: nothing to score")
    return texts


def score_texts(loaded, texts: list[str]) -> dict:
    """Cross-entropy (nats per predicted character) and perplexity over all ``texts``
    together: a mean over every predicted character, not over texts."""
    result = score(loaded, texts)
    total = sum(ce * n for ce, n in zip(result["cross_entropy"], result["characters"]) if n)
    count = sum(result["characters"])
    return {"characters": count, "cross_entropy": total / count, "perplexity": math.exp(total / count)}


def scoring_seconds(loaded, text: str, length: int, sample: int = 2_000) -> float:
    """About how long scoring ``length`` characters from one state takes (a timed sample,
    after a first short call that pays the one-time start-up: without it the estimate for
    2.9M characters was 414 s for a score that took 140 s)."""
    score(loaded, [text[:100]])
    started = time.perf_counter()
    score(loaded, [text[:sample]])
    return length * (time.perf_counter() - started) / min(sample, len(text))


def generation_seconds(loaded, num_chars: int, batch: int = 1, sample: int = 300) -> float:
    """About how long generating ``num_chars`` characters for ``batch`` prompts takes (a
    timed sample after a first call that pays the one-time start-up)."""
    loaded.generate(["x"] * batch, 20, 0.0, 0)
    started = time.perf_counter()
    loaded.generate(["x"] * batch, sample, 0.0, 0)
    return num_chars * (time.perf_counter() - started) / sample
