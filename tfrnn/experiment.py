"""One whole run: data, model, training, evaluation, and the finished run folder."""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path

from tfrnn.config import TrainConfig, with_defaults
from tfrnn.data import Corpus, book_steps_per_epoch, eval_batch_size, make_splits
from tfrnn.documents import skipped_line
from tfrnn.errors import ConfigError, TfrnnError, TrainingDiverged, one_line
from tfrnn.generate import study_continuations
from tfrnn.measure import peak_rss_or_none
from tfrnn.memory import check_fits
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


def stop_reason(config: TrainConfig, history: list[dict]) -> str:
    """Why training ended: "epochs", "time budget" or "early stopping"."""
    if len(history) >= config.epochs:
        return "epochs"
    if config.time_budget and sum(r["epoch_seconds"] for r in history) >= 60 * config.time_budget:
        return "time budget"
    return "early stopping"


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
        "stopped_by": stop_reason(config, history),
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
    data: str | Path | Corpus | None = None,
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
    ``xla``: see ``tfrnn.train.use_xla``. ``data``: a text's path or TFDS name (None: the
    book), or the ``Corpus`` already read for ``config``.
    """
    from tfrnn.distribute import is_chief

    if strategy is not None and not is_chief(strategy):
        return _train_as_worker(config, paths, data, strategy, verbose, overwrite, resume, xla)
    check_init_from(config)
    paths.check(overwrite=overwrite, resume=resume)
    with paths.lock():
        paths.check(overwrite=overwrite, resume=resume)  # again, now that no one else can change it
        run = prepare(config, data, log)
        return _train(run, paths, resume, tensorboard, verbose, callbacks, profile, strategy, xla, log)


def _train(run, paths, resume, tensorboard, verbose, callbacks, profile, strategy, xla, log) -> dict:
    """``run_training``'s work, with the run held by this process: its stages in order."""
    config = run.config
    if resume and paths.completed_epochs() > config.epochs:
        raise ConfigError(
            f"the interrupted run in {paths.partial} already completed {paths.completed_epochs()} "
            f"epochs: resume it with --epochs {paths.completed_epochs()} or more"
        )
    if paths.begin(run_identity(config, run.corpus), resume=resume):
        log(f"resuming the interrupted run in {paths.partial}")
    train_stage(run, paths, tensorboard, verbose, callbacks, strategy, xla)
    evaluate_stage(run, strategy, log)
    write_stage(run, paths.partial, profile, log)
    paths.commit()
    return run.metrics


@dataclass
class Run:
    """What one run's stages hand each other: data → model → fit → evaluate → export."""

    config: TrainConfig
    corpus: Corpus
    splits: object
    initial_weights: list | None = None
    result: object = None  # tfrnn.train.FitResult
    history: list = dataclasses.field(default_factory=list)
    metrics: dict = dataclasses.field(default_factory=dict)


def prepare(config: TrainConfig, data, log=print) -> Run:
    """The data stage: the text as ids, its pipelines and the weights to start from, every
    check that can fail done before anything is written."""
    check_fits(config)  # a lower bound (the letters' 28 tokens), before the data's windows exist
    corpus, splits = load_data(config, data)
    check_fits(config, len(corpus.vocab))
    log(
        f"data: {corpus.source} ({len(corpus.ids):,} characters"
        + (" after cleaning" if corpus.vocab.kind == "letters" else "")
        + f"; vocabulary {corpus.vocab.describe()}); "
        + ", ".join(f"{k} {v:,} {splits.unit}" for k, v in splits.sizes.items())
    )
    for note in (unknown_line(corpus), skipped_line(corpus.skipped)):
        if note:
            log(note)
    return Run(config, corpus, splits, init_weights(config))


def train_stage(run: Run, paths: RunPaths, tensorboard, verbose, callbacks, strategy, xla) -> None:
    """The model and fit stages, in the partial folder; a failure keeps what can be resumed."""
    from tfrnn.train import fit

    try:
        run.result = fit(
            run.config,
            run.splits,
            len(run.corpus.vocab),
            paths.partial,
            tensorboard,
            verbose,
            callbacks,
            strategy,
            xla,
            initial_weights=run.initial_weights,
        )
    except TrainingDiverged:
        paths.discard()
        raise
    except (MemoryError, tf_errors()) as exc:  # out of memory, or any other TensorFlow failure
        raise training_failed(exc, paths) from None
    run.history = read_history(run.result.history_csv)


