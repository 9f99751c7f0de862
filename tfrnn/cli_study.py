"""`tfrnn` commands that study many models: profile, compare, tune."""

from __future__ import annotations

from pathlib import Path

import click

from tfrnn.cli_common import (
    COUNT,
    SEED,
    check_data,
    choice,
    cli,
    data_option,
    import_tensorflow_quietly,
    kernel_setting,
    make_strategy,
    ranged,
    strategy_option,
    train_option,
    vocab_option,
)
from tfrnn.config import CELLS, PRESET_DEFAULTS, PRESETS, TRAIN_RANGES, TrainConfig
from tfrnn.data import is_study_text
from tfrnn.rundir import RunPaths, exclusive
from tuner.search import TUNERS


@cli.command()
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option(
    "--cell",
    type=click.Choice(CELLS),
    default="gru",
    show_default=True,
    help="Cell to profile without training (ignored with RUN_DIR).",
)
@click.option("--units", type=COUNT, default=32, show_default=True, help="Hidden units per layer.")
@click.option("--layers", type=COUNT, default=1, show_default=True, help="Stacked recurrent layers.")
@click.option("--embedding", type=COUNT, default=None, help="Embedding size instead of one-hot input.")
@click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="hw4",
    show_default=True,
    help="Preset whose batch and sequence length size the training step.",
)
@click.option(
    "--vocab-size",
    type=ranged(TRAIN_RANGES["max_vocab"]),
    default=28,
    show_default=True,
    help="Tokens in the vocabulary (28: the study's letters; a chars vocabulary has its text's "
    "characters and <unk>). A RUN_DIR's own is used for a run.",
)
@click.option("--no-speed", is_flag=True, help="Skip the generation and scoring timings.")
def profile(run_dir, cell, units, layers, embedding, preset, vocab_size, no_speed) -> None:
    """Parameters, MACs, FLOPs (tf.profiler and analytic) and speed of a model.

    With RUN_DIR (a folder written by `tfrnn fit`) the figures of that run, training time
    included; without it, those of --cell/--units/--layers, no training needed.

    \b
    Examples:
      tfrnn profile --cell lstm --units 128
      tfrnn profile saved_models/gru-32
    """
    from tfrnn.memory import check_fits
    from tfrnn.rundir import read_run

    training = None
    if run_dir is not None:
        training, config = read_run(run_dir)
        vocab_size = training.get("vocabulary", {}).get("size", vocab_size)
    else:
        config = TrainConfig.resolve(preset, cell=cell, units=units, layers=layers, embedding=embedding)
    check_fits(config, vocab_size)
    import_tensorflow_quietly()
    from tfrnn import profile as prof

    if not (training or {}).get("profile"):
        from tfrnn.memory import parameter_count

        click.echo(
            f"profiling {config.name} ({parameter_count(config, vocab_size):,} parameters, "
            f"{vocab_size} tokens): builds and counts unrolled graphs, then times generation and "
            "scoring...",
            err=True,
        )
    figures = (training or {}).get("profile") or prof.profile_config(config, vocab_size).as_dict()
    speed = None if no_speed else (training or {}).get("speed") or prof.speed_of_config(config, vocab_size)
    rows = prof.report_rows(figures, speed, training)
    click.echo(f"{config.name}  ({config.preset} preset, batch {config.batch_size} x {config.num_steps})")
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    for name, value, how in rows:
        click.echo(f"  {name:<{width[0]}}  {value:>{width[1]}}  {how}")


