"""`tfrnn compare`: train a grid of models and write a report (tables, figures, CSV, JSON).

A grid comes from options, a TOML file, or the shipped ``hw4`` preset (the study's 14
models). Each model is an ordinary run folder under ``OUT/runs/``: a finished one whose
configuration matches is kept, an interrupted one is resumed, a failing one is recorded
and the others go on.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tfrnn.config import TrainConfig, read_toml, with_defaults
from tfrnn.data import VOCAB_SIZE
from tfrnn.errors import ConfigError, Interrupted, TfrnnError
from tfrnn.rundir import RunPaths, read_marker, read_metrics, write_marker
from tfrnn.study import HW4_GRID

_CONFIG_KEYS = {f for f in TrainConfig.__dataclass_fields__ if f != "preset"}


@dataclass(frozen=True)
class Grid:
    """A named list of configurations to train and compare."""

    name: str
    configs: tuple[TrainConfig, ...]


def _configs(models: list[dict], preset: str, shared: dict) -> tuple[TrainConfig, ...]:
    configs = []
    study_text = shared.pop("study_text", True)
    for model in models:
        unknown = set(model) - _CONFIG_KEYS
        if unknown:
            raise ConfigError(f"unknown model setting(s) in grid: {', '.join(sorted(unknown))}")
        configs.append(TrainConfig.resolve(preset, study_text=study_text, **{**shared, **model}))
    names = Counter(c.name for c in configs)
    if not configs:
        raise ConfigError("the grid holds no model")
    vocabs = sorted({c.vocab for c in configs})
    if len(vocabs) > 1:
        raise ConfigError(
            f"the grid mixes vocabularies ({', '.join(vocabs)}): their perplexities are not "
            "comparable in one table; compare each vocabulary in its own grid"
        )
    if max(names.values()) > 1:
        raise ConfigError(f"the grid names a model twice: {names.most_common(1)[0][0]}")
    return tuple(configs)


def hw4_grid(**shared) -> Grid:
    """The study's 14 models under its protocol (``shared`` overrides, e.g. ``epochs``)."""
    models = [dict(cell=c, units=u, layers=n) for c, u, n in HW4_GRID]
    return Grid("hw4", _configs(models, "hw4", shared))


def product_grid(
    cells: list[str], units: list[int], layers: list[int], preset: str = "hw4", name: str = "grid", **shared
) -> Grid:
    """Every combination of cells, units and layers."""
    models = [dict(cell=c, units=u, layers=n) for c in cells for n in layers for u in units]
    return Grid(name, _configs(models, preset, shared))


