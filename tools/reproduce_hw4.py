"""Reproduce the reference study: its 14 models, its protocol, 50 epochs, one report.

    python tools/reproduce_hw4.py REPORT_DIR [--epochs 50] [--data PATH]

Runs `tfrnn compare --grid hw4` into REPORT_DIR (report.md, results.csv/json, figures,
runs/). Interrupted? Run it again: finished models are kept. On a 2-core CPU the full
run takes roughly half an hour.
"""

from __future__ import annotations

import argparse
import sys

from tfrnn.cli import cli


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="report folder")
    ap.add_argument("--epochs", type=int, default=None, help="override the study's 50 epochs")
    ap.add_argument("--data", default=None, help="text file (default: the verified book)")
    a = ap.parse_args()
    args = ["compare", "--grid", "hw4", "--out", a.out]
    args += ["--epochs", str(a.epochs)] if a.epochs else []
    args += ["--data", a.data] if a.data else []
    sys.exit(cli.main(args=args, prog_name="tfrnn"))


if __name__ == "__main__":
    main()
