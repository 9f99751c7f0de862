"""What the ``tfrnn`` commands share: the group, one-line errors, option types and helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tfrnn import serving
from tfrnn.config import (
    POSITIVE_INT,
    PRESET_DEFAULTS,
    TRAIN_RANGES,
    VOCABS,
    Range,
    option_name,
)
from tfrnn.errors import TfrnnError
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
    """Check $TFRNN_KERNEL and $TFRNN_KERNEL_BF16 (one line if either is not auto, on or off);
    -q silences the first build."""
    from tfrnn import kernel, kernel_products

    kernel.set_quiet(quiet)
    kernel_products.setting()
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
    "A text file (UTF-8, or UTF-16/32 with a byte-order mark); a folder (every text file "
    "under it, hidden ones left out, one document each); several --data values (one document "
    "each); or a TensorFlow Datasets text dataset as tfds:NAME[/CONFIG][:SPLIT]"
    "[#FEATURE] (its train/validation/test splits become the book preset's parts). With 10 or "
    "more documents the book preset's validation and test parts are whole documents."
)


def _one_or_several(ctx, param, values):
    """``--data`` given once is that value, several times a tuple of them; not given, None."""
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def data_option(default: str):
    """The ``--data`` option (repeatable), its default named in --help."""
    return click.option(
        "--data",
        type=DATA,
        metavar=DATA.name,
        multiple=True,
        callback=_one_or_several,
        help=f"{DATA_HELP}  [default: {default}]",
    )


def check_data(data) -> None:
    """Read the data once, so that a bad source stops before anything is written."""
    from tfrnn.data import book_path, read_text
    from tfrnn.documents import is_documents, read_documents

    if is_tfds(data):  # tensorflow_datasets imports TensorFlow
        import_tensorflow_quietly()
        from tfrnn.tfds_source import load_texts

        load_texts(data)
    elif is_documents(data):
        read_documents(data)
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