def load_grid(path: Path, **overrides) -> Grid:
    """A grid from a TOML file: shared settings at the top, then ``[[models]]`` tables or
    ``cells``/``units``/``layers`` lists (see README)."""
    spec = read_toml(Path(path), "grid file")
    name = check_name(spec.pop("name", Path(path).stem), str(path))
    preset = spec.pop("preset", "hw4")
    models = spec.pop("models", None)
    if models is not None and not (isinstance(models, list) and all(isinstance(m, dict) for m in models)):
        raise ConfigError(f"models in {path} must be [[models]] tables")
    lists = {}
    for key, kind, example in (("cells", str, '"gru"'), ("units", int, "32"), ("layers", int, "1")):
        if key in spec:
            value = spec.pop(key)
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{key} in {path} must be a non-empty list, e.g. {key} = [{example}]")
            if not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
                what = "names" if kind is str else "whole numbers"
                raise ConfigError(f"{key} in {path} must list {what}, got {value!r}")
            lists[key] = value
    shared = {**spec, **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(shared) - _CONFIG_KEYS - {"study_text"}
    if unknown:
        raise ConfigError(f"unknown setting(s) in {path}: {', '.join(sorted(unknown))}")
    if models is None:
        if "cells" not in lists:
            raise ConfigError(f"{path} needs [[models]] tables or a cells = [...] list")
        models = [
            dict(cell=c, units=u, layers=n)
            for c in lists["cells"]
            for n in lists.get("layers", [1])
            for u in lists.get("units", [32])
        ]
    return Grid(name, _configs(models, preset, shared))


def _int_list(value: str | None, option: str) -> list[int] | None:
    """``"8,16,32"`` -> ``[8, 16, 32]`` (None stays None); a one-line error otherwise."""
    if value is None:
        return None
    try:
        values = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got {value!r}") from None
    if not values:
        raise ConfigError(f"{option} takes comma-separated integers, got {value!r}")
    return values


def choose_grid(
    grid_spec: str | None,
    cells: str | None = None,
    units: str | None = None,
    layers: str | None = None,
    preset: str | None = None,
    epochs: int | None = None,
    study_text: bool = True,
    vocab: str | None = None,
) -> Grid:
    """The grid ``tfrnn compare`` was asked for: ``hw4`` (the default), a TOML file, or the
    product of comma-separated ``cells``, ``units`` and ``layers`` (not both kinds).
    ``study_text``: whether the data is the study's book (see ``TrainConfig.resolve``)."""
    options_grid = any(v is not None for v in (cells, units, layers))
    if grid_spec is not None and options_grid:
        raise ConfigError("give either --grid or --cells/--units/--layers, not both")
    if options_grid:
        cell_list = [c.strip() for c in (cells or "gru").split(",") if c.strip()]
        if not cell_list:
            raise ConfigError(f"--cells takes comma-separated cells, got {cells!r}")
        return product_grid(
            cell_list,
            _int_list(units, "--units") or [32],
            _int_list(layers, "--layers") or [1],
            preset=preset or "hw4",
            name="grid",
            epochs=epochs,
            study_text=study_text,
            vocab=vocab,
        )
    if grid_spec in (None, "hw4"):
        if preset not in (None, "hw4"):
            raise ConfigError("the hw4 grid uses the hw4 preset; use a grid file for another preset")
        return hw4_grid(epochs=epochs, study_text=study_text, vocab=vocab)
    options = {"preset": preset} if preset else {}
    return load_grid(Path(grid_spec), epochs=epochs, study_text=study_text, vocab=vocab, **options)


def check_name(name: object, source: str) -> str:
    """A grid's name names a report, never a place: no separators, no ``..``."""
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or any(c in name for c in "/\\"):
        raise ConfigError(
            f"the grid name {name!r} in {source} must be a plain name (no '/', '\\' or '..'); "
            "choose the folder with --out"
        )
    return name


def lock_file(out: Path) -> Path:
    """The lock a comparison holds on its report folder while it runs."""
    return out.parent / f".{out.name}.lock"


#: What a report folder holds (besides its marker): tfrnn writes nothing else there.
REPORT_FILES = {"report.md", "results.csv", "results.json", "runs"}


def _report_entry(name: str) -> bool:
    return name in REPORT_FILES or name.endswith(".png")


def check_report_folder(out: Path) -> None:
    """Refuse to write a report into a folder that holds something else than a tfrnn report:
    one with tfrnn's report marker, or (written before the marker) only a report's files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise TfrnnError(f"{out} exists and is not a folder: choose another --out")
    names = [p.name for p in out.iterdir()]
    if names and read_marker(out, "report") is None and not all(_report_entry(n) for n in names):
        raise TfrnnError(f"{out} exists and is not a tfrnn report folder: choose another --out")


def mark_report_folder(out: Path) -> None:
    """Create the report folder (if needed) with tfrnn's marker in it."""
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, sorted(REPORT_FILES), kind="report")


def _finished(run_dir: Path, config: dict, data_sha1: str) -> dict | None:
    """The metrics of a finished run of ``config`` on the same text, else None."""
    try:
        metrics = read_metrics(run_dir)
    except (TfrnnError, OSError):  # not there (yet), or damaged: train it again
        return None
    if with_defaults(metrics["config"]) == config and metrics.get("data", {}).get("sha1") == data_sha1:
        return metrics
    return None


