"""Shared fixtures: the book's local copy, a CLI runner, and one small trained run."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
BOOK = Path(os.environ.get("TFRNN_DATA", ROOT.parent / "shared" / "data" / "timemachine.txt")).resolve()
os.environ["TFRNN_DATA"] = str(BOOK)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# XLA compiling costs 10-20 s per model: too slow for a suite of short fits. tests/test_speed.py
# turns it on where it is the subject.
os.environ.setdefault("TFRNN_XLA", "off")


def subprocess_env(**extra: str) -> dict:
    """Environment for a `python -m tfrnn` child: this checkout importable, no inherited
    distribution settings (TF_CONFIG, Keras Tuner's chief/worker variables), then ``extra``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for key in ("TF_CONFIG", "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        env.pop(key, None)
    return {**env, **extra}


def run_cli(*args: str):
    """Run ``tfrnn ARGS`` in this process (TensorFlow stays imported between tests)."""
    from tfrnn.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="tfrnn")


@pytest.fixture(scope="session")
def book() -> Path:
    assert BOOK.is_file(), f"the book is missing at {BOOK}: set TFRNN_DATA"
    return BOOK


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, book):
    """A GRU-8 trained for 2 epochs of the hw4 preset, with TensorBoard logs."""
    base = tmp_path_factory.mktemp("small_run")
    out, tb = base / "gru-8", base / "tb"
    result = run_cli("fit", "--cell", "gru", "--units", 8, "--epochs", 2, "--out", out, "--tensorboard", tb)
    assert result.exit_code == 0, result.output
    return {"dir": out, "tensorboard": tb, "output": result.output}


@contextmanager
def failing_in_epoch(epoch: int, error=KeyboardInterrupt):
    """Inside the block, training raises ``error`` as epoch ``epoch`` (counted from 1) begins:
    an interruption (Ctrl-C) or a failure at a known point of a run."""
    from tfrnn import train

    original = train.EpochTimer.on_epoch_begin

    def fail(self, e, logs=None):
        if e == epoch - 1:
            raise error
        original(self, e, logs)

    train.EpochTimer.on_epoch_begin = fail
    try:
        yield
    finally:
        train.EpochTimer.on_epoch_begin = original
