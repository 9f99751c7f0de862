"""Running a sweep: Keras Tuner search (resumable, distributable), results table, plot, best run."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
from pathlib import Path

from tfrnn.config import POSITIVE_INT, env_seconds
from tfrnn.errors import ConfigError, TfrnnError
from tfrnn.rundir import refuse_foreign
from tuner.space import SearchSpace

TUNERS = ("hyperband", "bayesian", "random")
SPACE_FILE = "tfrnn_space.json"


def configure_distribution(chief: str | None, worker: str | None, worker_id: str | None) -> str | None:
    """Set Keras Tuner's chief/worker variables from ``--chief``/``--worker HOST:PORT``.

    Returns this process's role ("chief", "worker" or None). Keras Tuner itself reads
    ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``; a user
    may set those directly instead.
    """
    if chief and worker:
        raise ConfigError("give --chief or --worker, not both")
    address = chief or worker
    if address:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"expected HOST:PORT, got {address!r}")
        os.environ["KERASTUNER_ORACLE_IP"] = host
        os.environ["KERASTUNER_ORACLE_PORT"] = port
        os.environ["KERASTUNER_TUNER_ID"] = (
            "chief" if chief else (worker_id or f"tuner-{socket.gethostname()}-{os.getpid()}")
        )
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID")
    if tuner_id is None:
        return None
    if tuner_id != "chief":
        _wait_for_chief(
            os.environ.get("KERASTUNER_ORACLE_IP", ""), int(os.environ.get("KERASTUNER_ORACLE_PORT", "0"))
        )
    return "chief" if tuner_id == "chief" else "worker"


def chief_timeout() -> float:
    """Seconds a worker waits for its chief: ``$TFRNN_CHIEF_TIMEOUT`` (60)."""
    return env_seconds("TFRNN_CHIEF_TIMEOUT", 60)


def _wait_for_chief(host: str, port: int) -> None:
    """Fail in one line when no tuning chief answers at HOST:PORT within ``chief_timeout``.

    The whole handshake counts: something must accept the connection *and* speak gRPC (a
    plain TCP listener or a web server there never becomes ready).
    """
    import grpc

    timeout = chief_timeout()
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise TfrnnError(
            f"no tuning chief answers at {host}:{port} (waited {timeout:g} s; "
            "$TFRNN_CHIEF_TIMEOUT sets how long)"
        ) from None
    finally:
        channel.close()


def _atomic_save_json(path, obj) -> str:
    """Keras Tuner's ``utils.save_json``, but a local file is written beside itself and
    renamed into place: a search killed mid-save keeps the previous state whole (Keras
    Tuner truncates the file first, and a kill then leaves an empty tuner0.json or
    oracle.json that no later run can reload)."""
    text = json.dumps(obj)
    path = str(path)
    if "://" in path:  # gs:// and other tf.io.gfile schemes: Keras Tuner's own writer
        return _KT_SAVE_JSON(path, obj)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return text


_KT_SAVE_JSON = None


def atomic_tuner_state() -> None:
    """Make Keras Tuner save its state files (tuner, oracle, trials) atomically."""
    global _KT_SAVE_JSON
    from keras_tuner.src import utils

    if utils.save_json is not _atomic_save_json:
        _KT_SAVE_JSON = utils.save_json
        utils.save_json = _atomic_save_json


def make_tuner(
    kind: str,
    hypermodel,
    directory: Path,
    project: str,
    max_trials: int,
    epochs: int,
    overwrite: bool,
    seed: int | None,
    strategy=None,
):
    """The Keras Tuner of ``kind``; objective: validation loss (perplexity = exp of it).

    With a ``tf.distribute`` ``strategy`` every trial's model is built in its scope.
    """
    import keras_tuner as kt

    atomic_tuner_state()
    if kind not in TUNERS:
        raise ConfigError(f"unknown tuner {kind!r}: choose one of {', '.join(TUNERS)}")
    POSITIVE_INT.check("--max-trials", max_trials)
    common = dict(
        objective=kt.Objective("val_loss", "min"),
        directory=str(directory),
        project_name=project,
        distribution_strategy=strategy,
        overwrite=overwrite,
        seed=seed,
    )
    if os.environ.get("KERASTUNER_TUNER_ID"):
        # Distributed: Keras Tuner's oracle raises after 3 consecutive failed trials, which
        # stops the worker that reported the third while the chief waits for it forever.
        # Record every failure instead; the search ends when its trials are used up.
        common["max_consecutive_failed_trials"] = 10**9
    if kind == "hyperband":
        # Hyperband sets each trial's epochs itself (up to max_epochs); max_trials does not apply.
        return kt.Hyperband(hypermodel, max_epochs=epochs, factor=3, **common)
    cls = kt.BayesianOptimization if kind == "bayesian" else kt.RandomSearch
    return cls(hypermodel, max_trials=max_trials, **common)


def run_search(
    kind: str,
    space: SearchSpace,
    preset: str,
    directory: Path,
    project: str,
    max_trials: int,
    epochs: int,
    *,
    data=None,
    seed: int | None = 0,
    time_budget: float | None = None,
    overwrite: bool = False,
    strategy=None,
    verbose: int | str = 2,
    on_trial_end=None,
    vocab: str | None = None,
    study_text: bool = True,
):
    """Run (or resume) a search of ``space`` in ``directory/project``: the data, the
    hypermodel, the tuner of ``kind`` and its search. Returns the tuner; its ``tfrnn_vocab``
    names the one vocabulary every trial uses (``vocab``, else the preset's for the text).

    ``on_trial_end(trial)``, if given, is called after Keras Tuner has recorded each trial.
    """
    from tfrnn.config import TrainConfig
    from tfrnn.experiment import load_data
    from tuner.hypermodel import CharLMHyperModel

    # the validation batches are sized for the widest model of the search
    widest = max([*space.unit_choices, *space.embeddings])
    base = TrainConfig.resolve(
        preset, study_text=study_text, epochs=epochs, seed=seed, units=widest, vocab=vocab
    )
    corpus, splits = load_data(base, data)
    hypermodel = CharLMHyperModel(
        space,
        preset,
        splits,
        len(corpus.vocab),
        epochs=epochs,
        seed=seed,
        time_budget=time_budget,
        vocab=base.vocab,
    )
    tuner = make_tuner(kind, hypermodel, directory, project, max_trials, epochs, overwrite, seed, strategy)
    tuner.tfrnn_vocab = base.vocab
    if on_trial_end is not None:
        recorded = tuner.on_trial_end

        def after_each_trial(trial):
            recorded(trial)
            on_trial_end(trial)

        tuner.on_trial_end = after_each_trial
    tuner.search(splits.train, validation_data=splits.val, epochs=epochs, verbose=verbose)
    return tuner


def retrain_best(
    tuner, preset: str, epochs: int, seed: int | None, out: Path | None, log=print, **run_options
) -> dict:
    """Retrain the search's best configuration for ``epochs`` into ``out`` (default
    ``saved_models/tuned-NAME``) as a run folder; returns its metrics."""
    from tfrnn.experiment import run_training
    from tfrnn.rundir import DEFAULT_ROOT, RunPaths
    from tuner.hypermodel import config_from_values

    best = tuner.oracle.get_best_trials(1)
    if not best:
        raise TfrnnError("no trial completed: nothing to retrain")
    vocab = getattr(tuner, "tfrnn_vocab", None)
    config = config_from_values(best[0].hyperparameters.values, preset, epochs=epochs, seed=seed, vocab=vocab)
    paths = RunPaths(out if out is not None else DEFAULT_ROOT / f"tuned-{config.name}")
    log(f"retraining the best configuration ({config.name}, lr {config.lr:.4g}) into {paths.final}")
    return run_training(config, paths, log=log, profile=False, **run_options) | {"run_dir": paths.final}


def project_lock(directory: Path, project: str):
    """The lock a search holds on its project while it runs (``tfrnn.rundir.exclusive``)."""
    from tfrnn.rundir import exclusive

    return exclusive(directory / f".{project}.lock", f"the tuning project {directory / project}")


def report_search(tuner, folder: Path, vocab: str) -> list[str]:
    """Write the search's results into ``folder`` (results.csv, results.json, the plot) and
    return the lines ``tfrnn tune`` prints: the vocabulary, the trial table, where they are."""
    rows = trial_rows(tuner)
    if not rows:
        raise TfrnnError("the search ran no trial")
    write_results(rows, folder)
    return [
        f"\nvocabulary: {vocab} (validation perplexity of that vocabulary)",
        *trial_table(rows),
        f"results: {folder}/results.csv, results.json, val_ppl_vs_params.png",
    ]


def trial_table(rows: list[dict]) -> list[str]:
    """The trial table's lines, as ``tfrnn tune`` prints it."""
    lines = [
        f"{'trial':>5} {'cell':<5} {'layers':>6} {'units':>5} {'dropout':>7} {'lr':>8} "
        f"{'params':>8} {'val ppl':>8} {'time':>7}  status"
    ]
    for r in rows:
        lines.append(
            f"{r['trial']:>5} {r['cell']:<5} {r['layers']:>6} {r['units']:>5} {r['dropout'] or 0:>7.2f} "
            f"{r['lr']:>8.4g} {r['params'] or 0:>8,} "
            f"{(format(r['val_perplexity'], '.3f') if r['val_perplexity'] else '-'):>8} "
            f"{(format(r['seconds'], '.0f') + 's') if r['seconds'] is not None else '-':>7}  {r['status']}"
        )
    return lines


