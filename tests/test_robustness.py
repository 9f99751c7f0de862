"""Failures end in one line with nothing half-written, and no work is lost (issue: robustness)."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager

import pytest

from tests.conftest import failing_in_epoch, run_cli
from tests.test_errors import assert_one_line_error
from tests.test_fit import read_csv

QUICK = ["--cell", "gru", "--units", 8, "--epochs", 2, "-q", "--no-profile"]


@pytest.fixture()
def run_copy(small_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(small_run["dir"], copy)
    return copy


@pytest.mark.slow
def test_generate_on_a_damaged_saved_model_says_to_export_again(run_copy):
    pb = run_copy / "saved_model" / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:100])  # truncated
    result = run_cli("generate", run_copy)
    assert_one_line_error(result, f"tfrnn export {run_copy}")
    assert str(run_copy / "saved_model") in result.stderr
    assert run_cli("export", run_copy).exit_code == 0  # ... and that mends it
    shutil.rmtree(run_copy / "saved_model" / "variables")
    assert_one_line_error(run_cli("generate", run_copy), f"tfrnn export {run_copy}")


def test_a_tensorflow_failure_ends_in_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import tensorflow as tf

    from tfrnn import train

    def out_of_memory(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[1000000]")

    monkeypatch.setattr(train.EpochTimer, "on_epoch_begin", out_of_memory)
    result = run_cli("fit", *QUICK, "--out", tmp_path / "run")
    assert_one_line_error(result, "training failed (out of memory")
    assert "nothing was kept" in result.stderr
    assert not (tmp_path / ".run.partial").exists() and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_tensorflow_failure_after_an_epoch_keeps_it_for_resume(tmp_path, monkeypatch):
    import tensorflow as tf

    with failing_in_epoch(2, tf.errors.InternalError(None, None, "something broke")):
        result = run_cli("fit", *QUICK, "--out", tmp_path / "run")
        assert_one_line_error(result, "1 completed epoch(s) are kept")
        assert "--resume" in result.stderr and (tmp_path / ".run.partial").is_dir()
    assert run_cli("fit", *QUICK, "--out", tmp_path / "run", "--resume").exit_code == 0


def test_a_model_too_large_for_memory_is_refused_before_anything_is_allocated(tmp_path):
    result = run_cli("fit", "--units", 1_000_000, "--epochs", 1, "--out", tmp_path / "run")
    assert_one_line_error(result, "GiB available")
    assert list(tmp_path.iterdir()) == []
    assert_one_line_error(run_cli("fit", "--num-steps", 100_000, "--out", tmp_path / "r"), "GiB available")


def test_tune_refuses_bad_options_before_writing_anything(tmp_path):
    for args, expected in (
        (["--max-trials", 0], "--max-trials must be a positive integer"),
        (["--final-epochs", -1], "--final-epochs must be a positive integer"),
        (["--time-budget", "nan"], "not a finite number"),
    ):
        result = run_cli("tune", *args, "--directory", tmp_path / "tuning")
        assert_one_line_error(result, expected)
        assert not (tmp_path / "tuning").exists()


@pytest.mark.parametrize(
    "command, expected",
    [
        (["generate", "RUN", "--temperature", "nan"], "not a finite number"),
        (["generate", "RUN", "--temperature", "inf"], "not a finite number"),
        (["fit", "--lr", "inf"], "--lr must be a positive number"),
        (["fit", "--dropout", "nan"], "--dropout must be in [0, 1)"),
        (["fit", "--clip", "nan"], "--clip must be >= 0"),
        (["fit", "--weight-decay", "inf"], "--weight-decay must be >= 0"),
        (["fit", "--preset", "book", "--time-budget", "nan"], "--time-budget must be a positive number"),
        (["tune", "--time-budget", "inf"], "not a finite number"),
    ],
)
def test_non_finite_numbers_are_refused(small_run, tmp_path, command, expected):
    args = [str(small_run["dir"]) if a == "RUN" else a for a in command]
    if args[0] == "fit":
        args += ["--out", tmp_path / "x"]
    elif args[0] == "tune":
        args += ["--directory", tmp_path / "x"]
    assert_one_line_error(run_cli(*args), expected)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_resume_with_fewer_epochs_than_completed_is_refused(tmp_path, monkeypatch):
    with failing_in_epoch(3):
        args = ["fit", "--cell", "gru", "--units", 8, "-q", "--no-profile", "--out", tmp_path / "run"]
        assert run_cli(*args, "--epochs", 4).exit_code == 130
    assert_one_line_error(run_cli(*args, "--epochs", 1, "--resume"), "already completed 2 epochs")
    assert (tmp_path / ".run.partial").is_dir()  # still there to resume
    result = run_cli(*args, "--epochs", 2, "--resume")  # as many as completed: finishes at once
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["epochs_run"] == m["config"]["epochs"] == 2


@pytest.mark.parametrize("stage", ["export", "profile"])
@pytest.mark.slow
def test_interrupt_after_training_resumes_without_retraining(tmp_path, monkeypatch, stage):
    from tfrnn import export, profile, train

    args = ["fit", "--cell", "gru", "--units", 8, "--epochs", 2, "-q", "--out", tmp_path / "run"]

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    target = (export, "export_saved_model") if stage == "export" else (profile, "profile_config")
    with monkeypatch.context() as m:
        m.setattr(*target, interrupt)
        if stage == "export":
            m.setattr("tfrnn.experiment.export_saved_model", interrupt, raising=False)
        assert run_cli(*args).exit_code == 130
    first = read_csv(tmp_path / ".run.partial" / "history.csv")
    trained = []
    monkeypatch.setattr(train.EpochTimer, "on_epoch_begin", lambda self, e, logs=None: trained.append(e))
    result = run_cli(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert trained == []  # no epoch ran again
    assert [r["loss"] for r in read_csv(tmp_path / "run" / "history.csv")] == [r["loss"] for r in first]


def test_family_figures_plot_epochs_from_1(tmp_path, monkeypatch):
    from tfrnn import report
    from tfrnn.rundir import write_history

    run = tmp_path / "runs" / "gru-8"
    run.mkdir(parents=True)
    rows = [
        dict(epoch=e, loss=1.0, perplexity=2.0, val_loss=1.0, val_perplexity=2.0, epoch_seconds=1.0)
        for e in (1, 2, 3)
    ]
    write_history(rows, run / "history.csv")
    plotted = []

    class Axis:
        def plot(self, x, y, **kwargs):
            plotted.append(list(x))

    @contextmanager
    def fake_figure(*args, **kwargs):
        yield Axis()

    monkeypatch.setattr(report, "figure", fake_figure)
    report.plot_family("GRU", [{"model": "gru-8", "status": "ok"}], tmp_path / "runs", tmp_path / "f.png")
    assert plotted == [[1, 2, 3]]


def test_tune_never_replaces_a_folder_it_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    for i in range(11):
        (mine / f"file{i}.txt").write_text("mine")
    tiny = ["--tuner", "random", "--max-trials", 1, "--epochs", 1, "--cells", "gru", "--units", "4-4"]
    tiny += ["--layers", "1-1", "-q", "--directory", tmp_path / "tuning"]
    for flags in ([], ["--overwrite"]):
        assert_one_line_error(run_cli("tune", *tiny, "--out", mine, *flags), "not a tfrnn run folder")
        assert len(list(mine.iterdir())) == 11
    project = tmp_path / "tuning" / "other"
    project.mkdir(parents=True)
    (project / "notes.txt").write_text("mine")
    result = run_cli("tune", *tiny, "--project", "other", "--overwrite")
    assert_one_line_error(result, "not a tfrnn tuning project")
    assert (project / "notes.txt").read_text() == "mine"
