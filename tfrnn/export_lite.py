"""LiteRT export: a one-step model for phones, boards and any machine without TensorFlow.

``model.tflite`` holds one signature, ``step``: token ids ``ids`` ``[B]`` (int32) and each
layer's recurrent state (``h0``, ``c0`` for an LSTM's cell state, ``h1``...) ``[B, units]``
in; ``logits`` ``[B, vocab]`` and the new states (``h0_out``...) out. The batch is dynamic.
It uses TensorFlow Lite's built-in ops only (gather, fully connected, add, mul, logistic,
tanh, split): no Flex ops, so the plain ``ai-edge-litert`` runtime (``tfrnn.lite``) and
LiteRT on Android, iOS and microcontrollers run it. ``model.json`` beside it holds what the
host loop needs: the vocabulary (and the letters' cleaning), the state names and sizes, and
the model's facts.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from tfrnn.models import serving_layers
from tfrnn.models import step as one_step
from tfrnn.vocab import Vocab

TFLITE_FILE = "model.tflite"
LITE_JSON = "model.json"
SIGNATURE = "step"


def state_names(cells) -> list[tuple[str, int]]:
    """(name, size) of every recurrent state, layer by layer: h0 (c0), h1 (c1), ..."""
    names = []
    for i, cell in enumerate(cells):
        sizes = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
        for kind, size in zip(("h", "c"), sizes):
            names.append((f"{kind}{i}", int(size)))
    return names


def lite_bytes(model: keras.Model, vocab: Vocab) -> tuple[bytes, list[tuple[str, int]]]:
    """The ``.tflite`` flatbuffer of ``model``'s one step, and its state names and sizes."""
    input_layer, cells, output_layer = serving_layers(model)
    states = state_names(cells)
    specs = [tf.TensorSpec([None], tf.int32, name="ids")]
    specs += [tf.TensorSpec([None, size], tf.float32, name=name) for name, size in states]

    @tf.function(input_signature=specs)
    def step(ids, *flat):
        grouped, k = [], 0
        for cell in cells:
            count = len(cell.state_size) if isinstance(cell.state_size, (list, tuple)) else 1
            grouped.append(list(flat[k : k + count]))
            k += count
        logits, new = one_step(input_layer, cells, output_layer, ids, grouped)
        out = {"logits": logits}
        for (name, _), value in zip(states, [s for layer in new for s in layer]):
            out[f"{name}_out"] = value
        return out

    # the weights frozen into constants (no resource variables: every LiteRT runtime reads
    # them), then through a SavedModel, which keeps the signature's and tensors' names
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = step.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    holder = tf.Module()
    holder.step = tf.function(
        lambda *args: tf.nest.pack_sequence_as(concrete.structured_outputs, frozen(*args)),
        input_signature=specs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(holder, tmp, signatures={SIGNATURE: holder.step.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert(), states


def export_lite(model: keras.Model, vocab: Vocab, folder: Path, facts: dict | None = None) -> Path:
    """Write ``model.tflite`` and ``model.json`` into ``folder`` (each under a temporary name,
    then renamed); returns the ``.tflite`` path."""
    flatbuffer, states = lite_bytes(model, vocab)
    folder = Path(folder)
    meta = {
        "format": "tfrnn-litert-1",
        "signature": SIGNATURE,
        "vocab": json.loads(vocab.to_json()),
        "states": [{"name": name, "size": size} for name, size in states],
        "facts": facts or {},
    }
    for name, data in ((TFLITE_FILE, flatbuffer), (LITE_JSON, json.dumps(meta, ensure_ascii=False).encode())):
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / name)
    return folder / TFLITE_FILE


def op_names(path: Path) -> set[str]:
    """The op names a ``.tflite`` file uses (to show it needs built-in ops only)."""
    from ai_edge_litert.interpreter import Interpreter

    return {op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details()}