def evaluate_stage(run: Run, strategy=None, log=print) -> None:
    """The evaluation stage: the figures of ``metrics.json`` (carried-state validation and
    test for the book preset, continuations, parameters, bits per character)."""
    corpus, splits, model = run.corpus, run.splits, run.result.model
    extra = {
        "data": {
            "source": corpus.source,
            "characters": int(len(corpus.ids)),
            "sha1": corpus.fingerprint,
            splits.unit_key: splits.sizes,
            "unknown_characters": {k: sum(c.values()) for k, c in corpus.unknown.items()},
        },
        "vocabulary": corpus.vocab.as_dict(),
        "test_perplexity": None,
        "training_step": run.result.settings,
    }
    if splits.streams:
        extra.update(carried_figures(run.config, model, splits, len(corpus.vocab), log))
    extra["continuations"] = study_continuations(model, corpus.vocab)
    if strategy is not None:
        extra["strategy"] = {"name": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync}
    extra["peak_rss_mib"] = peak_rss_or_none()  # training and evaluation, this process
    metrics = summarize(run.config, run.history, parameter_counts(model), extra)
    metrics.update(extra)  # the one-stream best validation figure replaces the per-epoch one
    run.metrics = {**metrics, **bits_per_character(metrics)}


def write_stage(run: Run, work: Path, profile: bool = True, log=print) -> None:
    """The export, profile and report stage: every file of the run folder into ``work``."""
    from tfrnn.export import export_saved_model  # deferred: imports TensorFlow

    model, vocab = run.result.model, run.corpus.vocab
    model.save(work / "model.keras")
    saved = export_saved_model(model, vocab, work / SAVED_MODEL_DIR)
    if profile:
        import tensorflow as tf

        from tfrnn.profile import measure_speed, profile_config

        log("profiling (tf.profiler FLOPs, generation and scoring speed)...")
        run.metrics["profile"] = profile_config(run.config, len(vocab)).as_dict()
        run.metrics["speed"] = measure_speed(tf.saved_model.load(str(saved)))
    (work / "vocab.json").write_text(vocab.to_json(), encoding="utf-8")
    write_history(run.history, work / "history.csv")
    (work / "metrics.json").write_text(json.dumps(run.metrics, indent=2))
    plot_curves(run.history, work / "curves.png", f"{run.config.name} ({run.config.preset} preset)")


def bits_per_character(metrics: dict) -> dict:
    """Each perplexity of ``metrics`` as bits per character (log2): comparable across
    vocabularies, as perplexity is not."""
    import math

    keys = ("final_val_perplexity", "best_val_perplexity", "test_perplexity")
    return {
        k.replace("perplexity", "bits_per_character"): round(math.log2(metrics[k]), 6)
        for k in keys
        if isinstance(metrics.get(k), float) and math.isfinite(metrics[k]) and metrics[k] > 0
    }


def run_identity(config: TrainConfig, corpus) -> dict:
    """What a run is: its configuration and the text it trains on (``data_sha1``, the
    cleaned text's fingerprint). A run resumes, or counts as done, only when this matches."""
    return {**config.to_dict(), "data_sha1": corpus.fingerprint}


def tf_errors() -> type:
    """TensorFlow's error base class (imported only once TensorFlow is)."""
    import tensorflow as tf

    return tf.errors.OpError


def training_failed(exc: BaseException, paths: RunPaths) -> TfrnnError:
    """One line for a run TensorFlow stopped; its partial folder is kept only when it holds a
    completed epoch to resume from."""
    reason = one_line(exc, 200)
    kind = "out of memory" if isinstance(exc, MemoryError) or "OOM" in reason else type(exc).__name__
    done = paths.completed_epochs()
    if not done:
        paths.discard()
        return TfrnnError(f"training failed ({kind}: {reason}); nothing was kept")
    paths.record_failure(f"{kind}: {reason}")
    return TfrnnError(
        f"training failed ({kind}: {reason}); the {done} completed epoch(s) are kept in "
        f"{paths.partial}: fix the cause and run the same command with --resume"
    )


