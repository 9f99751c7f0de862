"""SavedModel export: plain-TensorFlow generation equals tfrnn's own, scoring, sampling, CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT, keras_continuation, run_cli
from tests.test_errors import assert_one_line_error

PROMPTS = ["it has", "we are always", "he looked across"]


@pytest.fixture(scope="module")
def keras_model(small_run):
    import keras

    import tfrnn.train  # noqa: F401

    return keras.saving.load_model(small_run["dir"] / "model.keras")


@pytest.fixture(scope="module")
def loaded(small_run):
    from tfrnn import serving

    return serving.load(small_run["dir"])


@pytest.mark.slow
def test_plain_tensorflow_process_generates_exactly_what_tfrnn_generates(small_run, keras_model, book):
    long_prompt = book.read_text()[2000:2300]
    cases = [(p, 20) for p in PROMPTS] + [(long_prompt, 20), ("the time traveller", 250)]
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["keras"] = None          # Keras cannot be imported in this process
        sys.modules["tfrnn"] = None          # nor tfrnn
        import tensorflow as tf
        m = tf.saved_model.load({str(small_run["dir"] / "saved_model")!r})
        cases = json.loads(sys.stdin.read())
        out = [m.generate(tf.constant([p]), n, 0.0, 0)["continuation"].numpy()[0].decode()
               for p, n in cases]
        print(json.dumps(out))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    exported = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = [keras_continuation(keras_model, p, n) for p, n in cases]
    assert exported == ours
    assert len(exported[-1]) == 250
    metrics = json.loads((small_run["dir"] / "metrics.json").read_text())
    assert exported[:3] == [metrics["continuations"][p] for p in PROMPTS]


def test_score_agrees_with_the_training_validation_perplexity(small_run, loaded, book):
    from tfrnn import serving
    from tfrnn.data import clean

    text = clean(book.read_text())
    windows = [text[i : i + 33] for i in range(10_000, 15_000)]  # the hw4 validation windows
    result = serving.score(loaded, windows)
    assert set(result["characters"]) == {32}
    ppl = math.exp(sum(result["cross_entropy"]) / len(windows))
    metrics = json.loads((small_run["dir"] / "metrics.json").read_text())
    assert ppl == pytest.approx(metrics["final_val_perplexity"], rel=1e-5)


def test_sampling_repeats_with_a_seed_and_approaches_greedy(loaded):
    from tfrnn import serving

    def gen(**kw):
        return serving.generate(loaded, ["it has"], 60, **kw)[0]

    greedy = gen(temperature=0.0)
    assert gen(temperature=1.0, seed=1) == gen(temperature=1.0, seed=1)
    assert gen(temperature=1.0, seed=1) != gen(temperature=1.0, seed=2)
    assert gen(temperature=1e-4, seed=5) == greedy
    assert gen(temperature=1.0, seed=3, top_k=1) == greedy


def test_batched_prompts_match_single_prompts(loaded):
    from tfrnn import serving

    prompts = ["it has", "", "the time traveller", "ÜÜÜ"]
    batched = serving.generate(loaded, prompts, 25)
    assert batched == [serving.generate(loaded, [p], 25)[0] for p in prompts]
    assert batched[0].startswith("it has") and batched[2].startswith("the time traveller")
    assert batched[1].startswith(" ") and len(batched[1]) == 26  # empty: starts from a space
    texts = ["the time machine", "it has", "x"]
    scores = serving.score(loaded, texts)
    assert scores["characters"] == [15, 5, 0] and math.isnan(scores["perplexity"][2])
    assert serving.score(loaded, texts[:1])["perplexity"][0] == pytest.approx(scores["perplexity"][0])


@pytest.mark.parametrize("use_cudnn", [True, False])
@pytest.mark.slow
def test_export_holds_no_cudnn_ops_whatever_the_layer_setting(keras_model, tmp_path, use_cudnn):
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from tfrnn import serving
    from tfrnn.data import Vocab
    from tfrnn.export import export_saved_model
    from tfrnn.models import recurrent_layers

    for layer in recurrent_layers(keras_model):
        layer.use_cudnn = use_cudnn  # as Keras sets it for a model trained on a GPU
    try:
        path = export_saved_model(keras_model, Vocab(), tmp_path / "sm")
    finally:
        for layer in recurrent_layers(keras_model):
            layer.use_cudnn = "auto"
    proto = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert "MatMul" in ops and not any("cudnn" in op.lower() for op in ops)
    with tf.device("/CPU:0"):
        text = serving.generate(serving.load(path), ["it has"], 20)[0]
    assert text == "it has" + keras_continuation(keras_model, "it has")


@pytest.mark.slow
def test_cli_generate_score_and_export(small_run, book, tmp_path):
    run = small_run["dir"]
    metrics = json.loads((run / "metrics.json").read_text())
    result = run_cli("generate", run, "--prompt", "it has", "--prompt", "we are always")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [p + metrics["continuations"][p] for p in PROMPTS[:2]]

    result = run_cli(
        "generate", run / "saved_model", "--temperature", 0.8, "--num-samples", 3, "--chars", 40, "--top-k", 5
    )
    lines = result.stdout.splitlines()
    assert result.exit_code == 0 and len(lines) == 3 and all(len(t) == 46 for t in lines)

    val = tmp_path / "val.txt"
    val.write_text(book.read_text()[:20_000])
    result = run_cli("score", run, "--text-file", val, "--window", 32, "--stride", 1)
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.stdout

    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "saved_model")
    assert_one_line_error(run_cli("generate", copy), "tfrnn export")
    result = run_cli("export", copy)
    assert result.exit_code == 0, result.output
    again = run_cli("generate", copy, "--prompt", "it has")
    assert again.stdout.splitlines() == ["it has" + metrics["continuations"]["it has"]]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--chars", "-1"], "--chars must be between 0 and 100,000"),
        (["--chars", "1000000000"], "--chars must be between 0 and 100,000"),
        (["--temperature", "-0.5"], "--temperature must be >= 0"),
        (["--top-k", "-2"], "--top-k must be >= 0"),
        (["--num-samples", "0"], "--num-samples must be a positive integer"),
    ],
)
def test_cli_generate_bad_input(small_run, args, expected):
    assert_one_line_error(run_cli("generate", small_run["dir"], *args), expected)


def test_cli_rejects_paths_that_are_not_models(tmp_path):
    assert_one_line_error(run_cli("generate", tmp_path / "nope"), "does not exist")
    assert_one_line_error(run_cli("generate", tmp_path), "not a tfrnn run folder or SavedModel")
    assert_one_line_error(run_cli("export", tmp_path), "not a tfrnn run folder")
    assert_one_line_error(
        run_cli("score", tmp_path, "--text-file", ROOT / "README.md"), "not a tfrnn run folder"
    )


def test_score_aggregates_windows_by_characters(small_run, tmp_path):
    import math

    from tfrnn import serving

    loaded = serving.load(small_run["dir"])
    text = "the time traveller for so it will be convenient to speak of him " * 3
    texts = serving.windows(text, 40, 25)
    assert texts[1] == text[25:66] and all(len(t) == 41 for t in texts)
    per_text = serving.score(loaded, texts)
    expected = sum(ce * n for ce, n in zip(per_text["cross_entropy"], per_text["characters"])) / (
        40 * len(texts)
    )
    result = serving.score_texts(loaded, texts)
    assert result["characters"] == 40 * len(texts)
    assert result["cross_entropy"] == pytest.approx(expected, rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)
    (tmp_path / "t.txt").write_text(text)
    cli = run_cli(
        "score", small_run["dir"], "--text-file", tmp_path / "t.txt", "--window", 40, "--stride", 25
    )
    assert f"perplexity {math.exp(expected):.3f}" in cli.stdout and f"in {len(texts)} text(s)" in cli.stdout
