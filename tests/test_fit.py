"""`tfrnn fit` as a user runs it: the run folder, its numbers, resume, repeatability, --help."""

from __future__ import annotations

import csv
import json
import math

import click
import numpy as np
import pytest

from tests.conftest import failing_in_epoch, run_cli
from tests.test_errors import assert_one_line_error
from tfrnn import kernel
from tfrnn.cpu import cpu_summary

RUN_FILES = {
    "model.keras",
    "saved_model",
    "vocab.json",
    "history.csv",
    "metrics.json",
    "curves.png",
    ".tfrnn-run.json",
}


def read_csv(path):
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_run_folder_holds_every_file_and_consistent_numbers(small_run, book):
    out = small_run["dir"]
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert not (out.parent / ".gru-8.partial").exists()
    history = read_csv(out / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert row["perplexity"] == pytest.approx(math.exp(row["loss"]), rel=1e-5)
        assert row["val_perplexity"] == pytest.approx(math.exp(row["val_loss"]), rel=1e-5)
        assert row["epoch_seconds"] > 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["name"] == "gru-8" and m["config"]["units"] == 8 and m["config"]["lr"] == 4.0
    assert m["final_val_perplexity"] == pytest.approx(history[-1]["val_perplexity"])
    assert m["best_val_perplexity"] == min(r["val_perplexity"] for r in history)
    assert m["training_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in history), abs=1e-2)
    assert m["parameters"]["recurrent_study"] == 912 and m["parameters"]["total"] == 1_164
    assert m["test_perplexity"] is None  # hw4 has no test split
    assert set(m["continuations"]) == {"it has", "we are always", "he looked across"}
    assert all(
        len(text) == 20 and set(text) <= set(" abcdefghijklmnopqrstuvwxyz")
        for text in m["continuations"].values()
    )
    step = m["training_step"]  # what the training step used here
    assert step["xla"] is False and step["steps_per_execution"] == 10  # TFRNN_XLA=off; 10 batches
    assert step["precision"] == "float32" and step["cpu"].startswith(cpu_summary().split(",")[0])
    # tfrnn's compiled recurrence where it compiles, else why not
    if kernel.load() is not None:
        from tfrnn import kernel_products

        # and its products' arithmetic: GRU-8's kernel fits any cache, so float32, and said why
        bf16, why = kernel_products.choose("gru", 1024, 8)
        assert not bf16 and why.startswith("float32 products (")
        assert step["recurrence"] == {
            "implementation": "compiled",
            "reason": kernel.status(),
            "products": "float32",
            "products_reason": why,
        }
    else:
        assert step["recurrence"]["implementation"] in ("keras", "keras-xla", "cudnn")  # cudnn: a GPU
    assert b"TfrnnRecurrence" not in (out / "saved_model" / "saved_model.pb").read_bytes()  # loads anywhere
    assert json.loads((out / "vocab.json").read_text())["tokens"][:3] == [" ", "<unk>", "a"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # what the CLI printed is what the folder holds
    assert f"validation perplexity {m['final_val_perplexity']:.3f}" in small_run["output"]
    assert f"'it has' -> {m['continuations']['it has']!r}" in small_run["output"]
    assert list(small_run["tensorboard"].rglob("events.out.tfevents.*"))


def test_saved_model_reproduces_the_validation_perplexity(small_run, book):
    import keras

    import tfrnn.train  # noqa: F401  (registers tfrnn's layers and metric)
    from tfrnn.data import Corpus, make_splits

    model = keras.saving.load_model(small_run["dir"] / "model.keras")
    splits = make_splits(Corpus.load(book), "hw4", 32, 1024, seed=0)
    loss = model.evaluate(splits.val, verbose=0, return_dict=True)["loss"]
    m = json.loads((small_run["dir"] / "metrics.json").read_text())
    assert math.exp(loss) == pytest.approx(m["final_val_perplexity"], rel=1e-4)


def test_prompts_outside_the_vocabulary_are_cleaned_not_fatal(small_run):
    import keras

    import tfrnn.train  # noqa: F401
    from tfrnn.data import Vocab
    from tfrnn.generate import greedy_continuation

    model = keras.saving.load_model(small_run["dir"] / "model.keras")
    vocab = Vocab()
    same = greedy_continuation(model, vocab, "it has")
    assert greedy_continuation(model, vocab, "IT,  HAS") == same  # cleaned to "it has"
    for prompt in ("Ünïcode ✓ 123", "", "!!!"):
        assert len(greedy_continuation(model, vocab, prompt, num_chars=7)) == 7


@pytest.mark.slow
def test_same_seed_repeats_a_run_and_another_seed_differs(tmp_path):
    args = ["fit", "--cell", "lstm", "--units", 8, "--epochs", 1, "-q", "--no-profile"]
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        result = run_cli(*args, "--seed", seed, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
        runs[name] = read_csv(tmp_path / name / "history.csv")[0]
    assert runs["a"]["loss"] == pytest.approx(runs["b"]["loss"], rel=1e-6)
    assert runs["a"]["val_loss"] == pytest.approx(runs["b"]["val_loss"], rel=1e-6)
    assert runs["a"]["loss"] != runs["c"]["loss"]


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_completed_epoch(tmp_path, monkeypatch):
    from tfrnn import train

    out = tmp_path / "run"
    args = ["fit", "--cell", "rnn", "--units", 8, "--epochs", 3, "--out", out, "--no-profile"]
    original = train.EpochTimer.on_epoch_begin

    def interrupt_in_epoch_2(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, epoch, logs)

    monkeypatch.setattr(train.EpochTimer, "on_epoch_begin", interrupt_in_epoch_2)
    result = run_cli(*args)
    assert result.exit_code == 130
    assert "--resume" in result.stderr and "Traceback" not in result.output
    partial = tmp_path / ".run.partial"
    assert not out.exists() and partial.is_dir()
    first = read_csv(partial / "history.csv")
    assert len(first) == 1

    monkeypatch.setattr(train.EpochTimer, "on_epoch_begin", original)
    refused = run_cli(*args)  # without --resume the interrupted run is not silently dropped
    assert refused.exit_code == 1 and "--resume" in refused.stderr

    result = run_cli(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    assert "Epoch 1/3" not in result.output and "Epoch 2/3" in result.output
    history = read_csv(out / "history.csv")
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[0]["loss"] == pytest.approx(first[0]["loss"])
    assert not partial.exists()


def test_resume_refuses_other_options(tmp_path, monkeypatch):
    out = tmp_path / "run"
    (tmp_path / ".run.partial").mkdir()
    (tmp_path / ".run.partial" / "config.json").write_text(json.dumps({"cell": "gru", "units": 8}))
    result = run_cli("fit", "--cell", "gru", "--units", 16, "--epochs", 1, "--out", out, "--resume")
    assert result.exit_code == 1
    assert "other options" in result.stderr and "units 8 vs 16" in result.stderr


@pytest.mark.slow
def test_existing_run_is_kept_unless_overwrite(small_run, tmp_path):
    import shutil

    out = tmp_path / "gru-8"
    shutil.copytree(small_run["dir"], out)
    before = (out / "metrics.json").read_text()
    result = run_cli("fit", "--units", 8, "--epochs", 1, "--out", out, "-q")
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    assert (out / "metrics.json").read_text() == before
    result = run_cli("fit", "--units", 8, "--epochs", 1, "--out", out, "-q", "--overwrite", "--no-profile")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert (out / "metrics.json").read_text() != before


def test_overwrite_replaces_only_folders_tfrnn_wrote(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for flags in ([], ["--overwrite"]):
        result = run_cli("fit", "--units", 8, "--epochs", 1, "--out", out, "-q", *flags)
        assert result.exit_code == 1 and "not a tfrnn run folder" in result.stderr
        assert (out / "keep.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


@pytest.mark.slow
def test_book_preset_reports_a_test_perplexity(tmp_path):
    out = tmp_path / "book"
    result = run_cli(
        "fit",
        "--preset",
        "book",
        "--units",
        8,
        "--epochs",
        1,
        "--num-steps",
        50,
        "--batch-size",
        256,
        "--out",
        out,
        "-q",
        "--no-profile",
    )
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["optimizer"] == "adamw" and m["config"]["lr"] == pytest.approx(3e-3)
    assert m["data"]["part_characters"]["test"] > 0
    # the book preset reads the text's own characters; after one epoch the model predicts
    # better than a uniform guess over them, and bits per character are log2 of perplexity
    assert m["config"]["vocab"] == "chars" and m["vocabulary"]["size"] > 28
    assert 1 < m["test_perplexity"] < m["vocabulary"]["size"]
    assert m["test_bits_per_character"] == pytest.approx(np.log2(m["test_perplexity"]), abs=1e-6)
    assert "test perplexity" in result.output


def test_fit_help_documents_every_option():
    from tfrnn.cli import fit

    result = run_cli("fit", "--help")
    assert result.exit_code == 0
    for param in fit.params:
        assert param.help, f"{param.name} has no help text"
        assert param.opts[-1] in result.output
    assert "tfrnn fit --cell lstm --units 128" in result.output
    # numeric options show their range (click's notation) from the checks the library runs
    ctx = click.Context(fit)
    shown = {p.opts[-1]: p.get_help_record(ctx)[1] for p in fit.params}
    for option, bounds in (("--units", "x>=1"), ("--dropout", "0.0<=x<1.0"), ("--lr", "x>0.0")):
        assert shown[option].endswith(f"{bounds}]") and " ".join(shown[option].split()) in " ".join(
            result.output.split()
        )


def test_ranged_options_are_refused_in_the_library_s_words():
    cases = {
        ("fit", "--units", "0"): "--units must be a positive integer, got 0",
        ("fit", "--batch-size", "1.5"): "--batch-size must be a positive integer, got '1.5'",
        ("fit", "--clip", "-1"): "--clip must be >= 0 (0 turns clipping off), got -1.0",
        ("fit", "--ema", "1"): "--ema must be in [0, 1) (0: no moving average), got 1.0",
        ("compare", "--epochs", "0"): "--epochs must be a positive integer, got 0",
        ("generate", "x", "--top-k", "-1"): "--top-k must be >= 0 (0: no limit), got -1",
        ("tune", "--epochs", "-3"): "--epochs must be a positive integer, got -3",
    }
    for args, message in cases.items():
        result = run_cli(*args)
        assert_one_line_error(result, message)
        assert result.stderr.strip() == f"tfrnn: error: {message}"


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """Interrupted in epoch 3 and resumed, a run trains on the same batches in the same
    order with the same dropout masks as one that was never interrupted."""

    args = ["fit", "--cell", "gru", "--units", 8, "--layers", 2, "--epochs", 4, "-q", "--no-profile"]
    assert run_cli(*args, "--out", tmp_path / "whole").exit_code == 0
    with failing_in_epoch(3):
        assert run_cli(*args, "--out", tmp_path / "split").exit_code == 130
    assert run_cli(*args, "--out", tmp_path / "split", "--resume").exit_code == 0
    whole, split = (read_csv(tmp_path / name / "history.csv") for name in ("whole", "split"))
    assert len(whole) == len(split) == 4
    for a, b in zip(whole, split):
        for key in ("loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=0)
