"""Scores of finished runs on a text: static, dynamic evaluation, and ensembles.

Every figure reads the text as one sequence, the recurrent state carried through it, and
is built from per-character log-probabilities, so several runs combine into an ensemble by
averaging their predicted probabilities (not their losses).

**Dynamic evaluation** (Krause et al., 2018, "Dynamic Evaluation of Neural Sequence
Models"): the text is read in segments of ``segment`` characters; each segment is scored
with the current weights, then the weights take one step on that segment's loss,

    w <- w - lr * g / (ms + epsilon) + decay * rate * (w0 - w),

``ms`` the root-mean-square gradient of each weight over windows of the training part,
``rate`` = ``ms`` over its mean across the weights (capped at 1 / ``decay``), ``w0`` the
trained weights. A text is so predicted from the weights adapted to what came before it in
the text, never to what it predicts. ``lr`` and ``decay`` are chosen on the run's
validation part (a walk along two grids, ``choose_settings``) and stored in the run folder
(``dynamic.json``); figures obtained this way are always reported as dynamic, apart from
the static ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfrnn.config import TrainConfig
from tfrnn.errors import TfrnnError

#: Characters per dynamic-evaluation segment (one weight update each).
SEGMENT = 20
#: Added to the gradient's RMS before dividing (Krause et al.'s default).
EPSILON = 2e-5
#: Learning rates searched on the validation part (at DECAY_FIRST), then decays (at the
#: best rate): each list walked from its start toward lower cross-entropy until it rises.
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
LR_START = 1e-4
DECAYS = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
DECAY_FIRST = 1e-3
#: Training windows (rows x SEGMENT characters, from a zero state) for the gradient's RMS.
STAT_BATCHES, STAT_ROWS = 12, 64
DYNAMIC_FILE = "dynamic.json"


@dataclass
class ScoredRun:
    """A finished run loaded for scoring: its folder, configuration, vocabulary and a
    stateful copy of its model (one stream, float32)."""

    path: Path
    metrics: dict
    config: TrainConfig
    vocab: object
    model: object

    @property
    def name(self) -> str:
        return self.path.name


def load_run(run_dir: Path) -> ScoredRun:
    """A run folder's model, read from its ``model.keras``, as one carried stream."""
    import keras

    import tfrnn.train  # noqa: F401  (registers tfrnn's layers)
    from tfrnn.experiment import run_vocab
    from tfrnn.models import build_model
    from tfrnn.recurrent import use_kernel
    from tfrnn.rundir import read_run

    run_dir = Path(run_dir)
    metrics, config = read_run(run_dir, "score")
    if not (run_dir / "model.keras").is_file():
        raise TfrnnError(f"{run_dir} has no model.keras: not a finished tfrnn run")
    vocab = run_vocab(run_dir)
    config = dataclasses.replace(config, precision="float32")
    trained = keras.saving.load_model(run_dir / "model.keras", compile=False)
    model = build_model(config, len(vocab), stateful_batch=1)
    model.set_weights(trained.get_weights())
    use_kernel(model, 1)  # never exported: tfrnn's compiled recurrence where it runs
    return ScoredRun(run_dir, metrics, config, vocab, model)


def run_parts(run: ScoredRun) -> dict[str, np.ndarray]:
    """The train/validation/test parts of a book-preset run's own text, as its ids (the
    text it names, or the book tfrnn ships when that is gone; its fingerprint checked)."""
    from tfrnn.data import Corpus

    if run.config.preset != "book":
        raise TfrnnError(
            f"{run.path} was trained with the {run.config.preset} preset, which keeps no "
            "validation and test parts of a whole text: pass --text-file (and no --dynamic)"
        )
    data = run.metrics.get("data") or {}
    source = data.get("source")
    if source and not str(source).startswith("tfds:") and not Path(source).is_file():
        source = None  # the book, if that is what it was: the fingerprint says
    try:
        corpus = Corpus.load(source, run.vocab, "book", run.config.num_steps)
    except TfrnnError as exc:
        raise TfrnnError(f"{run.path}'s text cannot be read ({exc}): pass --text-file") from None
    if data.get("sha1") and corpus.fingerprint != data["sha1"]:
        raise TfrnnError(
            f"{run.path} was trained on {data.get('source')}, which is gone or changed: "
            "pass --text-file to score another text"
        )
    return corpus.book_parts(run.config.num_steps)


