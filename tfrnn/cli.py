"""The ``tfrnn`` command line: a thin layer over the library."""

from __future__ import annotations

import math
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
from tfrnn.errors import Interrupted, TfrnnError
from tfrnn.rundir import DEFAULT_ROOT, RunPaths, exclusive
from tfrnn.tfds_source import is_tfds
from tuner.search import TUNERS


def _import_tensorflow_quietly() -> None:
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


def _kernel_setting(quiet: bool) -> None:
    """Check $TFRNN_KERNEL (one line if it is not auto, on or off); -q silences the first build."""
    from tfrnn import kernel

    kernel.set_quiet(quiet)
    if kernel.setting() == "on":  # fail loudly now, before anything is written
        _import_tensorflow_quietly()
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


def _check_data(data) -> None:
    """Read the data once, so that a bad source stops before anything is written."""
    from tfrnn.data import book_path, read_text

    if is_tfds(data):  # tensorflow_datasets imports TensorFlow
        _import_tensorflow_quietly()
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


def _choice(name: str, choices, help: str, **kwargs):
    """An option taking one of ``choices`` (None unless given: the preset's default)."""
    return click.option(
        name, type=click.Choice(choices), default=kwargs.pop("default", None), help=help, **kwargs
    )


VOCAB_DEFAULT = "[hw4 on the study's book: letters; book preset or any other text: chars]"


def _vocab_option(what: str):
    """--vocab, as fit, compare and tune take it."""
    return _choice("--vocab", VOCABS, f"{what}  {VOCAB_DEFAULT}")


def _strategy_option(choices, extra: str):
    """The --strategy option, offering ``choices``; ``extra`` ends its help text."""
    return click.option(
        "--strategy",
        type=click.Choice(choices),
        default="default",
        show_default=True,
        help=f"tf.distribute strategy: mirrored = every local GPU (or $TFRNN_CPU_DEVICES logical "
        f"CPUs){extra}.",
    )


def _strategy(name: str):
    """The tf.distribute strategy of --strategy (None for the default one)."""
    if name == "default":
        return None
    from tfrnn.distribute import make_strategy

    strategy = make_strategy(name)
    click.echo(f"strategy {name}: {strategy.num_replicas_in_sync} replica(s)")
    return strategy


def _hw4(key: str, missing: str = "") -> str:
    """Both presets' default of ``key`` for --help (``missing`` where a preset sets none)."""
    hw4, book = (PRESET_DEFAULTS[p].get(key, missing) for p in ("hw4", "book"))
    return f"hw4: {hw4}, book: {book}"


def _train_option(field: str, **kwargs):
    """An option for TrainConfig's ``field``: its range, and no default of its own
    (None: the preset's)."""
    return click.option(option_name(field), type=TRAIN[field], default=None, **kwargs)


