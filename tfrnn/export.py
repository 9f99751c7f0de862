"""SavedModel export: string in, string out, loadable with nothing but TensorFlow.

The exported module carries the vocabulary (a lookup table) and, for the ``letters``
vocabulary, the study's cleaning rule; a ``chars`` model reads its input as Unicode
characters (``tf.strings.unicode_split``), as they are. It runs the recurrence cell by cell
with plain TensorFlow ops. It never calls the Keras
recurrent *layers*, which on a GPU may trace ``CudnnRNN`` ops that a CPU-only machine
cannot run (keras#18504): a model trained on a GPU loads and generates anywhere.

Signatures (every input may be a scalar or a vector of strings; outputs match its shape):

- ``generate(prompt, num_chars, temperature, seed)`` -> ``text`` (the prompt, cleaned for
  ``letters``, plus continuation), ``continuation``. Temperature <= 0 is greedy (arg-max),
  as in the study. ``<unk>`` is never written. An empty prompt starts from a single space
  (a ``chars`` vocabulary without one: a line break). ``num_chars`` is clamped to [0, 100,000].
- ``generate_top_k(prompt, num_chars, temperature, seed, top_k)`` -> the same, sampling
  only among the ``top_k`` likeliest characters (0: all of them).
- ``score(text)`` -> per text ``cross_entropy`` (mean nats per predicted character),
  ``perplexity`` and ``characters`` (how many were predicted), from a zero state.

The module also holds ``vocab_tokens`` and ``vocab_kind`` (string variables): what a
caller needs to say which characters of its input the vocabulary does not hold.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from tfrnn.models import serving_layers, step
from tfrnn.serving import MAX_CHARS
from tfrnn.vocab import CHARS, NON_LETTERS, UNK, Vocab

_STRING = tf.TensorSpec(None, tf.string)
_INT = tf.TensorSpec([], tf.int32)
_FLOAT = tf.TensorSpec([], tf.float32)


class TextModel(tf.Module):
    """A trained character model wrapped for serving: cleaning, lookup, in-graph loops."""

    def __init__(self, model: keras.Model, vocab: Vocab) -> None:
        super().__init__(name="tfrnn_text_model")
        self.input_layer, self.cells, self.output_layer = serving_layers(model)
        chars = [t for t in vocab.tokens if t != UNK]
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(chars), tf.constant([vocab.tokens.index(c) for c in chars], tf.int32)
            ),
            default_value=vocab.unk,
        )
        self.tokens = tf.constant(vocab.shown_tokens)
        self.vocab_size = len(vocab)
        self.chars = vocab.kind == CHARS
        self.unk = vocab.unk
        self.start = vocab.start_token
        self.start_text = vocab.tokens[vocab.start_token]
        self.vocab_tokens = tf.Variable(list(vocab.tokens), trainable=False, name="vocab_tokens")
        self.vocab_kind = tf.Variable(vocab.kind, trainable=False, name="vocab_kind")

    # -- building blocks -------------------------------------------------------------
    def _encode(self, text):
        """Map to ids (``letters``: cleaned first, the study's rule): the text as read, dense
        ``[B, T]`` ids and lengths ``[B]``."""
        if self.chars:
            cleaned = text
            chars = tf.strings.unicode_split(text, "UTF-8", errors="replace")
        else:
            cleaned = tf.strings.lower(tf.strings.regex_replace(text, NON_LETTERS, " "))
            chars = tf.strings.bytes_split(cleaned)
        ids = tf.ragged.map_flat_values(self.table.lookup, chars)
        return cleaned, ids.to_tensor(default_value=self.start), tf.cast(ids.row_lengths(), tf.int32)

    def _zero_states(self, batch):
        states = []
        for cell in self.cells:
            sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
            states.append([tf.zeros([batch, size]) for size in sizes])
        return states

    def _step(self, ids, states):
        """One character for every row: ids ``[B]`` -> logits ``[B, V]`` and new states."""
        return step(self.input_layer, self.cells, self.output_layer, ids, states)

    def _warm(self, ids, lengths):
        """Read each row's prompt from a zero state; returns its last logits and states."""
        batch = tf.shape(ids)[0]
        states = self._zero_states(batch)
        logits = tf.zeros([batch, self.vocab_size])
        for t in tf.range(tf.shape(ids)[1]):
            new_logits, new_states = self._step(ids[:, t], states)
            live = (t < lengths)[:, None]  # rows whose prompt is still being read
            logits = tf.where(live, new_logits, logits)
            states = tf.nest.map_structure(lambda n, o, live=live: tf.where(live, n, o), new_states, states)
        return logits, states

    def _generate(self, prompt, num_chars, temperature, seed, top_k):
        shape = tf.shape(prompt)
        prompt = tf.reshape(prompt, [-1])
        cleaned, ids, lengths = self._encode(prompt)
        cleaned = tf.where(tf.equal(lengths, 0), self.start_text, cleaned)  # empty: from a space
        ids = tf.pad(ids, [[0, 0], [0, 1]], constant_values=self.start)  # empty prompts; else masked
        lengths = tf.maximum(lengths, 1)
        logits, states = self._warm(ids, lengths)
        num_chars = tf.clip_by_value(num_chars, 0, MAX_CHARS)
        out = tf.TensorArray(tf.int32, size=num_chars)
        never = tf.one_hot(self.unk, self.vocab_size, on_value=float("-inf"), off_value=0.0)
        for i in tf.range(num_chars):
            logits = logits + never  # <unk> is no character to write
            if temperature > 0:
                scaled = logits / temperature
                if top_k > 0:
                    kth = tf.math.top_k(scaled, tf.minimum(top_k, self.vocab_size)).values[:, -1:]
                    scaled = tf.where(scaled < kth, tf.float32.min, scaled)
                nxt = tf.random.stateless_categorical(scaled, 1, seed=tf.stack([seed, i]), dtype=tf.int32)[
                    :, 0
                ]
            else:
                nxt = tf.argmax(logits, axis=-1, output_type=tf.int32)
            out = out.write(i, nxt)
            logits, states = self._step(nxt, states)
        batch = tf.shape(prompt)[0]
        chosen = tf.cond(  # [B, num_chars]; an empty TensorArray cannot be stacked
            num_chars > 0,
            lambda: tf.transpose(out.stack()),
            lambda: tf.zeros([batch, 0], tf.int32),
        )
        chosen = tf.reshape(chosen, [batch, num_chars])
        continuation = tf.strings.reduce_join(tf.gather(self.tokens, chosen), axis=-1)
        return {
            "text": tf.reshape(cleaned + continuation, shape),
            "continuation": tf.reshape(continuation, shape),
        }

    # -- serving signatures -------------------------------------------------------------
    @tf.function(input_signature=[_STRING, _INT, _FLOAT, _INT])
    def generate(self, prompt, num_chars, temperature, seed):
        """Prompt plus ``num_chars`` generated characters (temperature <= 0: greedy)."""
        return self._generate(prompt, num_chars, temperature, seed, tf.constant(0))

    @tf.function(input_signature=[_STRING, _INT, _FLOAT, _INT, _INT])
    def generate_top_k(self, prompt, num_chars, temperature, seed, top_k):
        """As ``generate``, sampling among the ``top_k`` likeliest characters only."""
        return self._generate(prompt, num_chars, temperature, seed, top_k)

    @tf.function(input_signature=[_STRING])
    def score(self, text):
        """Mean cross-entropy and perplexity of each text, read from a zero state."""
        shape = tf.shape(text)
        _, ids, lengths = self._encode(tf.reshape(text, [-1]))
        batch = tf.shape(ids)[0]
        states = self._zero_states(batch)
        total = tf.zeros([batch])
        for t in tf.range(tf.shape(ids)[1] - 1):
            logits, states = self._step(ids[:, t], states)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(ids[:, t + 1], logits)
            total += tf.where(t + 1 < lengths, ce, 0.0)
        count = tf.maximum(lengths - 1, 0)
        mean = total / tf.cast(tf.maximum(count, 1), tf.float32)
        mean = tf.where(count > 0, mean, float("nan"))  # nothing to predict
        return {
            "cross_entropy": tf.reshape(mean, shape),
            "perplexity": tf.reshape(tf.exp(mean), shape),
            "characters": tf.reshape(count, shape),
        }


def export_saved_model(model: keras.Model, vocab: Vocab, path: Path) -> Path:
    """Write ``model`` as a SavedModel with ``generate``, ``generate_top_k`` and ``score``."""
    module = TextModel(model, vocab)
    signatures = {
        "generate": module.generate.get_concrete_function(),
        "generate_top_k": module.generate_top_k.get_concrete_function(),
        "score": module.score.get_concrete_function(),
    }
    tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def export_run(run_dir: Path, fmt: str = "savedmodel") -> Path:
    """Re-export the SavedModel of a finished run folder from its ``model.keras``, or
    (``fmt="litert"``) write its LiteRT model (``tfrnn.export_lite``) beside it."""
    import shutil

    import tfrnn.train  # noqa: F401  (registers tfrnn's custom layer and metric)
    from tfrnn.errors import TfrnnError, one_line
    from tfrnn.serving import SAVED_MODEL_DIR

    run_dir = Path(run_dir)
    from tfrnn.rundir import written_by_tfrnn

    if not (run_dir / "model.keras").is_file() or not (run_dir / "vocab.json").is_file():
        raise TfrnnError(f"{run_dir} is not a tfrnn run folder (no model.keras and vocab.json)")
    if written_by_tfrnn(run_dir) is None:
        raise TfrnnError(f"{run_dir} is not a tfrnn run folder (no .tfrnn-run.json): nothing was written")
    try:
        model = keras.saving.load_model(run_dir / "model.keras")
        vocab = Vocab.from_json((run_dir / "vocab.json").read_text(encoding="utf-8"))
    except Exception as exc:  # a truncated zip, damaged JSON, ...: Keras raises many kinds
        raise TfrnnError(
            f"{run_dir}/model.keras cannot be loaded ({one_line(exc, 160)}): the run folder is damaged"
        ) from None
    if fmt == "litert":
        from tfrnn.export_lite import LITE_JSON, TFLITE_FILE, export_lite
        from tfrnn.rundir import MARKER, read_metrics, write_marker

        metrics = read_metrics(run_dir)
        facts = {
            "name": metrics.get("name"),
            "cell": metrics["config"].get("cell"),
            "units": metrics["config"].get("units"),
            "layers": metrics["config"].get("layers"),
            "parameters": metrics.get("parameters", {}).get("total"),
            "vocab": vocab.kind,
            "best_val_perplexity": metrics.get("best_val_perplexity"),
            "test_perplexity": metrics.get("test_perplexity"),
        }
        try:
            path = export_lite(model, vocab, run_dir, facts)
        except OSError as exc:
            raise TfrnnError(f"cannot write the LiteRT model into {run_dir}: {exc.strerror or exc}") from None
        ours = written_by_tfrnn(run_dir) or set()  # (a run of an earlier tfrnn gets its marker now)
        write_marker(run_dir, [*(ours - {MARKER}), TFLITE_FILE, LITE_JSON], name=run_dir.name)
        return path
    tmp = run_dir / f".{SAVED_MODEL_DIR}.tmp"
    final = run_dir / SAVED_MODEL_DIR
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        export_saved_model(model, vocab, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    except (OSError, tf.errors.OpError) as exc:
        reason = getattr(exc, "strerror", None) or one_line(exc, 160)
        raise TfrnnError(f"cannot write the SavedModel into {run_dir}: {reason}") from None
    return final
