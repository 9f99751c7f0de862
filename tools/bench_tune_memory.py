"""Memory of a long sweep: peak and current RSS after 2 and after N small trials.

    python tools/bench_tune_memory.py [--trials 20] [--units 8-32] [--epochs 1]

Runs a random search of small models in one process (as `tfrnn tune` does) and reads the
process's resident memory from /proc after every trial. Growth between trial 2 and the
last trial shows whether trials leak memory into each other. Prints a table and one
JSON line.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import tempfile
from pathlib import Path

from tfrnn.measure import rss_mib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--units", default="8-32")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data", default=None, help="text file (default: the verified book)")
    a = ap.parse_args()

    from tuner.search import run_search
    from tuner.space import space_from_options

    space = space_from_options(cells="rnn,gru,lstm", layers="1-2", units=a.units, optimizers="sgd")
    samples: list[tuple[int, float, float, float]] = []

    def record(trial):
        current, peak = rss_mib()
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back: leak or fragmentation?
        samples.append((len(samples) + 1, current, peak, rss_mib()[0]))

    with tempfile.TemporaryDirectory() as tmp:
        run_search(
            "random",
            space,
            "hw4",
            Path(tmp),
            "mem",
            a.trials,
            a.epochs,
            data=a.data,
            overwrite=True,
            verbose=0,
            on_trial_end=record,
        )
    print(f"{'trial':>5} {'rss MiB':>8} {'peak MiB':>9} {'rss after trim':>15}")
    for n, cur, peak, trimmed in samples:
        print(f"{n:>5} {cur:>8.0f} {peak:>9.0f} {trimmed:>15.0f}")
    at2, last = samples[1], samples[-1]
    print(
        json.dumps(
            {
                "trials": len(samples),
                "rss_after_2_mib": round(at2[1]),
                "peak_after_2_mib": round(at2[2]),
                f"rss_after_{last[0]}_mib": round(last[1]),
                f"peak_after_{last[0]}_mib": round(last[2]),
                "growth_per_trial_mib": round((last[1] - at2[1]) / max(1, last[0] - 2), 2),
                "growth_per_trial_after_trim_mib": round((last[3] - at2[3]) / max(1, last[0] - 2), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