#: What a tuning project holds: Keras Tuner's oracle, tuner state and trials, tfrnn's results.
_TUNING_FILES = {SPACE_FILE, "oracle.json", "results.csv", "results.json", "val_ppl_vs_params.png"}


def _written_by_tuning(name: str) -> bool:
    """Whether an entry of a tuning project is one Keras Tuner or tfrnn writes there."""
    return (
        name in _TUNING_FILES
        or name.startswith("trial_")
        or (name.startswith("tuner") and name.endswith(".json"))
    )


def check_project(
    directory: Path, project: str, space: SearchSpace, preset: str, overwrite: bool, vocab: str = "letters"
) -> None:
    """Refuse to resume a project made by a different search space, preset or vocabulary."""
    marker = directory / project / SPACE_FILE
    folder = directory / project
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not marker.is_file())):
        raise ConfigError(
            f"{folder} exists and is not a tfrnn tuning project: tfrnn resumes or replaces only "
            "projects it made; use another --project or --directory"
        )
    if overwrite and folder.is_dir():  # Keras Tuner's overwrite removes the folder whole
        refuse_foreign(folder, {p.name for p in folder.iterdir() if _written_by_tuning(p.name)}, "project")
    made = {"space": json.loads(space.to_json()), "preset": preset}
    if vocab != "letters":  # (projects made before the vocabulary was an option: letters)
        made["vocab"] = vocab
    current = json.dumps(made, sort_keys=True)
    if marker.is_file() and not overwrite and marker.read_text() != current:
        raise ConfigError(
            f"{directory / project} was made by a different search space, preset or vocabulary: "
            "use another --project, or --overwrite to start over"
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    if overwrite or not marker.is_file():
        marker.write_text(current)


def trial_rows(tuner) -> list[dict]:
    """One row per trial: hyperparameters, parameters, validation perplexity, time, status."""
    rows = []

    def order(trial):
        return (0, int(trial.trial_id), "") if trial.trial_id.isdigit() else (1, 0, trial.trial_id)

    for trial in sorted(tuner.oracle.trials.values(), key=order):
        values = trial.hyperparameters.values
        metrics = trial.metrics
        if metrics.exists("trial_seconds"):
            seconds = metrics.get_last_value("trial_seconds")
        elif metrics.exists("epoch_seconds"):  # a project searched before trial totals were kept
            seconds = sum(o.mean() for o in metrics.get_history("epoch_seconds"))
        else:
            seconds = None
        best = metrics.get_best_value("val_loss") if metrics.exists("val_loss") else None
        opt = values.get("optimizer")
        rows.append(
            {
                "trial": trial.trial_id,
                "status": str(trial.status).split(".")[-1].lower(),
                "cell": values.get("cell"),
                "layers": values.get("layers"),
                "units": values.get("units"),
                "dropout": values.get("dropout") if values.get("layers", 1) > 1 else 0.0,
                "optimizer": opt,
                "lr": values.get(f"lr_{opt}"),
                "embedding": values.get("embedding") or None,
                "params": int(metrics.get_last_value("params")) if metrics.exists("params") else None,
                "epochs": int(metrics.get_last_value("epochs_run"))
                if metrics.exists("epochs_run")
                else len(metrics.get_history("val_loss"))
                if metrics.exists("val_loss")
                else 0,
                "val_perplexity": math.exp(best) if best is not None and math.isfinite(best) else None,
                "seconds": round(seconds, 2) if seconds is not None else None,
            }
        )
    return rows


def write_results(rows: list[dict], out: Path) -> None:
    """results.csv, results.json and val_ppl_vs_params.png of a sweep."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from tfrnn.plots import CELL_COLOURS, figure

    with figure(
        out / "val_ppl_vs_params.png",
        "Sweep: validation perplexity against size",
        "parameters (log scale)",
        "best validation perplexity",
        xlog=True,
    ) as ax:
        for cell, colour in CELL_COLOURS.items():
            sel = [r for r in rows if r["cell"] == cell and r["val_perplexity"] and r["params"]]
            if sel:
                ax.scatter(
                    [r["params"] for r in sel], [r["val_perplexity"] for r in sel], color=colour, label=cell
                )