@cli.command()
@click.option(
    "--grid",
    "grid_spec",
    default=None,
    help="'hw4' (the study's 14 models) or a TOML grid file.  [default: hw4 unless "
    "--cells/--units/--layers are given]",
)
@click.option("--cells", default=None, help="Comma-separated cells, e.g. gru,lstm.")
@click.option("--units", default=None, help="Comma-separated widths, e.g. 8,16,32.  [default: 32]")
@click.option("--layers", default=None, help="Comma-separated depths, e.g. 1,3.  [default: 1]")
@choice(
    "--preset",
    PRESETS,
    "Training preset of an options grid.  [default: hw4]",
)
@click.option("--epochs", type=COUNT, default=None, help="Override every model's epochs (a quick look).")
@data_option("The Time Machine")
@vocab_option("Every model's vocabulary (see `tfrnn fit --help`).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Report folder.  [default: reports/GRID]"
)
@strategy_option(("default", "mirrored"), ", for every model")
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch lines, only one line per model.")
def compare(grid_spec, cells, units, layers, preset, epochs, data, vocab, out, strategy, quiet) -> None:
    """Train a grid of models and write a report: tables, figures, CSV and JSON.

    The report folder holds report.md (tables per family with the study's figures beside
    tfrnn's, continuations, findings, figures), results.csv, results.json, PNG figures,
    and runs/ with every model's run folder. Run the same command again after an
    interruption: finished models are kept, the interrupted one resumes.

    \b
    Examples:
      tfrnn compare --grid hw4                       # the study, 50 epochs
      tfrnn compare --grid hw4 --epochs 5            # a quick look
      tfrnn compare --cells gru,lstm --units 8,16,32,64,128 --layers 1,3
      tfrnn compare --grid my_grid.toml
    """
    from tfrnn import compare as cmp

    check_data(data)  # a bad data source stops here, before anything is written
    kernel_setting(quiet)
    grid = cmp.choose_grid(
        grid_spec, cells, units, layers, preset, epochs, study_text=is_study_text(data), vocab=vocab
    )
    out = out if out is not None else Path("reports") / grid.name
    cmp.check_report_folder(out)
    click.get_current_context().with_resource(exclusive(cmp.lock_file(out), f"the report {out}"))
    import_tensorflow_quietly()
    click.echo(f"comparing {len(grid.configs)} models into {out}")
    rows, path = cmp.run_comparison(
        grid, out, data=data, verbose=0 if quiet else 2, log=click.echo, strategy=make_strategy(strategy)
    )
    click.echo(f"\n{'model':<12} {'perplexity':>10} {'params':>9} {'time':>8}")
    for r in rows:
        if r["status"] == "ok":
            click.echo(
                f"{r['model']:<12} {r['val_ppl']:>10.3f} {r['params_recurrent_study']:>9,} "
                f"{r['training_seconds']:>7.0f}s"
            )
        else:
            click.echo(f"{r['model']:<12} {'failed':>10}  {r['error']}")
    click.echo(f"report: {path}")


@cli.command()
@click.option(
    "--tuner",
    "tuner_kind",
    type=click.Choice(TUNERS),
    default="hyperband",
    show_default=True,
    help="Keras Tuner search algorithm.",
)
@click.option(
    "--max-trials",
    type=COUNT,
    default=20,
    show_default=True,
    help="Trials to run (bayesian, random; hyperband sizes its own rounds).",
)
@click.option(
    "--epochs",
    type=COUNT,
    default=10,
    show_default=True,
    help="Epochs per trial at most (early stopping may end a trial sooner).",
)
@click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="hw4",
    show_default=True,
    help="Data split and training defaults (batch size, sequence length).",
)
@click.option("--cells", default=None, help="Cells to try, e.g. gru,lstm.  [default: rnn,gru,lstm]")
@click.option("--layers", default=None, help="Depth range MIN-MAX.  [default: 1-5]")
@click.option("--units", default=None, help="Width range MIN-MAX, tried in powers of two.  [default: 8-256]")
@click.option("--dropout", default=None, help="Dropout range for stacks, MIN-MAX.  [default: 0-0.5]")
@click.option(
    "--optimizers",
    default=None,
    help="Optimizers to try, e.g. sgd,adam (each with its own log learning-rate range).  "
    "[default: sgd for hw4, adam for book]",
)
@click.option("--embeddings", default=None, help="Embedding sizes to try besides one-hot, e.g. 16,32.")
@click.option(
    "--space",
    "space_file",
    type=click.Path(path_type=Path),
    default=None,
    help="A TOML search-space file (keys: cells, layers, units, dropout, optimizers, "
    "embeddings); options narrow it further.",
)
@click.option(
    "--directory",
    type=click.Path(path_type=Path),
    default=Path("tuning"),
    show_default=True,
    help="Where Keras Tuner keeps its projects.",
)
@click.option(
    "--project",
    default="tfrnn",
    show_default=True,
    help="Project name: running the same project again resumes it.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start the project over instead of resuming it, and replace the retrained model's run "
    "folder (only ever a folder tfrnn wrote).",
)
@train_option(
    "time_budget",
    metavar="MINUTES",
    help="Stop each trial after the epoch that brings its training time past MINUTES.  [default: no limit]",
)
@click.option(
    "--final-epochs",
    type=COUNT,
    default=None,
    help="Epochs to retrain the best configuration for.  [default: --epochs]",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run folder of the retrained best model.  [default: saved_models/tuned-NAME]",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed of data and search.")
