"""On a machine with an NVIDIA GPU: confirm GRU and LSTM train on the cuDNN kernel, and time them.

    python tools/gpu_check.py [--models gru-32,gru-128,lstm-128] [--epochs 4]

For each model (hw4 protocol) it traces one training step (forward, loss, gradients) and
lists the cuDNN ops in its graph (``CudnnRNNV3`` forward, ``CudnnRNNBackpropV3`` backward):
Keras falls back to its generic loop silently, so their absence is the failure this looks
for. It then trains with ``tfrnn.train.fit`` and prints the median seconds per epoch (the
first epoch left out), validation perplexity, and a JSON line. Exits 2 without a GPU and 1
if a model does not use cuDNN. Nothing in CI or the tests depends on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfrnn  # noqa: E402

tfrnn.use_bfc_allocator()  # before TensorFlow
from tools.bench import parse_model  # noqa: E402


def cudnn_ops(model, batch: tuple) -> list[str]:
    """Types of the cuDNN ops in a traced training step of ``model`` on ``batch``."""
    import tensorflow as tf

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    graph_def = step.get_concrete_function(*batch).graph.as_graph_def()
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    return sorted({node.op for node in nodes if "Cudnn" in node.op})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gru-32,gru-128,lstm-128")
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()

    import tensorflow as tf

    from tfrnn.config import TrainConfig
    from tfrnn.experiment import load_data
    from tfrnn.rundir import read_history
    from tfrnn.train import compile_model, fit

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        print("gpu_check: no GPU visible to TensorFlow: nothing to check", file=sys.stderr)
        return 2
    print(f"GPU: {tf.config.experimental.get_device_details(tf.config.list_physical_devices('GPU')[0])}")
    print(f"TensorFlow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}")
    rows, ok = [], True
    for name in a.models.split(","):
        cell, units, layers = parse_model(name)
        config = TrainConfig.resolve("hw4", cell=cell, units=units, layers=layers, epochs=a.epochs)
        corpus, splits = load_data(config, None)
        ops = cudnn_ops(compile_model(config, len(corpus.vocab)), next(iter(splits.train)))
        uses_cudnn = "CudnnRNNV3" in ops and "CudnnRNNBackpropV3" in ops
        ok &= uses_cudnn
        with tempfile.TemporaryDirectory() as tmp:
            fit(config, splits, len(corpus.vocab), Path(tmp), verbose=0)
            history = read_history(Path(tmp) / "history.csv")
        seconds = [r["epoch_seconds"] for r in history]
        row = {
            "model": name,
            "cudnn_ops": ops,
            "uses_cudnn": uses_cudnn,
            "median_epoch_s": statistics.median(seconds[1:] or seconds),
            "first_epoch_s": seconds[0],
            "val_ppl": history[-1]["val_perplexity"],
        }
        rows.append(row)
        print(
            f"{name:<9} cuDNN: {'yes' if uses_cudnn else 'NO'} ({', '.join(ops) or 'no Cudnn op'})  "
            f"{row['median_epoch_s']:.3f} s/epoch (first {row['first_epoch_s']:.1f} s)  "
            f"val ppl {row['val_ppl']:.3f} after {a.epochs} epochs",
            flush=True,
        )
    print(json.dumps(rows))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
