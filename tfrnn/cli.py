"""The ``tfrnn`` command line: a thin layer over the library. ``fit`` is here; the other
commands are in ``cli_use`` (trained models) and ``cli_study`` (many models), all on the
group of ``cli_common``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tfrnn import cli_study, cli_use  # noqa: F401  (their commands register on the group)
from tfrnn.cli_common import (
    SEED,
    choice,
    cli,
    data_option,
    hw4,
    import_tensorflow_quietly,
    kernel_setting,
    make_strategy,
    strategy_option,
    train_option,
    vocab_option,
)
from tfrnn.config import (
    ADAMW_WEIGHT_DECAY,
    CELLS,
    DROPOUT_PLACES,
    OPTIMIZERS,
    PRECISIONS,
    PRESET_DEFAULTS,
    PRESETS,
    SCHEDULES,
    XLA_SETTINGS,
    TrainConfig,
    xla_setting,
)
from tfrnn.data import is_study_text
from tfrnn.distribute import STRATEGIES
from tfrnn.errors import TfrnnError
from tfrnn.recipe import SHORT, SHORT_EPOCHS, SIZE_EPOCHS, WIDTHS
from tfrnn.rundir import DEFAULT_ROOT, RunPaths

__all__ = ["cli", "fit", "main"]


@cli.command()
@choice(
    "--cell",
    CELLS,
    f"Recurrent cell: SimpleRNN, GRU or LSTM.  [{hw4('cell')}]",
)
@train_option("units", help=f"Hidden units per layer.  [{hw4('units')}]")
@train_option("layers", help=f"Stacked recurrent layers.  [{hw4('layers')}]")
@train_option(
    "dropout",
    help="Dropout rate, in [0, 1).  [hw4: 0.5 for stacks, else 0; book: "
    f"{PRESET_DEFAULTS['book']['dropout']}]",
)
@choice(
    "--dropout-at",
    DROPOUT_PLACES,
    "between: dropout between stacked layers only (the study); all: also on the input "
    f"embedding and the last layer's output.  [{hw4('dropout_at', 'between')}]",
)
@train_option(
    "weight_drop",
    help="LSTM: drop this fraction of the recurrent weights in training (DropConnect, one "
    f"mask per batch, as AWD-LSTM's WeightDrop).  [{hw4('weight_drop', 0)}]",
)
@train_option(
    "embedding",
    help="Learn an embedding of this size instead of the one-hot input of the study.  "
    f"[{hw4('embedding', 'none')}]",
)
@click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="hw4",
    show_default=True,
    help="hw4: the study's protocol (15,000 overlapping windows of the book's start). "
    "book: the whole text split 90/5/5 into train/validation/test, validation and test read "
    "as one sequence each with the state carried through; its defaults are the best model "
    "found for 15 minutes of training on 2 CPU cores.",
)
@vocab_option(
    "letters: the study's 28 tokens (a-z, space, <unk>; every run of other characters "
    "becomes one space, lower-cased). chars: every character of the training text as it is "
    "(case, punctuation, digits, line breaks, any script); rarer ones (see --min-count, "
    "--max-vocab) and ones never seen in training are read as <unk> and counted."
)
@train_option(
    "min_count",
    help="chars: keep a character seen at least this many times in the training part.  [default: 2]",
)
@train_option(
    "max_vocab",
    help="chars: at most this many tokens (<unk> and the most frequent characters).  [default: 1024]",
)
@train_option("epochs", help=f"Training epochs.  [{hw4('epochs')}]")
@train_option(
    "lr",
    help="Learning rate (the peak, with a schedule).  [hw4 SGD: 4 for GRU/LSTM, 1 for SimpleRNN, "
    "2 for stacks; Adam/AdamW: 0.003]",
)
@click.option(
    "--optimizer", type=click.Choice(OPTIMIZERS), default=None, help=f"Optimizer.  [{hw4('optimizer')}]"
)
@train_option(
    "weight_decay", help=f"Decoupled weight decay (biases spared).  [adamw: {ADAMW_WEIGHT_DECAY}, else 0]"
)
@train_option(
    "ema",
    metavar="MOMENTUM",
    help="book: keep an exponential moving average of the weights with this momentum (e.g. "
    f"0.99), and validate, keep and export the average.  [{hw4('ema', 0)}]",
)
@choice(
    "--schedule",
    SCHEDULES,
    "Learning rate: constant; cosine = warm-up over the first epoch, then cosine decay to 0 "
    "at the last epoch; plateau = halved whenever validation loss does not improve.  "
    f"[{hw4('schedule', 'constant')}]",
)
@train_option("batch_size", help=f"Sequences per batch.  [{hw4('batch_size')}]")
@train_option("num_steps", help=f"Characters per training sequence.  [{hw4('num_steps')}]")
@click.option(
    "--carry-state/--no-carry-state",
    default=None,
    help="book: carry the recurrent state from batch to batch, the training text read as "
    "batch-size parallel streams (truncated back-propagation through time), instead of "
    "independent windows.  [default: independent windows]",
)
@train_option("clip", help="Clip gradients to this global norm; 0 turns clipping off.  [default: 1.0]")
@train_option(
    "patience",
    help="Stop early when validation loss has not improved for this many epochs.  [default: never]",
)
@train_option(
    "time_budget",
    metavar="MINUTES",
    help="Stop after the epoch that brings training time past MINUTES. book: a budget that buys "
    f"the model fewer than {SHORT_EPOCHS} epochs on this machine trains with dropout "
    f"{SHORT['dropout']} and a learning rate of {SHORT['lr']:g}, halved when the validation stalls "
    "(unless --dropout, --lr or --schedule is given), and, unless --units is given, "
    f"the widest of {WIDTHS[0]}, "
    f"{', '.join(map(str, WIDTHS[1:]))} units that gets {SIZE_EPOCHS} passes over a text of the "
    "book's size, fewer over a larger one (4 at 1.4 MB, 0.8 at 11 MB).  "
    "[default: no limit; book: 14.5]",
)
@train_option(
    "epoch_chars",
    metavar="N",
    help="book: an epoch is N training characters (validation, the time budget's check and "
    "--resume's restart point come after each), the passes over the text read on from epoch "
    "to epoch; for texts too large for a pass to fit the budget.  [default: one pass]",
)
@click.option(
    "--init-from",
    type=click.Path(path_type=Path),
    default=None,
    metavar="RUN_DIR",
    help="Start from the weights of a finished run (fine-tuning, e.g. on another --data); "
    "the architecture is that run's.",
)
@click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Random seed: the same seed repeats a run."
)
@data_option(
    "The Time Machine, the copy that ships inside tfrnn (no download; SHA-1 checked), or $TFRNN_DATA if set"
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run folder to write.  [default: saved_models/NAME, e.g. saved_models/gru-32]",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder (only ever one tfrnn wrote).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last completed epoch.")
@click.option(
    "--tensorboard",
    type=click.Path(path_type=Path),
    default=None,
    help="Write TensorBoard logs to this folder.",
)
@strategy_option(STRATEGIES, "; multi-worker = several machines, each run with its own $TF_CONFIG")
@click.option(
    "--no-profile",
    is_flag=True,
    help="Skip the FLOPs counts and speed timings stored in metrics.json (saves seconds).",
)
@choice(
    "--xla",
    XLA_SETTINGS,
    "Compile the training step with XLA. auto: off where tfrnn's compiled recurrence "
    "trains the model (float32, batches of 256 or more, on a CPU with a C++ compiler: built "
    "once for the CPU, ~30 s; $TFRNN_KERNEL=off turns it off), else on a CPU for layers of "
    "at most 64 units, "
    "sequences of at most 64 steps and 20 epochs or more, where it is faster and pays back "
    "compiling (~10-20 s, once). on: XLA and Keras' loops.  "
    "[default: $TFRNN_XLA or auto]",
)
@choice(
    "--precision",
    PRECISIONS,
    "Keras dtype policy: mixed_bfloat16 computes in bfloat16 with float32 weights, logits "
    "and loss; measured 2.5-7.2x slower than float32 on a CPU without AMX (README "
    '"Training speed"): measure before using it. The SavedModel serves in float32 either '
    "way.  [default: float32]",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress line or per-epoch lines.")
def fit(
    preset,
    init_from,
    data,
    out,
    overwrite,
    resume,
    tensorboard,
    strategy,
    no_profile,
    xla,
    quiet,
    **options,
) -> None:
    """Train a model, report its perplexity and write its run folder.

    The folder (saved_models/NAME unless --out) holds model.keras, saved_model/ (for
    `tfrnn generate` and plain TensorFlow), vocab.json, history.csv, metrics.json (with
    parameters, FLOPs and speed) and curves.png. It appears only when training finished;
    an interrupted run is continued with the same command plus --resume. The book preset
    keeps the weights of its best validation epoch.

    \b
    Examples:
      tfrnn fit --cell lstm --units 128
      tfrnn fit --cell gru --units 32 --layers 3 --epochs 10
      tfrnn fit --preset book                       # the best whole-book model for ~15 min
      tfrnn fit --preset book --cell lstm --units 256 --embedding 64 --time-budget 5
      tfrnn fit --preset book --init-from saved_models/lstm-2x512-book --data my.txt --epochs 5
      tfrnn fit --preset book --data tfds:tiny_shakespeare   # its own train/validation/test
      tfrnn fit --preset book --data src/ --data notes.txt    # every text file, one document each
      tfrnn fit --preset book --data big.txt --epoch-chars 2000000 --time-budget 15
    """
    if init_from is not None:
        import_tensorflow_quietly()  # tfrnn.experiment imports it
        from tfrnn.experiment import config_from_run

        config = config_from_run(init_from, preset, is_study_text(data), options)
    else:
        config = TrainConfig.resolve(preset, study_text=is_study_text(data), **options)
    given = {k for k, v in options.items() if v is not None}  # what the user chose
    xla = xla_setting(xla)  # a bad $TFRNN_XLA fails here, before anything is written
    kernel_setting(quiet)
    if init_from is None and strategy != "multi-worker":  # workers must not choose apart
        config, data = _fitted_to_budget(config, given, data, out, resume)
    paths = RunPaths(out if out is not None else DEFAULT_ROOT / config.name)
    paths.check(overwrite=overwrite, resume=resume, held_elsewhere=strategy != "multi-worker")
    if tensorboard is not None and tensorboard.exists() and not tensorboard.is_dir():
        raise TfrnnError(f"--tensorboard {tensorboard} is a file, not a folder")
    import_tensorflow_quietly()
    from tfrnn.experiment import interrupted, result_lines, run_training, start_line

    strategy = make_strategy(strategy)
    click.echo(start_line(config))
    try:
        m = run_training(
            config,
            paths,
            data=data,
            resume=resume,
            overwrite=overwrite,
            tensorboard=tensorboard,
            verbose=0 if quiet else (1 if sys.stdout.isatty() else 2),  # 2: one line per epoch
            log=click.echo,
            profile=not no_profile,
            strategy=strategy,
            xla=xla,
        )
    except KeyboardInterrupt:
        raise interrupted(paths) from None
    for line in result_lines(m, paths.final):
        click.echo(line)


def _fitted_to_budget(config: TrainConfig, given: set, data, out: Path | None, resume: bool) -> tuple:
    """The book preset's recipe follows its time budget (``tfrnn.recipe``) unless the user
    chose it (``given`` names the options given); the config and the data to train on (the
    text already read, when the estimate read it)."""
    recipe, choose_epoch = not set(SHORT) & given, "epoch_chars" not in given
    if config.preset != "book" or not config.time_budget or not (recipe or choose_epoch):
        return config, data
    import_tensorflow_quietly()  # the estimate times TensorFlow's matrix product
    from tfrnn.experiment import fit_to_budget

    return fit_to_budget(config, data, out, resume, "units" not in given, click.echo, recipe, choose_epoch)


def main() -> None:
    """Console-script entry point."""
    import tfrnn

    tfrnn.use_bfc_allocator()  # before TensorFlow starts
    cli(prog_name="tfrnn")
