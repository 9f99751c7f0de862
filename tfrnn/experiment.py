"""One whole run: data, model, training, evaluation, and the finished run folder."""

from __future__ import annotations

import json
import math
import platform
import statistics
from pathlib import Path

from tfrnn.config import TrainConfig
from tfrnn.data import Corpus, eval_batch_size, make_splits
from tfrnn.errors import TrainingDiverged
from tfrnn.generate import study_continuations
from tfrnn.models import parameter_counts
from tfrnn.plots import plot_curves
from tfrnn.rundir import RunPaths, read_history, write_history
from tfrnn.serving import SAVED_MODEL_DIR


def environment() -> dict:
    """Library versions and devices, so figures can be compared across machines."""
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "machine": platform.machine(),
    }


def summarize(config: TrainConfig, history: list[dict], params: dict, extra: dict) -> dict:
    """The ``metrics.json`` of a finished run."""
    best = min(history, key=lambda row: row["val_perplexity"])
    seconds = [row["epoch_seconds"] for row in history]
    return {
        "name": config.name,
        "config": config.to_dict(),
        "parameters": {
            **params,
            "convention": (
                "total: every Keras weight; recurrent_keras: recurrent layers only, as Keras "
                "stores them; recurrent_study: recurrent layers with PyTorch's two bias "
                "vectors per layer, the reference study's convention"
            ),
        },
        "epochs_run": len(history),
        "training_seconds": round(sum(seconds), 3),
        "median_epoch_seconds": round(statistics.median(seconds[1:] or seconds), 4),
        "final_train_perplexity": history[-1]["perplexity"],
        "final_val_perplexity": history[-1]["val_perplexity"],
        "best_val_perplexity": best["val_perplexity"],
        "best_epoch": best["epoch"],
        **extra,
        "environment": environment(),
    }


def run_training(
    config: TrainConfig,
    paths: RunPaths,
    data: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    tensorboard: Path | None = None,
    verbose: int | str = "auto",
    log=print,
    callbacks: list | None = None,
    profile: bool = True,
    strategy=None,
    xla: str | None = None,
) -> dict:
    """Train ``config`` and write its run folder at ``paths.final``; returns the metrics.

    Every input is checked before anything is written. An interrupted run keeps its
    partial folder, so the same call with ``resume=True`` continues it. Under a
    multi-worker ``strategy`` every worker trains, and only the chief writes the folder.
    ``xla``: see ``tfrnn.train.use_xla``.
    """
    from tfrnn.distribute import is_chief

    if strategy is not None and not is_chief(strategy):
        return _train_as_worker(config, paths, data, strategy, verbose, overwrite, resume, xla)
    paths.check(overwrite=overwrite, resume=resume)
    corpus, splits = load_data(config, data)
    log(
        f"data: {corpus.source} ({len(corpus.ids):,} characters after cleaning); "
        + ", ".join(f"{k} {v:,} windows" for k, v in splits.sizes.items())
    )
    resumed = paths.begin(config.to_dict(), resume=resume)
    if resumed:
        log(f"resuming the interrupted run in {paths.partial}")
    from tfrnn.export import export_saved_model  # deferred: imports TensorFlow
    from tfrnn.profile import measure_speed, profile_config
    from tfrnn.train import fit

    try:
        result = fit(
            config, splits, len(corpus.vocab), paths.partial, tensorboard, verbose, callbacks, strategy, xla
        )
    except TrainingDiverged:
        paths.discard()
        raise
    model = result.model
    history = read_history(result.history_csv)
    extra = {
        "data": {"source": corpus.source, "characters": int(len(corpus.ids)), "windows": splits.sizes},
        "test_perplexity": None,
    }
    if splits.test is not None:
        loss = model.evaluate(splits.test, verbose=0, return_dict=True)["loss"]
        extra["test_perplexity"] = math.exp(loss)
    extra["continuations"] = study_continuations(model, corpus.vocab)
    if strategy is not None:
        extra["strategy"] = {
            "name": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
        }
    metrics = summarize(config, history, parameter_counts(model), extra)

    work = paths.partial
    model.save(work / "model.keras")
    saved = export_saved_model(model, corpus.vocab, work / SAVED_MODEL_DIR)
    if profile:
        log("profiling (tf.profiler FLOPs, generation and scoring speed)...")
        import tensorflow as tf

        metrics["profile"] = profile_config(config, len(corpus.vocab)).as_dict()
        metrics["speed"] = measure_speed(tf.saved_model.load(str(saved)))
    (work / "vocab.json").write_text(corpus.vocab.to_json())
    write_history(history, work / "history.csv")
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_curves(history, work / "curves.png", f"{config.name} ({config.preset} preset)")
    paths.commit()
    return metrics


def load_data(config: TrainConfig, data: str | Path | None):
    """The corpus and ``config``'s pipelines, seeded first (shuffle seeds use the global seed)."""
    corpus = Corpus.load(data)
    if config.seed is not None:
        import keras

        keras.utils.set_random_seed(config.seed)
    eval_batch = eval_batch_size(
        config.batch_size, config.num_steps, max(config.units, config.embedding or 0)
    )
    return corpus, make_splits(
        corpus, config.preset, config.num_steps, config.batch_size, config.seed, eval_batch
    )


def _train_as_worker(config, paths, data, strategy, verbose, overwrite, resume, xla) -> dict:
    """A non-chief worker's share: the same checks and training, nothing kept on disk."""
    import tempfile

    from tfrnn.train import fit

    paths.check(overwrite=overwrite, resume=resume)  # fail together with the chief
    corpus, splits = load_data(config, data)
    with tempfile.TemporaryDirectory(prefix="tfrnn-worker-") as tmp:
        result = fit(config, splits, len(corpus.vocab), Path(tmp), None, verbose, None, strategy, xla)
        history = read_history(result.history_csv)
        if splits.test is not None:  # evaluation is a collective: every worker takes part
            result.model.evaluate(splits.test, verbose=0)
    return {"name": config.name, "worker": True, "final_val_perplexity": history[-1]["val_perplexity"]}
