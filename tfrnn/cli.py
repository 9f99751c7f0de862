"""The ``tfrnn`` command line: a thin layer over the library."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tfrnn import serving
from tfrnn.config import (
    ADAMW_WEIGHT_DECAY,
    CELLS,
    DROPOUT_PLACES,
    OPTIMIZERS,
    POSITIVE_INT,
    PRECISIONS,
    PRESET_DEFAULTS,
    PRESETS,
    SCHEDULES,
    TRAIN_RANGES,
    VOCABS,
    XLA_SETTINGS,
    Range,
    TrainConfig,
    option_name,
    xla_setting,
)
from tfrnn.data import is_study_text
from tfrnn.distribute import STRATEGIES
from tfrnn.errors import TfrnnError
from tfrnn.rundir import DEFAULT_ROOT, RunPaths
from tfrnn.tfds_source import is_tfds


def import_tensorflow_quietly() -> None:
    """Import TensorFlow without its C++ start-up chatter, unless the user asked for it
    ($TF_CPP_MIN_LOG_LEVEL 0 or 1).

    The CUDA-stub lines are written to file descriptor 2 before TensorFlow's own logging
    is set up, so they are only hidden by pointing that descriptor away during the import.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") in ("0", "1"):  # the user asked for them
        import tensorflow  # noqa: F401

        return
    # 3, not 2: at 2 every CPU run printed two "E0000" lines that are not errors (cuInit
    # finding no GPU, oneDNN's int32 fallback). A real TensorFlow failure still reaches the
    # user: it is raised in Python with its message, which tfrnn prints in one line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def kernel_setting(quiet: bool) -> None:
    """Check $TFRNN_KERNEL (one line if it is not auto, on or off); -q silences the first build."""
    from tfrnn import kernel

    kernel.set_quiet(quiet)
    if kernel.setting() == "on":  # fail loudly now, before anything is written
        import_tensorflow_quietly()
        kernel.unavailable(kernel.MIN_BATCH)


class DataSource(click.ParamType):
    """``--data``: a text file's path, or ``tfds:NAME[/CONFIG][:SPLIT][#FEATURE]``."""

    name = "PATH|tfds:NAME"

    def convert(self, value, param, ctx):
        if isinstance(value, Path) or is_tfds(value):
            return value
        return Path(value)


DATA = DataSource()
DATA_HELP = (
    "A text file (UTF-8, or UTF-16/32 with a byte-order mark), or a TensorFlow Datasets text "
    "dataset as tfds:NAME[/CONFIG][:SPLIT]"
    "[#FEATURE] (its train/validation/test splits become the book preset's parts)."
)


def check_data(data) -> None:
    """Read the data once, so that a bad source stops before anything is written."""
    from tfrnn.data import book_path, read_text

    if is_tfds(data):  # tensorflow_datasets imports TensorFlow
        import_tensorflow_quietly()
        from tfrnn.tfds_source import load_texts

        load_texts(data)
    else:
        read_text(data if data is not None else book_path())


def ranged(allowed: Range, message: str | None = None) -> click.ParamType:
    """A click type for ``allowed``: --help shows the range, and a value outside it (or not a
    finite number) is refused with the library's message, or ``message``."""
    base = click.IntRange if allowed.integer else click.FloatRange

    class Ranged(base):
        def convert(self, value, param, ctx):
            try:  # parsed as a plain number: the range is checked (and reported) by ``allowed``
                number = (click.INT if allowed.integer else click.FLOAT).convert(value, param, ctx)
            except click.BadParameter:
                number = value
            else:
                if allowed.holds(number):
                    return number
            raise click.UsageError(message or allowed.message(param.opts[0], number), ctx)

    return Ranged(allowed.low, allowed.high, min_open=allowed.low_open, max_open=allowed.high_open)


#: `tfrnn fit`'s numeric options, by TrainConfig field.
TRAIN = {name: ranged(allowed) for name, allowed in TRAIN_RANGES.items()}
COUNT = ranged(POSITIVE_INT)
WINDOW = ranged(POSITIVE_INT, serving.WINDOW_MESSAGE)
#: `tfrnn score` says how long it will take for texts longer than this.
#: Generations longer than this (characters x prompts) say first about how long they take.
LONG_GENERATION = 20_000
LONG_TEXT = 100_000
#: Seeds TensorFlow and NumPy both take.
SEED = click.IntRange(0, 2**31 - 1)


