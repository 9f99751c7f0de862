"""Bad input: one clear line on stderr, a non-zero status, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import run_cli, subprocess_env


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


BAD_OPTIONS = {
    "unknown cell": (["--cell", "transformer"], "transformer"),
    "zero units": (["--units", "0"], "--units must be a positive integer"),
    "negative units": (["--units", "-4"], "--units must be a positive integer"),
    "zero layers": (["--layers", "0"], "--layers must be a positive integer"),
    "zero epochs": (["--epochs", "0"], "--epochs must be a positive integer"),
    "zero batch size": (["--batch-size", "0"], "--batch-size must be a positive integer"),
    "zero num steps": (["--num-steps", "0"], "--num-steps must be a positive integer"),
    "dropout one": (["--dropout", "1"], "--dropout must be in [0, 1)"),
    "negative dropout": (["--dropout", "-0.1"], "--dropout must be in [0, 1)"),
    "zero lr": (["--lr", "0"], "--lr must be a positive number"),
    "negative lr": (["--lr", "-1"], "--lr must be a positive number"),
    "nan lr": (["--lr", "nan"], "--lr must be a positive number"),
    "negative clip": (["--clip", "-1"], "--clip must be >= 0"),
    "unknown optimizer": (["--optimizer", "rmsprop"], "rmsprop"),
    "not a number": (["--units", "many"], "many"),
}

BAD_FILES = {
    "missing file": (None, "data file not found"),
    "empty file": (b"", "data file is empty"),
    "blank file": (b"  \n\n ", "data file is empty"),
    "binary file": (bytes(range(256)) * 4, "looks binary"),
    "not utf-8": ("caf\u00e9 au lait ".encode("latin-1") * 100, "not UTF-8"),
    "no letters": (b"1234 5678 !!! " * 100, "no letters"),
    "too short": (b"a short text", "text too short"),
}


def assert_one_line_error(result, expected: str):
    assert result.exit_code not in (0, None), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tfrnn: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, expected", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_options(tmp_path, args, expected):
    out = tmp_path / "run"
    assert_one_line_error(
        run_cli("fit", *args, "--epochs" if "--epochs" not in args else "--seed", "1", "--out", out), expected
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, expected", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_data_files(tmp_path, content, expected):
    data = tmp_path / "data.txt"
    if content is not None:
        _write(data, content)
    out = tmp_path / "run"
    # the letters vocabulary: a text without a-z has nothing it could learn (chars would)
    result = run_cli("fit", "--data", data, "--epochs", 1, "--out", out, "--vocab", "letters")
    assert_one_line_error(result, expected)
    assert not out.exists() and not (tmp_path / ".run.partial").exists()


def test_checksum_mismatch_of_the_book(tmp_path, monkeypatch, book):
    bad = _write(tmp_path / "timemachine.txt", book.read_bytes()[:-10])
    monkeypatch.setenv("TFRNN_DATA", str(bad))
    out = tmp_path / "run"
    assert_one_line_error(run_cli("fit", "--epochs", 1, "--out", out), "checksum mismatch")
    assert not out.exists() and not (tmp_path / ".run.partial").exists()


@pytest.mark.slow  # trains (or starts processes): not for the fast tier
def test_diverging_run_stops_with_a_clear_message(tmp_path):
    out = tmp_path / "run"
    result = run_cli("fit", "--units", 8, "--epochs", 2, "--lr", "1e9", "--clip", 0, "--out", out, "-q")
    assert_one_line_error(result, "became")
    assert "--lr" in result.stderr
    assert not out.exists() and not (tmp_path / ".run.partial").exists()


@pytest.mark.slow  # trains (or starts processes): not for the fast tier
@pytest.mark.parametrize(
    "args, expected",
    [
        (["fit", "--units", "0"], "--units must be a positive integer"),
        (["fit", "--data", "/no/such/file.txt", "--epochs", "1"], "data file not found"),
        (["fit", "--bogus"], "No such option"),
    ],
)
def test_the_installed_command_prints_no_traceback(tmp_path, args, expected):
    env = subprocess_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")  # the CLI must hide TensorFlow's start-up noise itself
    proc = subprocess.run(
        [sys.executable, "-m", "tfrnn", *args, "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith("tfrnn: error: ") and expected in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_quiet_run_of_the_installed_command_writes_nothing_to_stderr(tmp_path):
    env = subprocess_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")  # the CLI must keep TensorFlow's C++ log quiet itself
    proc = subprocess.run(
        [sys.executable, "-m", "tfrnn", "fit", "--units", "8", "--epochs", "1", "-q", "--no-profile"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, "TFRNN_XLA": "off"},
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("args", [[], ["/no/such/recurrence.so"]])
def test_the_kernel_self_check_run_by_hand_says_how_to_call_it(tmp_path, args):
    proc = subprocess.run(
        [sys.executable, "-m", "tfrnn.kernel_check", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("usage: python -m tfrnn.kernel_check PATH"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
