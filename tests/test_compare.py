"""`tfrnn compare`: a small grid end to end, resume after interruption, failures recorded."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import run_cli
from tests.test_errors import assert_one_line_error


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "report"
    result = run_cli("compare", "--cells", "gru,lstm", "--units", 8, "--epochs", 1, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    return out, result


@pytest.mark.slow
def test_report_csv_json_and_figures_hold_the_trained_models_numbers(two_models):
    out, result = two_models
    rows = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in rows] == ["gru-8", "lstm-8"]
    with open(out / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    report = (out / "report.md").read_text()
    for row, csv_row in zip(rows, csv_rows):
        metrics = json.loads((out / "runs" / row["model"] / "metrics.json").read_text())
        assert row["val_ppl"] == metrics["final_val_perplexity"]
        assert float(csv_row["val_ppl"]) == pytest.approx(metrics["final_val_perplexity"])
        assert row["params_recurrent_study"] == metrics["parameters"]["recurrent_study"]
        assert f"| {row['model']} | {row['val_ppl']:.2f} |" in report
        assert metrics["continuations"]["it has"] in report
        assert (out / "runs" / row["model"] / "saved_model" / "saved_model.pb").is_file()
    assert rows[0]["macs_1024_study"] == 991_232 and rows[1]["params_recurrent_study"] == 1_216
    figures = [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert {
        "val_ppl_gru.png",
        "val_ppl_lstm.png",
        "val_ppl_8_units.png",
        "ppl_vs_params.png",
        "time_vs_units.png",
    } <= set(figures)
    for name in figures:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "## Findings" in report and "lstm-8: 1,184 in Keras, 1,216 in the study's convention" in report
    assert "gru-8" in result.stdout and "report:" in result.stdout


@pytest.mark.slow
def test_interrupted_comparison_trains_only_what_is_missing(tmp_path, monkeypatch):
    from tfrnn import train

    out = tmp_path / "report"
    args = ["compare", "--cells", "rnn", "--units", "4,6", "--epochs", 1, "--out", out, "-q"]
    original, calls = train.EpochTimer.on_epoch_begin, []

    def interrupt_second_model(self, epoch, logs=None):
        calls.append(epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(self, epoch, logs)

    monkeypatch.setattr(train.EpochTimer, "on_epoch_begin", interrupt_second_model)
    result = run_cli(*args)
    assert result.exit_code == 130 and "run the same command again" in result.stderr
    first = out / "runs" / "rnn-4" / "metrics.json"
    assert first.is_file() and not (out / "runs" / "rnn-6").exists()
    stamp = first.stat().st_mtime_ns

    monkeypatch.setattr(train.EpochTimer, "on_epoch_begin", original)
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "rnn-4: finished earlier, kept" in result.stdout and "rnn-6: training" in result.stdout
    assert first.stat().st_mtime_ns == stamp
    assert [r["model"] for r in json.loads((out / "results.json").read_text())] == ["rnn-4", "rnn-6"]

    # a run written by a tfrnn that had fewer options (no "precision") is still the same run
    metrics = json.loads(first.read_text())
    del metrics["config"]["precision"]
    first.write_text(json.dumps(metrics))
    result = run_cli(*args)
    assert result.exit_code == 0 and "rnn-4: finished earlier, kept" in result.stdout


@pytest.mark.slow
def test_a_failing_model_is_recorded_and_the_rest_go_on(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        'name = "mixed"\nepochs = 1\n\n[[models]]\ncell = "gru"\nunits = 4\nlr = 1e9\nclip = 0\n\n'
        '[[models]]\ncell = "rnn"\nunits = 4\n'
    )
    out = tmp_path / "report"
    result = run_cli("compare", "--grid", grid, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    rows = {r["model"]: r for r in json.loads((out / "results.json").read_text())}
    assert rows["gru-4"]["status"] == "failed" and "became" in rows["gru-4"]["error"]
    assert rows["rnn-4"]["status"] == "ok"
    report = (out / "report.md").read_text()
    assert "## Failed models" in report and "gru-4" in report.split("## Failed models")[1]


@pytest.mark.parametrize(
    "content, expected",
    [
        ("cells = ['gru']\nwidth = 3\n", "unknown setting(s)"),
        ("cells = ['gpt']\n", "unknown cell"),
        ("epochs = 2\n", "needs [[models]]"),
        ("cells = [\n", "not valid TOML"),
        ("cells = ['gru']\nunits = [0]\n", "--units must be a positive integer"),
    ],
)
def test_bad_grids_are_refused_in_one_line(tmp_path, content, expected):
    grid = tmp_path / "grid.toml"
    grid.write_text(content)
    assert_one_line_error(run_cli("compare", "--grid", grid, "--out", tmp_path / "r"), expected)
    assert not (tmp_path / "r").exists()


def test_bad_grid_options_are_refused(tmp_path):
    assert_one_line_error(run_cli("compare", "--units", "8,x", "--out", tmp_path / "r"), "comma-separated")
    assert_one_line_error(run_cli("compare", "--grid", tmp_path / "none.toml"), "grid file not found")
    assert_one_line_error(run_cli("compare", "--grid", "hw4", "--cells", "gru"), "not both")