def carried_figures(config: TrainConfig, model, splits, vocab_size: int, log=print) -> dict:
    """Best-epoch validation and test perplexity, each part read as one sequence."""
    from tfrnn.evaluate import StreamScorer

    log("evaluating: validation and test parts, each read as one sequence...")
    scorer = StreamScorer(config, vocab_size, streams=1)
    scorer.model.set_weights(model.get_weights())
    return {
        "evaluation": "each part read as one sequence from a zero state, the recurrent state "
        "carried through (history.csv: the same with 8 parallel streams, each warmed up on the "
        "256 characters before it)",
        "best_val_perplexity": scorer.perplexity(splits.streams["val"]),
        "test_perplexity": scorer.perplexity(splits.streams["test"]),
    }


def init_weights(config: TrainConfig) -> list | None:
    """The weights of the run ``config.init_from`` names (None when it names none)."""
    if not config.init_from:
        return None
    import keras

    import tfrnn.train  # noqa: F401  (registers tfrnn's layers and metric)

    return keras.saving.load_model(Path(config.init_from) / "model.keras").get_weights()


#: The options that define a model's weights; ``--init-from`` takes them from its run.
ARCHITECTURE = ("cell", "units", "layers", "embedding", "vocab")


def architecture_of(run_dir: Path, given: dict) -> dict:
    """The architecture of the run in ``run_dir``; ``given`` options must agree with it."""
    from tfrnn.rundir import read_metrics

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir, what="--init-from")
    if not (run_dir / "model.keras").is_file():
        raise ConfigError(f"--init-from {run_dir} has no model.keras: not a finished tfrnn run")
    saved = {k: with_defaults(metrics["config"]).get(k) for k in ARCHITECTURE}
    clash = [
        f"--{k} {given[k]} vs {saved[k]}"
        for k in ARCHITECTURE
        if given.get(k) is not None and given[k] != saved[k]
    ]
    if clash:
        raise ConfigError(
            f"--init-from {run_dir} fixes the architecture, and these options differ from it: "
            f"{', '.join(clash)} (leave them out)"
        )
    return saved


def check_init_from(config: TrainConfig) -> None:
    """Refuse, before anything is written, to start ``config`` from a run whose weights do
    not fit its model (another architecture, or a one-hot model under an embedding preset)."""
    if not config.init_from:
        return
    saved = architecture_of(Path(config.init_from), {})
    mine = {k: getattr(config, k) for k in ARCHITECTURE}
    if saved != mine:
        what = ", ".join(f"{k} {saved[k]} vs {mine[k]}" for k in ARCHITECTURE if saved[k] != mine[k])
        hint = (
            f" (that run reads one-hot characters, as the hw4 preset's models do; the "
            f"{config.preset} preset's embed them: fine-tune it with --preset hw4)"
            if saved["embedding"] is None
            else ""
        )
        raise ConfigError(
            f"--init-from {config.init_from} has another architecture than this run ({what}){hint}"
        )


def load_corpus(config: TrainConfig, data: str | Path | Corpus | None) -> Corpus:
    """``data`` as ids of ``config``'s vocabulary: built from the text's training part, or
    the vocabulary of the run ``--init-from`` names (its new characters read as ``<unk>``).
    A ``Corpus`` already read for ``config`` (``fit_to_budget``'s) is taken as it is."""
    if isinstance(data, Corpus):
        return data
    vocab = config.vocab
    if config.init_from:
        vocab = run_vocab(Path(config.init_from))
    return Corpus.load(data, vocab, config.preset, config.num_steps, config.min_count, config.max_vocab)


