"""A big text's vocabulary: time to build it and encode the text, and a short fit's peak memory.

    python tools/bench_vocab.py [--megabytes 20] [--fit]

Makes a text of about ``--megabytes`` MB from the book (the whole book repeated, with a
sprinkling of stray symbols from across Unicode, as real texts have), then times, in this
process, reading it and building the ``chars`` vocabulary of its training part and encoding
the whole text (``Corpus.load``, the book preset's split), and prints the vocabulary's size
and the characters read as ``<unk>``. With ``--fit`` it also runs a one-epoch ``tfrnn fit
--preset book`` of a small model on it in a fresh process and prints that process's peak
RSS (the whole text in memory, its pipeline and the carried-state evaluation). The CPU is
named in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfrnn.cpu import cpu_summary  # noqa: E402
from tfrnn.measure import CHILD_PRELUDE, peak_rss_mib, read_peak  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIT_CHILD = """
import runpy
sys.argv = ["tfrnn", *sys.argv[1:]]
runpy.run_module("tfrnn", run_name="__main__")
"""


def big_text(megabytes: float, seed: int = 0) -> str:
    """The book repeated to about ``megabytes`` MB, with one stray symbol every ~2,000
    characters drawn from 5,000 code points (most of them seen once or not at all)."""
    import numpy as np

    from tfrnn.data import book_path, read_text

    book = read_text(book_path())
    copies = max(1, int(megabytes * 1e6 / len(book.encode("utf-8"))))
    text = book * copies
    rng = np.random.default_rng(seed)
    where = np.sort(rng.choice(len(text), size=len(text) // 2000, replace=False))
    strays = rng.integers(0x2100, 0x2100 + 5000, size=len(where))
    pieces, last = [], 0
    for i, code in zip(where, strays):
        pieces += [text[last:i], chr(int(code))]
        last = i
    pieces.append(text[last:])
    return "".join(pieces)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megabytes", type=float, default=20.0)
    ap.add_argument("--fit", action="store_true", help="also a one-epoch fit: its peak RSS")
    a = ap.parse_args()

    from tfrnn.data import Corpus

    print(f"CPU: {cpu_summary()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        path.write_text(big_text(a.megabytes), encoding="utf-8")
        size = path.stat().st_size
        started = time.perf_counter()
        corpus = Corpus.load(path, "chars", preset="book", num_steps=100)
        seconds = time.perf_counter() - started
        row = {
            "megabytes": round(size / 1e6, 1),
            "characters": int(len(corpus.ids)),
            "load_build_encode_s": round(seconds, 2),
            "vocab_size": len(corpus.vocab),
            "unknown": {k: sum(c.values()) for k, c in corpus.unknown.items()},
            "rss_after_load_mib": round(peak_rss_mib(), 1),
        }
        print(
            f"{row['megabytes']} MB, {row['characters']:,} characters: read, vocabulary of the training "
            f"part and whole text encoded in {seconds:.2f} s; {row['vocab_size']} tokens; <unk>: "
            f"{row['unknown']}"
        )
        if a.fit:
            out = Path(tmp) / "run"
            args = [sys.executable, "-c", CHILD_PRELUDE + FIT_CHILD, "fit", "--preset", "book"]
            args += ["--data", str(path), "--cell", "gru", "--units", "32", "--layers", "1"]
            args += ["--embedding", "16", "--batch-size", "1024", "--epochs", "1", "--no-profile", "-q"]
            args += ["--out", str(out)]
            env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
            started = time.perf_counter()
            proc = subprocess.run(args, env=env, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"tfrnn fit failed: {proc.stderr.strip().splitlines()[-1:]}")
            row["fit_wall_s"] = round(time.perf_counter() - started, 1)
            row["fit_peak_rss_mib"] = read_peak(proc.stdout)
            metrics = json.loads((out / "metrics.json").read_text())
            row["fit_test_bpc"] = metrics.get("test_bits_per_character")
            print(
                f"one-epoch fit (book preset, GRU-32, batches of 1,024): {row['fit_wall_s']} s wall, "
                f"peak RSS {row['fit_peak_rss_mib']:.0f} MiB"
            )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
