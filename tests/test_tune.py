"""`tfrnn tune`: a tiny search end to end, resume after a kill, chief and two workers."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli, subprocess_env
from tests.test_distribute import _free_ports
from tests.test_errors import assert_one_line_error

TINY = [
    "--tuner",
    "random",
    "--max-trials",
    3,
    "--epochs",
    1,
    "--cells",
    "gru,rnn",
    "--units",
    "4-8",
    "--layers",
    "1-2",
    "-q",
]


def _trials(project) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in project.glob("trial_*/trial.json")}


def _recorded_perplexity(project, row: dict) -> float:
    """exp of the lowest validation loss Keras Tuner recorded for the row's trial."""
    trial = json.loads((project / f"trial_{row['trial']}" / "trial.json").read_text())
    observed = trial["metrics"]["metrics"]["val_loss"]["observations"]
    return math.exp(min(v for o in observed for v in o["value"]))


def _check_rows(project, rows: list[dict]) -> None:
    """Each completed row's perplexity is the one Keras Tuner recorded, and beats guessing
    uniformly among the 28 tokens (these models learn something in one epoch)."""
    for row in rows:
        assert row["val_perplexity"] == pytest.approx(_recorded_perplexity(project, row), rel=1e-9)
        assert row["val_perplexity"] < 28


@pytest.mark.slow
def test_tiny_search_end_to_end(tmp_path):
    best = tmp_path / "best"
    result = run_cli("tune", *TINY, "--directory", tmp_path / "tuning", "--out", best)
    assert result.exit_code == 0, result.output
    project = tmp_path / "tuning" / "tfrnn"
    rows = json.loads((project / "results.json").read_text())
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    for row in rows:
        assert row["cell"] in ("gru", "rnn") and 1 <= row["layers"] <= 2 and row["units"] in (4, 8)
        assert row["params"] > 0 and row["seconds"] > 0
        assert f"{row['val_perplexity']:.3f}" in result.stdout
    _check_rows(project, rows)
    assert (project / "results.csv").read_text().count("\n") == 4
    assert (project / "val_ppl_vs_params.png").read_bytes()[:4] == b"\x89PNG"
    winner = min(rows, key=lambda r: r["val_perplexity"])
    metrics = json.loads((best / "metrics.json").read_text())
    assert metrics["config"]["cell"] == winner["cell"] and metrics["config"]["units"] == winner["units"]
    assert metrics["config"]["layers"] == winner["layers"]
    # the same seed retrains the same model: the trial's figure to rounding
    assert metrics["final_val_perplexity"] == pytest.approx(winner["val_perplexity"], rel=1e-6)
    generated = run_cli("generate", best, "--prompt", "it has")
    assert generated.exit_code == 0 and generated.stdout.startswith("it has")


@pytest.mark.slow
def test_killed_search_resumes_and_reuses_the_completed_trial(tmp_path):
    directory = tmp_path / "tuning"
    cmd = [
        sys.executable,
        "-m",
        "tfrnn",
        "tune",
        *map(str, TINY),
        "--directory",
        str(directory),
        "--out",
        str(tmp_path / "best"),
    ]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    project = directory / "tfrnn"
    deadline = time.monotonic() + 240
    while not any(t["status"] == "COMPLETED" for t in _trials(project).values()):
        assert proc.poll() is None and time.monotonic() < deadline, "no trial completed"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {k: v for k, v in _trials(project).items() if v["status"] == "COMPLETED"}
    stamps = {k: (project / k / "trial.json").stat().st_mtime_ns for k in done}

    result = run_cli("tune", *TINY, "--directory", directory, "--out", tmp_path / "best")
    assert result.exit_code == 0, result.output
    after = _trials(project)
    assert len(after) == 3 and all(t["status"] == "COMPLETED" for t in after.values())
    for name, trial in done.items():  # kept as it was, not retrained
        assert (project / name / "trial.json").stat().st_mtime_ns == stamps[name]
        assert after[name]["score"] == trial["score"]


