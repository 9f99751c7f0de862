"""Size and FLOPs: the study's figures, and tf.profiler counts that cover every time step."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import run_cli
from tfrnn.config import TrainConfig
from tfrnn.models import build_model, parameter_counts
from tfrnn.profile import analytic_flops, profiler_flops, study_macs

# The study's table (PROTOCOL.md): model -> (parameters, MACs for 1,024 steps), as printed.
STUDY = {
    ("gru", 8, 1): ("912", 0.99e6),
    ("gru", 16, 1): ("2.21k", 2.38e6),
    ("gru", 32, 1): ("5.95k", 6.32e6),
    ("gru", 64, 1): ("18.05k", 18.94e6),
    ("gru", 128, 1): ("60.67k", 63.05e6),
    ("lstm", 8, 1): ("1.22k", 1.33e6),
    ("lstm", 16, 1): ("2.94k", 3.18e6),
    ("lstm", 32, 1): ("7.94k", 8.45e6),
    ("lstm", 64, 1): ("24.06k", 25.3e6),
    ("lstm", 128, 1): ("80.9k", 84.15e6),
    ("rnn", 64, 1): ("6.02k", 6.23e6),
    ("gru", 32, 3): ("18.62k", 19.76e6),
    ("gru", 32, 5): ("31.3k", 33.19e6),
    ("lstm", 32, 3): ("24.83k", 26.41e6),
    ("lstm", 32, 5): ("41.73k", 44.37e6),
}


def as_printed(n: int, like: str) -> str:
    """Round ``n`` the way the study printed ``like`` (plain, or k with its decimals)."""
    if not like.endswith("k"):
        return str(n)
    decimals = len(like[:-1].split(".")[1]) if "." in like else 0
    return f"{n / 1000:.{decimals}f}k"


@pytest.mark.parametrize("model", STUDY, ids=[f"{c}-{layers}x{u}" for c, u, layers in STUDY])
def test_study_convention_matches_the_study(model):
    cell, units, layers = model
    params, macs = STUDY[model]
    counts = parameter_counts(build_model(TrainConfig.resolve(cell=cell, units=units, layers=layers), 28))
    assert as_printed(counts["recurrent_study"], params) == params
    assert study_macs(cell, units, layers, 28) == pytest.approx(macs, rel=0.01)


@pytest.mark.parametrize(
    "cell, units, layers, embedding",
    [
        ("rnn", 16, 1, None),
        ("gru", 8, 1, None),
        ("gru", 24, 2, None),
        ("lstm", 16, 1, None),
        ("lstm", 8, 1, 5),
    ],
)
def test_profiler_agrees_with_the_analytic_count(cell, units, layers, embedding):
    config = TrainConfig.resolve(cell=cell, units=units, layers=layers, embedding=embedding)
    d = embedding or 28
    counted = profiler_flops(config, 28, steps=12, batch=3)
    assert counted == analytic_flops(cell, units, layers, d, steps=12, batch=3)  # op for op


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.slow
def test_profiler_flops_grow_linearly_with_steps_and_batch(cell):
    # 8, 16 and 32 steps here; tools/ and the CLI use the same linearity up to 1,024.
    config = TrainConfig.resolve(cell=cell, units=16)
    by_steps = [profiler_flops(config, 28, steps=t) for t in (8, 16, 32)]
    assert by_steps[0] > 0
    assert by_steps[1] == pytest.approx(2 * by_steps[0], rel=0.01)
    assert by_steps[2] == pytest.approx(4 * by_steps[0], rel=0.01)
    by_batch = [profiler_flops(config, 28, steps=8, batch=b) for b in (1, 2, 4)]
    assert by_batch[1] == pytest.approx(2 * by_batch[0], rel=0.01)
    assert by_batch[2] == pytest.approx(4 * by_batch[0], rel=0.01)
    step = [profiler_flops(config, 28, steps=t, batch=8, part="train_step") for t in (4, 8, 16)]
    assert step[0] < step[1] < step[2]
    assert step[2] - step[1] == 2 * (step[1] - step[0])  # exactly linear: a per-step cost


def test_cli_profile_lstm_128_shows_the_study_figures():
    result = run_cli("profile", "--cell", "lstm", "--units", 128, "--no-speed")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "80,896" in out and "84.15M" in out  # study: 80.9k parameters, 84.15M MACs
    assert "FLOPs, 1,024 steps: profiler" in out and "FLOPs, 1,024 steps: analytic" in out
    profiler = float(re.search(r"steps: profiler\s+([\d.]+)M", out).group(1))
    analytic = float(re.search(r"steps: analytic\s+([\d.]+)M", out).group(1))
    assert profiler == analytic and profiler > 150  # equal counts print the same


@pytest.mark.slow
def test_fit_stores_the_profile_and_speed(profiled_run, small_run):
    m = json.loads((profiled_run["dir"] / "metrics.json").read_text())
    assert m["profile"]["params_recurrent_study"] == m["parameters"]["recurrent_study"]
    assert m["profile"]["macs_1024_study"] == study_macs("gru", 8, 1, 28)
    assert m["profile"]["flops_1024_profiler"] == m["profile"]["flops_1024_analytic"]
    config = TrainConfig.resolve(cell="gru", units=8)  # the run's: batch 1,024 x 32 steps
    assert m["profile"]["flops_train_step_profiler"] == profiler_flops(config, 28, 32, 1024, "train_step")
    assert m["speed"]["generate_ms_per_char"] > 0 and m["speed"]["score_chars_per_s"] > 0
    assert "profiling" in profiled_run["output"] and "profile" not in json.loads(
        (small_run["dir"] / "metrics.json").read_text()
    )  # --no-profile skips it
    result = run_cli("profile", profiled_run["dir"])
    assert result.exit_code == 0, result.output
    assert "training time" in result.stdout and "generation latency" in result.stdout
