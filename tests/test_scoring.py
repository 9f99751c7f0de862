"""`tfrnn score` of finished runs: the test part by default, ensembles, dynamic evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import run_cli, shared_run
from tests.test_wholetext import SMALL_BOOK

pytestmark = pytest.mark.slow


def _two_seeds(base):
    runs = []
    for seed in (0, 1):
        out = base / f"run{seed}"
        result = run_cli("fit", *SMALL_BOOK, "--epochs", 1, "--seed", seed, "--out", out)
        assert result.exit_code == 0, result.output
        runs.append(out)
    return runs


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory, book):
    """Two small book runs of the same text and vocabulary, from different seeds."""
    return shared_run(tmp_path_factory, "two_runs", _two_seeds)


def figures(output: str) -> dict[str, list[float]]:
    """The nats of every 'static:' and 'dynamic:' line of `tfrnn score`, in order."""
    found: dict[str, list[float]] = {"static": [], "dynamic": []}
    for line in output.splitlines():
        for kind in found:
            if f"{kind}:" in line:
                found[kind].append(float(line.split("bits/char, ")[1].split(" nats")[0]))
    return found


def test_score_reads_the_test_part_and_gives_the_run_s_own_test_figure(two_runs):
    run = two_runs[0]
    result = run_cli("score", run)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"{metrics['data']['part_characters']['test'] - 1:,} characters of the test part" in result.output
    (nats,) = figures(result.output)["static"]
    assert math.exp(nats) == pytest.approx(metrics["test_perplexity"], rel=1e-4)


def test_an_ensemble_is_no_worse_than_its_members_on_average(two_runs):
    result = run_cli("score", *two_runs)
    assert result.exit_code == 0, result.output
    *members, together = figures(result.output)["static"]
    assert len(members) == 2 and "ensemble of 2" in result.output
    # log of a mean >= mean of logs (Jensen), character by character
    assert together <= sum(members) / 2 + 1e-9
    same = figures(run_cli("score", two_runs[0], two_runs[0]).output)["static"]
    assert same[2] == pytest.approx(same[0], abs=1e-6)


def test_dynamic_evaluation_without_a_step_is_the_static_figure_and_restores_the_weights(two_runs, book):
    from tfrnn.scoring import DynamicEvaluator, gradient_rms, load_run, run_parts, static_log_probs

    run = load_run(two_runs[0])
    parts = run_parts(run)
    text = parts["test"][:700]
    before = [w.copy() for w in run.model.get_weights()]
    evaluator = DynamicEvaluator(run, gradient_rms(run, parts["train"]))
    np.testing.assert_allclose(evaluator.log_probs(text, 0.0, 0.0), static_log_probs(run, text), atol=1e-5)
    # a passage read again: weights adapted to its first reading predict it better
    passage = parts["test"][:150]
    repeated = np.concatenate([passage] * 4)
    adapted = evaluator.log_probs(repeated, 3e-3, 0.0)
    assert -adapted[-149:].mean() < -static_log_probs(run, repeated)[-149:].mean()
    for a, b in zip(before, run.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_dynamic_settings_are_chosen_on_validation_stored_and_reused(two_runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_runs[1], run)
    first = run_cli("score", run, "--dynamic")
    assert first.exit_code == 0, first.output
    stored = json.loads((run / "dynamic.json").read_text())
    assert stored["validation_cross_entropy"]["dynamic"] <= stored["validation_cross_entropy"]["static"]
    assert {
        "lr": stored["lr"],
        "decay": stored["decay"],
        "cross_entropy": pytest.approx(stored["validation_cross_entropy"]["dynamic"]),
    } in stored["grid"]
    marker = json.loads((run / ".tfrnn-run.json").read_text())
    assert "dynamic.json" in marker["files"]  # tfrnn's own: --overwrite may replace it
    found = figures(first.output)
    assert len(found["static"]) == 1 and len(found["dynamic"]) == 1
    second = run_cli("score", run, "--dynamic")
    assert "from " in second.output and str(run / "dynamic.json") in second.output
    assert figures(second.output) == found  # the same settings give the same figures


def test_score_errors_are_one_line(two_runs, small_run, tmp_path):
    hw4 = run_cli("score", small_run["dir"])
    assert hw4.exit_code != 0 and "pass --text-file" in hw4.output and "Traceback" not in hw4.output
    mixed = run_cli("score", two_runs[0], small_run["dir"], "--text-file", tmp_path / "nope.txt")
    assert mixed.exit_code != 0 and "Traceback" not in mixed.output
    text = tmp_path / "t.txt"
    text.write_text("The Time Traveller (for so it will be convenient to speak of him)")
    mixed = run_cli("score", two_runs[0], small_run["dir"], "--text-file", text)
    assert mixed.exit_code != 0 and "another vocabulary" in mixed.output
    windows = run_cli("score", two_runs[0], two_runs[1], "--text-file", text, "--window", 8)
    assert windows.exit_code != 0 and "--window" in windows.output


@pytest.mark.parametrize("best", [1e-5, 3e-4, 1e-3, 3e-2, 1e-1])
def test_the_settings_search_walks_to_the_lowest_cost_from_either_side(best):
    from tfrnn.scoring import LEARNING_RATES, LR_START, descend

    asked = []

    def cost(lr):
        asked.append(lr)
        return abs(math.log(lr / best))  # one minimum, anywhere on the grid

    assert descend(LEARNING_RATES, LR_START, cost) == best
    # a walk: nothing asked beyond one step past the stretch between the start and the best
    ends = sorted(LEARNING_RATES.index(v) for v in (LR_START, best))
    assert all(ends[0] - 1 <= LEARNING_RATES.index(v) <= ends[1] + 1 for v in asked)
    # a cost that rises on both sides of the start stays there
    assert descend(LEARNING_RATES, LR_START, lambda lr: abs(math.log(lr / LR_START))) == LR_START
