"""tools/bench_texts.py: the benchmark texts are whole files in a fixed order, and named."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests.conftest import ROOT
from tfrnn import documents

spec = importlib.util.spec_from_file_location("bench_texts", ROOT / "tools" / "bench_texts.py")
bench_texts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_texts)


def test_whole_files_in_path_order_until_the_size_skipping_what_is_not_utf8(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "site-packages").mkdir()
    files = {"b/z.py": "zz\n", "a.py": "aaaa\n", "b/c.py": "ccc\n", "site-packages/s.py": "s\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "b" / "latin.py").write_bytes(b"caf\xe9\n")
    paths = bench_texts.python_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["a.py", "b/c.py", "b/latin.py", "b/z.py"]
    skipped: list = []
    # whole files: the second takes it past 6 characters, and the rest are not read
    assert [t for _, t in bench_texts.whole_files(paths, 6, skipped)] == ["aaaa\n", "ccc\n"]
    assert skipped == []
    files = list(bench_texts.whole_files(paths, 100, skipped))
    assert [t for _, t in files] == ["aaaa\n", "ccc\n", "zz\n"]
    assert skipped == [tmp_path / "b" / "latin.py"]
    # written in the order of the SHA-1 of their relative names, as tfrnn.documents ranks them
    ranked = sorted(files, key=lambda f: documents._rank(f[0].relative_to(tmp_path).as_posix()))
    assert [t for _, t in ranked] != [t for _, t in files]  # the hash order is not the path order
    assert bench_texts.hash_order(files, [tmp_path]) == [t for _, t in ranked]


def test_an_unknown_text_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_texts.py"), str(tmp_path / "out"), "--only", "novels"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "bench_texts: no text named novels (choose from vimdoc, pysource, big50)"
    assert not (tmp_path / "out").exists()
