"""Models outside Python's TensorFlow: LiteRT against the SavedModel and a PyTorch eager loop,
and `tfrnn serve` under a bounded load, side by side in one run.

    python tools/bench_lite.py RUN [--chars 2000] [--torch-python PY] [--clients 4 --requests 200]

For RUN (a run folder; its LiteRT model is exported first if missing) it prints, each in a
fresh process: batch-1 greedy characters per second of the LiteRT runtime (tfrnn.lite, no
TensorFlow imported), of the SavedModel's in-graph loop, and of a PyTorch eager loop over
the same weights (GRU/LSTM/RNN cells, when a Python with torch is given); the LiteRT
runtime's cold start (import to first character) and peak RSS, and the installed size of
ai-edge-litert and numpy. Then it starts `tfrnn serve RUN` on 127.0.0.1 and sends
``--requests`` generation requests from each of ``--clients`` threads (plus bad bodies),
and prints p50/p99 latency, errors, and the server's RSS before and after. The CPU is named.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfrnn.cpu import cpu_summary  # noqa: E402
from tfrnn.measure import CHILD_PRELUDE, read_json_line, read_peak  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

LITE_CHILD = """
import json, time
started = time.perf_counter()
sys.modules["tensorflow"] = None; sys.modules["keras"] = None
from tfrnn.lite import LiteModel
m = LiteModel(sys.argv[1])
m.generate(["the time traveller"], 1)
cold = time.perf_counter() - started
chars = int(sys.argv[2])
m.generate(["the time traveller"], 50)
t = time.perf_counter()
m.generate(["the time traveller"], chars)
s = time.perf_counter() - t
print(json.dumps({"chars_per_s": chars / s, "cold_start_s": cold}))
"""

SAVED_CHILD = """
import json, os, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1] + "/saved_model"); chars = int(sys.argv[2])
m.generate(["the time traveller"], 50, 0.0, 0)
t = time.perf_counter()
m.generate(["the time traveller"], chars, 0.0, 0)["text"].numpy()
s = time.perf_counter() - t
print(json.dumps({"chars_per_s": chars / s}))
"""

TORCH_CHILD = """
import json, os, time
import numpy as np, torch
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
w = np.load(sys.argv[1], allow_pickle=True).item(); chars = int(sys.argv[2]); cell = w["cell"]
layers = [(torch.tensor(k), torch.tensor(r), torch.tensor(b), torch.tensor(rb) if rb is not None else None)
          for k, r, b, rb in w["layers"]]
emb = torch.tensor(w["input"]); out_k, out_b = torch.tensor(w["out_kernel"]), torch.tensor(w["out_bias"])
def step(i, states):
    x = emb[i]; new = []
    for (k, r, b, rb), s in zip(layers, states):
        if cell == "gru":
            h = s[0]; xz = x @ k + b; hz = h @ r + rb
            z, rr, hh = torch.split(xz, h.shape[-1], -1); hz_z, hz_r, hz_h = torch.split(hz, h.shape[-1], -1)
            z = torch.sigmoid(z + hz_z); rr = torch.sigmoid(rr + hz_r); c = torch.tanh(hh + rr * hz_h)
            h = z * h + (1 - z) * c; new.append([h]); x = h
        elif cell == "lstm":
            h, c = s; g = x @ k + h @ r + b; i_, f, gg, o = torch.split(g, h.shape[-1], -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i_) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c)
            new.append([h, c]); x = h
        else:
            h = torch.tanh(x @ k + s[0] @ r + b); new.append([h]); x = h
    return x @ out_k + out_b, new
