"""Memory of reading a large text: what the data stage adds beyond the same for a small text.

    python tools/bench_big_text.py --data BIG.txt [--batches 50]

Each way runs in a fresh process: the book preset's corpus (chars vocabulary) and its
training pipeline (independent windows and carried state, batches of 64 x 100, ``--batches``
read) for the small book first, then for BIG. It prints how far BIG raised the peak RSS
above the book's run (imports, pipeline code and allocator pools are the book's too) for
tfrnn's way (files over 32 MiB read in chunks: ``tfrnn.bigtext``) and for the
whole file read at once (the chunked path turned off), beside the text's size and its ids'
(4 bytes a character). The CPU is named in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfrnn.cpu import cpu_summary  # noqa: E402

CHILD = """
import json, sys
from tfrnn.measure import rss_mib
import tensorflow as tf
from tfrnn import bigtext
from tfrnn.data import Corpus, book_path, make_splits
if sys.argv[2] == "whole":
    bigtext.CHUNKED_BYTES = float("inf")

def read(path):
    corpus = Corpus.load(path, "chars", "book", 100)
    loaded = rss_mib()
    for carry in (False, True):
        splits = make_splits(corpus, "book", 100, 64, seed=0, carry_state=carry)
        for i, _ in zip(range(int(sys.argv[3])), splits.train):
            pass
    return corpus, loaded

read(book_path())  # the small text first: imports, pipeline code and allocator pools
small = rss_mib()[1]
corpus, loaded = read(sys.argv[1])
print(json.dumps({"small_peak": small, "after_load": loaded[0], "load_peak": loaded[1],
                  "peak": rss_mib()[1], "characters": len(corpus.ids), "ids_mib": corpus.ids.nbytes / 2**20}))
"""


def measure(path: Path, way: str, batches: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), way, str(batches)], env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"{way}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--batches", type=int, default=50)
    a = ap.parse_args()
    print(f"CPU: {cpu_summary()}")
    size = a.data.stat().st_size / 2**20
    results = {way: measure(a.data, way, a.batches) for way in ("chunked", "whole")}
    for way, r in results.items():
        print(
            f"{way:8s} text {size:,.1f} MiB, {r['characters']:,} characters, ids {r['ids_mib']:,.0f} MiB; "
            f"beyond the book's run: after loading {r['after_load'] - r['small_peak']:,.0f} MiB, "
            f"peak {r['peak'] - r['small_peak']:,.0f} MiB "
            f"({(r['peak'] - r['small_peak']) / r['ids_mib']:.2f}x the ids)"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
