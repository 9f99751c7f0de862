"""In-process text generation from a Keras model (greedy, as in the study)."""

from __future__ import annotations

import numpy as np

from tfrnn.data import Vocab
from tfrnn.study import PROMPTS


def prompt_ids(vocab: Vocab, prompt: str) -> np.ndarray:
    """Clean and encode a prompt; an empty one starts from a single space (neutral start)."""
    ids = vocab.encode(prompt)
    return ids if len(ids) else vocab.encode(" ")


def greedy_continuation(model, vocab: Vocab, prompt: str, num_chars: int = 20) -> str:
    """The ``num_chars`` characters the model writes after ``prompt``, arg-max each step.

    The model reads the prompt from a zero state, then each chosen character is appended
    and the extended sequence read again: the same as carrying the recurrent state.
    """
    import tensorflow as tf

    step = tf.function(
        lambda x: model(x, training=False)[:, -1, :],
        input_signature=[tf.TensorSpec([1, None], tf.int32)],
    )
    ids = list(prompt_ids(vocab, prompt))
    out = []
    for _ in range(num_chars):
        next_id = int(tf.argmax(step(tf.constant([ids], tf.int32)), axis=-1)[0])
        ids.append(next_id)
        out.append(next_id)
    return vocab.decode(out)


def study_continuations(model, vocab: Vocab, num_chars: int = 20) -> dict[str, str]:
    """Greedy continuations of the study's three prompts."""
    return {p: greedy_continuation(model, vocab, p, num_chars) for p in PROMPTS}