class TfrnnGroup(click.Group):
    """Reports every user error as one line on stderr, without a traceback."""

    def main(self, args=None, prog_name=None, **kwargs):
        kwargs.pop("standalone_mode", None)
        try:
            code = super().main(args=args, prog_name=prog_name, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            click.echo(f"tfrnn: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except TfrnnError as exc:
            click.echo(f"tfrnn: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, click.Abort):
            click.echo("tfrnn: interrupted", err=True)
            sys.exit(130)
        sys.exit(code or 0)


@click.group(cls=TfrnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tfrnn")
def cli() -> None:
    """Character-level recurrent language models (SimpleRNN, GRU, LSTM) with TensorFlow/Keras.

    Train with `tfrnn fit`; every command has its own --help.
    """


def choice(name: str, choices, help: str, **kwargs):
    """An option taking one of ``choices`` (None unless given: the preset's default)."""
    return click.option(
        name, type=click.Choice(choices), default=kwargs.pop("default", None), help=help, **kwargs
    )


VOCAB_DEFAULT = "[hw4 on the study's book: letters; book preset or any other text: chars]"


def vocab_option(what: str):
    """--vocab, as fit, compare and tune take it."""
    return choice("--vocab", VOCABS, f"{what}  {VOCAB_DEFAULT}")


def strategy_option(choices, extra: str):
    """The --strategy option, offering ``choices``; ``extra`` ends its help text."""
    return click.option(
        "--strategy",
        type=click.Choice(choices),
        default="default",
        show_default=True,
        help=f"tf.distribute strategy: mirrored = every local GPU (or $TFRNN_CPU_DEVICES logical "
        f"CPUs){extra}.",
    )


def make_strategy(name: str):
    """The tf.distribute strategy of --strategy (None for the default one)."""
    if name == "default":
        return None
    from tfrnn.distribute import make_strategy

    strategy = make_strategy(name)
    click.echo(f"strategy {name}: {strategy.num_replicas_in_sync} replica(s)")
    return strategy


def hw4(key: str, missing: str = "") -> str:
    """Both presets' default of ``key`` for --help (``missing`` where a preset sets none)."""
    hw4, book = (PRESET_DEFAULTS[p].get(key, missing) for p in ("hw4", "book"))
    return f"hw4: {hw4}, book: {book}"


def train_option(field: str, **kwargs):
    """An option for TrainConfig's ``field``: its range, and no default of its own
    (None: the preset's)."""
    return click.option(option_name(field), type=TRAIN[field], default=None, **kwargs)


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
    "independent windows.  [book: carry]",
)
@train_option("clip", help="Clip gradients to this global norm; 0 turns clipping off.  [default: 1.0]")
@train_option(
    "patience",
    help="Stop early when validation loss has not improved for this many epochs.  [default: never]",
)
@train_option(
    "time_budget",
    metavar="MINUTES",
    help="Stop after the epoch that brings training time past MINUTES.  [default: no limit]",
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
@click.option(
    "--data",
    type=DATA,
    metavar=DATA.name,
    default=None,
    help=f"{DATA_HELP}  [default: The Time Machine, the copy that ships inside tfrnn "
    "(no download; SHA-1 checked), or $TFRNN_DATA if set]",
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
@click.option("-q", "--quiet", is_flag=True, help="No per-epoch progress bar.")
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
    """
    if init_from is not None:
        import_tensorflow_quietly()  # tfrnn.experiment imports it
        from tfrnn.experiment import config_from_run

        config = config_from_run(init_from, preset, is_study_text(data), options)
    else:
        config = TrainConfig.resolve(preset, study_text=is_study_text(data), **options)
    xla = xla_setting(xla)  # a bad $TFRNN_XLA fails here, before anything is written
    kernel_setting(quiet)
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


# the other commands register themselves on `cli` when imported
from tfrnn import cli_study, cli_use  # noqa: E402, F401


def main() -> None:
    """Console-script entry point."""
    import tfrnn

    tfrnn.use_bfc_allocator()  # before TensorFlow starts
    cli(prog_name="tfrnn")


if __name__ == "__main__":
    main()
