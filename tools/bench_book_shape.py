"""One training step at the book's shape: tfrnn's compiled recurrence, its Keras loops, PyTorch.

    python tools/bench_book_shape.py [--shapes lstm-2x512@64,gru-2x512@64,lstm-2x256@128,lstm-3x1024@32]
                                     [--repeats 5] [--torch-python PY]

For each shape (``CELL-LAYERSxUNITS@BATCH``; embedding 64, 100 steps, 69 characters, dropout
0.5 everywhere, AdamW, clipping at 1: the book preset's model) it times, in a fresh child
process each, the median of ``--repeats`` training steps on random batches after two
untimed ones, and the process's peak resident memory, both right after importing its
framework (``rss_import``) and at the end (``rss``): tfrnn with the compiled recurrence
(``$TFRNN_KERNEL=on``; its recurrent products, f32 or bf16, as ``tfrnn.kernel_products``
chooses: ``$TFRNN_KERNEL_BF16=off`` for float32 alone), tfrnn with its Keras loops (``off``),
and PyTorch's ``nn.LSTM``/
``nn.GRU`` with the same sizes and optimizer when a Python with torch is found. Each step's
achieved GFLOP/s (``tfrnn.recipe.step_flops``: the matrix products, forward and backward) is
printed beside the float32 FMA peak of the cores used (``tfrnn.cpu.fma_peak_gflops``: their
vector units and clock), and what the step holds beyond the import beside PyTorch's. Ratios
are of this run only (the machines are shared: compare within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import find_torch_python  # noqa: E402

from tfrnn.cpu import cpu_summary, fma_peak_gflops  # noqa: E402
from tfrnn.measure import CHILD_PRELUDE, read_json_line, read_peak  # noqa: E402

VOCAB, STEPS, EMBEDDING = 69, 100, 64

TFRNN_CHILD = f"""
import os, json, sys
import tfrnn
tfrnn.use_bfc_allocator()
import tensorflow
from tfrnn.measure import peak_rss_mib
rss_import = peak_rss_mib()
import numpy as np
from tfrnn.config import TrainConfig
from tfrnn.measure import median_seconds
from tfrnn.train import compile_model
cell, (layers, units, batch, repeats) = sys.argv[1], map(int, sys.argv[2:6])
config = TrainConfig.resolve("book", cell=cell, layers=layers, units=units, batch_size=batch)
model = compile_model(config, {VOCAB}, "off")
rng = np.random.default_rng(0)
x = rng.integers(0, {VOCAB}, (batch, {STEPS})).astype("int32")
y = rng.integers(0, {VOCAB}, (batch, {STEPS})).astype("int32")
used = any(getattr(layer, "fused_kernel", False) for layer in model.layers)
products = "bf16" if any(getattr(layer, "kernel_bf16", False) for layer in model.layers) else "f32"
ms = 1000 * median_seconds(lambda: model.train_on_batch(x, y), repeats, warmup=2)
print(json.dumps({{"ms": ms, "compiled": used, "products": products, "rss_import": rss_import}}))
"""

TORCH_CHILD = f"""
import json, sys, torch
from torch import nn
from tfrnn.measure import median_seconds, peak_rss_mib
rss_import = peak_rss_mib()
cell, (layers, units, batch, repeats) = sys.argv[1], map(int, sys.argv[2:6])
V, T, E = {VOCAB}, {STEPS}, {EMBEDDING}
torch.manual_seed(0)
emb = nn.Embedding(V, E)
kind = {{"lstm": nn.LSTM, "gru": nn.GRU}}[cell]
rnn = kind(E, units, layers, dropout=0.5 if layers > 1 else 0.0, batch_first=True)
drop, out = nn.Dropout(0.5), nn.Linear(units, V)
params = [*emb.parameters(), *rnn.parameters(), *out.parameters()]
opt = torch.optim.AdamW(params, 3e-3)
x = torch.randint(0, V, (batch, T)); y = torch.randint(0, V, (batch, T))
def step():
    logits = out(drop(rnn(drop(emb(x)))[0]))
    loss = nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    opt.zero_grad(); loss.backward(); nn.utils.clip_grad_norm_(params, 1.0); opt.step()
