"""Models that leave Python (issue: LiteRT): a one-step .tflite with built-in ops only, equal
to the Keras model, and a runtime that generates the SavedModel's greedy text without
TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, run_cli, shared_run, subprocess_env
from tests.test_vocab import _play

#: What LiteRT's built-in op set offers the step; anything else would need Flex (TensorFlow).
BUILTIN = {"FULLY_CONNECTED", "ADD", "SUB", "MUL", "LOGISTIC", "TANH", "SPLIT", "STRIDED_SLICE", "RESHAPE"}
BUILTIN |= {"CAST", "ONE_HOT", "GATHER", "CONCATENATION", "PACK", "UNPACK", "SQUEEZE", "EXPAND_DIMS"}
PROMPTS = ["it has", "we are always", "he looked across"]


def _lite_fit(base, name: str, small_run: dict) -> dict:
    cell, shape, vocab = name.split("-")
    layers, units = (int(v) for v in shape.split("x"))
    out = base / "run"
    if cell == "gru":
        shutil.copytree(small_run["dir"], out)
    else:
        data = ["--data", _play(base)] if vocab == "chars" else []
        args = ["fit", "--cell", cell, "--units", units, "--layers", layers, "--epochs", 2, *data]
        result = run_cli(*args, "--batch-size", 256, "--no-profile", "-q", "--out", out)
        assert result.exit_code == 0, result.output
    exported = run_cli("export", out, "--format", "litert")
    assert exported.exit_code == 0, exported.output
    return {"dir": out, "cell": cell, "layers": layers, "vocab": vocab}


@pytest.fixture(scope="session", params=["gru-1x8-letters", "rnn-1x8-letters", "lstm-3x8-chars"])
def lite_run(request, tmp_path_factory, small_run):
    """A finished run of each cell (a three-layer stack among them) with its LiteRT export."""
    name = request.param
    return shared_run(tmp_path_factory, f"lite_run-{name}", lambda base: _lite_fit(base, name, small_run))


@pytest.mark.slow
def test_the_lite_model_uses_built_in_ops_and_equals_keras(lite_run):
    import keras

    import tfrnn.train  # noqa: F401
    from tfrnn.export_lite import op_names
    from tfrnn.lite import LiteModel

    out = lite_run["dir"]
    assert op_names(out / "model.tflite") <= BUILTIN
    marker = json.loads((out / ".tfrnn-run.json").read_text())
    assert {"model.tflite", "model.json"} <= set(marker["files"])
    lite = LiteModel(out / "model.tflite")
    per_layer = 2 if lite_run["cell"] == "lstm" else 1
    assert len(lite.states) == per_layer * lite_run["layers"]
    assert lite.states[0] == ("h0", 8) and (per_layer == 1 or lite.states[1] == ("c0", 8))
    model = keras.saving.load_model(out / "model.keras")
    ids = np.random.default_rng(0).integers(1, len(lite.vocab), size=(3, 40)).astype(np.int32)
    states = lite._zero(3)  # a batch of 3: the batch is dynamic
    steps = []
    for t in range(ids.shape[1]):
        logits, states = lite._run(ids[:, t], states)
        steps.append(logits)
    difference = np.abs(np.stack(steps, 1) - model(ids).numpy()).max()
    assert difference < 1e-4, difference


@pytest.mark.slow
def test_lite_greedy_text_is_the_saved_model_s_without_tensorflow(lite_run, tmp_path):
    """In a process where importing TensorFlow (or Keras) is impossible."""
    from tfrnn import serving

    saved = serving.load(lite_run["dir"])
    expected = serving.generate(saved, PROMPTS, 60)
    script = (
        "import sys, json\n"
        "sys.modules['tensorflow'] = None; sys.modules['keras'] = None  # any import of them fails\n"
        "from tfrnn.lite import LiteModel\n"
        f"m = LiteModel({str(lite_run['dir'] / 'model.tflite')!r})\n"
        f"print(json.dumps([m.generate({PROMPTS!r}, 60), m.generate(['it'], 30, 0.9, 1, 5)]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    greedy, sampled = json.loads(proc.stdout.strip().splitlines()[-1])
    assert greedy == expected
    assert sampled[0].startswith("it") and len(sampled[0]) == 32 and "?" not in sampled[0][2:]


@pytest.mark.slow
def test_lite_scores_as_the_saved_model_does(lite_run, tmp_path):
    from tfrnn import serving
    from tfrnn.lite import LiteModel

    text = "The Time Traveller, for so it will be convenient to speak of him."
    lite = LiteModel(lite_run["dir"])
    read = lite.encode(text)[0]
    expected = serving.score_texts(serving.load(lite_run["dir"]), [read])
    got = lite.score([text])
    assert got["characters"] == expected["characters"]
    assert got["cross_entropy"] == pytest.approx(expected["cross_entropy"], abs=1e-5)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfrnn.lite",
            "generate",
            str(lite_run["dir"] / "model.tflite"),
            "--prompt",
            "it",
        ],
        env=subprocess_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0 and cli.stdout.startswith("it"), cli.stderr


def test_a_missing_lite_model_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tfrnn.lite", "generate", str(tmp_path / "nothing.tflite")],
        env=subprocess_env(PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
    )
    assert (
        proc.returncode == 1 and proc.stderr.startswith("tfrnn: error: ") and "Traceback" not in proc.stderr
    )
