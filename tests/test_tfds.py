"""Text from TensorFlow Datasets: tfrnn's time_machine builder and ``--data tfds:...``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli, subprocess_env
from tests.test_errors import assert_one_line_error
from tfrnn.data import BOOK_SHA1, Corpus
from tfrnn.errors import DataError
from tfrnn.tfds_source import TfdsSource, is_tfds, load_texts

# A proxy nobody listens on: downloads fail at once, network or not.
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


@pytest.mark.parametrize(
    "source, parsed",
    [
        ("tfds:tiny_shakespeare", TfdsSource("tiny_shakespeare")),
        ("tfds:wiki40b/en:validation", TfdsSource("wiki40b/en", "validation")),
        (
            "tfds:ag_news_subset:train[:10%]#description",
            TfdsSource("ag_news_subset", "train[:10%]", "description"),
        ),
        ("tfds:imdb_reviews#text", TfdsSource("imdb_reviews", None, "text")),
    ],
)
def test_tfds_sources_are_parsed_and_written_back(source, parsed):
    assert is_tfds(source)
    assert TfdsSource.parse(source) == parsed
    assert str(parsed) == source


@pytest.mark.parametrize(
    "source", ["tfds:", "tfds:Bad Name", "tfds:x:", "tfds:x#", "tfds:/config", "tfds::train"]
)
def test_malformed_tfds_sources_are_refused(source):
    with pytest.raises(DataError, match="spell it tfds:NAME"):
        TfdsSource.parse(source)


def test_a_path_is_not_a_tfds_source(tmp_path):
    assert not is_tfds(tmp_path / "tfds:x") and not is_tfds(None) and not is_tfds("book.txt")


def test_time_machine_from_tfds_is_the_default_book():
    texts = load_texts("tfds:time_machine")  # prepared from $TFRNN_DATA, offline
    assert list(texts) == ["text"]
    assert hashlib.sha1(texts["text"].encode("utf-8")).hexdigest() == BOOK_SHA1
    from_tfds, default = Corpus.load("tfds:time_machine"), Corpus.load()
    assert len(from_tfds.ids) == 173_428 and from_tfds.bounds is None
    assert np.array_equal(from_tfds.ids, default.ids)
    assert from_tfds.fingerprint == default.fingerprint
    assert from_tfds.source == "tfds:time_machine"


def _three_texts(self, split, *args, **kwargs):
    """TFDS' mock reader: each split's examples say which split they are."""
    import tensorflow as tf

    name = str(split).split("[")[0]
    return tf.data.Dataset.from_tensor_slices({"text": [f"{name} part example {i}." for i in range(3)]})


def test_a_dataset_with_three_splits_gives_the_book_preset_its_parts(monkeypatch):
    import tensorflow_datasets as tfds

    from tfrnn import tfds_source

    monkeypatch.setattr(tfds_source, "unreachable", lambda url: None)  # the mock downloads nothing
    load_texts.cache_clear()
    with tfds.testing.mock_data(as_dataset_fn=_three_texts):
        corpus = Corpus.load("tfds:tiny_shakespeare")
        one_split = Corpus.load("tfds:tiny_shakespeare:validation")
        with pytest.raises(DataError, match="has no split 'dev' .*train, validation, test"):
            load_texts("tfds:tiny_shakespeare:dev")
        with pytest.raises(DataError, match="has no feature 'title'"):
            load_texts("tfds:tiny_shakespeare#title")
    load_texts.cache_clear()
    parts = corpus.book_parts(num_steps=5)
    decoded = {name: corpus.vocab.decode(ids) for name, ids in parts.items()}
    for name in ("train", "validation", "test"):
        assert decoded["val" if name == "validation" else name] == (
            f"{name} part example {name} part example {name} part example "
        )
    assert one_split.bounds is None
    assert corpus.vocab.decode(one_split.ids) == "validation part example " * 3
    assert corpus.fingerprint != Corpus(corpus.ids, corpus.source, corpus.vocab).fingerprint


def test_unknown_datasets_and_ones_without_text_are_one_line(tmp_path):
    out = tmp_path / "run"
    result = run_cli("fit", "--data", "tfds:no_such_dataset", "--epochs", 1, "--out", out)
    assert_one_line_error(result, "unknown TFDS dataset 'no_such_dataset': spell one as tfds:NAME")
    result = run_cli("fit", "--data", "tfds:mnist", "--epochs", 1, "--out", out)
    assert_one_line_error(result, "tfds:mnist has no text feature to train on (its features: image, label)")
    result = run_cli("compare", "--cells", "gru", "--units", 8, "--data", "tfds:Bad", "--out", out)
    assert_one_line_error(result, "bad TFDS source 'tfds:Bad'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_offline_downloads_fail_in_one_line(tmp_path):
    env = subprocess_env(TFDS_DATA_DIR=str(tmp_path / "tfds"), **NO_NETWORK)
    env.pop("TFRNN_DATA")
    fit = [sys.executable, "-m", "tfrnn", "fit", "--epochs", "1", "--units", "8"]
    fit += ["--out", str(tmp_path / "run")]
    for source, expected in [
        ("tfds:tiny_shakespeare", "could not prepare tfds:tiny_shakespeare: its download (https://"),
    ]:
        started = time.monotonic()
        proc = subprocess.run([*fit, "--data", source], capture_output=True, text=True, env=env, timeout=300)
        assert time.monotonic() - started < 120  # not TFDS' minutes of retries
        last = proc.stderr.strip().splitlines()[-1]  # after TensorFlow's start-up lines
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert last.startswith("tfrnn: error: ") and expected in last
        assert "$TFRNN_DATA" in last or "tfds build" in last
    assert not (tmp_path / "run").exists()
    # the book needs no network: its builder reads the copy that ships inside tfrnn
    proc = subprocess.run(
        [*fit, "--data", "tfds:time_machine", "--no-profile", "-q"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]["characters"] == 173_428


@pytest.mark.slow
def test_fit_on_tfds_time_machine_offline_and_tfds_build(tmp_path):
    tfds_dir = tmp_path / "tfds"
    env = subprocess_env(TFDS_DATA_DIR=str(tfds_dir), **NO_NETWORK)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tfrnn", "fit", "--data", "tfds:time_machine", "--epochs", "1"]
    cmd += ["--units", "8", "-q", "--no-profile", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "metrics.json").read_text())["data"]
    assert data["source"] == "tfds:time_machine" and data["characters"] == 173_428
    assert (tfds_dir / "time_machine" / "1.0.0" / "dataset_info.json").is_file()
    # TFDS' `tfds build` builds it too, into another folder. Its command line (TFDS 4.9.7 to
    # 4.9.10) imports Apache Beam at start-up, so the build command's own code is run here.
    build = (
        "import sys\n"
        "from etils import epath\n"
        "from tensorflow_datasets.scripts.cli import build, cli_utils\n"
        "paths = cli_utils.PathOptions(data_dir=epath.Path(sys.argv[2]))\n"
        "build.Args(positional_datasets=[sys.argv[1]], paths=paths).execute()\n"
    )
    folder = ROOT / "tfrnn" / "datasets" / "time_machine"
    proc = subprocess.run(
        [sys.executable, "-c", build, str(folder), str(tmp_path / "built")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "built" / "time_machine" / "1.0.0" / "dataset_info.json").is_file()


@pytest.mark.slow
def test_cli_start_up_generate_and_saved_models_do_not_import_tfds(small_run):
    script = (
        "import runpy, sys\n"
        "run = sys.argv[1]\n"
        "for argv in (['--help'], ['generate', run, '--chars', '5']):\n"
        "    sys.argv = ['tfrnn', *argv]\n"
        "    try:\n"
        "        runpy.run_module('tfrnn', run_name='__main__')\n"
        "    except SystemExit as stop:\n"
        "        assert not stop.code, stop.code\n"
        "import tensorflow as tf\n"
        "tf.saved_model.load(run + '/saved_model')\n"
        "print('tensorflow_datasets' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(small_run["dir"])],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"