with torch.no_grad():
    gates = {"gru": 3, "lstm": 4, "rnn": 1}[cell]
    states = [[torch.zeros(k.shape[1] // gates) for _ in range(2 if cell == "lstm" else 1)]
              for k, _, _, _ in layers]
    i = 3
    for _ in range(50): logits, states = step(i, states); i = int(torch.argmax(logits))
    t = time.perf_counter()
    for _ in range(chars): logits, states = step(i, states); i = int(torch.argmax(logits))
    s = time.perf_counter() - t
print(json.dumps({"chars_per_s": chars / s}))
"""


def child(python: str, code: str, *args: str, env: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run(
        [python, "-c", CHILD_PRELUDE + code, *args], capture_output=True, text=True, env=env
    )
    if proc.returncode:
        raise SystemExit(f"child failed: {proc.stderr.strip()[-400:]}")
    return {**read_json_line(proc.stdout), "peak_rss_mib": read_peak(proc.stdout)}


def torch_weights(run: Path, path: Path) -> None:
    """The run's weights as numpy arrays for the PyTorch loop (one-hot input: the kernel's rows)."""
    import keras
    import numpy as np

    import tfrnn.train  # noqa: F401
    from tfrnn.models import recurrent_layers

    model = keras.saving.load_model(run / "model.keras")
    layers = []
    for layer in recurrent_layers(model):
        cell = layer.cell
        bias = np.asarray(cell.bias)
        if bias.ndim == 2:  # GRU reset_after: input and recurrent biases
            layers.append((np.asarray(cell.kernel), np.asarray(cell.recurrent_kernel), bias[0], bias[1]))
        else:
            layers.append((np.asarray(cell.kernel), np.asarray(cell.recurrent_kernel), bias, None))
    names = [layer.name for layer in model.layers]
    first = layers[0][0]
    if "embedding" in names:
        table = np.asarray(model.get_layer("embedding").embeddings)
    else:
        table = np.eye(first.shape[0], dtype="float32")
    logits = model.get_layer("logits")
    np.save(
        path,
        {
            "cell": json.loads((run / "metrics.json").read_text())["config"]["cell"],
            "input": table,
            "layers": layers,
            "out_kernel": np.asarray(logits.kernel),
            "out_bias": np.asarray(logits.bias),
        },
        allow_pickle=True,
    )


def load_test(run: Path, clients: int, requests: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    server = subprocess.Popen(
        [sys.executable, "-m", "tfrnn", "serve", str(run), "--port", str(port)], env=env
    )
    base = f"http://127.0.0.1:{port}/v1/models/{run.name}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(base, timeout=5).read()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start") from None
            time.sleep(0.3)

    def rss() -> float:
        for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def post(body: dict) -> int:
        req = urllib.request.Request(f"{base}:predict", json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    post({"instances": [{"prompt": "warm up", "num_chars": 100}]})
    before = rss()
    latencies, statuses, lock = [], [], threading.Lock()

    def client(k: int) -> None:
        for i in range(requests):
            body = {
                "instances": [
                    {"prompt": "the time traveller", "num_chars": 100, "temperature": 0.8, "seed": i}
                ]
            }
            t = time.perf_counter()
            status = post(body)
            with lock:
                latencies.append(time.perf_counter() - t)
                statuses.append(status)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    bad = [post(b) for b in ({"instances": [42]}, {"instances": [{"prompt": "a", "num_chars": -1}]}, {})]
    after = rss()
    server.terminate()
    server.wait(timeout=30)
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": sum(s != 200 for s in statuses),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        "requests_per_s": round(len(latencies) / wall, 1),
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "bad_bodies": bad,
    }


def installed_mib(python: str, *packages: str) -> float:
    code = (
        "import importlib, os, sys\ntotal = 0\n"
        "for name in sys.argv[1:]:\n"
        "    root = os.path.dirname(importlib.import_module(name).__file__)\n"
        "    total += sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)\n"
        "print(total / 2**20)\n"
    )
    return float(subprocess.run([python, "-c", code, *packages], capture_output=True, text=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--torch-python", default=None)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args()
    run = Path(a.run)
    if not (run / "model.tflite").is_file():
        subprocess.run([sys.executable, "-m", "tfrnn", "export", str(run), "--format", "litert"], check=True)
    row: dict = {"run": str(run), "cpu": cpu_summary()}
    row["litert"] = child(sys.executable, LITE_CHILD, str(run / "model.tflite"), str(a.chars))
    row["saved_model"] = child(sys.executable, SAVED_CHILD, str(run), str(a.chars))
    if a.torch_python:
        weights = run.parent / f".{run.name}.torch.npy"
        torch_weights(run, weights)
        row["torch_eager"] = child(a.torch_python, TORCH_CHILD, str(weights), str(a.chars))
        weights.unlink()
    row["litert_install_mib"] = round(installed_mib(sys.executable, "ai_edge_litert", "numpy"), 1)
    row["serve"] = load_test(run, a.clients, a.requests)
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
