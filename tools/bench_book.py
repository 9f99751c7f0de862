"""Whole-book quality at equal wall-clock budget: tfrnn against its PyTorch peer, side by side.

    python tools/bench_book.py [--model auto|lstm-2x512] [--dropout 0.5] [--budget-min 15]
                               [--repeats 1] [--torch-python PY] [--json out.json]
                               [-- extra `tfrnn fit` options]

It runs `tfrnn fit --preset book` with its own recipe (the book preset's defaults as its
time budget adapts them, tfrnn.recipe, or the extra options given after --) and
tools/torch_book_peer.py (flat Adam 3e-3, dropout --dropout, independent windows) on the
same model (embedding 64, the book split, batches of 64 x 100), each in a fresh process
with the same --time-budget, alternating (tfrnn first). ``--model auto`` (the default) lets
tfrnn's budget choose the width, and the peer trains the model tfrnn chose; a named model
is trained by both. Both read the validation and
test parts as one sequence each, the state carried, with the best validation epoch's
weights. It prints per side: best validation and test perplexity, epochs run, median
seconds per epoch (the first left out; validation included on both sides), peak RSS, and
their ratios; then the same as JSON. The CPU is named in the output.

``--dynamic`` adds tfrnn's test figure under dynamic evaluation (``tfrnn score --dynamic``:
settings chosen on the validation part), and ``--repeats`` of 2 or more the ensemble of
tfrnn's runs (seeds 0, 1, ...; ``tfrnn score RUN RUN ...``): rows of their own, never mixed
into the static ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import TORCH_CHILD, find_torch_python, parse_model  # noqa: E402

from tfrnn.cpu import cpu_summary  # noqa: E402
from tfrnn.measure import CHILD_PRELUDE, read_json_line, read_peak  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEER = Path(__file__).resolve().parent / "torch_book_peer.py"


# Run `python -m tfrnn ARGS`; the prelude prints the process's peak RSS when it ends.
TFRNN_CHILD = """
import runpy
sys.argv = ["tfrnn", *sys.argv[1:]]
runpy.run_module("tfrnn", run_name="__main__")
"""


def run_tfrnn(model: str, budget, extra: list[str], vocab: str, out: Path, seed: int) -> dict:
    """One `tfrnn fit` into ``out`` (kept: it is scored after all runs); ``model``: "auto"
    (the preset's, as its budget chooses) or a model both sides train."""
    args = [sys.executable, "-c", CHILD_PRELUDE + TFRNN_CHILD, "fit", "--preset", "book", "--embedding", "64"]
    if model != "auto":
        cell, units, layers = parse_model(model)
        args += ["--cell", cell, "--units", str(units), "--layers", str(layers)]
    args += ["--time-budget", str(budget), "--out", str(out)]
    args += ["--vocab", vocab, "--seed", str(seed), "--no-profile", "-q", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"tfrnn fit failed: {proc.stderr.strip().splitlines()[-1:]}")
    m = json.loads((out / "metrics.json").read_text())
    return {
        "best_val_ppl": m["best_val_perplexity"],
        "best_epoch": m["best_epoch"],
        "test_ppl": m["test_perplexity"],
        "test_bpc": m.get("test_bits_per_character"),
        "vocab_size": m.get("vocabulary", {}).get("size", 28),
        "epochs": m["epochs_run"],
        "training_s": m["training_seconds"],
        "median_epoch_s": m["median_epoch_seconds"],
        "params": m["parameters"]["total"],
        "recipe": {k: m["config"][k] for k in ("dropout", "schedule", "lr")},  # tfrnn.recipe's choice
        "model": f"{m['config']['cell']}-{m['config']['layers']}x{m['config']['units']}",
        "epoch_chars": m["config"].get("epoch_chars"),
        "peak_rss_mib": read_peak(proc.stdout),
    }


# Score run folders (their test part) with tfrnn.scoring: each alone, and together.
SCORE_CHILD = """
import json
from pathlib import Path
from tfrnn.scoring import score_runs
runs = [Path(p) for p in sys.argv[2:]]
print(json.dumps(score_runs(runs, None, sys.argv[1] == "1", log=lambda s: print(s, file=sys.stderr))))
"""


def score_tfrnn(runs: list[Path], dynamic: bool) -> dict:
    """Test perplexities of tfrnn's runs under dynamic evaluation, and of their ensemble."""
    import math

    args = [sys.executable, "-c", CHILD_PRELUDE + SCORE_CHILD, "1" if dynamic else "0", *map(str, runs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"tfrnn score failed: {proc.stderr.strip().splitlines()[-1:]}")
    result = read_json_line(proc.stdout)
    out = {}
    if dynamic:
        out["test_ppl_dynamic"] = statistics.median(math.exp(r["dynamic"]) for r in result["runs"])
    for kind, nats in result.get("ensemble", {}).items():
        out[f"test_ppl_ensemble{'_dynamic' if kind == 'dynamic' else ''}"] = math.exp(nats)
    return out


def run_peer(
    python, cell, units, layers, dropout, budget, data, vocab: str = "chars", epoch_chars: int | None = None
) -> dict:
    args = [python, "-c", CHILD_PRELUDE + TORCH_CHILD, str(PEER), "--cell", cell, "--units", str(units)]
    args += ["--vocab", vocab] + (["--epoch-chars", str(epoch_chars)] if epoch_chars else [])
    args += ["--layers", str(layers), "--dropout", str(dropout), "--budget-min", str(budget), "--data", data]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return {**read_json_line(proc.stdout), "peak_rss_mib": read_peak(proc.stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default="auto", help="like lstm-2x512 or gru-256; auto: the one tfrnn's budget chooses"
    )
    ap.add_argument("--dropout", type=float, default=0.5, help="the peer's dropout")
    ap.add_argument("--budget-min", type=float, default=15.0, help="training minutes per side")
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs of each side")
    ap.add_argument("--torch-python", default=None, help="a Python that can import torch")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument(
        "--vocab", choices=("letters", "chars"), default="chars", help="both sides' vocabulary (tfrnn.vocab)"
    )
    ap.add_argument("--keep-run", type=Path, default=None, help="keep tfrnn's run folder here (a new folder)")
    ap.add_argument(
        "--dynamic", action="store_true", help="also tfrnn's test figure under dynamic evaluation"
    )
    ap.add_argument("extra", nargs="*", help="options for tfrnn fit (after --)")
    a = ap.parse_args()

    from tfrnn.data import book_path

    model = a.model
    if model != "auto":
        parse_model(model)  # a bad name fails before anything runs
    torch_python = find_torch_python(a.torch_python)
    if torch_python is None:
        print("PyTorch not found: timing tfrnn alone (pass --torch-python)", file=sys.stderr)
    data = str(book_path())
    runs: dict[str, list[dict]] = {"tfrnn": [], "torch": []}
    folders = tempfile.TemporaryDirectory()
    kept: list[Path] = []
    for rep in range(a.repeats):
        for side in ("tfrnn", "torch") if rep % 2 == 0 else ("torch", "tfrnn"):  # tfrnn first
            if side == "tfrnn":
                out = a.keep_run if rep == 0 and a.keep_run else Path(folders.name) / f"run{rep}"
                kept.append(out)
                mine = run_tfrnn(a.model, a.budget_min, a.extra, a.vocab, out, rep)
                runs[side].append(mine)
                model = mine["model"]  # the peer trains what tfrnn trained
            elif torch_python:
                cell, units, layers = parse_model(model)
                peer = run_peer(torch_python, cell, units, layers, a.dropout, a.budget_min, data, a.vocab)
                runs[side].append(peer)
            print(side, json.dumps(runs[side][-1]) if runs[side] else "-", file=sys.stderr, flush=True)
    row: dict = {"model": model, "peer_dropout": a.dropout, "budget_min": a.budget_min, "cpu": cpu_summary()}
    row["vocab"] = a.vocab
    if a.dynamic or len(kept) > 1:
        row.update({f"tfrnn_{k}": v for k, v in score_tfrnn(kept, a.dynamic).items()})
    folders.cleanup()
    keys = ("best_val_ppl", "test_ppl", "test_bpc", "vocab_size", "epochs", "median_epoch_s", "peak_rss_mib")
    for side, rs in runs.items():
        for key in keys:
            values = [r[key] for r in rs if r.get(key) is not None]
            if values:
                row[f"{side}_{key}"] = statistics.median(values)
    if runs["torch"] and runs["tfrnn"]:
        row["epoch_time_ratio"] = row["tfrnn_median_epoch_s"] / row["torch_median_epoch_s"]
        row["test_ppl_ratio"] = row["tfrnn_test_ppl"] / row["torch_test_ppl"]
    print(
        f"{model} (asked: {a.model}), peer dropout {a.dropout}, tfrnn recipe {runs['tfrnn'][0]['recipe']}, "
        f"{a.budget_min:g} min each, {a.vocab} vocabulary; CPU: {row['cpu']}"
    )
    print(f"{'':<22} {'tfrnn':>9} {'torch':>9}")
    for key in keys:
        t, p = row.get(f"tfrnn_{key}"), row.get(f"torch_{key}")
        fmt = ".3f" if "ppl" in key or "bpc" in key or "epoch_s" in key else ".0f"
        cells = [format(v, fmt) if v is not None else "-" for v in (t, p)]
        print(f"{key:<22} {cells[0]:>9} {cells[1]:>9}")
    for key in ("epoch_time_ratio", "test_ppl_ratio"):
        if key in row:
            print(f"{key:<22} {row[key]:>9.3f}")
    for key in ("test_ppl_dynamic", "test_ppl_ensemble", "test_ppl_ensemble_dynamic"):
        if f"tfrnn_{key}" in row:  # apart from the static rows above
            print(f"{key:<26} {row[f'tfrnn_{key}']:>9.3f}   (tfrnn)")
    print(json.dumps(row))
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": row, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
