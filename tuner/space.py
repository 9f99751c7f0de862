"""Search spaces: which cells, depths, widths, dropouts and learning rates a sweep tries."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tfrnn.config import CELLS, OPTIMIZERS, read_toml
from tfrnn.errors import ConfigError

#: Learning-rate ranges (log-uniform) per optimizer.
LR_RANGES = {"sgd": (0.25, 8.0), "adam": (3e-4, 1e-2), "adamw": (3e-4, 1e-2)}


@dataclass(frozen=True)
class SearchSpace:
    """What `tfrnn tune` searches; every range is inclusive."""

    cells: tuple[str, ...] = CELLS
    layers: tuple[int, int] = (1, 5)
    units: tuple[int, int] = (8, 256)
    dropout: tuple[float, float] = (0.0, 0.5)
    optimizers: tuple[str, ...] = ("sgd",)
    embeddings: tuple[int, ...] = field(default=())  # () = one-hot input only

    def __post_init__(self) -> None:
        for cell in self.cells:
            if cell not in CELLS:
                raise ConfigError(
                    f"unknown cell {cell!r} in the search space: choose from {', '.join(CELLS)}"
                )
        for opt in self.optimizers:
            if opt not in OPTIMIZERS:
                raise ConfigError(f"unknown optimizer {opt!r}: choose from {', '.join(OPTIMIZERS)}")
        if not self.cells or not self.optimizers:
            raise ConfigError("the search space needs at least one cell and one optimizer")
        for name in ("layers", "units"):
            lo, hi = getattr(self, name)
            if lo <= 0 or hi < lo:
                raise ConfigError(f"--{name} range {lo}-{hi} is empty or inverted (need 1 <= min <= max)")
        if not self.unit_choices:
            raise ConfigError(f"--units range {self.units[0]}-{self.units[1]} holds no power of two")
        lo, hi = self.dropout
        if not 0 <= lo <= hi < 1:
            raise ConfigError(f"--dropout range {lo}-{hi} must satisfy 0 <= min <= max < 1")
        if any(e <= 0 for e in self.embeddings):
            raise ConfigError("embedding sizes must be positive")

    @property
    def unit_choices(self) -> list[int]:
        """Widths tried: the powers of two in the units range (log steps)."""
        lo, hi = self.units
        return [2**k for k in range(0, 20) if lo <= 2**k <= hi]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def parse_range(text: str, name: str, kind=int) -> tuple:
    """``"1-3"`` -> (1, 3); ``"32"`` -> (32, 32)."""
    parts = str(text).split("-") if "-" in str(text).lstrip("-") else [text, text]
    try:
        lo, hi = (kind(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--{name} takes MIN-MAX (e.g. 1-3), got {text!r}") from None
    if hi < lo:
        raise ConfigError(f"--{name} range {text} is inverted (MIN-MAX with MIN <= MAX)")
    return lo, hi


#: The TOML form of each search-space key: a list of names, a [min, max] pair, or sizes.
_KEY_FORMS = {
    "cells": (str, None, 'cells = ["gru", "lstm"]'),
    "optimizers": (str, None, 'optimizers = ["adam"]'),
    "layers": (int, 2, "layers = [1, 3]"),
    "units": (int, 2, "units = [32, 256]"),
    "dropout": ((int, float), 2, "dropout = [0.0, 0.5]"),
    "embeddings": (int, None, "embeddings = [16, 32]"),
}


def _space_value(key: str, value, file) -> tuple:
    """A search-space file's value as the tuple ``SearchSpace`` takes, or a one-line error."""
    kind, length, example = _KEY_FORMS[key]
    ok = isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    if not ok or (length is not None and len(value) != length):
        raise ConfigError(f"{key} in {file} must be a list like {example}, got {value!r}")
    return tuple(value)


def space_from_options(
    cells: str | None = None,
    layers: str | None = None,
    units: str | None = None,
    dropout: str | None = None,
    optimizers: str | None = None,
    embeddings: str | None = None,
    file: Path | None = None,
) -> SearchSpace:
    """A space from a TOML file (keys as in ``SearchSpace``) narrowed by command-line options."""
    values: dict = {}
    if file is not None:
        values = read_toml(Path(file), "search-space file")
        unknown = set(values) - set(SearchSpace.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown key(s) in {file}: {', '.join(sorted(unknown))}")
        values = {k: _space_value(k, v, file) for k, v in values.items()}
    if cells:
        values["cells"] = tuple(c.strip() for c in cells.split(",") if c.strip())
    if optimizers:
        values["optimizers"] = tuple(o.strip() for o in optimizers.split(",") if o.strip())
    if layers:
        values["layers"] = parse_range(layers, "layers")
    if units:
        values["units"] = parse_range(units, "units")
    if dropout:
        values["dropout"] = parse_range(dropout, "dropout", float)
    if embeddings:
        try:
            values["embeddings"] = tuple(int(e) for e in embeddings.split(",") if e.strip())
        except ValueError:
            raise ConfigError(f"--embeddings takes comma-separated sizes, got {embeddings!r}") from None
    return SearchSpace(**values)