def _cost(config: TrainConfig) -> float:
    """Rough relative training cost, for the ETA: per-step MACs plus a fixed overhead."""
    from tfrnn.profile import study_macs

    inputs = config.embedding or VOCAB_SIZE  # (a chars vocabulary: its size is not known yet)
    per_step = study_macs(config.cell, config.units, config.layers, inputs, steps=1)
    return config.epochs * (per_step + 20_000) + 100_000  # + export and generation


def _format_seconds(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.0f}s"


def run_grid(
    grid: Grid, out: Path, data: Path | None = None, verbose: int | str = 2, log=print, strategy=None
) -> list[dict]:
    """Train every model of ``grid`` not already finished in ``out/runs``; returns results."""
    from tfrnn.experiment import load_corpus, run_identity, run_training

    corpora: dict[tuple, object] = {}  # one text per preset, window and vocabulary settings
    check_report_folder(out)
    mark_report_folder(out)
    results, started = [], time.perf_counter()
    trained_seconds = trained_cost = 0.0
    for i, config in enumerate(grid.configs, 1):
        paths = RunPaths(out / "runs" / config.name)
        cfg = config.to_dict()
        elapsed = time.perf_counter() - started
        remaining = sum(_cost(c) for c in grid.configs[i - 1 :])
        eta = f", ETA {_format_seconds(trained_seconds / trained_cost * remaining)}" if trained_cost else ""
        key = (config.preset, config.num_steps, config.vocab, config.min_count, config.max_vocab)
        if key not in corpora:
            corpora[key] = load_corpus(config, data)
        corpus = corpora[key]
        metrics = _finished(paths.final, cfg, corpus.fingerprint)
        if metrics is not None:
            log(f"[{i}/{len(grid.configs)}] {config.name}: finished earlier, kept")
            results.append(metrics)
            continue
        log(f"[{i}/{len(grid.configs)}] {config.name}: training (elapsed {_format_seconds(elapsed)}{eta})")
        t0 = time.perf_counter()
        try:
            metrics = run_training(
                config,
                paths,
                data=data,
                resume=paths.differences(run_identity(config, corpus)) == [],
                overwrite=True,
                verbose=verbose,
                log=lambda *_: None,
                profile=False,
                strategy=strategy,
            )
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted during {config.name}; finished models are kept in {out / 'runs'}: "
                "run the same command again to continue"
            ) from None
        except TfrnnError as exc:
            log(f"    {config.name} failed: {exc}")
            metrics = {"name": config.name, "config": cfg, "failed": str(exc)}
        trained_seconds += time.perf_counter() - t0
        trained_cost += _cost(config)
        results.append(metrics)
    return results


def run_comparison(
    grid: Grid, out: Path, data=None, verbose: int | str = 2, log=print, strategy=None
) -> tuple[list[dict], Path]:
    """Train ``grid`` into ``out`` (finished models kept) and write its report: the result
    rows and the path of report.md."""
    from tfrnn.report import result_rows, write_report

    started = time.perf_counter()
    results = run_grid(grid, out, data=data, verbose=verbose, log=log, strategy=strategy)
    rows = result_rows(results)
    unigram = unigram_perplexity(data, grid.configs[0])
    return rows, write_report(out, grid.name, rows, unigram, time.perf_counter() - started)


def unigram_perplexity(data: Path | None, config: TrainConfig) -> float:
    """Perplexity of predicting validation characters from training-set frequencies alone:
    the level at which a model has learned nothing but letter counts ("stalled")."""
    import numpy as np

    from tfrnn.data import hw4_windows
    from tfrnn.experiment import load_corpus

    corpus = load_corpus(config, data)
    if config.preset == "hw4":
        parts = hw4_windows(corpus.ids, config.num_steps)
        train, val = parts["train"][1][:, -1], parts["val"][1].ravel()
    else:
        parts = corpus.book_parts(config.num_steps)
        train, val = parts["train"], parts["val"]
    counts = np.bincount(train, minlength=len(corpus.vocab)) + 1.0  # add-one smoothing
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[val].mean()))
