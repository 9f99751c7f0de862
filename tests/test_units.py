"""Library pieces checked on hand-made inputs, with the figures they must give."""

from __future__ import annotations

import math

import pytest

from tfrnn.errors import TrainingDiverged


def _row(model, units, val_ppl, train_ppl, best_val_ppl=None, best_epoch=50, layers=1):
    return {
        "model": model,
        "status": "ok",
        "units": units,
        "layers": layers,
        "val_ppl": val_ppl,
        "train_ppl": train_ppl,
        "best_val_ppl": best_val_ppl or val_ppl,
        "best_epoch": best_epoch,
        "epochs": 50,
        "params_recurrent_study": 100 * units,
        "params_recurrent_keras": 100 * units,
    }


def test_findings_follow_the_rows():
    from tfrnn.report import findings

    monotone = [_row("gru-8", 8, 9.0, 8.0), _row("gru-16", 16, 7.0, 6.0)]
    said = findings({"GRU": monotone}, monotone, unigram=16.0)
    assert said[0] == (
        "GRU: more units gave lower validation perplexity at every step (gru-8, gru-16), as the study found."
    )
    overfit = [_row("gru-8", 8, 9.0, 8.0), _row("gru-16", 16, 9.5, 5.0, best_val_ppl=8.5, best_epoch=20)]
    said = findings({"GRU": overfit}, overfit, unigram=16.0)
    assert (
        said[0].startswith("GRU: unlike the study") and "gru-16 (9.50) is not below gru-8 (9.00)" in said[0]
    )
    assert "by training perplexity the order is the study's (8.00 > 5.00" in said[1]
    assert "gru-16 overfits (validation perplexity was lowest, 8.50, at epoch 20 and rose to 9.50" in said[2]
    deep = [_row("gru-3x32", 32, 15.5, 15.0, layers=3) | {f"continuation: {p}": "   " for p in _prompts()}]
    said = findings({}, deep, unigram=16.0)
    assert (
        said[0]
        == "Stalled near the unigram level (validation perplexity 16.00 from letter counts alone): gru-3x32."
    )
    assert said[1] == (
        "1 of 1 deep stacks wrote only blanks after the three prompts (gru-3x32); in the study 3 of 4 did."
    )
    learned = [_row("gru-5x32", 32, 12.0, 11.0, layers=5) | {f"continuation: {p}": "the" for p in _prompts()}]
    said = findings({}, learned, unigram=16.0)
    assert said[0] == (
        "The study's gru-5x32 stalled near the unigram level (16.7); "
        "here it reached 12.00 (unigram level 16.00)."
    )
    assert said[1].startswith("0 of 1 deep stacks wrote only blanks after the three prompts;")


def _prompts():
    from tfrnn.study import PROMPTS

    return PROMPTS


def test_unigram_perplexity_is_the_letter_count_level(tmp_path):
    from tfrnn.compare import unigram_perplexity
    from tfrnn.config import TrainConfig

    text = tmp_path / "ab.txt"
    text.write_text("ab" * 1000)  # 2,000 characters: a and b only
    n_train = int(0.9 * 2000)  # the book preset's training part: 900 a, 900 b
    # add-one smoothing over the 28 tokens: p(a) = p(b) = 901 / (1,800 + 28)
    letters = TrainConfig.resolve("book", num_steps=10, vocab="letters")
    assert unigram_perplexity(text, letters) == pytest.approx((n_train + 28) / (n_train / 2 + 1))
    # the text's own characters: <unk>, a and b
    chars = TrainConfig.resolve("book", num_steps=10, vocab="chars")
    assert unigram_perplexity(text, chars) == pytest.approx((n_train + 3) / (n_train / 2 + 1))


def test_a_short_text_is_split_two_thirds_one_third():
    import numpy as np

    from tfrnn.data import hw4_windows

    parts = hw4_windows(np.arange(1_000, dtype=np.int32) % 28, 32)  # 968 windows of 33 characters
    assert len(parts["train"][0]) == 645 and len(parts["val"][0]) == 323
    assert (parts["val"][0][0] == np.arange(645, 677) % 28).all()


@pytest.mark.parametrize(
    "logs, expected",
    [
        (
            {"loss": 1.0, "perplexity": 2.7, "val_loss": math.nan, "val_perplexity": math.nan},
            "validation loss",
        ),
        ({"loss": math.inf, "perplexity": math.inf}, "training loss became inf in epoch 3"),
    ],
)
def test_stop_on_nan_checks_training_and_validation(logs, expected):
    from tfrnn.train import StopOnNaN

    with pytest.raises(TrainingDiverged, match=expected):
        StopOnNaN().on_epoch_end(2, logs)
    StopOnNaN().on_epoch_end(2, {"loss": 1.0, "val_loss": 1.2})  # finite: nothing happens


