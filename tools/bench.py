"""Training speed of tfrnn against PyTorch under the study's protocol (hw4), side by side.

    python tools/bench.py [--models gru-32,lstm-128,gru-3x32,rnn-64] [--epochs 10] [--repeats 1]
                          [--torch-python /path/to/venv/bin/python] [--json out.json]
                          [--xla auto|on|off] [--precision float32|mixed_bfloat16]

For each model it runs tfrnn's training and, when a Python with PyTorch is given (or
importable), ../shared/bench/torch_reference.py for the same model, alternating the two
in one run, each in a fresh process. It prints per model: median seconds per epoch (the
first epoch left out) for each, their ratio, validation perplexity after the same number
of epochs, peak memory (RSS) of each process, and tfrnn's first epoch (building the step,
and compiling it where XLA is on: see tfrnn.train.use_xla); then the same as JSON, with the
CPU's model and the vector units that decide these speeds (tfrnn.cpu), and how tfrnn ran
(XLA or not; its compiled recurrence or, with ``TFRNN_KERNEL=off``, Keras' loops).
``--precision`` sets tfrnn's Keras dtype policy (PyTorch's peer always trains in float32).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from tfrnn.measure import CHILD_PRELUDE, read_json_line, read_peak

ROOT = Path(__file__).resolve().parents[1]
TORCH_REFERENCE = ROOT.parent / "shared" / "bench" / "torch_reference.py"

# Run in a child process: train one model, print timings, perplexity and peak RSS as JSON.
TFRNN_CHILD = """
import json, os, sys, tempfile
from pathlib import Path
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tfrnn
tfrnn.use_bfc_allocator()  # as the tfrnn command does, before TensorFlow
from tfrnn.config import TrainConfig
from tfrnn.experiment import load_data
from tfrnn.train import fit, use_xla
from tfrnn.rundir import read_history
import dataclasses, statistics
cell, units, layers, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
config = TrainConfig.resolve(
    "hw4", cell=cell, units=units, layers=layers, epochs=epochs, precision=sys.argv[6]
)
xla = sys.argv[5]
if xla == "auto":  # as `tfrnn fit` chooses for the study's 50-epoch run of this model
    xla = "on" if use_xla(dataclasses.replace(config, epochs=50)) else "off"
corpus, splits = load_data(config, None)
with tempfile.TemporaryDirectory() as tmp:
    settings = fit(config, splits, len(corpus.vocab), Path(tmp), verbose=0, xla=xla).settings
    h = read_history(Path(tmp) / "history.csv")
s = [r["epoch_seconds"] for r in h]
print(json.dumps({"median_epoch_s": statistics.median(s[1:] or s), "first_epoch_s": s[0],
                  "val_ppl": h[-1]["val_perplexity"], "xla": settings["xla"],
                  "recurrence": settings["recurrence"]}))
"""

# Run a PyTorch peer script as it is (argv: the script, its options); the prelude adds
# its process's peak RSS.
TORCH_CHILD = """
import runpy
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def parse_model(name: str) -> tuple[str, int, int]:
    """``gru-32`` -> ("gru", 32, 1); ``gru-3x32`` -> ("gru", 32, 3)."""
    m = re.fullmatch(r"(rnn|gru|lstm)-(?:(\d+)x)?(\d+)", name)
    if not m:
        raise SystemExit(f"bench.py: cannot read model {name!r} (like gru-32 or lstm-3x32)")
    return m.group(1), int(m.group(3)), int(m.group(2) or 1)


def run_tfrnn(
    cell: str, units: int, layers: int, epochs: int, xla: str = "auto", precision: str = "float32"
) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_PRELUDE + TFRNN_CHILD, cell, str(units), str(layers), str(epochs)]
        + [xla, precision],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return {**read_json_line(proc.stdout), "peak_rss_mib": read_peak(proc.stdout)}


