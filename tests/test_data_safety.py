"""tfrnn never deletes what it did not write, runs one process per run folder, writes where
it is asked, does not hang, and refuses what it cannot do in one line (issue: data safety)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import failing_in_epoch, run_cli, subprocess_env
from tests.test_errors import assert_one_line_error

# trains until interrupted (the test sends Ctrl-C): no machine finishes 100,000 epochs first
SLOW_FIT = [sys.executable, "-m", "tfrnn", "fit", "--units", "8", "--epochs", "100000", "--no-profile", "-q"]


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(path, seconds: float = 120, lines: int = 0) -> None:
    deadline = time.monotonic() + seconds
    while not (path.exists() and len(path.read_text().splitlines()) >= lines):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_second_process_on_the_same_run_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [*SLOW_FIT, "--out", str(out)],
        env=subprocess_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal's foreground job gets it: a suite started in the background
        # (`cmd &` in a script) passes SIGINT on ignored, and Python then keeps ignoring it
        preexec_fn=_sigint_default,
    )
    try:
        _wait_for(tmp_path / ".run.partial" / "history.csv", lines=2)  # the first is training
        for extra in ([], ["--resume"], ["--overwrite"]):
            second = subprocess.run(
                [*SLOW_FIT, "--out", str(out), *extra],
                env=subprocess_env(),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert second.returncode == 1
            lines = [line for line in second.stderr.splitlines() if line.startswith("tfrnn:")]
            assert lines == [
                f"tfrnn: error: the run {out} is in use by another tfrnn process (pid {first.pid}): "
                "wait for it to finish"
            ]
            assert "interrupted" not in second.stderr and "Traceback" not in second.stderr
    finally:
        first.send_signal(2)  # Ctrl-C
        try:
            first.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            first.kill()  # never left training beside the rest of the suite
            first.communicate()
            raise AssertionError("the first run did not end within 120 s of its Ctrl-C") from None
    assert first.returncode == 130
    history = (tmp_path / ".run.partial" / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and all(not row.startswith("epoch,") for row in history[1:])
    # now nobody holds it: it is an interrupted run, and resuming it works
    third = run_cli("fit", "--units", 8, "--epochs", 100000, "--no-profile", "-q", "--out", out)
    assert third.exit_code == 1 and "an interrupted run is in" in third.stderr


def test_a_ctrl_c_swallowed_on_its_way_out_still_stops_training(tmp_path, monkeypatch):
    """A Ctrl-C whose KeyboardInterrupt something catches on its way out (as a library
    may) still ends the run at that epoch's end, the completed epochs kept to resume."""
    from tfrnn import train

    original = train.EpochTimer.on_epoch_begin

    def swallowed_ctrl_c_in_epoch_2(self, epoch, logs=None):
        if epoch == 1:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except KeyboardInterrupt:
                pass
        original(self, epoch, logs)

    monkeypatch.setattr(train.EpochTimer, "on_epoch_begin", swallowed_ctrl_c_in_epoch_2)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        result = run_cli("fit", "--units", 8, "--epochs", 3, "--no-profile", "-q", "--out", tmp_path / "run")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own again
    finally:
        signal.signal(signal.SIGINT, inherited)
    assert result.exit_code == 130 and "--resume" in result.stderr, result.output
    rows = (tmp_path / ".run.partial" / "history.csv").read_text().splitlines()
    assert len(rows) == 2  # the header and epoch 1: epoch 2 ended the run before its row


def test_a_failed_run_says_it_failed(tmp_path, monkeypatch):
    import tensorflow as tf

    args = ["fit", "--units", 8, "--epochs", 3, "--no-profile", "-q", "--out", tmp_path / "run"]
    with failing_in_epoch(2, tf.errors.InternalError(None, None, "disk on fire")):
        assert run_cli(*args).exit_code == 1
    assert_one_line_error(run_cli(*args), "failed (InternalError: disk on fire)")


