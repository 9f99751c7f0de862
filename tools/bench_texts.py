"""Build the texts the budget recipe is measured on (docs/benchmarks.md), offline, and name them.

    python tools/bench_texts.py OUT_DIR [--only vimdoc,pysource,big50]

Each text is whole files, chosen in a fixed order until it holds a set number of characters,
then written in the order of their names' SHA-1 (as ``tfrnn.documents`` chooses a folder's
held-out documents), so that the book preset's 90/5/5 split by characters holds out a mix of
documents, not the last few by name (Vim's manuals by name end in its digraph table and one
reference file, unlike the rest). The same installation gives the same file; it prints each
file's characters, distinct characters and SHA-1, which docs/benchmarks.md gives beside its
figures (a different SHA-1 means a different installation, and figures that do not compare):

- ``vimdoc.txt``: Vim's manuals (Debian's ``vim-runtime``, ``/usr/share/vim/vim*/doc``): the
  user manual's ``usr_*.txt`` by name, then the other ``*.txt`` by name, until 1.5 M
  characters (48 files, 1,531,513 characters from vim90 here).
- ``pysource.txt``: this Python's standard library source (``sysconfig``'s ``stdlib``, not
  ``site-packages``): its ``.py`` files by relative path, those that are UTF-8, until 12 M
  characters.
- ``big50.txt``: the same, followed by this Python's ``site-packages`` ``.py`` files, until
  50 M characters (the 50 MB text of the issue).

Files that are not UTF-8 are skipped and counted. Nothing outside OUT_DIR is written.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfrnn.documents import _rank  # noqa: E402

#: Characters each text is built to (whole files: the last one takes it past the figure).
SIZES = {"vimdoc": 1_500_000, "pysource": 12_000_000, "big50": 50_000_000}


def vim_docs() -> tuple[Path, list[Path]]:
    """Vim's manual folder and its files: ``usr_*.txt`` by name, then the other ``*.txt``."""
    docs = sorted(Path("/usr/share").glob("vim/vim*/doc"))
    if not docs:
        raise SystemExit("bench_texts: no /usr/share/vim/vim*/doc here (apt-get install vim-runtime)")
    doc = docs[-1]
    usr = sorted(doc.glob("usr_*.txt"))
    return doc, usr + sorted(p for p in doc.glob("*.txt") if not p.name.startswith("usr_"))


def python_files(root: Path) -> list[Path]:
    """The ``.py`` files under ``root`` by relative path, leaving out ``site-packages``."""
    return sorted(
        (p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts),
        key=lambda p: p.relative_to(root).as_posix(),
    )


def whole_files(paths: Iterable[Path], chars: int, skipped: list[Path]) -> Iterator[tuple[Path, str]]:
    """Each of ``paths`` in order with its UTF-8 text until they hold ``chars`` characters;
    the paths that are not UTF-8 are added to ``skipped``."""
    held = 0
    for path in paths:
        if held >= chars:
            return
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            skipped.append(path)
            continue
        held += len(text)
        yield path, text


def hash_order(files: Iterable[tuple[Path, str]], roots: list[Path]) -> list[str]:
    """The texts of ``files`` in the order of the SHA-1 of their paths relative to the first of
    ``roots`` that holds them (``tfrnn.documents``' order of held-out documents)."""

    def name(path: Path) -> str:
        root = next(r for r in roots if path.is_relative_to(r))
        return path.relative_to(root).as_posix()

    ranked = sorted(files, key=lambda f: _rank(name(f[0])))
    return [text for _, text in ranked]


def build(name: str, out: Path) -> dict:
    """Write text ``name`` to ``out`` and return its figures."""
    if name == "vimdoc":
        root, sources = vim_docs()
        roots = [root]
    else:
        stdlib, site = Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])
        sources = python_files(stdlib) + (python_files(site) if name == "big50" else [])
        roots = [site, stdlib]  # site-packages may lie under the standard library's folder
    skipped: list[Path] = []
    files = list(whole_files(sources, SIZES[name], skipped))
    text = "".join(hash_order(files, roots))
    data = text.encode("utf-8")
    out.write_bytes(data)
    return {
        "text": str(out),
        "files": len(files),
        "characters": len(text),
        "bytes": len(data),
        "distinct": len(set(text)),
        "skipped": len(skipped),
        "sha1": hashlib.sha1(data).hexdigest(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the folder to write the texts into (created)")
    ap.add_argument("--only", default=",".join(SIZES), help="which texts, comma-separated")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(SIZES))
    if unknown:
        raise SystemExit(f"bench_texts: no text named {', '.join(unknown)} (choose from {', '.join(SIZES)})")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        f = build(name, args.out / f"{name}.txt")
        print(
            f"{f['text']}: {f['files']} files, {f['characters']:,} characters ({f['bytes']:,} bytes), "
            f"{f['distinct']} distinct, {f['skipped']} files not UTF-8 skipped, sha1 {f['sha1']}"
        )


if __name__ == "__main__":
    main()