def run_torch(python: str, cell: str, units: int, layers: int, epochs: int, data: str) -> dict:
    proc = subprocess.run(
        [
            python,
            "-c",
            CHILD_PRELUDE + TORCH_CHILD,
            str(TORCH_REFERENCE),
            "--cell",
            cell,
            "--units",
            str(units),
            "--layers",
            str(layers),
            "--epochs",
            str(epochs),
            "--data",
            data,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result = read_json_line(proc.stdout)
    return {
        "median_epoch_s": result["median_epoch_s"],
        "val_ppl": result["val_ppl"],
        "peak_rss_mib": read_peak(proc.stdout),
    }


def find_torch_python(given: str | None) -> str | None:
    candidates = [given] if given else [sys.executable, "/tmp/torchvenv/bin/python"]
    for python in candidates:
        try:
            if python and subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0:
                return python
        except OSError:  # no such interpreter
            pass
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gru-32,lstm-128,gru-3x32,rnn-64")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs of each side per model")
    ap.add_argument("--torch-python", default=None, help="a Python that can import torch")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    from tfrnn.config import PRECISIONS, XLA_SETTINGS

    ap.add_argument(
        "--xla",
        choices=XLA_SETTINGS,
        default="auto",
        help="XLA for tfrnn; auto: as `tfrnn fit` chooses for the study's 50-epoch run of the model",
    )
    ap.add_argument("--precision", choices=PRECISIONS, default="float32", help="tfrnn's dtype policy")
    ap.add_argument("--no-torch", action="store_true", help="time tfrnn alone")
    a = ap.parse_args()

    from tfrnn.data import book_path

    data = str(book_path())
    torch_python = None if a.no_torch else find_torch_python(a.torch_python)
    if torch_python is None:
        print("PyTorch not found: timing tfrnn alone (pass --torch-python)", file=sys.stderr)
    results = []
    for name in a.models.split(","):
        cell, units, layers = parse_model(name)
        runs: dict[str, list[dict]] = {"tfrnn": [], "torch": []}
        for rep in range(a.repeats):
            order = ("tfrnn", "torch") if rep % 2 == 0 else ("torch", "tfrnn")
            for side in order:
                if side == "tfrnn":
                    runs["tfrnn"].append(run_tfrnn(cell, units, layers, a.epochs, a.xla, a.precision))
                elif torch_python:
                    runs["torch"].append(run_torch(torch_python, cell, units, layers, a.epochs, data))
        row = {"model": name, "epochs": a.epochs, "precision": a.precision}
        for side, rs in runs.items():
            if rs:
                row[f"{side}_epoch_s"] = statistics.median(r["median_epoch_s"] for r in rs)
                row[f"{side}_val_ppl"] = statistics.median(r["val_ppl"] for r in rs)
                row[f"{side}_peak_rss_mib"] = max(r["peak_rss_mib"] for r in rs)
        if runs["tfrnn"]:  # includes building the step (and XLA compiling it): shown, not in the median
            row["tfrnn_first_epoch_s"] = statistics.median(r["first_epoch_s"] for r in runs["tfrnn"])
            row["tfrnn_step"] = {key: runs["tfrnn"][0][key] for key in ("xla", "recurrence")}
        if runs["torch"]:
            row["ratio"] = row["tfrnn_epoch_s"] / row["torch_epoch_s"]
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    from tfrnn.cpu import cpu_info, cpu_summary

    print(f"CPU: {cpu_summary()}")
    for row in results:
        row["cpu"] = cpu_info()
    head = (
        f"{'model':<10} {'tfrnn s/ep':>10} {'torch s/ep':>10} {'ratio':>6} {'tfrnn ppl':>9} "
        f"{'torch ppl':>9} {'tfrnn MiB':>9} {'torch MiB':>9} {'tfrnn 1st':>9}"
    )
    print(head)
    for r in results:

        def f(key, fmt, r=r):
            return format(r[key], fmt) if key in r else "-"

        print(
            f"{r['model']:<10} {f('tfrnn_epoch_s', '.3f'):>10} {f('torch_epoch_s', '.3f'):>10} "
            f"{f('ratio', '.2f'):>6} {f('tfrnn_val_ppl', '.3f'):>9} {f('torch_val_ppl', '.3f'):>9} "
            f"{f('tfrnn_peak_rss_mib', '.0f'):>9} {f('torch_peak_rss_mib', '.0f'):>9} "
            f"{f('tfrnn_first_epoch_s', '.1f'):>9}"
        )
    for r in results:
        if "tfrnn_step" in r:
            step = r["tfrnn_step"]
            rec = step["recurrence"]
            how = f"{rec['implementation']} ({rec['reason']})" if isinstance(rec, dict) else rec
            print(f"{r['model']}: tfrnn ran XLA {step['xla']}, recurrence: {how}")
    print(json.dumps(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
