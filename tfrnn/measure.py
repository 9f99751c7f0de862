"""Timing and memory measurements, written once for tfrnn and its benchmarks (tools/).

Standard library only: the PyTorch peers' processes (another virtual environment, no
TensorFlow) import it too, through ``CHILD_PRELUDE``.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Put first in a child process's ``-c`` code: it can then ``from tfrnn.measure import ...``
#: and prints ``PEAK_RSS_MIB <n>`` when it exits (``read_peak`` finds it in its output).
CHILD_PRELUDE = f"""
import atexit, sys
sys.path.insert(0, {str(ROOT)!r})
from tfrnn.measure import peak_rss_mib
atexit.register(lambda: print("PEAK_RSS_MIB", peak_rss_mib(), flush=True))
"""


def _status() -> dict[str, str]:
    return dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB (Linux)."""
    fields = _status()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return rss_mib()[1]


def peak_rss_or_none() -> float | None:
    """``peak_rss_mib`` where /proc says it (Linux), else ``getrusage``'s (macOS counts
    bytes, other systems KiB), else None: never an error on a system nobody tried."""
    try:
        return peak_rss_mib()
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
    except (ImportError, OSError, ValueError):
        return None


def read_json_line(stdout: str) -> dict:
    """The JSON object a child process printed on a line of its own (its result)."""
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("{")))


def read_peak(stdout: str) -> float:
    """The ``PEAK_RSS_MIB`` a ``CHILD_PRELUDE`` child printed."""
    return float(next(line for line in stdout.splitlines() if line.startswith("PEAK_RSS_MIB")).split()[1])


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