@data_option("The Time Machine")
@vocab_option("The vocabulary of every trial (see `tfrnn fit --help`).")
@click.option(
    "--chief",
    default=None,
    metavar="HOST:PORT",
    help="Run as the chief of a distributed search (serves trials to workers).",
)
@click.option(
    "--worker",
    default=None,
    metavar="HOST:PORT",
    help="Run as a worker of the chief at HOST:PORT (same --directory, shared).",
)
@click.option("--worker-id", default=None, help="This worker's unique name.  [default: host and pid]")
@strategy_option(("default", "mirrored"), ", for each trial and the retraining")
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch output.")
def tune(
    tuner_kind,
    max_trials,
    epochs,
    preset,
    cells,
    layers,
    units,
    dropout,
    optimizers,
    embeddings,
    space_file,
    directory,
    project,
    overwrite,
    time_budget,
    final_epochs,
    out,
    seed,
    data,
    vocab,
    chief,
    worker,
    worker_id,
    strategy,
    quiet,
) -> None:
    """Search depth, width, cell, dropout and learning rate with Keras Tuner.

    Objective: validation perplexity. Trials stop early when validation loss stalls.
    Running the same --project again resumes it (finished trials are kept). At the end
    the trial table is printed and saved (results.csv, results.json and
    val_ppl_vs_params.png in DIRECTORY/PROJECT), and the best configuration is retrained
    and written as a run folder that `tfrnn generate` can use.

    \b
    Examples:
      tfrnn tune --cells gru --layers 1-3 --units 32-256 --max-trials 10 --tuner random
      tfrnn tune --tuner hyperband --epochs 27
      tfrnn tune --chief 10.0.0.1:8000 ...   # on the chief; then on each worker:
      tfrnn tune --worker 10.0.0.1:8000 ...  # same options and a shared --directory
    """
    from tuner.search import check_project, configure_distribution, project_lock
    from tuner.space import space_from_options

    if optimizers is None and space_file is None:
        optimizers = PRESET_DEFAULTS[preset]["optimizer"]
    space = space_from_options(cells, layers, units, dropout, optimizers, embeddings, space_file)
    role = configure_distribution(chief, worker, worker_id)
    check_data(data)  # a bad data source stops here
    kernel_setting(quiet)
    tune_vocab = TrainConfig.resolve(preset, study_text=is_study_text(data), vocab=vocab).vocab
    if out is not None and role != "worker":  # the retrained model's folder, before the search
        RunPaths(out).check(overwrite=overwrite, resume=False)
    if role != "worker":  # the lock first: a project in use is not touched
        click.get_current_context().with_resource(project_lock(directory, project))
        check_project(directory, project, space, preset, overwrite, tune_vocab)
    import_tensorflow_quietly()
    from tuner.search import report_search, retrain_best, run_search

    # the strategy before any TensorFlow op: it may split the CPU
    common = dict(data=data, verbose=0 if quiet else 2, strategy=make_strategy(strategy))
    tuner = run_search(
        tuner_kind, space, preset, directory, project, max_trials, epochs, seed=seed, time_budget=time_budget,
        overwrite=overwrite and role != "worker", vocab=tune_vocab, **common,
    )  # fmt: skip
    if role == "worker":
        click.echo("worker done: the chief collects the results")
        return
    click.echo("\n".join(report_search(tuner, directory / project, tune_vocab)))
    m = retrain_best(
        tuner, preset, final_epochs or epochs, seed, out, log=click.echo, overwrite=overwrite, **common
    )
    click.echo(
        f"best: {m['name']} validation perplexity {m['final_val_perplexity']:.3f}; saved {m['run_dir']}"
    )