def test_a_state_save_cut_before_its_rename_keeps_the_previous_state(tmp_path, monkeypatch):
    """Keras Tuner's state files are written beside themselves and renamed into place, so a
    search killed mid-save leaves the last whole state for the resume (not an empty file)."""
    from keras_tuner.src import utils

    from tuner.search import atomic_tuner_state

    atomic_tuner_state()
    state = tmp_path / "oracle.json"
    utils.save_json(str(state), {"trials": 1})

    def killed(src, dst):
        raise KeyboardInterrupt  # as a kill between the write and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        utils.save_json(str(state), {"trials": 2})
    assert utils.load_json(str(state)) == {"trials": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["oracle.json"]  # no temporary left behind


@pytest.mark.slow
def test_chief_and_two_workers_run_every_trial_once(tmp_path):
    (port,) = _free_ports(1)
    directory = tmp_path / "tuning"
    base = [
        sys.executable,
        "-m",
        "tfrnn",
        "tune",
        *map(str, TINY),
        "--max-trials",
        "4",
        "--directory",
        str(directory),
        "--out",
        str(tmp_path / "best"),
    ]
    chief = subprocess.Popen(
        [*base, "--chief", f"127.0.0.1:{port}"],
        env=subprocess_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    workers = [
        subprocess.Popen(
            [*base, "--worker", f"127.0.0.1:{port}", "--worker-id", f"w{i}"],
            env=subprocess_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in (1, 2)
    ]
    for proc in workers:
        out, err = proc.communicate(timeout=420)
        assert proc.returncode == 0, err
        assert "worker done" in out
    out, err = chief.communicate(timeout=120)
    assert chief.returncode == 0, err
    trials = _trials(directory / "tfrnn")
    assert len(trials) == 4 and all(t["status"] == "COMPLETED" for t in trials.values())
    rows = json.loads((directory / "tfrnn" / "results.json").read_text())
    assert sorted(r["trial"] for r in rows) == sorted(t["trial_id"] for t in trials.values())
    assert all(r["val_perplexity"] for r in rows)
    assert (tmp_path / "best" / "saved_model").is_dir()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--layers", "3-1"], "inverted"),
        (["--units", "0-8"], "empty or inverted"),
        (["--units", "9-15"], "no power of two"),
        (["--cells", "gpt"], "unknown cell"),
        (["--max-trials", "0"], "--max-trials must be a positive integer"),
        (["--tuner", "grid"], "grid"),
        (["--worker", "127.0.0.1:1", "--worker-id", "x"], "no tuning chief answers"),
    ],
)
def test_bad_tune_input(tmp_path, args, expected, monkeypatch):
    monkeypatch.setenv("TFRNN_CHIEF_TIMEOUT", "1")
    keys = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
    try:
        result = run_cli("tune", "--epochs", 1, *args, "--directory", tmp_path / "t")
    finally:  # --worker sets Keras Tuner's variables in this (shared) test process
        for key in keys:
            os.environ.pop(key, None)
    assert_one_line_error(result, expected)


@pytest.mark.slow
def test_a_project_from_another_space_is_refused(tmp_path):
    result = run_cli("tune", *TINY, "--max-trials", 1, "--directory", tmp_path / "t", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    other = run_cli("tune", *TINY, "--units", "8-16", "--directory", tmp_path / "t")
    assert_one_line_error(other, "different search space")


@pytest.mark.slow
def test_book_search_validates_each_trial_on_the_whole_part(tmp_path):
    args = ["--preset", "book", "--tuner", "random", "--max-trials", 2, "--epochs", 1, "--cells", "lstm"]
    args += ["--units", "8-16", "--layers", "1-1", "-q"]
    result = run_cli("tune", *args, "--directory", tmp_path / "tuning", "--out", tmp_path / "best")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "tuning" / "tfrnn" / "results.json").read_text())
    assert len(rows) == 2 and all(r["status"] == "completed" and r["val_perplexity"] for r in rows)
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert "one sequence" in metrics["evaluation"] and metrics["test_perplexity"] is not None
    # the retrained winner's validation (the same 8 carried streams) is the trial's figure
    winner = min(rows, key=lambda r: r["val_perplexity"])
    history = json.loads(json.dumps(metrics))["final_val_perplexity"]
    assert history == pytest.approx(winner["val_perplexity"], rel=1e-6)  # the same seed: the same model


@pytest.mark.slow
def test_time_budget_stops_each_trial(tmp_path):
    args = ["--preset", "book", "--tuner", "random", "--max-trials", 2, "--epochs", 3, "--cells", "lstm"]
    args += ["--units", "8-8", "--layers", "1-1", "--time-budget", 0.001, "--final-epochs", 1, "-q"]
    result = run_cli("tune", *args, "--directory", tmp_path / "tuning", "--out", tmp_path / "best")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "tuning" / "tfrnn" / "results.json").read_text())
    assert [r["epochs"] for r in rows] == [1, 1]  # each trial stopped after its first epoch


@pytest.mark.slow
@pytest.mark.parametrize("kind, epochs", [("hyperband", 3), ("bayesian", 2)])
def test_hyperband_and_bayesian_searches_run_and_retrain_their_best(tmp_path, kind, epochs):
    tiny = [*TINY]
    tiny[tiny.index("random")] = kind
    tiny[tiny.index("--epochs") + 1] = epochs
    result = run_cli("tune", *tiny, "--directory", tmp_path / "tuning", "--out", tmp_path / "best")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "tuning" / "tfrnn" / "results.json").read_text())
    completed = [r for r in rows if r["status"] == "completed"]
    assert completed
    _check_rows(tmp_path / "tuning" / "tfrnn", completed)
    if kind == "bayesian":  # --max-trials 3, each trial its 2 epochs (their time, not one's)
        assert len(rows) == 3 and all(r["epochs"] == 2 for r in completed)
    else:  # Hyperband, max_epochs 3, factor 3: 1-epoch trials, the best continued to epoch 3
        trials = _trials(tmp_path / "tuning" / "tfrnn")
        values = {t["trial_id"]: t["hyperparameters"]["values"] for t in trials.values()}
        budget = {trial: v["tuner/epochs"] for trial, v in values.items()}
        start = {trial: v["tuner/initial_epoch"] for trial, v in values.items()}
        assert set(budget.values()) == {1, 3}
        assert all(r["epochs"] == budget[r["trial"]] - start[r["trial"]] for r in completed)
    metrics = json.loads((tmp_path / "best" / "metrics.json").read_text())
    winner = min(completed, key=lambda r: r["val_perplexity"])
    assert (metrics["config"]["cell"], metrics["config"]["units"]) == (winner["cell"], winner["units"])