def static_log_probs(run: ScoredRun, ids: np.ndarray) -> np.ndarray:
    """log p(ids[t + 1] | ids[: t + 1]) for every t, the state carried through ``ids`` (the
    same reading as the test perplexity in a run's metrics.json)."""
    from tfrnn.evaluate import StreamScorer

    return StreamScorer(run.config, len(run.vocab), streams=1, model=run.model).log_probs(ids)


def gradient_rms(run: ScoredRun, train_ids: np.ndarray, segment: int = SEGMENT, seed: int = 0) -> list:
    """Root-mean-square gradient of each trainable weight over STAT_BATCHES batches of
    STAT_ROWS training windows of ``segment`` characters (each from a zero state)."""
    import tensorflow as tf

    from tfrnn.models import build_model
    from tfrnn.recurrent import use_kernel

    model = build_model(run.config, len(run.vocab))
    model.set_weights(run.model.get_weights())
    use_kernel(model, STAT_ROWS)
    variables = model.trainable_variables

    @tf.function
    def squared_gradients(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=False)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return [tf.square(tf.convert_to_tensor(g)) for g in tape.gradient(loss, variables)]

    rng = np.random.default_rng(seed)
    train_ids = np.asarray(train_ids, np.int32)
    total = [np.zeros(v.shape, np.float64) for v in variables]
    for _ in range(STAT_BATCHES):
        starts = rng.integers(0, len(train_ids) - segment - 1, STAT_ROWS)
        windows = train_ids[starts[:, None] + np.arange(segment + 1)[None, :]]
        for acc, g in zip(total, squared_gradients(windows[:, :-1], windows[:, 1:])):
            acc += g.numpy()
    return [np.sqrt(t / STAT_BATCHES).astype(np.float32) for t in total]


class DynamicEvaluator:
    """Dynamic evaluation of one run (see the module's docstring)."""

    def __init__(self, run: ScoredRun, rms: list, segment: int = SEGMENT, epsilon: float = EPSILON) -> None:
        import tensorflow as tf

        self.run, self.segment = run, segment
        model = run.model
        variables = model.trainable_variables
        self.trained = [v.numpy() for v in variables]
        mean_rms = float(np.mean([r.mean() for r in rms]))
        rms_t = [tf.constant(r) for r in rms]
        rate_t = [tf.constant(r / mean_rms) for r in rms]
        trained_t = [tf.constant(w) for w in self.trained]
        self.lr = tf.Variable(0.0, trainable=False)
        self.decay = tf.Variable(0.0, trainable=False)

        @tf.function
        def step(x, y, w):
            with tf.GradientTape() as tape:
                logits = model(x, training=False)
                log_probs = tf.gather(tf.nn.log_softmax(logits), y, batch_dims=2)
                loss = -tf.reduce_sum(log_probs * w) / tf.maximum(tf.reduce_sum(w), 1.0)
            grads = tape.gradient(loss, variables)
            cap = 1.0 / tf.maximum(self.decay, 1e-12)
            for v, g, w0, r, rate in zip(variables, grads, trained_t, rms_t, rate_t):
                g = tf.convert_to_tensor(g)
                v.assign_add(self.decay * tf.minimum(rate, cap) * (w0 - v) - self.lr * g / (r + epsilon))
            return log_probs

        self._step = step

    def log_probs(self, ids: np.ndarray, lr: float, decay: float) -> np.ndarray:
        """Per-character log-probabilities of ``ids[1:]`` under dynamic evaluation from the
        trained weights (restored afterwards); ``lr`` 0 gives the static figures."""
        from tfrnn.models import reset_states

        self.lr.assign(lr)
        self.decay.assign(decay)
        ids = np.asarray(ids, np.int32)
        n, L = len(ids) - 1, self.segment
        padded = np.concatenate([ids, np.zeros(-n % L, np.int32)])
        weight = (np.arange(len(padded) - 1) < n).astype(np.float32)
        out = []
        reset_states(self.run.model)
        try:
            for t in range(0, n, L):
                x, y = padded[None, t : t + L], padded[None, t + 1 : t + L + 1]
                out.append(self._step(x, y, weight[None, t : t + L]).numpy()[0])
        finally:
            for v, w0 in zip(self.run.model.trainable_variables, self.trained):
                v.assign(w0)
            reset_states(self.run.model)
        return np.concatenate(out)[:n]


