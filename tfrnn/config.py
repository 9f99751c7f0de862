"""Training configuration: the two presets and the checks every option must pass."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tfrnn.errors import ConfigError

CELLS = ("rnn", "gru", "lstm")
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
    #: a finished run folder whose weights this run starts from (fine-tuning)
    init_from: str | None = None

    @classmethod
    def resolve(cls, preset: str = "hw4", **options) -> TrainConfig:
        """Build a config from ``preset`` with ``options`` (None means the preset's value).

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
        for name in ("dropout", "lr", "clip", "weight_decay", "ema", "weight_drop", "time_budget"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"--{name.replace('_', '-')} must be a number, got {value!r}")
        for name in ("cell", "optimizer", "preset", "schedule", "dropout_at"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"--{name.replace('_', '-')} must be a name, got {getattr(self, name)!r}")
        if self.cell not in CELLS:
            raise ConfigError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        for name in ("units", "layers", "epochs", "batch_size", "num_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.embedding is not None and (not isinstance(self.embedding, int) or self.embedding <= 0):
            raise ConfigError(f"--embedding must be a positive integer, got {self.embedding!r}")
        if not (0.0 <= self.dropout < 1.0):
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be a positive number, got {self.lr!r}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip >= 0):
            raise ConfigError(f"--clip must be >= 0 (0 turns clipping off), got {self.clip!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.dropout_at not in DROPOUT_PLACES:
            raise ConfigError(
                f"unknown --dropout-at {self.dropout_at!r}: choose one of {', '.join(DROPOUT_PLACES)}"
            )
        if not (0.0 <= self.ema < 1.0):
            raise ConfigError(f"--ema must be in [0, 1) (0: no moving average), got {self.ema!r}")
        if self.ema and self.preset != "book":
            raise ConfigError("--ema needs --preset book (its validation evaluates the average)")
        if not (0.0 <= self.weight_drop < 1.0):
            raise ConfigError(f"--weight-drop must be in [0, 1), got {self.weight_drop!r}")
        if self.weight_drop and self.cell != "lstm":
            raise ConfigError("--weight-drop applies to LSTM layers only (--cell lstm)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay!r}")
        if self.patience is not None and (
            not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience <= 0
        ):
            raise ConfigError(f"--patience must be a positive integer, got {self.patience!r}")
        if self.time_budget is not None and not (math.isfinite(self.time_budget) and self.time_budget > 0):
            raise ConfigError(f"--time-budget must be a positive number of minutes, got {self.time_budget!r}")
        if self.carry_state and self.preset != "book":
            raise ConfigError("--carry-state needs --preset book (hw4 trains on independent windows)")

    @property
    def name(self) -> str:
        """Default run name: ``gru-32``, ``lstm-3x32``, ``gru-32-book``."""
        size = f"{self.layers}x{self.units}" if self.layers > 1 else f"{self.units}"
        suffix = "" if self.preset == "hw4" else f"-{self.preset}"
        return f"{self.cell}-{size}{suffix}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
