"""Where one training batch's time goes, tfrnn (XLA, compiled recurrence, Keras' loops) beside PyTorch.

    python tools/profile_step.py [--model gru-32] [--repeats 20] [--torch-python PY]

Under the study's protocol (batch 1,024, 32 steps) it times, in milliseconds per batch
(median of ``--repeats``): the recurrent matrix product alone (``h @ U``, 32 dependent
steps: the part no framework can skip), the forward pass, and the whole training step
(forward, loss, gradients, clipping, SGD update), for tfrnn's Keras model compiled as
``tfrnn fit`` compiles it, three ways (Keras' loops under XLA, tfrnn's compiled recurrence,
Keras' loops without either), and for PyTorch's ``nn.GRU``/``nn.LSTM``/
``nn.RNN`` when a Python with torch is found (as in tools/bench.py). One hw4 epoch is 10 such
training steps and the forward pass over 5,000 validation windows (tfrnn: one batch of 5,000,
see tfrnn.data.eval_batch_size; PyTorch's reference: five of 1,024); the rest of an epoch
is the framework's own overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tfrnn  # noqa: E402

tfrnn.use_bfc_allocator()  # before TensorFlow
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import find_torch_python, parse_model  # noqa: E402

from tfrnn.measure import CHILD_PRELUDE, median_seconds, read_json_line  # noqa: E402

BATCH, STEPS, VOCAB = 1024, 32, 28
from tfrnn.config import GATES  # noqa: E402

TORCH_CHILD = """
import json, sys, torch
from torch import nn
cell, units, layers, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
B, T, V, G = 1024, 32, 28, {"rnn": 1, "gru": 3, "lstm": 4}[cell]
cls = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[cell]
rnn = cls(V, units, layers, dropout=0.5 if layers > 1 else 0.0)
out = nn.Linear(units, V)
params = [*rnn.parameters(), *out.parameters()]
opt = torch.optim.SGD(params, 1.0)
x = torch.randint(0, V, (B, T)); y = torch.randint(0, V, (B, T))
def forward():
    with torch.no_grad():
        return out(rnn(nn.functional.one_hot(x.T, V).float())[0])
def train():
    logits = out(rnn(nn.functional.one_hot(x.T, V).float())[0]).swapaxes(0, 1)
    loss = nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    opt.zero_grad(); loss.backward(); nn.utils.clip_grad_norm_(params, 1.0); opt.step()
    return loss.item()
h, U = torch.randn(B, units), torch.randn(units, G * units) * 0.1
def recurrent_product():
    s = h
    for _ in range(T):
        s = (s @ U)[:, :units].contiguous()
    return s
from tfrnn.measure import median_seconds
def ms(f):
    return 1000 * median_seconds(f, repeats, warmup=2)
result = {"recurrent_product": ms(recurrent_product), "forward": ms(forward), "train_step": ms(train)}
print(json.dumps(result))
"""


#: tfrnn's ways to run the step: Keras' loops under XLA, tfrnn's compiled recurrence
#: (tfrnn.kernel), and Keras' loops without either.
MODES = {"XLA": ("on", "auto"), "kernel": ("off", "auto"), "Keras loops": ("off", "off")}


def tfrnn_times(cell: str, units: int, layers: int, mode: str, repeats: int) -> dict:
    """Milliseconds per batch of tfrnn's model compiled as ``tfrnn fit`` does, run ``mode``."""
    import numpy as np
    import tensorflow as tf

    from tfrnn.config import TrainConfig
    from tfrnn.train import compile_model

    xla_setting, kernel_setting = MODES[mode]
    xla = xla_setting == "on"
    config = TrainConfig.resolve("hw4", cell=cell, units=units, layers=layers)
    before = os.environ.get("TFRNN_KERNEL")
    os.environ["TFRNN_KERNEL"] = kernel_setting  # read when the model is compiled
    model = compile_model(config, VOCAB, xla_setting)
    if before is None:
        os.environ.pop("TFRNN_KERNEL")
    else:
        os.environ["TFRNN_KERNEL"] = before
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCAB, (BATCH, STEPS)).astype("int32")
    y = rng.integers(0, VOCAB, (BATCH, STEPS)).astype("int32")
    h = tf.random.normal((BATCH, units))
    kernel = tf.random.normal((units, GATES[cell] * units)) * 0.1

    @tf.function(jit_compile=xla)
    def recurrent_product():
        s = h
        for _ in range(STEPS):
            s = tf.matmul(s, kernel)[:, :units]
        return s

    def ms(f) -> float:
        return 1000 * median_seconds(f, repeats, warmup=2)

    return {
        "recurrent_product": ms(lambda: recurrent_product().numpy()),
        "forward": ms(lambda: model.predict_on_batch(x)),
        "train_step": ms(lambda: model.train_on_batch(x, y)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gru-32")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--torch-python", default=None)
    a = ap.parse_args()
    cell, units, layers = parse_model(a.model)
    columns = {f"tfrnn {mode}": tfrnn_times(cell, units, layers, mode, a.repeats) for mode in MODES}
    python = find_torch_python(a.torch_python)
    if python:
        args = [python, "-c", CHILD_PRELUDE + TORCH_CHILD, cell, str(units), str(layers), str(a.repeats)]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        columns["PyTorch"] = read_json_line(out)
    print(f"{a.model}: milliseconds per batch of {BATCH} x {STEPS} (median of {a.repeats})")
    print(f"{'':<20}" + "".join(f"{name:>18}" for name in columns))
    for row in ("recurrent_product", "forward", "train_step"):
        print(f"{row:<20}" + "".join(f"{col[row]:>18.1f}" for col in columns.values()))
    epoch = {name: 10 * col["train_step"] + 5 * col["forward"] for name, col in columns.items()}
    print(f"{'10 steps + 5 fwd':<20}" + "".join(f"{v:>18.1f}" for v in epoch.values()))
    print(json.dumps({"model": a.model, **columns}))


if __name__ == "__main__":
    main()