def descend(values: tuple[float, ...], start: float, cost: Callable[[float], float]) -> float:
    """The value of ``values`` (in order) a walk from ``start`` reaches: toward the
    neighbour of lower ``cost``, step by step while the cost falls."""
    i = values.index(start)
    for step in (1, -1):
        moved = False
        while 0 <= i + step < len(values) and cost(values[i + step]) < cost(values[i]):
            i, moved = i + step, True
        if moved:
            break
    return values[i]


def choose_settings(evaluator: DynamicEvaluator, val_ids: np.ndarray, log: Callable = print) -> dict:
    """``lr`` and ``decay`` that give the lowest validation cross-entropy: the learning
    rate at DECAY_FIRST, then the decay at that rate (each by ``descend``)."""
    tried: dict[tuple[float, float], float] = {}

    def ce(lr: float, decay: float) -> float:
        if (lr, decay) not in tried:
            tried[(lr, decay)] = float(-evaluator.log_probs(val_ids, lr, decay).mean())
            log(f"  lr {lr:g}, decay {decay:g}: validation {tried[(lr, decay)] / math.log(2):.4f} bits/char")
        return tried[(lr, decay)]

    lr = descend(LEARNING_RATES, LR_START, lambda r: ce(r, DECAY_FIRST))
    decay = descend(DECAYS, DECAY_FIRST, lambda d: ce(lr, d))
    static = float(-evaluator.log_probs(val_ids, 0.0, 0.0).mean())
    return {
        "segment": evaluator.segment,
        "epsilon": EPSILON,
        "lr": lr,
        "decay": decay,
        "validation_cross_entropy": {"static": static, "dynamic": tried[(lr, decay)]},
        "grid": [{"lr": r, "decay": d, "cross_entropy": c} for (r, d), c in tried.items()],
    }


