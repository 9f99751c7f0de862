"""Training configuration: the two presets and the checks every option must pass."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tfrnn.errors import ConfigError

CELLS = ("rnn", "gru", "lstm")
#: Gate blocks per cell: the width of its kernels is GATES[cell] x units.
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
OPTIMIZERS = ("sgd", "adam", "adamw")
#: Learning-rate schedules: constant, warm-up (first epoch) then cosine decay to zero, or
#: halving when the validation loss stalls.
SCHEDULES = ("constant", "cosine", "plateau")
#: Where dropout sits: between stacked recurrent layers (the study, like torch.nn.GRU's
#: ``dropout``), or also on the input embedding and the last recurrent layer's output.
DROPOUT_PLACES = ("between", "all")
PRESETS = ("hw4", "book")
#: XLA for the training step (tfrnn.train.use_xla), and the variable that sets its default.
XLA_SETTINGS = ("auto", "on", "off")
XLA_ENV = "TFRNN_XLA"
#: Keras dtype policies a model trains in: float32, or bfloat16 arithmetic with float32
#: weights (the logits, loss and perplexity stay float32). Measured in README "Training
#: speed": not faster than float32 on a CPU without AMX, so float32 is the default.
PRECISIONS = ("float32", "mixed_bfloat16")
#: Vocabularies (tfrnn.vocab): the study's 28 letters, or the text's own characters.
VOCABS = ("letters", "chars")


@dataclass(frozen=True)
class Range:
    """The values a numeric option takes: what ``--help`` shows (as click's ranges) and what
    the library checks, with one message saying what to pass."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    #: what the option must be, e.g. "a positive integer" ("{option} must be {rule}, got ...")
    rule: str = ""

    def holds(self, value: object) -> bool:
        """Whether ``value`` is a finite number of the right kind inside the range."""
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def message(self, option: str, value: object) -> str:
        """What ``check`` says of ``value``."""
        infinite = isinstance(value, float) and not math.isfinite(value)
        return f"{option} must be {self.rule}, got {value!r}" + (" (not a finite number)" if infinite else "")

    def check(self, option: str, value: object) -> None:
        """Raise ``ConfigError`` unless ``value`` is in the range."""
        if not self.holds(value):
            raise ConfigError(self.message(option, value))


POSITIVE_INT = Range(1, integer=True, rule="a positive integer")
FRACTION = Range(0.0, 1.0, high_open=True, rule="in [0, 1)")
#: TrainConfig's numeric fields (``None`` is allowed where the field's default is None).
TRAIN_RANGES = {
    "units": POSITIVE_INT,
    "layers": POSITIVE_INT,
    "epochs": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "num_steps": POSITIVE_INT,
    "embedding": POSITIVE_INT,
    "patience": POSITIVE_INT,
    "dropout": FRACTION,
    "weight_drop": FRACTION,
    "ema": Range(0.0, 1.0, high_open=True, rule="in [0, 1) (0: no moving average)"),
    "lr": Range(0.0, low_open=True, rule="a positive number"),
    "clip": Range(0.0, rule=">= 0 (0 turns clipping off)"),
    "weight_decay": Range(0.0, rule=">= 0"),
    "time_budget": Range(0.0, low_open=True, rule="a positive number of minutes"),
    "epoch_chars": POSITIVE_INT,
    "min_count": POSITIVE_INT,
    "max_vocab": Range(2, integer=True, rule="an integer >= 2 (<unk> and one character)"),
}


#: Fields whose None means "none" (no embedding, no early stopping, no clipping, no clock).
OPTIONAL_FIELDS = ("embedding", "patience", "clip", "time_budget", "epoch_chars")


def option_name(field: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + field.replace("_", "-")


def xla_setting(setting: str | None = None) -> str:
    """``setting``, else ``$TFRNN_XLA``, else ``auto``; checked against ``XLA_SETTINGS``."""
    import os

    value = (setting or os.environ.get(XLA_ENV) or "auto").lower()
    if value not in XLA_SETTINGS:
        raise ConfigError(f"${XLA_ENV} must be one of {', '.join(XLA_SETTINGS)}, got {value!r}")
    return value


def env_seconds(name: str, default: float) -> float:
    """Seconds from ``$NAME`` (``default`` when unset); a one-line error unless a positive,
    finite number."""
    import os

    value = os.environ.get(name, f"{default:g}")
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"${name} must be a positive number of seconds, got {value!r}")
    return seconds


#: Defaults of each preset. ``hw4`` is the reference study's protocol (PROTOCOL.md);
#: ``book`` trains on the whole text with a held-out test part, evaluated with the
#: recurrent state carried through each part. Its model and schedule are the best found
#: for 15 minutes of training on a 2-core CPU (README, "Whole texts"): at most 60 epochs,
#: stopped after the one that passes 14.5 minutes, the cosine schedule spread over them.
#: Carrying the state between training batches measured no better than independent
#: windows there, so it is an option (--carry-state), not the default.
PRESET_DEFAULTS: dict[str, dict] = {
    "hw4": dict(
        cell="gru", units=32, layers=1, optimizer="sgd", epochs=50, batch_size=1024, num_steps=32, clip=1.0
    ),
    "book": dict(
        cell="lstm",
        units=512,
        layers=2,
        embedding=64,
        dropout=0.5,
        dropout_at="all",
        optimizer="adamw",
        schedule="cosine",
        epochs=60,
        time_budget=14.5,
        batch_size=64,
        num_steps=100,
        clip=1.0,
        carry_state=False,
        vocab="chars",
    ),
}


#: AdamW's decoupled weight decay unless --weight-decay says otherwise.
ADAMW_WEIGHT_DECAY = 0.01


def study_learning_rate(cell: str, layers: int) -> float:
    """The study's SGD rate: 2 for stacks, else 1 for SimpleRNN and 4 for GRU/LSTM."""
    if layers > 1:
        return 2.0
    return 1.0 if cell == "rnn" else 4.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines one training run; ``resolve`` fills the preset's defaults."""

    cell: str = "gru"
    units: int = 32
    layers: int = 1
    dropout: float = 0.0
    embedding: int | None = None
    preset: str = "hw4"
    optimizer: str = "sgd"
    lr: float = 4.0
    epochs: int = 50
    batch_size: int = 1024
    num_steps: int = 32
    clip: float | None = 1.0
    seed: int | None = 0
    #: carry the recurrent state from batch to batch (truncated back-propagation through
    #: time over batch_size parallel streams of the training text); book preset only
    carry_state: bool = False
    dropout_at: str = "between"
    #: DropConnect on each LSTM's recurrent weights (AWD-LSTM's WeightDrop)
    weight_drop: float = 0.0
    weight_decay: float = 0.0
    #: momentum of a moving average of the weights, evaluated and kept instead (0: none)
    ema: float = 0.0
    schedule: str = "constant"
    #: stop when the validation loss has not improved for this many epochs
    patience: int | None = None
    #: stop after the epoch that brings the training time past this many minutes
    time_budget: float | None = None
    #: book: an epoch is this many training characters (the passes over a large text read
    #: on from epoch to epoch), not one pass; None: one pass
    epoch_chars: int | None = None
    #: a finished run folder whose weights this run starts from (fine-tuning)
    init_from: str | None = None
    #: Keras dtype policy of the model's layers (``PRECISIONS``)
    precision: str = "float32"
    #: the vocabulary (``VOCABS``): the study's letters, or the training text's characters
    vocab: str = "letters"
    #: chars: characters seen fewer times in training are read as <unk>
    min_count: int = 2
    #: chars: at most this many tokens (<unk> and the most frequent characters)
    max_vocab: int = 1024

    @classmethod
    def resolve(cls, preset: str = "hw4", study_text: bool = True, **options) -> TrainConfig:
        """Build a config from ``preset`` with ``options`` (None means the preset's value).

        The vocabulary is the study's letters for the hw4 preset on the study's own text
        (``study_text``), else the text's own characters.

        The hw4 learning rate depends on cell and depth as in the study; with Adam(W) it is
        3e-3. Dropout defaults to 0.5 for hw4 stacks (the study) and 0 for one layer.
        AdamW's weight decay defaults to ``ADAMW_WEIGHT_DECAY``, other optimizers' to 0.
        Given ``epochs`` (and no ``time_budget``), a run trains that many, whatever the
        preset's time budget.
        """
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        given = {k: v for k, v in options.items() if v is not None}
        unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
        values = {**PRESET_DEFAULTS[preset], **given, "preset": preset}
        if "vocab" not in given and not study_text:
            values["vocab"] = "chars"
        if "epochs" in given and "time_budget" not in given:  # asked for epochs: no clock
            values.pop("time_budget", None)
        cell = values.setdefault("cell", cls.cell)
        layers = values.setdefault("layers", cls.layers)
        if "lr" not in values:
            opt = values["optimizer"]
            values["lr"] = study_learning_rate(cell, layers) if opt == "sgd" else 3e-3
        if "dropout" not in values and isinstance(layers, int):
            values["dropout"] = 0.5 if layers > 1 else 0.0
        if "weight_decay" not in values and values["optimizer"] == "adamw":
            values["weight_decay"] = ADAMW_WEIGHT_DECAY
        return cls(**values)

    def __post_init__(self) -> None:
        for name in ("cell", "optimizer", "preset", "schedule", "dropout_at", "precision", "vocab"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{option_name(name)} must be a name, got {getattr(self, name)!r}")
        for name, allowed in TRAIN_RANGES.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL_FIELDS:
                continue
            if not allowed.integer and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"{option_name(name)} must be a number, got {value!r}")
            allowed.check(option_name(name), value)
            if not allowed.integer and isinstance(value, int):  # TOML's `lr = 4`: a float field
                object.__setattr__(self, name, float(value))
        if self.cell not in CELLS:
            raise ConfigError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.dropout_at not in DROPOUT_PLACES:
            raise ConfigError(
                f"unknown --dropout-at {self.dropout_at!r}: choose one of {', '.join(DROPOUT_PLACES)}"
            )
        if self.vocab not in VOCABS:
            raise ConfigError(f"unknown vocabulary {self.vocab!r}: choose one of {', '.join(VOCABS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.ema and self.preset != "book":
            raise ConfigError("--ema needs --preset book (its validation evaluates the average)")
        if self.weight_drop and self.cell != "lstm":
            raise ConfigError("--weight-drop applies to LSTM layers only (--cell lstm)")
        if self.carry_state and self.preset != "book":
            raise ConfigError("--carry-state needs --preset book (hw4 trains on independent windows)")
        if self.epoch_chars and self.preset != "book":
            raise ConfigError("--epoch-chars needs --preset book (hw4's epoch is the study's windows)")

    @property
    def name(self) -> str:
        """Default run name: ``gru-32``, ``lstm-3x32``, ``gru-32-book``; a vocabulary other
        than the preset's own is named too (``gru-32-chars``, ``lstm-2x512-book-letters``)."""
        size = f"{self.layers}x{self.units}" if self.layers > 1 else f"{self.units}"
        suffix = "" if self.preset == "hw4" else f"-{self.preset}"
        if self.vocab != PRESET_DEFAULTS[self.preset].get("vocab", "letters"):
            suffix += f"-{self.vocab}"
        return f"{self.cell}-{size}{suffix}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def with_defaults(saved: dict) -> dict:
    """A configuration saved by a run (``config.json``, ``metrics.json``), with the fields
    of ``TrainConfig`` that the tfrnn which wrote it did not have at their defaults: what
    they meant then (e.g. ``precision`` float32). Other keys are kept."""
    return {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **saved}


def read_toml(path: Path, what: str) -> dict:
    """A TOML file as a dict, or a one-line error saying what is wrong with it."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