def fit_to_budget(
    config: TrainConfig,
    data,
    out: Path | None,
    resume: bool,
    choose_size: bool,
    log=print,
    recipe: bool = True,
    choose_epoch: bool = True,
) -> tuple[TrainConfig, str | Path | Corpus | None]:
    """A book-preset run's configuration with what its time budget calls for (``tfrnn.recipe``):
    ``recipe``: the short budget's recipe (``choose_size``: its width too); ``choose_epoch``:
    epochs shorter than a pass where the budget buys few passes. And ``data`` to train on:
    the ``Corpus`` read for the estimate, so that it is not read again. Resuming an
    interrupted run (in ``out``, or in the default folder of any width the budget may
    choose), it is what that run's start chose, and ``data`` as it was."""
    from tfrnn.recipe import WIDTHS, epoch_for_budget, for_budget, started_with
    from tfrnn.rundir import DEFAULT_ROOT

    if resume:
        widths = [config.units, *(w for w in WIDTHS if w < config.units and choose_size)]
        folders = (
            [out]
            if out is not None
            else [DEFAULT_ROOT / dataclasses.replace(config, units=w).name for w in widths]
        )
        for folder in folders:
            paths = RunPaths(folder)
            if paths.config_file.is_file():
                return started_with(config, json.loads(paths.config_file.read_text())), data
    corpus = load_corpus(config, data)
    n = len(corpus.book_parts(config.num_steps)["train"])
    steps = book_steps_per_epoch(n, config.num_steps, config.batch_size, config.carry_state)
    lines = []
    if recipe:
        config, line = for_budget(config, len(corpus.vocab), steps, choose_size, n)
        lines.append(line)
    if choose_epoch:
        config, line = epoch_for_budget(config, len(corpus.vocab), steps, n)
        lines.append(line)
    for line in filter(None, lines):
        log(line)
    return config, corpus