def test_steps_per_execution_divides_the_epoch():
    import tensorflow as tf

    from tfrnn.train import MAX_STEPS_PER_EXECUTION, steps_per_execution

    for steps in (1, 7, 10, 11, 24, 100, 243):
        n = steps_per_execution(steps)
        assert steps % n == 0 and 1 <= n <= MAX_STEPS_PER_EXECUTION
        assert not any(steps % m == 0 for m in range(n + 1, MAX_STEPS_PER_EXECUTION + 1))
    assert [steps_per_execution(s) for s in (10, 11, 24)] == [10, 1, 8]
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        assert steps_per_execution(10) == 1


def test_ranges_check_kind_bounds_and_finiteness():
    from tfrnn.config import POSITIVE_INT, TRAIN_RANGES
    from tfrnn.errors import ConfigError

    assert POSITIVE_INT.holds(1) and not any(POSITIVE_INT.holds(v) for v in (0, -3, 1.0, True, "1"))
    dropout, lr = TRAIN_RANGES["dropout"], TRAIN_RANGES["lr"]
    assert dropout.holds(0) and dropout.holds(0.99) and not dropout.holds(1.0)
    assert not any(r.holds(math.nan) or r.holds(math.inf) for r in (dropout, lr))
    assert lr.holds(1e-9) and not lr.holds(0.0)
    with pytest.raises(ConfigError, match=r"^--x must be a positive integer, got 0$"):
        POSITIVE_INT.check("--x", 0)
    assert lr.message("--lr", math.inf) == "--lr must be a positive number, got inf (not a finite number)"


def test_a_run_saved_before_an_option_existed_resumes_as_the_same_run(tmp_path):
    import json

    from tfrnn.config import TrainConfig
    from tfrnn.rundir import RunPaths

    config = {**TrainConfig.resolve("hw4").to_dict(), "data_sha1": "abc"}
    paths = RunPaths(tmp_path / "run")
    paths.partial.mkdir()
    paths.config_file.write_text(json.dumps({k: v for k, v in config.items() if k != "precision"}))
    assert paths.differences(config) == []
    other = {**config, "precision": "mixed_bfloat16"}
    assert paths.differences(other) == ["precision 'float32' vs 'mixed_bfloat16'"]


def test_the_data_stage_checks_and_loads_without_writing(tmp_path, monkeypatch):
    """experiment.prepare: the first stage alone, before any folder exists."""
    from tfrnn.config import TrainConfig
    from tfrnn.errors import ConfigError
    from tfrnn.experiment import prepare

    monkeypatch.chdir(tmp_path)
    said = []
    run = prepare(TrainConfig.resolve("hw4", units=4, epochs=1), None, log=said.append)
    assert run.corpus.vocab.kind == "letters" and run.splits.sizes == {"train": 10_000, "val": 5_000}
    assert run.initial_weights is None and run.result is None and said[0].startswith("data: ")
    with pytest.raises(ConfigError, match="GiB available"):
        prepare(TrainConfig.resolve("hw4", units=1_000_000, epochs=1), None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_the_memory_check_counts_parameters_as_keras_does(cell):
    """memory.parameter_count (from the shapes, before anything is built) equals the built
    model's count, one-hot or embedded input, one layer or a stack, any vocabulary size."""
    from tfrnn.config import TrainConfig
    from tfrnn.memory import parameter_count
    from tfrnn.models import build_model

    for layers, embedding, vocab_size in ((1, None, 28), (3, 16, 95), (2, None, 300)):
        config = TrainConfig.resolve("hw4", cell=cell, units=12, layers=layers, embedding=embedding)
        assert parameter_count(config, vocab_size) == build_model(config, vocab_size).count_params()


def test_epoch_callbacks_give_the_same_logs_in_any_order():
    import itertools
    import types

    from tfrnn.train import EpochTimer, PerplexityLogs, StopOnNaN

    model = types.SimpleNamespace(optimizer=types.SimpleNamespace(learning_rate=0.5), stop_training=False)
    seen = []
    for order in itertools.permutations([PerplexityLogs, StopOnNaN, lambda: EpochTimer(1e-9)]):
        callbacks = [make() for make in order]
        logs = {"loss": 1.0}
        for callback in callbacks:
            callback.set_model(model)
            callback.on_epoch_begin(0, logs)
        for callback in callbacks:
            callback.on_epoch_end(0, logs)
        assert logs.pop("epoch_seconds") > 0
        seen.append((logs, model.stop_training))
        model.stop_training = False
    assert all(s == seen[0] for s in seen)
    assert seen[0] == ({"loss": 1.0, "perplexity": pytest.approx(math.e), "learning_rate": 0.5}, True)
