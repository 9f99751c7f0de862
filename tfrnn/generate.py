"""In-process text generation from a Keras model: the SavedModel's own in-graph loop.

``metrics.json``'s continuations, ``tfrnn generate`` and a loaded SavedModel all come from
``tfrnn.export.TextModel``: one generator, the state carried from character to character.
"""

from __future__ import annotations

from tfrnn.data import Vocab
from tfrnn.study import PROMPTS


def greedy_continuations(model, vocab: Vocab, prompts: list[str], num_chars: int = 20) -> list[str]:
    """The ``num_chars`` characters the model writes after each prompt, arg-max each step
    (as in the study), each prompt read from a zero state; an empty one starts from a space."""
    import tensorflow as tf

    from tfrnn.export import TextModel

    text_model = TextModel(model, vocab)  # held: its tf.function keeps only a weak reference
    out = text_model.generate(tf.constant(list(prompts)), num_chars, 0.0, 0)
    return [c.decode() for c in out["continuation"].numpy()]


def greedy_continuation(model, vocab: Vocab, prompt: str, num_chars: int = 20) -> str:
    """The ``num_chars`` characters the model writes after ``prompt`` (greedy)."""
    return greedy_continuations(model, vocab, [prompt], num_chars)[0]


def study_continuations(model, vocab: Vocab, num_chars: int = 20) -> dict[str, str]:
    """Greedy continuations of the study's three prompts."""
    return dict(zip(PROMPTS, greedy_continuations(model, vocab, list(PROMPTS), num_chars)))