print(json.dumps({{"ms": 1000 * median_seconds(step, repeats, warmup=2), "rss_import": rss_import}}))
"""


def parse_shape(text: str) -> tuple[str, int, int, int]:
    match = re.fullmatch(r"(lstm|gru)-(?:(\d+)x)?(\d+)@(\d+)", text)
    if not match:
        raise SystemExit(f"--shapes: {text!r} is not CELL-LAYERSxUNITS@BATCH (e.g. lstm-2x512@64)")
    cell, layers, units, batch = match.groups()
    return cell, int(layers or 1), int(units), int(batch)


def child(python: str, code: str, args: list, env: dict) -> dict:
    done = subprocess.run(
        [python, "-c", CHILD_PRELUDE + code, *map(str, args)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"child failed: {done.stderr.strip().splitlines()[-1:]}")
    return {**read_json_line(done.stdout), "rss": read_peak(done.stdout)}


def step_gflop(cell: str, layers: int, units: int, batch: int) -> float:
    """GFLOP of one training step at this shape (the matrix products, forward and backward)."""
    from tfrnn.config import TrainConfig
    from tfrnn.recipe import step_flops

    config = TrainConfig.resolve("book", cell=cell, layers=layers, units=units, batch_size=batch)
    return step_flops(config, VOCAB) / 1e9


def print_rows(rows: list[dict], peak: float | None) -> None:
    """The speed table (ms, ratios, GFLOP/s, share of the peak) and the memory table."""
    nan = float("nan")
    print(
        f"{'shape':<16}{'compiled ms':>12}{'Keras ms':>10}{'PyTorch ms':>12}{'c/K':>6}{'c/PT':>6}"
        f"{'GFLOP/s c':>11}{'K':>6}{'PT':>6}{'c/peak':>8}{'c products':>12}"
    )
    for row in rows:
        c, k, t = row["compiled"], row["keras"], row.get("torch") or {"ms": nan, "gflops": nan}
        share = c["gflops"] / peak if peak else nan
        print(
            f"{row['shape']:<16}{c['ms']:>12.0f}{k['ms']:>10.0f}{t['ms']:>12.0f}{c['ms'] / k['ms']:>6.2f}"
            f"{c['ms'] / t['ms']:>6.2f}{c['gflops']:>11.1f}{k['gflops']:>6.1f}{t['gflops']:>6.1f}"
            f"{share:>8.0%}{c.get('products', ''):>12}"
        )
    print(f"\n{'shape':<16}{'RSS after import / peak / beyond import (MiB)':<46}{'beyond c/PT':>12}")
    for row in rows:
        cells, beyond = [], {}
        for name in ("compiled", "keras", "torch"):
            side = row.get(name)
            if side:
                beyond[name] = side["rss"] - side["rss_import"]
                cells.append(f"{name[0]} {side['rss_import']:.0f}/{side['rss']:.0f}/{beyond[name]:.0f}")
        ratio = beyond["compiled"] / beyond["torch"] if beyond.get("torch") else nan
        print(f"{row['shape']:<16}{'  '.join(cells):<46}{ratio:>12.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="lstm-2x512@64,gru-2x512@64,lstm-2x256@128,lstm-3x1024@32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--torch-python", default=None)
    a = ap.parse_args()
    torch_python = find_torch_python(a.torch_python)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    peak, how = fma_peak_gflops()
    print(f"CPU: {cpu_summary()}")
    print(f"float32 FMA peak: {peak:.0f} GFLOP/s ({how})" if peak else f"float32 FMA peak: unknown ({how})")
    rows = []
    for text in a.shapes.split(","):
        cell, layers, units, batch = parse_shape(text)
        gflop = step_gflop(cell, layers, units, batch)
        args = [cell, layers, units, batch, a.repeats]
        row = {"shape": text, "step_gflop": gflop}
        for name, setting in (("compiled", "on"), ("keras", "off")):
            row[name] = child(sys.executable, TFRNN_CHILD, args, {**env, "TFRNN_KERNEL": setting})
        if torch_python:
            row["torch"] = child(torch_python, TORCH_CHILD, args, env)
        for name in ("compiled", "keras", "torch"):
            if name in row:
                row[name]["gflops"] = gflop / (row[name]["ms"] / 1000)
        rows.append(row)
        print(f"  {text}: measured", flush=True)
    print_rows(rows, peak)
    print(json.dumps({"cpu": cpu_summary(), "peak_gflops": peak, "peak": how, "rows": rows}))


if __name__ == "__main__":
    main()