@cli.command()
@_choice(
    "--cell",
    CELLS,
    f"Recurrent cell: SimpleRNN, GRU or LSTM.  [{_hw4('cell')}]",
)
@_train_option("units", help=f"Hidden units per layer.  [{_hw4('units')}]")
@_train_option("layers", help=f"Stacked recurrent layers.  [{_hw4('layers')}]")
@_train_option(
    "dropout",
    help="Dropout rate, in [0, 1).  [hw4: 0.5 for stacks, else 0; book: "
    f"{PRESET_DEFAULTS['book']['dropout']}]",
)
@_choice(
    "--dropout-at",
    DROPOUT_PLACES,
    "between: dropout between stacked layers only (the study); all: also on the input "
    f"embedding and the last layer's output.  [{_hw4('dropout_at', 'between')}]",
)
@_train_option(
    "weight_drop",
    help="LSTM: drop this fraction of the recurrent weights in training (DropConnect, one "
    f"mask per batch, as AWD-LSTM's WeightDrop).  [{_hw4('weight_drop', 0)}]",
)
@_train_option(
    "embedding",
    help="Learn an embedding of this size instead of the one-hot input of the study.  "
    f"[{_hw4('embedding', 'none')}]",
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
@_vocab_option(
    "letters: the study's 28 tokens (a-z, space, <unk>; every run of other characters "
    "becomes one space, lower-cased). chars: every character of the training text as it is "
    "(case, punctuation, digits, line breaks, any script); rarer ones (see --min-count, "
    "--max-vocab) and ones never seen in training are read as <unk> and counted."
)
@_train_option(
    "min_count",
    help="chars: keep a character seen at least this many times in the training part.  [default: 2]",
)
@_train_option(
    "max_vocab",
    help="chars: at most this many tokens (<unk> and the most frequent characters).  [default: 1024]",
)
@_train_option("epochs", help=f"Training epochs.  [{_hw4('epochs')}]")
@_train_option(
    "lr",
    help="Learning rate (the peak, with a schedule).  [hw4 SGD: 4 for GRU/LSTM, 1 for SimpleRNN, "
    "2 for stacks; Adam/AdamW: 0.003]",
)
@click.option(
    "--optimizer", type=click.Choice(OPTIMIZERS), default=None, help=f"Optimizer.  [{_hw4('optimizer')}]"
)
@_train_option(
    "weight_decay", help=f"Decoupled weight decay (biases spared).  [adamw: {ADAMW_WEIGHT_DECAY}, else 0]"
)
@_train_option(
    "ema",
    metavar="MOMENTUM",
    help="book: keep an exponential moving average of the weights with this momentum (e.g. "
    f"0.99), and validate, keep and export the average.  [{_hw4('ema', 0)}]",
)
@_choice(
    "--schedule",
    SCHEDULES,
    "Learning rate: constant; cosine = warm-up over the first epoch, then cosine decay to 0 "
    "at the last epoch; plateau = halved whenever validation loss does not improve.  "
    f"[{_hw4('schedule', 'constant')}]",
)
@_train_option("batch_size", help=f"Sequences per batch.  [{_hw4('batch_size')}]")
@_train_option("num_steps", help=f"Characters per training sequence.  [{_hw4('num_steps')}]")
@click.option(
    "--carry-state/--no-carry-state",
    default=None,
    help="book: carry the recurrent state from batch to batch, the training text read as "
    "batch-size parallel streams (truncated back-propagation through time), instead of "
    "independent windows.  [book: carry]",
)
@_train_option("clip", help="Clip gradients to this global norm; 0 turns clipping off.  [default: 1.0]")
@_train_option(
    "patience",
    help="Stop early when validation loss has not improved for this many epochs.  [default: never]",
)
@_train_option(
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
@_strategy_option(STRATEGIES, "; multi-worker = several machines, each run with its own $TF_CONFIG")
@click.option(
    "--no-profile",
    is_flag=True,
    help="Skip the FLOPs counts and speed timings stored in metrics.json (saves seconds).",
)
@_choice(
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
@_choice(
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
        _import_tensorflow_quietly()  # tfrnn.experiment imports it
        from tfrnn.experiment import architecture_of, check_init_from

        options.update(architecture_of(init_from, options))
        options["init_from"] = str(init_from)
    config = TrainConfig.resolve(preset, study_text=is_study_text(data), **options)
    if init_from is not None:
        check_init_from(config)
    xla = xla_setting(xla)  # a bad $TFRNN_XLA fails here, before anything is written
    _kernel_setting(quiet)
    paths = RunPaths(out if out is not None else DEFAULT_ROOT / config.name)
    paths.check(overwrite=overwrite, resume=resume, held_elsewhere=strategy != "multi-worker")
    if tensorboard is not None and tensorboard.exists() and not tensorboard.is_dir():
        raise TfrnnError(f"--tensorboard {tensorboard} is a file, not a folder")
    _import_tensorflow_quietly()
    from tfrnn.experiment import run_training

    strategy = _strategy(strategy)

    click.echo(
        f"training {config.name}: {config.optimizer} lr {config.lr:g} ({config.schedule}), "
        f"{config.epochs} epochs, batch {config.batch_size} x {config.num_steps} steps"
        f"{' (state carried)' if config.carry_state else ''}, clip {config.clip or 'off'}, seed {config.seed}"
        + (f", budget {config.time_budget:g} min" if config.time_budget else "")
        + (f", from {config.init_from}" if config.init_from else "")
    )
    try:
        verbose = 0 if quiet else (1 if sys.stdout.isatty() else 2)  # 2: one line per epoch
        m = run_training(
            config,
            paths,
            data=data,
            resume=resume,
            overwrite=overwrite,
            tensorboard=tensorboard,
            verbose=verbose,
            log=click.echo,
            profile=not no_profile,
            strategy=strategy,
            xla=xla,
        )
    except KeyboardInterrupt:
        if paths.completed_epochs():
            raise Interrupted(
                f"interrupted; completed epochs are kept in {paths.partial}: "
                "run the same command with --resume to continue"
            ) from None
        paths.discard()
        raise Interrupted("interrupted before the first epoch completed; nothing was kept") from None
    if m.get("worker"):
        click.echo(
            f"worker done (validation perplexity {m['final_val_perplexity']:.3f}); "
            "the chief writes the run folder"
        )
        return
    p = m["parameters"]
    if m["test_perplexity"] is not None:  # book: the best epoch's weights, parts read whole
        click.echo(
            f"\n{m['name']}: kept epoch {m['best_epoch']}: validation perplexity "
            f"{m['best_val_perplexity']:.3f}, test perplexity {m['test_perplexity']:.3f} "
            "(each part read as one sequence, the state carried)"
        )
    else:
        click.echo(
            f"\n{m['name']}: validation perplexity {m['final_val_perplexity']:.3f} "
            f"(best {m['best_val_perplexity']:.3f} at epoch {m['best_epoch']})"
        )
    stopped = "" if m["stopped_by"] == "epochs" else f", stopped by the {m['stopped_by']}"
    click.echo(
        f"trained {m['epochs_run']} epochs in {m['training_seconds']:.1f} s "
        f"({m['median_epoch_seconds']:.2f} s/epoch{stopped}); parameters {p['total']:,} "
        f"(recurrent: {p['recurrent_keras']:,} Keras, {p['recurrent_study']:,} study convention)"
    )
    for prompt, text in m["continuations"].items():
        click.echo(f"  {prompt!r} -> {text!r}")
    click.echo(f"saved {paths.final}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["savedmodel", "litert"]),
    default="savedmodel",
    show_default=True,
    help="savedmodel: RUN_DIR/saved_model (TensorFlow). litert: RUN_DIR/model.tflite and "
    "model.json, one step with built-in ops only, for phones, boards and `python -m "
    "tfrnn.lite` (ai-edge-litert and numpy, no TensorFlow).",
)
def export(run_dir: Path, fmt: str) -> None:
    """Export RUN_DIR (a folder written by `tfrnn fit`) as a SavedModel or a LiteRT model.

    `tfrnn fit` already exports RUN_DIR/saved_model; use this after upgrading tfrnn, to
    rebuild a deleted export, or for a LiteRT file (written on request only).

    \b
    Examples:
      tfrnn export saved_models/gru-32 --format litert
      python -m tfrnn.lite generate saved_models/gru-32/model.tflite --prompt "it has"
    """
    _import_tensorflow_quietly()
    from tfrnn.export import export_run

    click.echo(f"exported {export_run(run_dir, fmt)}")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--prompt",
    "prompts",
    multiple=True,
    default=("it has",),
    show_default=True,
    help="Text to continue (repeat for several; cleaned like the training text; "
    "an empty prompt starts from a space).",
)
@click.option(
    "--chars",
    type=ranged(serving.CHARS),
    default=20,
    show_default=True,
    help="Characters to generate after each prompt (at most 100,000).",
)
@click.option(
    "--temperature",
    type=ranged(serving.TEMPERATURE),
    default=0.0,
    show_default=True,
    help="0 picks the likeliest character (greedy, as in the study); higher samples more freely.",
)
@click.option(
    "--top-k",
    type=ranged(serving.TOP_K),
    default=0,
    show_default=True,
    help="Sample only among the K likeliest characters (0: all).",
)
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Sampling seed: the same seed repeats the same text.",
)
@click.option(
    "--num-samples",
    type=COUNT,
    default=1,
    show_default=True,
    help="Continuations per prompt (useful with --temperature > 0).",
)
def generate(model, prompts, chars, temperature, top_k, seed, num_samples) -> None:
    """Continue prompts with the SavedModel of MODEL (a run folder or SavedModel folder).

    Needs only TensorFlow: the vocabulary, cleaning and generation loop are inside the
    SavedModel.

    \b
    Examples:
      tfrnn generate saved_models/gru-32 --prompt "it has"
      tfrnn generate saved_models/lstm-128 --prompt "the time" --chars 200 --temperature 0.8
    """
    serving.resolve_saved_model(model)
    _import_tensorflow_quietly()
    loaded = serving.load(model)
    note = serving.unknown_note(serving.vocab_of(loaded), list(prompts), "prompt")
    if note:
        click.echo(note, err=True)
    batch = [p for p in prompts for _ in range(num_samples)]
    if chars * len(batch) > LONG_GENERATION:  # say what it is doing, and for about how long
        seconds = serving.generation_seconds(loaded, chars, len(batch))
        click.echo(f"generating {chars:,} characters x {len(batch)} (about {seconds:,.0f} s)...", err=True)
    for text in serving.generate(loaded, batch, chars, temperature, seed, top_k):
        click.echo(text)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--text-file",
    type=click.Path(path_type=Path),
    required=True,
    help="UTF-8 text to score (cleaned like the training text).",
)
@click.option(
    "--window",
    type=WINDOW,
    default=None,
    help="Score (WINDOW + 1)-character windows, each from a zero state, as training "
    "validates (hw4: 32).  [default: the whole text from one zero state]",
)
@click.option(
    "--stride", type=WINDOW, default=None, help="Characters between window starts.  [default: WINDOW]"
)
def score(model, text_file, window, stride) -> None:
    """Perplexity of MODEL (a run folder or SavedModel folder) on a text file."""
    from tfrnn.data import clean, read_text

    serving.resolve_saved_model(model)
    raw = read_text(text_file, "text file")
    serving.windows(raw, window, stride)  # checks the options before TensorFlow is imported
    _import_tensorflow_quietly()
    loaded = serving.load(model)
    vocab = serving.vocab_of(loaded)
    note = serving.unknown_note(vocab, [raw], "text")
    if note:
        click.echo(note, err=True)
    text = clean(raw) if vocab.kind == "letters" else raw  # the characters the model reads
    texts = serving.windows(text, window, stride)
    longest = max(len(t) for t in texts)
    if longest > LONG_TEXT:  # say what it is doing, and for about how long
        seconds = serving.scoring_seconds(loaded, texts[0], longest)
        click.echo(
            f"scoring {sum(len(t) for t in texts):,} characters, each text read whole "
            f"(about {seconds:,.0f} s)...",
            err=True,
        )
    result = serving.score_texts(loaded, texts)
    click.echo(
        f"{result['characters']:,} characters in {len(texts):,} text(s): cross-entropy "
        f"{result['cross_entropy']:.4f} nats, perplexity {result['perplexity']:.3f}, "
        f"{result['cross_entropy'] / math.log(2):.4f} bits per character ({vocab.kind} vocabulary, "
        f"{len(vocab)} tokens)"
    )


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
    _import_tensorflow_quietly()
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
@_choice(
    "--preset",
    PRESETS,
    "Training preset of an options grid.  [default: hw4]",
)
@click.option("--epochs", type=COUNT, default=None, help="Override every model's epochs (a quick look).")
@click.option(
    "--data", type=DATA, metavar=DATA.name, default=None, help=f"{DATA_HELP}  [default: The Time Machine]"
)
@_vocab_option("Every model's vocabulary (see `tfrnn fit --help`).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Report folder.  [default: reports/GRID]"
)
@_strategy_option(("default", "mirrored"), ", for every model")
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

    _check_data(data)  # a bad data source stops here, before anything is written
    _kernel_setting(quiet)
    grid = cmp.choose_grid(
        grid_spec, cells, units, layers, preset, epochs, study_text=is_study_text(data), vocab=vocab
    )
    out = out if out is not None else Path("reports") / grid.name
    cmp.check_report_folder(out)
    click.get_current_context().with_resource(exclusive(cmp.lock_file(out), f"the report {out}"))
    _import_tensorflow_quietly()
    click.echo(f"comparing {len(grid.configs)} models into {out}")
    rows, path = cmp.run_comparison(
        grid, out, data=data, verbose=0 if quiet else 2, log=click.echo, strategy=_strategy(strategy)
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
@_train_option(
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
@click.option(
    "--data", type=DATA, metavar=DATA.name, default=None, help=f"{DATA_HELP}  [default: The Time Machine]"
)
@_vocab_option("The vocabulary of every trial (see `tfrnn fit --help`).")
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
@_strategy_option(("default", "mirrored"), ", for each trial and the retraining")
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
    from tuner.search import check_project, configure_distribution
    from tuner.space import space_from_options

    if optimizers is None and space_file is None:
        optimizers = PRESET_DEFAULTS[preset]["optimizer"]
    space = space_from_options(cells, layers, units, dropout, optimizers, embeddings, space_file)
    role = configure_distribution(chief, worker, worker_id)
    _check_data(data)  # a bad data source stops here
    _kernel_setting(quiet)
    study_text = is_study_text(data)
    tune_vocab = TrainConfig.resolve(preset, study_text=study_text, vocab=vocab).vocab
    if out is not None and role != "worker":  # the retrained model's folder, before the search
        RunPaths(out).check(overwrite=overwrite, resume=False)
    if role != "worker":  # the lock first: a project in use is not touched
        lock = directory / f".{project}.lock"
        click.get_current_context().with_resource(
            exclusive(lock, f"the tuning project {directory / project}")
        )
        check_project(directory, project, space, preset, overwrite, tune_vocab)
    _import_tensorflow_quietly()
    from tuner.search import retrain_best, run_search, trial_rows, trial_table, write_results

    strategy = _strategy(strategy)  # before any TensorFlow op: it may split the CPU
    tuner = run_search(
        tuner_kind,
        space,
        preset,
        directory,
        project,
        max_trials,
        epochs,
        data=data,
        seed=seed,
        time_budget=time_budget,
        overwrite=overwrite and role != "worker",
        strategy=strategy,
        verbose=0 if quiet else 2,
        vocab=tune_vocab,
    )
    if role == "worker":
        click.echo("worker done: the chief collects the results")
        return
    rows = trial_rows(tuner)
    if not rows:
        raise TfrnnError("the search ran no trial")
    write_results(rows, directory / project)
    click.echo(f"\nvocabulary: {tune_vocab} (validation perplexity of that vocabulary)")
    click.echo("\n".join(trial_table(rows)))
    click.echo(f"results: {directory / project}/results.csv, results.json, val_ppl_vs_params.png")
    m = retrain_best(
        tuner,
        preset,
        final_epochs or epochs,
        seed,
        out,
        log=click.echo,
        data=data,
        overwrite=overwrite,
        verbose=0 if quiet else 2,
        strategy=strategy,
    )
    click.echo(
        f"best: {m['name']} validation perplexity {m['final_val_perplexity']:.3f}; saved {m['run_dir']}"
    )


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (localhost only by default)."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8501,
    show_default=True,
    help="Port (TF Serving's REST port).",
)
@click.option(
    "--concurrency",
    type=COUNT,
    default=2,
    show_default=True,
    help="Generations running at once; the rest wait.",
)
def serve(runs, host, port, concurrency) -> None:
    """Serve run folders over HTTP (TensorFlow Serving's REST API) with a page to try them.

    \b
    Endpoints: GET / (the page), GET /v1/models, GET /v1/models/NAME[/metadata],
    POST /v1/models/NAME:predict {"instances": ["it has", ...]} or {"instances":
    [{"prompt": "it has", "num_chars": 200, "temperature": 0.8, "top_k": 5, "seed": 0}]}.

    \b
    Examples:
      tfrnn serve saved_models/gru-32 saved_models/lstm-2x512-book
      curl -d '{"instances": ["it has"]}' localhost:8501/v1/models/gru-32:predict
    """
    for run in runs:
        serving.resolve_saved_model(run)  # a bad folder stops here, in one line
    _import_tensorflow_quietly()
    from tfrnn.server import serve as run_server

    run_server(list(runs), host, port, concurrency, log=click.echo)


@cli.group()
def kernel() -> None:
    """The compiled CPU recurrence: build it ahead of time, or see its state."""


@kernel.command("build")
def kernel_build() -> None:
    """Build and self-check the compiled recurrence for this CPU now (e.g. in a container
    image); exits non-zero, with the reason, when it cannot be used."""
    from tfrnn import kernel as k

    if k.setting() == "off":
        raise TfrnnError("$TFRNN_KERNEL=off: nothing to build")
    _import_tensorflow_quietly()
    if k.load() is None:
        raise TfrnnError(f"the compiled recurrence cannot be used: {k.status()}")
    click.echo(f"ready: {k.status()}")


@kernel.command("status")
def kernel_status() -> None:
    """Where the compiled recurrence is, its key, its state and why it is (not) used."""
    _import_tensorflow_quietly()
    from tfrnn import kernel as k

    for key, value in k.describe().items():
        click.echo(f"{key + ':':<18} {value}")


@cli.command()
def info() -> None:
    """What a bug report needs: versions, CPU, GPU, the compiled recurrence, the data."""
    _import_tensorflow_quietly()
    import platform

    import keras
    import tensorflow as tf

    from tfrnn import kernel as k
    from tfrnn.cpu import cpu_summary
    from tfrnn.data import DATA_ENV, book_path

    gpus = tf.config.list_physical_devices("GPU")
    built = tf.sysconfig.get_build_info()
    lines = {
        "tfrnn": __import__("tfrnn").__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu": cpu_summary(),
        "gpu": ", ".join(g.name for g in gpus) or "none",
        "cuda/cudnn": f"{built.get('cuda_version', '-')} / {built.get('cudnn_version', '-')}",
        "kernel": k.status(),
        "kernel cache": str(k.cache_dir()),
        "default data": f"{book_path()}" + (f" (${DATA_ENV})" if os.environ.get(DATA_ENV) else " (embedded)"),
    }
    for key, value in lines.items():
        click.echo(f"{key + ':':<14} {value}")


def main() -> None:
    """Console-script entry point."""
    import tfrnn

    tfrnn.use_bfc_allocator()  # before TensorFlow starts
    cli(prog_name="tfrnn")


if __name__ == "__main__":
    main()
