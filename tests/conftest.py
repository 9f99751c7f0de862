"""Shared fixtures: the book's local copy, a CLI runner, and the suite's trained runs (each
trained once per suite, even across pytest-xdist workers: ``shared_run``)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
# The book: $TFRNN_DATA when set, else the copy that ships inside tfrnn (what a user gets).
BOOK = Path(os.environ.get("TFRNN_DATA") or ROOT / "tfrnn" / "texts" / "timemachine.txt").resolve()
os.environ["TFRNN_DATA"] = str(BOOK)  # tests that need it unset (the embedded default) unset it
# The compiled kernel's cache: one per test session, never the user's ~/.cache (a test of
# quiet output or of the first compile must not pass only because a cache is warm).
# $TFRNN_TEST_KERNEL_CACHE reuses one folder across sessions, for day-to-day runs.
# Under pytest-xdist the workers take the folder their controller made (they inherit its
# environment), so the kernel is compiled and checked once per suite, not once per worker.
_SESSION_CACHE = "TFRNN_TESTS_SESSION_CACHE"
KERNEL_CACHE = os.environ.get("TFRNN_TEST_KERNEL_CACHE") or (
    os.environ.get(_SESSION_CACHE) if os.environ.get("PYTEST_XDIST_WORKER") else None
)
if not KERNEL_CACHE:
    KERNEL_CACHE = os.environ[_SESSION_CACHE] = tempfile.mkdtemp(prefix="tfrnn-tests-cache-")
    atexit.register(shutil.rmtree, KERNEL_CACHE, True)
os.environ["XDG_CACHE_HOME"] = KERNEL_CACHE
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# XLA compiling costs 10-20 s per model: too slow for a suite of short fits. tests/test_speed.py
# turns it on where it is the subject.
os.environ.setdefault("TFRNN_XLA", "off")
# TensorFlow Datasets prepares data under $TFDS_DATA_DIR (read once, when it is imported): the
# suite's go to a folder of its own, never to the user's ~/tensorflow_datasets.
TFDS_DIR = tempfile.mkdtemp(prefix="tfrnn-tests-tfds-")
os.environ["TFDS_DATA_DIR"] = TFDS_DIR
atexit.register(shutil.rmtree, TFDS_DIR, True)


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


def _encode(value):
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value):
    if isinstance(value, dict) and set(value) == {"__path__"}:
        return Path(value["__path__"])
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def shared_run(tmp_path_factory, name: str, build: Callable[[Path], dict | list]) -> dict | list:
    """``build(folder)``'s result, built once per suite and shared read-only by every test.

    Alone, a session fixture already is that. Under pytest-xdist each worker has its own
    session, so the first worker to ask builds it, under a lock in the folder all workers'
    temporary folders share, and records the result as JSON (paths, strings, numbers); the
    others wait for it and read that record. A build that failed is failed again, not rerun.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    import fcntl  # POSIX: pytest-xdist's shared-fixture pattern, with the lock the OS holds

    root = tmp_path_factory.getbasetemp().parent / "shared"
    root.mkdir(exist_ok=True)
    record = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the worker dies
        if record.exists():
            kept = json.loads(record.read_text())
            if "failed" in kept:
                pytest.fail(f"the shared run {name!r} failed in another worker: {kept['failed']}")
            return _decode(kept["value"])
        folder = root / name
        folder.mkdir()
        try:
            value = build(folder)
        except BaseException as exc:
            record.write_text(json.dumps({"failed": f"{type(exc).__name__}: {exc}"[:2000]}))
            raise
        record.write_text(json.dumps({"value": _encode(value)}))
        return value


def _gru_8_run(base: Path, *options: str) -> dict:
    out, tb = base / "gru-8", base / "tb"
    result = run_cli(
        "fit", "--cell", "gru", "--units", 8, "--epochs", 2, "--out", out, "--tensorboard", tb, *options
    )
    assert result.exit_code == 0, result.output
    return {"dir": out, "tensorboard": tb, "output": result.output}


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, book):
    """A GRU-8 trained for 2 epochs of the hw4 preset, with TensorBoard logs (not profiled:
    ``profiled_run`` is)."""
    return shared_run(tmp_path_factory, "small_run", lambda base: _gru_8_run(base, "--no-profile"))


@pytest.fixture(scope="session")
def profiled_run(tmp_path_factory, book):
    """``small_run`` as `tfrnn fit` writes it by default: profiled (FLOPs, speed)."""
    return shared_run(tmp_path_factory, "profiled_run", _gru_8_run)


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


def keras_continuation(model, prompt: str, num_chars: int = 20) -> str:
    """Reference greedy generation, independent of tfrnn's in-graph loop: the Keras model
    reads the whole sequence again for every character (the same as carrying the state)."""
    import numpy as np
    import tensorflow as tf

    from tfrnn.data import Vocab

    last_logits = tf.function(
        lambda x: model(x, training=False)[0, -1], input_signature=[tf.TensorSpec([1, None], tf.int32)]
    )
    vocab = Vocab()
    ids = list(vocab.encode(prompt)) or [0]  # an empty prompt starts from a space
    out = []
    for _ in range(num_chars):
        out.append(int(np.argmax(last_logits(tf.constant([ids], tf.int32)))))
        ids.append(out[-1])
    return vocab.decode(out)


def pytest_configure(config):
    """The fast tier (-m "not slow") compiles nothing: there the compiled recurrence is off
    unless $TFRNN_KERNEL says otherwise (its tests, which compile it, are all slow)."""
    if "not slow" in (config.option.markexpr or ""):
        os.environ.setdefault("TFRNN_KERNEL", "off")
