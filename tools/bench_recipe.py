"""The budget recipe against hand-picked widths, on several texts and budgets.

    python tools/bench_recipe.py --data TEXT [--data TEXT ...] [--budgets 3,15,60]
                                 [--widths 128,256,512] [--torch-python PY] [--json out.json]

For each text and budget it runs `tfrnn fit --preset book --time-budget B` as a user would
(the recipe chooses the width, dropout, learning rate and epoch length: tfrnn.recipe), then
the same with `--units W` for each hand-picked width (the recipe's other choices as the
budget gives them for that width; a width the recipe chose is not run twice), and, with
--torch-python, tools/torch_book_peer.py on the recipe's model (flat Adam 3e-3, the recipe's
dropout, the same budget, split and epoch length). Runs are one at a time, each in a fresh process. It
prints a table per text and budget: the recipe's choice and its test bits per character,
each width's, the best of them and the recipe's distance to it (the issue's bar: within
2%), and the peer's; then JSON. The CPU is named in the output.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import find_torch_python  # noqa: E402
from bench_book import run_peer, run_tfrnn  # noqa: E402

from tfrnn.cpu import cpu_summary  # noqa: E402


def one_budget(text: Path, budget: float, widths: list[int], torch_python, work: Path) -> dict:
    """The recipe's run, each width's, and the peer's, on ``text`` for ``budget`` minutes."""
    runs = {}
    auto = run_tfrnn("auto", budget, ["--data", str(text)], "chars", work / "recipe", 0)
    chosen = int(auto["model"].split("x")[-1])
    runs["recipe"] = {**auto, "units": chosen}
    for width in widths:
        if width == chosen:
            runs[str(width)] = runs["recipe"]
            continue
        run = run_tfrnn(f"lstm-2x{width}", budget, ["--data", str(text)], "chars", work / f"w{width}", 0)
        runs[str(width)] = {**run, "units": width}
    out = {"text": str(text), "budget_min": budget, "runs": runs}
    if torch_python:
        dropout = auto["recipe"]["dropout"]
        # the peer's epochs as long as the recipe's, so it checks its budget as often
        epoch = auto.get("epoch_chars")
        out["peer"] = run_peer(torch_python, "lstm", chosen, 2, dropout, budget, str(text), epoch_chars=epoch)
    return out


def table(result: dict) -> list[str]:
    """Markdown rows of one text and budget."""
    runs = result["runs"]
    recipe = runs["recipe"]
    widths = {k: r for k, r in runs.items() if k != "recipe"}
    best_w, best = min(widths.items(), key=lambda kv: kv[1]["test_bpc"])
    gap = recipe["test_bpc"] / best["test_bpc"] - 1
    peer = result.get("peer")
    cells = ", ".join(f"{w}: {r['test_bpc']:.3f} ({r['epochs']} ep)" for w, r in widths.items())
    return [
        f"| {Path(result['text']).name} | {result['budget_min']:g} | {recipe['model']} "
        f"(dropout {recipe['recipe']['dropout']}, {recipe['epochs']} epochs) | "
        f"**{recipe['test_bpc']:.3f}** | {cells} | {best_w}: {best['test_bpc']:.3f} | {100 * gap:+.1f}% | "
        + (f"{peer['test_bpc']:.3f} ({peer['epochs']} ep) |" if peer and "test_bpc" in peer else "- |")
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", required=True, type=Path, help="a text file (repeat)")
    ap.add_argument("--budgets", default="3,15,60", help="minutes, comma-separated")
    ap.add_argument("--widths", default="128,256,512", help="hand-picked widths (LSTM, 2 layers)")
    ap.add_argument("--torch-python", default=None, help="a Python that can import torch (the peer)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    a = ap.parse_args()
    torch_python = find_torch_python(a.torch_python) if a.torch_python else None
    widths = [int(w) for w in a.widths.split(",")]
    print(f"CPU: {cpu_summary()}", flush=True)
    header = [
        "| text | minutes | recipe's choice | recipe test bpc | widths: test bpc | best "
        "| recipe vs best | peer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results, rows = [], []
    with tempfile.TemporaryDirectory(prefix="tfrnn-recipe-") as tmp:
        for text in a.data:
            for budget in (float(b) for b in a.budgets.split(",")):
                work = Path(tmp) / f"{text.stem}-{budget:g}"
                result = one_budget(text, budget, widths, torch_python, work)
                results.append(result)
                rows += table(result)
                print("\n".join([*header, *rows]), flush=True)
                if a.json:  # after each text and budget: a long sweep cut short keeps what it ran
                    Path(a.json).write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