def run_vocab(run_dir: Path):
    """The vocabulary a finished run was trained with (``vocab.json``)."""
    from tfrnn.vocab import Vocab

    try:
        return Vocab.from_json((Path(run_dir) / "vocab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError, TfrnnError):
        raise TfrnnError(f"{run_dir}/vocab.json cannot be read: the run folder is damaged") from None


def unknown_line(corpus: Corpus) -> str | None:
    """One line saying which characters the vocabulary did not keep as they are, or None."""
    from tfrnn.vocab import shown

    if not corpus.unknown_total:
        return None
    if corpus.vocab.kind == "letters":
        chars = corpus.unknown["all"]
        return (
            f"note: {sum(chars.values()):,} letters outside a-z became spaces under the letters "
            f"vocabulary ({shown(chars)}); --vocab chars keeps every character"
        )
    parts = [
        f"{where} {sum(c.values()):,} ({shown(c, 6)})"
        for where, c in (("training part", corpus.unknown["train"]), ("the rest", corpus.unknown["rest"]))
        if c
    ]
    return f"note: characters read as <unk>: {'; '.join(parts)}"


def load_data(config: TrainConfig, data: str | Path | Corpus | None):
    """The corpus and ``config``'s pipelines, seeded first (shuffle seeds use the global seed)."""
    corpus = load_corpus(config, data)
    if config.seed is not None:
        import keras

        keras.utils.set_random_seed(config.seed)
    eval_batch = eval_batch_size(
        config.batch_size, config.num_steps, max(config.units, config.embedding or 0)
    )
    return corpus, make_splits(
        corpus,
        config.preset,
        config.num_steps,
        config.batch_size,
        config.seed,
        eval_batch,
        config.carry_state,
        config.epoch_chars,
    )


def worker_dir(paths: RunPaths, strategy) -> Path:
    """Where a non-chief worker keeps its training state: beside the run, one per task, so
    an interrupted cluster resumes every worker at the chief's epoch."""
    task = strategy.cluster_resolver.task_id
    return paths.final.parent / f".{paths.final.name}.worker-{task}"


def _train_as_worker(config, paths, data, strategy, verbose, overwrite, resume, xla) -> dict:
    """A non-chief worker's share: the same checks and training; its backup is kept beside
    the run until training ends."""
    import shutil

    from tfrnn.train import fit

    paths.check(overwrite=overwrite, resume=resume, held_elsewhere=False)  # fail together with the chief
    work = worker_dir(paths, strategy)
    check_fits(config)
    corpus, splits = load_data(config, data)
    check_fits(config, len(corpus.vocab))
    if work.exists() and not resume:
        shutil.rmtree(work)
    result = fit(
        config, splits, len(corpus.vocab), work, None, verbose, None, strategy, xla, init_weights(config)
    )
    history = read_history(result.history_csv)
    shutil.rmtree(work, ignore_errors=True)
    return {"name": config.name, "worker": True, "final_val_perplexity": history[-1]["val_perplexity"]}


def config_from_run(init_from: Path, preset: str, study_text: bool, options: dict) -> TrainConfig:
    """The configuration of a run fine-tuned from ``init_from``: that run's architecture and
    vocabulary (given options must agree with them), checked before anything is written."""
    options = {**options, **architecture_of(init_from, options), "init_from": str(init_from)}
    config = TrainConfig.resolve(preset, study_text=study_text, **options)
    check_init_from(config)
    return config


def start_line(config: TrainConfig) -> str:
    """What ``tfrnn fit`` says as a run starts."""
    return (
        f"training {config.name}: {config.optimizer} lr {config.lr:g} ({config.schedule}), "
        f"{config.epochs} epochs, batch {config.batch_size} x {config.num_steps} steps"
        f"{' (state carried)' if config.carry_state else ''}, clip {config.clip or 'off'}, seed {config.seed}"
        f", {config.vocab} vocabulary"
        + (f", budget {config.time_budget:g} min" if config.time_budget else "")
        + (f", from {config.init_from}" if config.init_from else "")
    )


def interrupted(paths: RunPaths) -> TfrnnError:
    """The one line for a run interrupted by Ctrl-C; a partial folder without a completed
    epoch is removed (there is nothing to resume)."""
    from tfrnn.errors import Interrupted

    if paths.completed_epochs():
        return Interrupted(
            f"interrupted; completed epochs are kept in {paths.partial}: "
            "run the same command with --resume to continue"
        )
    paths.discard()
    return Interrupted("interrupted before the first epoch completed; nothing was kept")


def result_lines(m: dict, final: Path) -> list[str]:
    """What ``tfrnn fit`` says when a run has finished (or a multi-worker worker has)."""
    if m.get("worker"):
        return [
            f"worker done (validation perplexity {m['final_val_perplexity']:.3f}); "
            "the chief writes the run folder"
        ]
    p = m["parameters"]
    vocab = f"{m.get('vocabulary', {}).get('kind', 'letters')} vocabulary"
    if m["test_perplexity"] is not None:  # book: the best epoch's weights, parts read whole
        head = (
            f"\n{m['name']}: kept epoch {m['best_epoch']}: validation perplexity "
            f"{m['best_val_perplexity']:.3f}, test perplexity {m['test_perplexity']:.3f} "
            f"({m.get('test_bits_per_character', float('nan')):.3f} bits per character, {vocab}; "
            "each part read as one sequence, the state carried)"
        )
    else:
        head = (
            f"\n{m['name']}: validation perplexity {m['final_val_perplexity']:.3f} "
            f"(best {m['best_val_perplexity']:.3f} at epoch {m['best_epoch']}; "
            f"{m.get('final_val_bits_per_character', float('nan')):.3f} bits per character, {vocab})"
        )
    stopped = "" if m["stopped_by"] == "epochs" else f", stopped by the {m['stopped_by']}"
    lines = [
        head,
        f"trained {m['epochs_run']} epochs in {m['training_seconds']:.1f} s "
        f"({m['median_epoch_seconds']:.2f} s/epoch{stopped}); parameters {p['total']:,} "
        f"(recurrent: {p['recurrent_keras']:,} Keras, {p['recurrent_study']:,} study convention)",
    ]
    data, peak = m.get("data", {}), m.get("peak_rss_mib")
    if peak and data.get("characters"):
        lines.append(
            f"peak memory {peak:,.0f} MiB, for a text of {data['characters']:,} characters "
            f"({4 * data['characters'] / 2**20:,.0f} MiB as ids)"
        )
    lines += [f"  {prompt!r} -> {text!r}" for prompt, text in m["continuations"].items()]
    return [*lines, f"saved {final}"]