def stored_settings(run: ScoredRun, segment: int) -> dict | None:
    """The dynamic-evaluation settings stored in the run folder for ``segment``, or None."""
    try:
        settings = json.loads((run.path / DYNAMIC_FILE).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(settings, dict) and settings.get("segment") == segment
    return settings if ok and all(isinstance(settings.get(k), float) for k in ("lr", "decay")) else None


def store_settings(run: ScoredRun, settings: dict) -> bool:
    """Write ``settings`` into the run folder and its list of what tfrnn wrote; False (and
    nothing written) where the folder carries no tfrnn marker or cannot be written."""
    from tfrnn.rundir import read_marker, write_marker

    marker = read_marker(run.path)
    if marker is None:
        return False
    identity = {k: v for k, v in marker.items() if k not in ("tfrnn", "id", "files")}
    try:
        tmp = run.path / f"{DYNAMIC_FILE}.tmp"
        tmp.write_text(json.dumps(settings, indent=2))
        tmp.replace(run.path / DYNAMIC_FILE)
        write_marker(run.path, [*marker["files"], DYNAMIC_FILE], **identity)
    except OSError:
        return False
    return True


def ensemble(log_probs: list[np.ndarray]) -> np.ndarray:
    """Per-character log-probability of the runs' averaged predicted probabilities."""
    stacked = np.stack(log_probs).astype(np.float64)
    top = stacked.max(axis=0)
    return top + np.log(np.exp(stacked - top).mean(axis=0))


def cross_entropy(log_probs: np.ndarray) -> float:
    """Mean nats per character."""
    return float(-np.mean(log_probs, dtype=np.float64))


def dynamic_log_probs(
    run: ScoredRun, ids: np.ndarray, parts: dict[str, np.ndarray], log: Callable = print
) -> tuple[np.ndarray, dict]:
    """Dynamic evaluation of ``run`` over ``ids`` with the settings stored in the run folder,
    or chosen on its validation part first (and stored); ``parts``: ``run_parts(run)``.
    The log-probabilities and settings."""
    log(f"{run.name}: gradient statistics over {STAT_BATCHES * STAT_ROWS} training windows...")
    evaluator = DynamicEvaluator(run, gradient_rms(run, parts["train"]))
    settings = stored_settings(run, SEGMENT)
    if settings is None:
        log(f"{run.name}: choosing lr and decay on the validation part ({len(parts['val']):,} characters)")
        settings = choose_settings(evaluator, parts["val"], log)
        if not store_settings(run, settings):
            log(f"{run.name}: the settings could not be stored in the run folder (not written by tfrnn)")
    else:
        log(f"{run.name}: lr {settings['lr']:g}, decay {settings['decay']:g} from {run.path / DYNAMIC_FILE}")
    return evaluator.log_probs(ids, settings["lr"], settings["decay"]), settings


def score_runs(
    paths: list[Path], text: str | None = None, dynamic: bool = False, log: Callable = print
) -> dict:
    """Cross-entropy (nats per predicted character) of each run, and of their ensemble when
    several, on ``text`` or (None) the test part of the runs' own text; with ``dynamic``
    also under dynamic evaluation, reported apart (``"dynamic"`` keys)."""
    runs = [load_run(p) for p in paths]
    vocab = runs[0].vocab
    other = [r.name for r in runs[1:] if r.vocab != vocab]
    if other:
        raise TfrnnError(
            f"{', '.join(other)} read another vocabulary than {runs[0].name}: an ensemble "
            "averages probabilities over one vocabulary"
        )
    parts = {}  # each run's own text, read once: its test part, and what --dynamic tunes on
    if text is None or dynamic:
        parts = {r.path: run_parts(r) for r in runs}
    if text is None:
        ids = parts[runs[0].path]["test"]
        if any(not np.array_equal(parts[r.path]["test"], ids) for r in runs[1:]):
            raise TfrnnError("the runs were trained on different texts: pass --text-file to score one")
    else:
        from tfrnn.serving import unknown_note

        note = unknown_note(vocab, [text], "text")
        if note:
            log(note)
        ids = vocab.encode(text)
    if len(ids) < 2:
        raise TfrnnError("the text has fewer than 2 characters: nothing to score")
    static = [static_log_probs(r, ids) for r in runs]
    rows = [{"run": str(r.path), "static": cross_entropy(lp)} for r, lp in zip(runs, static)]
    result = {"characters": len(ids) - 1, "vocabulary": f"{vocab.kind}, {len(vocab)} tokens", "runs": rows}
    adapted = []
    if dynamic:
        for run, row in zip(runs, rows):
            lp, settings = dynamic_log_probs(run, ids, parts[run.path], log)
            adapted.append(lp)
            chosen = {k: settings[k] for k in ("lr", "decay", "segment")}
            row.update(dynamic=cross_entropy(lp), settings=chosen)
    if len(runs) > 1:
        result["ensemble"] = {"static": cross_entropy(ensemble(static))}
        if dynamic:
            result["ensemble"]["dynamic"] = cross_entropy(ensemble(adapted))
    return result
