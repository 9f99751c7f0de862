"""Whole-text models (book preset): carried-state evaluation and training, best epoch,
time budget, resume, fine-tuning."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from tests.conftest import failing_in_epoch, run_cli, shared_run
from tests.test_fit import read_csv
from tfrnn.recipe import SHORT

#: A small, fast book model: 16 streams of 50 steps, 3 epochs.
SMALL_BOOK = [
    "--preset",
    "book",
    "--cell",
    "lstm",
    "--units",
    16,
    "--layers",
    1,
    "--embedding",
    8,
    "--carry-state",
]
SMALL_BOOK += ["--batch-size", 16, "--num-steps", 50, "--no-profile", "-q"]


def _book_fit(base):
    out = base / "run"
    result = run_cli("fit", *SMALL_BOOK, "--epochs", 3, "--out", out)
    assert result.exit_code == 0, result.output
    return {"dir": out, "output": result.output, "metrics": json.loads((out / "metrics.json").read_text())}


@pytest.fixture(scope="session")
def book_run(tmp_path_factory, book):
    """A small book model (carried state), 3 epochs."""
    return shared_run(tmp_path_factory, "book_run", _book_fit)


@pytest.fixture(scope="module")
def parts(book):
    from tfrnn.data import Corpus, book_parts

    # the book preset's vocabulary: the characters of its training part (as the run's)
    return book_parts(Corpus.load(book, "chars", preset="book", num_steps=50).ids, 50)


def reference_cross_entropy(model, ids: np.ndarray) -> float:
    """Mean cross-entropy of ids[1:] read one character at a time through the model's cells,
    the state carried by hand: the definition the carried-state evaluation must meet."""
    import tensorflow as tf

    from tfrnn.models import recurrent_layers

    names = [layer.name for layer in model.layers]
    embed = model.get_layer("embedding" if "embedding" in names else "one_hot")
    cells = [layer.cell for layer in recurrent_layers(model)]
    dense = model.get_layer("logits")
    states = [[tf.zeros([1, s]) for s in np.atleast_1d(cell.state_size)] for cell in cells]

    @tf.function
    def step(token, states):
        x = embed(token[None, None])[:, 0]
        new = []
        for cell, state in zip(cells, states):
            x, state = cell(x, state, training=False)
            new.append(list(state))
        return tf.nn.log_softmax(dense(x))[0], new

    total = 0.0
    for t in range(len(ids) - 1):
        logp, states = step(tf.constant(ids[t]), states)
        total -= float(logp[ids[t + 1]])
    return total / (len(ids) - 1)


def test_stream_layout_counts_every_prediction_once():
    from tfrnn.evaluate import stream_layout

    for n, streams, burn_in in ((1, 1, 0), (10, 3, 4), (1000, 8, 256), (17, 17, 5), (5, 8, 2)):
        index, weight = stream_layout(n, streams, burn_in)
        counted = index[weight > 0]
        assert sorted(counted.tolist()) == list(range(n))  # each prediction exactly once
        for row, w in zip(index, weight):
            read = row[row >= 0]
            assert (np.diff(read) == 1).all()  # each stream reads a contiguous stretch
            if w.any():  # and reads at most burn_in uncounted characters before its own
                assert np.argmax(w > 0) <= burn_in
    index, weight = stream_layout(100, 1, 0)
    assert index.tolist() == [list(range(100))] and weight.all()


def test_a_long_validation_part_is_read_in_more_streams_up_to_the_batch():
    from tfrnn.evaluate import CHUNK, STREAM_CHARS, validation_chunk, validation_streams

    # the book's 8,949 characters and Vim's manuals' 76,576 keep the 8 streams measured
    assert validation_streams(8_949, 64) == validation_streams(76_576, 64) == 8
    assert validation_streams(8 * STREAM_CHARS + STREAM_CHARS - 1, 64) == 8
    assert validation_streams(9 * STREAM_CHARS, 64) == 9
    assert validation_streams(600_130, 64) == 36  # Python's source: 5% of 12 M characters
    assert validation_streams(2_621_310, 64) == 64  # 5% of 52 M: no more rows than training's
    assert validation_streams(2_621_310, 32) == 32
    assert validation_streams(2_621_310, 4) == 8  # a batch of 4 still validates in 8
    # a call reads as many positions as 8 streams of CHUNK did, whatever the streams
    assert validation_chunk(8) == CHUNK and validation_chunk(64) == CHUNK // 8
    assert 36 * validation_chunk(36) <= 8 * CHUNK < 36 * (validation_chunk(36) + 1)


@pytest.mark.slow
def test_carried_evaluation_equals_a_one_stream_reference_loop(book_run, parts):
    import keras

    import tfrnn.train  # noqa: F401
    from tfrnn.config import TrainConfig
    from tfrnn.evaluate import StreamScorer

    model = keras.saving.load_model(book_run["dir"] / "model.keras")
    config = TrainConfig(**book_run["metrics"]["config"])
    ids = parts["test"][:300]
    expected = reference_cross_entropy(model, ids)
    # chunks of 64 steps: the state must cross the chunk boundaries unchanged
    size = book_run["metrics"]["vocabulary"]["size"]
    scorer = StreamScorer(config, size, streams=1, chunk=64)
    assert scorer.cross_entropy(ids, model) == pytest.approx(expected, rel=1e-5)
    # several streams without a burn-in start from zero states: a different figure
    assert StreamScorer(config, size, streams=4).cross_entropy(ids, model) != pytest.approx(
        expected, rel=1e-5
    )


@pytest.mark.slow
def test_book_run_reports_one_sequence_figures_of_its_best_epoch(book_run, parts, tmp_path):
    import keras

    import tfrnn.train  # noqa: F401
    from tfrnn.config import TrainConfig
    from tfrnn.evaluate import VALIDATION_BURN_IN, VALIDATION_STREAMS, StreamScorer

    m, out = book_run["metrics"], book_run["dir"]
    history = read_csv(out / "history.csv")
    assert m["config"]["carry_state"] and m["stopped_by"] == "epochs" and m["epochs_run"] == 3
    best = min(history, key=lambda r: r["val_loss"])
    assert m["best_epoch"] == best["epoch"]
    model = keras.saving.load_model(out / "model.keras")
    config = TrainConfig(**m["config"])
    # the exported weights are the best epoch's: the per-epoch validation figure reappears
    size = m["vocabulary"]["size"]
    streams = StreamScorer(config, size, VALIDATION_STREAMS, VALIDATION_BURN_IN)
    assert streams.cross_entropy(parts["val"], model) == pytest.approx(best["val_loss"], rel=1e-5)
    # ... and the parallel streams stay within 0.5% of reading the part as one sequence
    assert best["val_perplexity"] == pytest.approx(m["best_val_perplexity"], rel=5e-3)
    one = StreamScorer(config, size, streams=1)
    assert one.perplexity(parts["val"], model) == pytest.approx(m["best_val_perplexity"], rel=1e-6)
    assert one.perplexity(parts["test"], model) == pytest.approx(m["test_perplexity"], rel=1e-6)
    # `tfrnn score` on the test part, read whole from one state, gives the same figure
    from tfrnn.data import Vocab

    text = tmp_path / "test_part.txt"
    vocab = Vocab.from_json((out / "vocab.json").read_text(encoding="utf-8"))
    text.write_text(vocab.decode(parts["test"]), encoding="utf-8")  # the test part's characters
    result = run_cli("score", out, "--text-file", text)
    assert result.exit_code == 0, result.output
    printed = float(result.output.split("perplexity ")[1].split(",")[0])  # 3 decimals
    assert printed == pytest.approx(m["test_perplexity"], abs=5e-4 + 1e-5 * printed)
    assert f"{len(parts['test']) - 1:,} characters in 1 text(s)" in result.output
    assert f"test perplexity {m['test_perplexity']:.3f}" in book_run["output"]


def test_carried_state_batches_continue_each_other(book):
    from tfrnn.data import Corpus, make_splits

    corpus = Corpus.load(book)
    splits = make_splits(corpus, "book", num_steps=50, batch_size=16, seed=0, carry_state=True)
    train = corpus.ids[: splits.sizes["train"]]
    epochs = [[(x.numpy(), y.numpy()) for x, y in splits.epochs(e, e + 1)] for e in range(2)]
    assert len(epochs[0]) == len(epochs[1]) == splits.steps_per_epoch
    for batches in epochs:
        x0 = batches[0][0]
        starts = [
            int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(train, 50) == row, 1))[0])
            for row in x0[:2]
        ]
        for i, (x, y) in enumerate(batches):
            assert x.shape == (16, 50) and (x[:, 1:] == y[:, :-1]).all()
            for b, start in enumerate(starts):  # row b continues where it stopped
                assert (x[b] == train[start + 50 * i : start + 50 * (i + 1)]).all()
        assert starts[1] - starts[0] == 50 * splits.steps_per_epoch  # streams are contiguous slices
    assert epochs[0][0][0][0].tolist() != epochs[1][0][0][0].tolist()  # a new offset each epoch


@pytest.mark.slow
def test_resumed_carried_state_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    args = ["fit", *SMALL_BOOK, "--epochs", 3]
    whole = run_cli(*args, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    with failing_in_epoch(3):
        assert run_cli(*args, "--out", tmp_path / "split").exit_code == 130
    resumed = run_cli(*args, "--out", tmp_path / "split", "--resume")
    assert resumed.exit_code == 0, resumed.output
    a, b = (read_csv(tmp_path / name / "history.csv") for name in ("whole", "split"))
    for row_a, row_b in zip(a[:2], b[:2]):  # the interrupted run's epochs are kept as they were
        assert (row_a["loss"], row_a["val_loss"]) == (row_b["loss"], row_b["val_loss"])
    # the resumed epoch continues from the saved weights, optimizer, schedule and dropout
    # seeds: equal within float noise (a restart from scratch or a lost optimizer state
    # would move it by percents)
    for key in ("loss", "val_loss"):
        assert a[2][key] == pytest.approx(b[2][key], rel=1e-3)
    ma, mb = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("whole", "split"))
    assert ma["test_perplexity"] == pytest.approx(mb["test_perplexity"], rel=1e-3)


@pytest.mark.slow
def test_time_budget_stops_after_the_epoch_that_crosses_it(tmp_path):
    out = tmp_path / "budget"
    result = run_cli("fit", *SMALL_BOOK, "--epochs", 5, "--time-budget", 0.001, "--out", out)
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs_run"] == 1 and m["stopped_by"] == "time budget"
    assert "stopped by the time budget" in result.output
    # a budget this short buys under SHORT_EPOCHS epochs: the short recipe, said and recorded
    assert "recipe: " in result.output
    assert (m["config"]["dropout"], m["config"]["schedule"]) == (SHORT["dropout"], SHORT["schedule"])


@pytest.mark.slow
def test_cosine_schedule_follows_the_epochs_or_the_time_budget(tmp_path):
    epochs = run_cli("fit", *SMALL_BOOK, "--epochs", 3, "--out", tmp_path / "epochs")
    assert epochs.exit_code == 0, epochs.output
    lr = [r["learning_rate"] for r in read_csv(tmp_path / "epochs" / "history.csv")]
    # warm-up to 3e-3 over epoch 1, then cosine: half-way at the end of epoch 2, ~0 at the end
    assert lr[0] == pytest.approx(3e-3, rel=1e-3) and lr[1] == pytest.approx(1.5e-3, rel=1e-2)
    assert lr[2] == pytest.approx(0, abs=1e-9)
    budget_args = ["--epochs", 50, "--time-budget", 0.15, "--schedule", "cosine"]  # not the budget's recipe
    budget = run_cli("fit", *SMALL_BOOK, *budget_args, "--out", tmp_path / "budget")
    assert budget.exit_code == 0, budget.output
    rows = read_csv(tmp_path / "budget" / "history.csv")
    assert 1 < len(rows) < 50  # stopped by the clock
    lr = [r["learning_rate"] for r in rows]
    spent = np.cumsum([r["epoch_seconds"] for r in rows])
    # each epoch's rate is the cosine at the share of the budget spent by its middle (or of
    # the 50 epochs, where that is larger)
    for i in range(1, len(rows)):
        share = max((spent[i - 1] + rows[i - 1]["epoch_seconds"] / 2) / 9.0, (i + 0.5) / 50)
        assert lr[i] == pytest.approx(1.5e-3 * (1 + math.cos(math.pi * min(share, 1))), rel=1e-4, abs=1e-9)
    # a budget far longer than the epochs take: the rate decays over the epochs instead, so
    # the last epoch does not end at the peak rate with the budget barely begun
    capped = run_cli(
        "fit",
        *SMALL_BOOK,
        "--epochs",
        3,
        "--time-budget",
        60,
        "--schedule",
        "cosine",
        "--out",
        tmp_path / "capped",
    )
    assert capped.exit_code == 0, capped.output
    lr = [r["learning_rate"] for r in read_csv(tmp_path / "capped" / "history.csv")]
    assert lr == pytest.approx([1.5e-3 * (1 + math.cos(math.pi * (i + 0.5) / 3)) for i in range(3)], rel=1e-4)


@pytest.mark.slow
def test_init_from_starts_from_the_runs_weights(book_run, tmp_path):
    import keras

    import tfrnn.train  # noqa: F401

    other = tmp_path / "other.txt"
    other.write_text("the quick brown fox jumps over the lazy dog " * 800)
    out = tmp_path / "tuned"
    # a learning rate of ~0: the fine-tuned weights are the source run's
    result = run_cli(
        "fit",
        "--preset",
        "book",
        "--init-from",
        book_run["dir"],
        "--data",
        other,
        "--epochs",
        1,
        "--lr",
        1e-12,
        "--optimizer",
        "adam",
        "--batch-size",
        16,
        "--num-steps",
        50,
        "--out",
        out,
        "--no-profile",
        "-q",
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["init_from"] == str(book_run["dir"])
    assert (m["config"]["cell"], m["config"]["units"], m["config"]["embedding"]) == ("lstm", 16, 8)
    source = keras.saving.load_model(book_run["dir"] / "model.keras").get_weights()
    tuned = keras.saving.load_model(out / "model.keras").get_weights()
    for a, b in zip(source, tuned, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_init_from_errors_are_one_line(book_run, tmp_path):
    conflict = run_cli("fit", "--preset", "book", "--init-from", book_run["dir"], "--units", 32)
    assert conflict.exit_code == 1 and "--units 32 vs 16" in conflict.stderr
    assert "Traceback" not in conflict.output
    empty = tmp_path / "empty"
    empty.mkdir()
    not_run = run_cli("fit", "--preset", "book", "--init-from", empty)
    assert not_run.exit_code == 1 and "not a tfrnn run folder" in not_run.stderr
    missing = run_cli("fit", "--preset", "book", "--init-from", tmp_path / "nope")
    assert missing.exit_code == 1 and "is not a folder" in missing.stderr
    assert not (tmp_path / "saved_models").exists()


def test_book_defaults_are_the_measured_best():
    from tfrnn.config import TrainConfig

    config = TrainConfig.resolve("book")
    assert config.dropout_at == "all" and config.schedule == "cosine" and config.time_budget <= 15
    assert TrainConfig.resolve("book", epochs=3).time_budget is None  # epochs asked for: no clock
    assert config.optimizer == "adamw" and config.weight_decay > 0
    assert TrainConfig.resolve("book", optimizer="sgd").weight_decay == 0
    hw4 = TrainConfig.resolve("hw4")
    assert (hw4.cell, hw4.units, hw4.layers, hw4.carry_state, hw4.schedule) == (
        "gru",
        32,
        1,
        False,
        "constant",
    )
    assert not math.isnan(config.lr)


def test_a_budget_that_buys_few_epochs_gets_the_short_recipe_and_a_resume_keeps_it():
    from tfrnn.config import TrainConfig
    from tfrnn.recipe import SHORT, SHORT_EPOCHS, budget_epochs, for_budget, started_with, step_flops

    config = TrainConfig.resolve("book")  # LSTM 2 x 512, batches of 64 x 100
    # forward: 2 x 4 x 512 x (64 + 512) + 2 x 4 x 512 x 1024 + 2 x 512 x 69 per character
    assert step_flops(config, 69) == 3 * (2 * 4 * 512 * (576 + 1024) + 2 * 512 * 69) * 6400
    small = dataclasses.replace(config, units=64, batch_size=16)  # its matrix product: quick to time
    short = dataclasses.replace(small, time_budget=1e-4)
    assert budget_epochs(short, 69, 25) < SHORT_EPOCHS
    chosen, line = for_budget(short, 69, 25)
    assert chosen == dataclasses.replace(short, **SHORT) and "epochs" in line
    long = dataclasses.replace(small, time_budget=1e6)
    chosen, line = for_budget(long, 69, 25)
    assert chosen == long and for_budget(long, 69, 25, choose_size=True)[0] == long  # keeps the width
    # ... and the line says that the epoch cap, not the budget, will end it
    assert f"its cap of {long.epochs} epochs ends the run first" in line and "pass --epochs" in line
    uncapped = dataclasses.replace(long, epochs=10**12)
    assert for_budget(uncapped, 69, 25) == (uncapped, None)  # nothing to say
    # a resumed run keeps what its start chose, whatever the estimate says now
    started_short = {**long.to_dict(), **SHORT, "units": 32}
    assert started_with(long, started_short) == dataclasses.replace(long, **SHORT, units=32)
    assert started_with(short, small.to_dict()) == short


@pytest.mark.parametrize(
    "train_chars, passes, width",
    [
        # the estimate's passes per width in 3 minutes on a 2-core EPYC, and the width whose
        # test bits per character were best there (tfrnn.recipe's docstring)
        (161_081, {512: 9.65, 256: 36.1, 128: 115}, 256),  # the book
        (1_378_361, {512: 1.24, 256: 4.45, 128: 13.2}, 256),  # Vim's manuals
        (11_323_136, {512: 0.14, 256: 0.54, 128: 1.68}, 128),  # Python's standard library
    ],
)
def test_a_larger_text_asks_fewer_passes_of_a_width(monkeypatch, train_chars, passes, width):
    from tfrnn import recipe
    from tfrnn.config import TrainConfig

    config = dataclasses.replace(TrainConfig.resolve("book"), time_budget=3)
    monkeypatch.setattr(recipe, "budget_epochs", lambda c, v, s: passes[c.units])
    chosen, line = recipe.for_budget(config, 100, 25, choose_size=True, train_chars=train_chars)
    assert chosen.units == width, line
    assert recipe.size_epochs(161_081) == recipe.SIZE_EPOCHS == recipe.size_epochs()  # the book's rule
    assert recipe.size_epochs(16 * 161_081) == pytest.approx(recipe.SIZE_EPOCHS / 8)


def test_a_budget_that_buys_few_passes_cuts_them_into_epochs_and_a_resume_keeps_them(monkeypatch):
    from tfrnn import recipe
    from tfrnn.config import TrainConfig

    config = dataclasses.replace(TrainConfig.resolve("book"), time_budget=15)
    # a large text on a machine where 15 minutes buy 2.5 passes over it: epochs of a
    # quarter pass, whole steps of 64 x 100 characters
    monkeypatch.setattr(recipe, "budget_epochs", lambda c, v, s: 2.5)
    chosen, line = recipe.epoch_for_budget(config, 69, 7000, 45_000_000)
    assert chosen.epoch_chars == 11_250_000 // 6400 * 6400 and "about 2.5 passes" in line
    assert chosen == dataclasses.replace(config, epoch_chars=chosen.epoch_chars)  # nothing else
    monkeypatch.setattr(recipe, "budget_epochs", lambda c, v, s: recipe.BUDGET_EPOCHS)
    assert recipe.epoch_for_budget(config, 69, 25, 160_000) == (config, None)  # enough passes
    given = dataclasses.replace(config, epoch_chars=1000)
    monkeypatch.setattr(recipe, "budget_epochs", lambda c, v, s: 0.1)
    assert recipe.epoch_for_budget(given, 69, 25, 160_000) == (given, None)  # --epoch-chars wins
    assert recipe.started_with(config, chosen.to_dict()).epoch_chars == chosen.epoch_chars


def test_a_short_budget_narrows_the_model_to_the_widest_that_gets_enough_epochs(monkeypatch):
    from tfrnn import recipe
    from tfrnn.config import TrainConfig

    config = dataclasses.replace(TrainConfig.resolve("book"), time_budget=3)
    # a machine on which one epoch of a width-w model costs (w / 64)^2 seconds: 3 minutes buy
    # 512 units 2.8 epochs, 256 units 11, 128 units 45
    monkeypatch.setattr(recipe, "budget_epochs", lambda c, v, s: 180 / (c.units / 64) ** 2)
    monkeypatch.setattr(recipe, "SIZE_EPOCHS", 8)
    chosen, line = recipe.for_budget(config, 69, 25, choose_size=True)
    assert chosen.units == 256 and "256 units" in line
    monkeypatch.setattr(recipe, "SIZE_EPOCHS", 20)
    assert recipe.for_budget(config, 69, 25, choose_size=True)[0].units == 128
    assert recipe.for_budget(config, 69, 25)[0].units == 512  # --units given: never narrowed


@pytest.mark.slow
def test_a_short_budget_without_units_trains_a_narrower_model_and_a_resume_finds_it(
    tmp_path, book, monkeypatch
):
    text = tmp_path / "part.txt"
    text.write_text(book.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the default run folder: saved_models/NAME here
    # a machine whose matrix product runs at 1 GFLOP/s: 30 s buy LSTM 2 x 512 a tenth of an
    # epoch of this text, 2 x 128 about one
    monkeypatch.setattr("tfrnn.recipe.matmul_rate", lambda config, repeats=3: 1e9)
    args = ["fit", "--preset", "book", "--data", text, "--time-budget", 0.5, "--epochs", 3]
    args += ["--no-profile", "-q"]
    with failing_in_epoch(2):
        first = run_cli(*args)
    assert first.exit_code != 0 and "units a layer" in first.output
    partial = [p for p in (tmp_path / "saved_models").iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and partial[0].name == ".lstm-2x128-book.partial"
    started = json.loads((partial[0] / "config.json").read_text())
    assert started["units"] == 128 and started["dropout"] == 0.2
    resumed = run_cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming" in resumed.output
    final = tmp_path / "saved_models" / partial[0].name[1 : -len(".partial")]
    assert json.loads((final / "metrics.json").read_text())["config"]["units"] == started["units"]