@pytest.mark.parametrize("name", ["/tmp/x", "../../x", "a/b", "..", ""])
def test_a_grid_name_is_a_name_not_a_place(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "grid.toml"
    grid.write_text(f'name = "{name}"\ncells = ["gru"]\nunits = [8]\nepochs = 1\n')
    assert_one_line_error(run_cli("compare", "--grid", grid), "must be a plain name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]


@pytest.mark.slow
def test_resume_on_another_text_is_refused_and_compare_retrains(tmp_path, monkeypatch, book):
    other = tmp_path / "other.txt"
    other.write_text(book.read_text()[::-1])  # same letters, another text
    with failing_in_epoch(2):
        args = ["fit", "--units", 8, "--epochs", 2, "--no-profile", "-q", "--out", tmp_path / "run"]
        assert run_cli(*args).exit_code == 130
    assert_one_line_error(run_cli(*args, "--resume", "--data", other, "--vocab", "letters"), "data_sha1")
    # compare: a model finished on one text is not "finished earlier" for another
    grid = ["compare", "--cells", "gru", "--units", 4, "--epochs", 1, "-q", "--out", tmp_path / "report"]
    grid += ["--vocab", "letters"]  # both texts: the study's letters
    assert run_cli(*grid).exit_code == 0
    again = run_cli(*grid, "--data", other)
    assert again.exit_code == 0 and "finished earlier" not in again.output
    metrics = json.loads((tmp_path / "report" / "runs" / "gru-4" / "metrics.json").read_text())
    assert metrics["data"]["source"] == str(other)
    assert "finished earlier" in run_cli(*grid, "--data", other).output


@pytest.mark.slow
def test_a_tune_worker_gives_up_on_something_that_is_not_a_chief(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    threading.Thread(target=lambda: [listener.accept() for _ in range(8)], daemon=True).start()
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfrnn",
            "tune",
            "--worker",
            f"127.0.0.1:{port}",
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(TFRNN_CHIEF_TIMEOUT="3"),
        timeout=120,
    )
    assert proc.returncode == 1 and time.monotonic() - started < 60
    assert f"no tuning chief answers at 127.0.0.1:{port} (waited 3 s" in proc.stderr
    listener.close()
    bad = subprocess.run(
        [sys.executable, "-m", "tfrnn", "tune", "--worker", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        env=subprocess_env(TFRNN_CHIEF_TIMEOUT="abc"),
        timeout=120,
    )
    assert bad.returncode == 1 and "$TFRNN_CHIEF_TIMEOUT must be a positive number" in bad.stderr


GRID, SPACE = ["compare", "--grid"], ["tune", "--space"]
WRONG_TYPES = {
    "grid: scalar units": (GRID, 'cells = ["gru"]\nunits = 8\n', "units in"),
    "grid: text lr": (GRID, 'lr = "fast"\ncells = ["gru"]\n', "--lr must be a number"),
    "grid: boolean layers": (GRID, 'cells = ["gru"]\nlayers = [true]\n', "layers in"),
    "space: string range": (SPACE, 'layers = "1-3"\n', "layers in"),
    "space: names for numbers": (SPACE, 'units = ["a", "b"]\n', "units in"),
    "space: three dropouts": (SPACE, "dropout = [0.1, 0.2, 0.3]\n", "dropout in"),
    "space: scalar embeddings": (SPACE, "embeddings = 16\n", "embeddings in"),
    "space: boolean layers": (SPACE, "layers = [true, true]\n", "layers in"),
    "space: scalar cells": (SPACE, 'cells = "gru"\n', "cells in"),
}


@pytest.mark.parametrize("command, text, expected", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_grid_and_space_values_of_the_wrong_type_are_refused(tmp_path, command, text, expected):
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    result = run_cli(*command, spec, "--out" if command == GRID else "--directory", tmp_path / "out")
    assert_one_line_error(result, expected)
    assert not (tmp_path / "out").exists()


def test_files_that_are_not_what_they_should_be(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    latin = tmp_path / "latin.toml"
    latin.write_bytes("name = 'caf\u00e9'".encode("latin-1"))
    assert_one_line_error(run_cli("compare", "--grid", folder), "is a folder, not a file")
    assert_one_line_error(run_cli("tune", "--space", folder, "--directory", tmp_path / "t"), "is a folder")
    assert_one_line_error(run_cli("tune", "--space", latin, "--directory", tmp_path / "t"), "not UTF-8")
    assert_one_line_error(run_cli("compare", "--units", ",", "--out", tmp_path / "r"), "--units takes")
    assert_one_line_error(run_cli("score", folder, "--text-file", folder), "")


def test_score_refuses_zero_windows_and_strides(small_run, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the time machine " * 20)
    for option in ("--window", "--stride"):
        result = run_cli("score", small_run["dir"], "--text-file", text, option, 0)
        assert_one_line_error(result, "--window and --stride must be positive integers")
    missing = run_cli("score", small_run["dir"], "--text-file", tmp_path / "nope.txt")
    assert_one_line_error(missing, "text file not found")  # the user's words: not a "data file"


def test_outputs_that_cannot_be_written_are_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_line_error(
        run_cli("fit", "--units", 8, "--epochs", 1, "--out", a_file / "run"), "cannot write in"
    )
    assert_one_line_error(
        run_cli("fit", "--units", 8, "--epochs", 1, "--out", "/proc/tfrnn/run"), "cannot write in"
    )
    result = run_cli(
        "fit",
        "--units",
        8,
        "--epochs",
        1,
        "-q",
        "--no-profile",
        "--out",
        tmp_path / "run",
        "--tensorboard",
        a_file,
    )
    assert_one_line_error(result, "--tensorboard")
    assert not (tmp_path / ".run.partial").exists() and not (tmp_path / "run").exists()


def test_generate_zero_characters_and_damaged_or_read_only_exports(small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run["dir"], run)
    assert run_cli("export", run).exit_code == 0
    zero = run_cli("generate", run, "--chars", 0, "--prompt", "it has")
    assert zero.exit_code == 0 and zero.stdout.strip() == "it has"
    (run / "model.keras").write_bytes((run / "model.keras").read_bytes()[:1000])
    assert_one_line_error(run_cli("export", run), "the run folder is damaged")
    for metrics in ("{}", "not json"):
        (run / "metrics.json").write_text(metrics)
        assert_one_line_error(run_cli("profile", run), "the run folder is damaged")
    assert_one_line_error(run_cli("profile", "--units", 1_000_000), "GiB available")


@pytest.mark.parametrize(
    "args",
    [["fit", "--seed", "-1"], ["fit", "--seed", "1e20"], ["fit", "--seed", "2147483648"]],
    ids=["negative", "float", "too large"],
)
def test_seeds_outside_their_range_are_one_line(tmp_path, args):
    assert_one_line_error(run_cli(*args, "--out", tmp_path / "run"), "--seed")
    assert list(tmp_path.iterdir()) == []


def test_generate_seed_outside_its_range_is_one_line(small_run):
    assert_one_line_error(run_cli("generate", small_run["dir"], "--seed", "1e20"), "--seed")


def test_a_task_index_outside_the_cluster_is_one_line(tmp_path, monkeypatch):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 5}}))
    result = run_cli("fit", "--strategy", "multi-worker", "--epochs", 1, "--out", tmp_path / "run")
    assert_one_line_error(result, "task index 5 is outside its cluster (2 worker task(s))")
    assert list(tmp_path.iterdir()) == []


def test_hw4_builds_only_the_windows_it_uses():
    import tracemalloc

    import numpy as np

    from tfrnn.data import hw4_window_bytes, hw4_windows

    ids = np.zeros(2_000_000, np.int32)  # 8 MB of text: all its windows would take 512 MB
    tracemalloc.start()
    try:
        parts = hw4_windows(ids, 32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(parts["train"][0]) == 10_000 and len(parts["val"][0]) == 5_000
    assert peak <= 1.5 * hw4_window_bytes(32)


def _hold_lock(path) -> subprocess.Popen:
    """Another process holding ``path``'s lock as tfrnn does (flock, its pid written in)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.pwrite(fd, str(os.getpid()).encode(), 0)\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_report_or_tuning_project_in_use_is_refused_naming_the_holder(tmp_path):
    report = tmp_path / "report"
    holder = _hold_lock(tmp_path / ".report.lock")
    try:
        result = run_cli("compare", "--cells", "gru", "--units", 8, "--epochs", 1, "--out", report)
        expected = f"the report {report} is in use by another tfrnn process (pid {holder.pid})"
        assert_one_line_error(result, expected)
    finally:
        holder.kill()
        holder.wait()
    assert not report.exists()
    tuning = tmp_path / "tuning"
    tuning.mkdir()
    holder = _hold_lock(tuning / ".tfrnn.lock")
    try:
        result = run_cli("tune", "--tuner", "random", "--max-trials", 1, "--epochs", 1, "--directory", tuning)
        assert_one_line_error(result, f"is in use by another tfrnn process (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    assert not (tuning / "tfrnn").exists()
