"""Every character of the user's text (issue: vocabulary built from the text): ``chars``
keeps case, punctuation, line breaks and any script, travels into the SavedModel, and
says which characters it does not hold; ``letters`` stays the study's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli, shared_run, subprocess_env
from tfrnn.config import TrainConfig
from tfrnn.data import Corpus, is_study_text, train_length
from tfrnn.vocab import CHARS, UNK, Vocab, code_points

PLAY = (
    "HAMLET. To be, or not to be: that is the question!\n"
    "Whether 'tis nobler in the mind to suffer\n\tThe slings and arrows of outrageous fortune,\n"
    "Или взять оружие против моря бед — Ἀλλ᾽ ἐπεὶ δὴ; 1603.\n"
)


def _play(tmp_path, repeats: int = 60):
    path = tmp_path / "play.txt"
    path.write_text(PLAY * repeats + "✓\n", encoding="utf-8")  # ✓: once, after the training part
    return path


def test_chars_keeps_every_character_of_the_training_text_and_counts_the_rest():
    codes = code_points("aAb\n\tя" * 3 + "Ω" + "é")  # Ω and é once each: below min_count 2
    vocab = Vocab.build(codes, min_count=2)
    assert vocab.kind == CHARS and vocab.tokens == (UNK, "\t", "\n", "A", "a", "b", "я")
    ids = vocab.encode("aA\nΩ€")
    assert ids.tolist() == [4, 3, 2, 0, 0]
    assert vocab.decode(ids[:3]) == "aA\n"
    assert vocab.unknown("aA\nΩ€Ω") == {"Ω": 2, "€": 1}
    # the same as a character-by-character lookup, on a large text (vectorised, not a loop)
    text = PLAY * 200
    index = {t: i for i, t in enumerate(vocab.tokens)}
    assert np.array_equal(vocab.encode(text), [index.get(c, 0) for c in text])
    assert Vocab.from_json(vocab.to_json()) == vocab


def test_the_cap_keeps_the_most_frequent_characters():
    codes = code_points("a" * 50 + "b" * 40 + "c" * 30 + "d" * 2)
    assert Vocab.build(codes, min_count=1, max_size=3).tokens == (UNK, "a", "b")
    assert Vocab.build(codes, min_count=31).tokens == (UNK, "a", "b")


def test_letters_is_the_study_s_vocabulary_and_reports_letters_it_turns_into_spaces():
    vocab = Vocab()
    assert len(vocab) == 28 and vocab.tokens[:3] == (" ", UNK, "a")
    assert vocab.decode(vocab.encode("Time, travel!")) == "time travel "
    assert vocab.unknown("café, naïve? 42") == {"é": 1, "ï": 1}


def test_the_vocabulary_comes_from_the_training_part_alone(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("ab" * 950 + "xyz" * 50, encoding="utf-8")  # x, y, z after the 90% mark
    corpus = Corpus.load(path, "chars", preset="book", num_steps=10)
    assert corpus.vocab.tokens == (UNK, "a", "b")
    assert train_length(len(corpus.ids), "book", 10) == int(0.9 * 2050) < 1900
    assert sum(corpus.unknown["rest"].values()) == 150 and not corpus.unknown["train"]
    assert (corpus.ids[-150:] == 0).all()


def test_which_texts_are_the_study_s_and_which_vocabulary_each_preset_takes(tmp_path, book):
    other = tmp_path / "mine.txt"
    other.write_text("my own text " * 100)
    copy = tmp_path / "copy.txt"
    copy.write_bytes(book.read_bytes())
    assert is_study_text(None) and is_study_text(copy) and is_study_text("tfds:time_machine")
    assert not is_study_text(other) and not is_study_text("tfds:tiny_shakespeare")
    assert TrainConfig.resolve("hw4").vocab == "letters"
    assert TrainConfig.resolve("hw4", study_text=False).vocab == "chars"
    assert TrainConfig.resolve("book").vocab == "chars"
    assert TrainConfig.resolve("hw4", study_text=False).name == "gru-32-chars"
    assert TrainConfig.resolve("book", vocab="letters").name == "lstm-2x512-book-letters"
    assert TrainConfig.resolve("hw4").name == "gru-32"


def test_a_grid_may_not_mix_vocabularies(tmp_path):
    from tests.test_errors import assert_one_line_error

    grid = tmp_path / "g.toml"
    grid.write_text('[[models]]\ncell = "gru"\nvocab = "chars"\n[[models]]\ncell = "lstm"\n')
    assert_one_line_error(run_cli("compare", "--grid", grid, "--out", tmp_path / "r"), "mixes vocabularies")
    assert not (tmp_path / "r").exists()


def _chars_fit(base):
    out = base / "run"
    data = _play(base)
    args = ["fit", "--data", data, "--units", 32, "--epochs", 3, "--batch-size", 64, "--no-profile"]
    result = run_cli(*args, "-q", "--out", out)
    assert result.exit_code == 0, result.output
    return {"dir": out, "data": data, "output": result.output}


@pytest.fixture(scope="session")
def chars_run(tmp_path_factory):
    """A chars model of a text with capitals, punctuation, tabs, line breaks, Cyrillic and Greek."""
    return shared_run(tmp_path_factory, "chars_run", _chars_fit)


@pytest.mark.slow
def test_a_chars_run_records_its_vocabulary_and_bits_per_character(chars_run):
    out = chars_run["dir"]
    vocab = Vocab.from_json((out / "vocab.json").read_text(encoding="utf-8"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert vocab.kind == "chars" and {"H", "\n", "\t", "—", "я", "Ἀ", "!"} <= set(vocab.tokens)
    assert "✓" not in vocab.tokens  # seen once: <unk>, and said
    assert metrics["config"]["vocab"] == "chars" and metrics["vocabulary"]["size"] == len(vocab)
    assert metrics["data"]["unknown_characters"] == {"train": 0, "rest": 1}
    assert "characters read as <unk>" in chars_run["output"] and "'✓' x1" in chars_run["output"]
    bpc = metrics["best_val_bits_per_character"]
    assert bpc == pytest.approx(np.log2(metrics["best_val_perplexity"]), abs=1e-6)
    assert metrics["parameters"]["total"] == 3 * (32 * 32 + len(vocab) * 32 + 2 * 32) + 33 * len(vocab)


@pytest.mark.slow
def test_the_saved_model_serves_any_unicode_with_tensorflow_alone(chars_run, tmp_path):
    """Loaded in a process that imports TensorFlow and nothing of tfrnn: the text comes back
    exactly as the model writes it, its characters from the training text, no <unk>."""
    script = tmp_path / "serve.py"
    script.write_text(
        "import json, sys\nimport tensorflow as tf\n"
        "assert not any(m.startswith('tfrnn') for m in sys.modules)\n"
        f"m = tf.saved_model.load({str(chars_run['dir'] / 'saved_model')!r})\n"
        "out = m.generate_top_k(tf.constant(['HAMLET.', 'Или ']), 200, 0.8, 3, 0)\n"
        "print(json.dumps([t.decode() for t in out['text'].numpy()]))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], env=subprocess_env(PYTHONPATH=""), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    texts = json.loads(proc.stdout.strip().splitlines()[-1])
    vocab = Vocab.from_json((chars_run["dir"] / "vocab.json").read_text(encoding="utf-8"))
    assert texts[0].startswith("HAMLET.") and texts[1].startswith("Или ")
    assert all(len(t) == len(p) + 200 for t, p in zip(texts, ["HAMLET.", "Или "]))
    assert set("".join(texts)) <= set(vocab.tokens) - {UNK}
    # the CLI prints it exactly, and says once which characters of the prompt are unknown
    result = run_cli("generate", chars_run["dir"], "--prompt", "HAMLET. ✓€€", "--chars", 50)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("HAMLET. ✓€€")
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "3 character(s) of the prompt" in notes[0] and "'€' x2" in notes[0]


@pytest.mark.slow
def test_score_reads_the_text_as_it_is_and_agrees_with_training(chars_run, tmp_path):
    text = tmp_path / "part.txt"
    text.write_text(PLAY * 2, encoding="utf-8")
    result = run_cli("score", chars_run["dir"], "--text-file", text)
    assert result.exit_code == 0, result.output
    assert f"{len(PLAY * 2) - 1:,} characters" in result.stdout
    assert "bits per character (chars vocabulary" in result.stdout
    assert "note:" not in result.stderr  # every character of it is in the vocabulary


@pytest.mark.slow
def test_fine_tuning_keeps_the_run_s_vocabulary_and_counts_new_characters(chars_run, tmp_path):
    data = tmp_path / "new.txt"
    data.write_text((PLAY.replace("a", "α") + "ü") * 40, encoding="utf-8")
    out = tmp_path / "tuned"
    result = run_cli(
        "fit", "--init-from", chars_run["dir"], "--data", data, "--epochs", 1, "--batch-size", 64,
        "--no-profile", "-q", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "vocab.json").read_text(encoding="utf-8") == (chars_run["dir"] / "vocab.json").read_text(
        encoding="utf-8"
    )
    assert "characters read as <unk>" in result.output and "'ü'" in result.output


def test_the_peer_reads_the_same_vocabulary(tmp_path):
    """tools/torch_book_peer.py rebuilds tfrnn's chars vocabulary with numpy alone."""
    source = (ROOT / "tools" / "torch_book_peer.py").read_text()
    start = source.index("    else:  # tfrnn.vocab's chars rule")
    end = source.index("    size = len(vocab)")
    body = "\n".join(line[8:] for line in source[start:end].splitlines()[1:])
    text = PLAY * 30 + "✓"
    scope = {"np": np, "text": text, "a": type("A", (), {"min_count": 2, "max_vocab": 1024})}
    exec(body, scope)  # the peer's own lines
    ours = Vocab.build(code_points(text)[: int(0.9 * len(text))])
    assert scope["vocab"] == list(ours.tokens)
    assert np.array_equal(scope["ids"], ours.encode(text))
