"""The per-epoch validation's time and memory by its number of streams.

    python tools/bench_validation.py [--units 512] [--chars 150000] [--vocab 237]

Scores ``--chars`` random ids with an untrained book-preset LSTM 2 x UNITS (embedding 64)
the way `tfrnn fit` validates each epoch (``tfrnn.evaluate.StreamScorer``, a burn-in of 256),
each way in a fresh process: 8 streams of 1,024-step chunks (before stop 48), the streams
``validation_streams`` gives a part of that size with the same chunks, and with chunks
shortened so that a call reads as many positions as 8 streams did (what `tfrnn fit` does).
It prints seconds (the best of two reads after one warm-up read), characters a second, and
the peak RSS beyond the process's after building the scorer. The CPU is named in the output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tfrnn.cpu import cpu_summary  # noqa: E402

CHILD = """
import json, sys, time
import numpy as np
from tfrnn.config import TrainConfig
from tfrnn.evaluate import VALIDATION_BURN_IN, StreamScorer
from tfrnn.measure import rss_mib
units, chars, vocab, streams, chunk = map(int, sys.argv[1:6])
config = TrainConfig.resolve("book", units=units)
scorer = StreamScorer(config, vocab, streams, VALIDATION_BURN_IN, chunk=chunk)
ids = np.random.default_rng(0).integers(0, vocab, chars).astype(np.int32)
before = rss_mib()[1]
scorer.cross_entropy(ids)
times = []
for _ in range(2):
    started = time.perf_counter()
    scorer.cross_entropy(ids)
    times.append(time.perf_counter() - started)
print(json.dumps({"seconds": min(times), "peak_beyond_mib": rss_mib()[1] - before}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--chars", type=int, default=150_000, help="characters of the validation part")
    ap.add_argument("--vocab", type=int, default=237, help="vocabulary size (Python's source: 237)")
    args = ap.parse_args()
    from tfrnn.evaluate import CHUNK, VALIDATION_STREAMS, validation_chunk, validation_streams

    print(f"CPU: {cpu_summary()}")
    streams = validation_streams(args.chars, 64)
    short = validation_chunk(streams)
    ways = {
        "8 streams, chunks of 1,024 (before)": (VALIDATION_STREAMS, CHUNK),
        f"{streams} streams, chunks of 1,024": (streams, CHUNK),
        f"{streams} streams, chunks of {short} (tfrnn fit)": (streams, short),
    }
    print(f"LSTM 2 x {args.units}, {args.chars:,} characters, a {args.vocab}-token vocabulary")
    for name, (n, chunk) in ways.items():
        sizes = (args.units, args.chars, args.vocab, n, chunk)
        cmd = [sys.executable, "-c", CHILD, *map(str, sizes)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{name}: {r['seconds']:.2f} s, {args.chars / r['seconds']:,.0f} characters/s, "
            f"peak {r['peak_beyond_mib']:.0f} MiB beyond the scorer"
        )


if __name__ == "__main__":
    main()
