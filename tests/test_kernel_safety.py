"""The compiled recurrence is safe on any machine it meets (issue: kernel safety): faults
tried on purpose, each with a private cache, in real processes. A stand-in compiler (a
shell script) "builds" by copying a given file, so a fault costs no real compile."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tests.conftest import run_cli, subprocess_env
from tests.test_errors import assert_one_line_error
from tfrnn import kernel

FAKE_CXX = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "stand-in 1.0"; exit 0; fi
echo "build $$" >> "$FAKE_CALLS"
sleep "${FAKE_SLEEP:-0}"
if [ -n "$FAKE_FAIL" ]; then echo "error: $FAKE_FAIL" >&2; echo "second line of the log" >&2; exit 1; fi
prev=""; for a in "$@"; do if [ "$prev" = "-o" ]; then out="$a"; fi; prev="$a"; done
cp "$FAKE_SOURCE" "$out"
"""

# A child process: the kernel's status, and a tiny recurrence computed with it (if any).
PROBE = """
import sys
from tfrnn import kernel
module = kernel.load()
line = kernel.status()
if module is not None:
    import tensorflow as tf
    xp = tf.random.stateless_normal((256, 5, 12), seed=(1, 2))
    h0 = tf.zeros((256, 4)); rk = tf.random.stateless_normal((4, 12), seed=(3, 4))
    hs, _ = kernel.recurrence("gru", xp, h0, h0, rk, tf.zeros(12), tf.zeros(12))
    line += " | sum %.6f" % float(tf.reduce_sum(hs))
print("PROBE " + line)
"""


@pytest.fixture(scope="module")
def good_library():
    """The real library, built and checked once in this session's cache."""
    if kernel._compiler() is None:
        pytest.skip("no C++ compiler on this machine: tfrnn runs Keras' loops")
    env = subprocess_env(TFRNN_KERNEL="auto")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=900)
    assert "PROBE fused, compiled for this CPU" in out.stdout, out.stdout + out.stderr
    return next(kernel.cache_dir().glob("recurrence-*.so"))


@pytest.fixture()
def fake(tmp_path, good_library):
    """A stand-in compiler and a private cache; returns the environment and the call log."""
    cxx = tmp_path / "fake-c++"
    cxx.write_text(FAKE_CXX)
    cxx.chmod(cxx.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    env = subprocess_env(
        CXX=str(cxx),
        FAKE_CALLS=str(calls),
        FAKE_SOURCE=str(good_library),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        TFRNN_KERNEL="auto",
    )
    return {"env": env, "calls": calls, "dir": tmp_path / "cache" / "tfrnn" / "kernels", "tmp": tmp_path}


def _probe(env, **extra) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**env, **extra}, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr  # the run itself never crashes
    return next(line for line in done.stdout.splitlines() if line.startswith("PROBE ")).removeprefix("PROBE ")


def _calls(fake) -> int:
    return len(fake["calls"].read_text().splitlines()) if fake["calls"].exists() else 0


@pytest.mark.slow
def test_two_first_runs_on_an_empty_cache_build_once_and_agree(fake):
    env = {**fake["env"], "FAKE_SLEEP": "3"}
    procs = [
        subprocess.Popen([sys.executable, "-c", PROBE], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    lines = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    probes = [next(x for x in out.splitlines() if x.startswith("PROBE ")) for out in lines]
    assert probes[0] == probes[1] and "fused, compiled for this CPU" in probes[0] and "| sum" in probes[0]
    assert _calls(fake) == 1  # one compiled; the other waited for it
    assert not list(fake["dir"].glob("*.tmp"))


@pytest.mark.slow
def test_a_library_cut_short_crashes_only_its_self_check_and_is_remembered(fake):
    cut = fake["tmp"] / "cut.so"
    with open(fake["env"]["FAKE_SOURCE"], "rb") as f:
        cut.write_bytes(f.read()[:60_000])  # as a killed copy or a full disk leaves it
    status = _probe(fake["env"], FAKE_SOURCE=str(cut))
    assert status.startswith("not used: its self-check crashed (SIG") and "(log: " in status
    log = status.rsplit("(log: ", 1)[1].rstrip(")")
    assert os.path.isfile(log) and "tfrnn.kernel_check" in open(log).read()
    assert _probe(fake["env"], FAKE_SOURCE=str(cut)) == status and _calls(fake) == 1  # not retried


@pytest.mark.slow
def test_a_library_changed_after_its_check_is_built_anew(fake):
    first = _probe(fake["env"])
    assert first.startswith("fused") and _calls(fake) == 1
    library = next(fake["dir"].glob("recurrence-*.so"))
    library.write_bytes(library.read_bytes()[:50_000])  # cut short, as a full disk leaves it
    assert _probe(fake["env"]) == first and _calls(fake) == 2
    library.write_bytes(b"\x7fELF garbage")  # another file in its place
    assert _probe(fake["env"]) == first and _calls(fake) == 3
    library.unlink()
    (fake["dir"] / library.name.replace(".so", ".json")).unlink()
    library.write_bytes(b"garbage, and no record of it")  # a library tfrnn did not record
    assert _probe(fake["env"]) == first and _calls(fake) == 4


@pytest.mark.slow
def test_a_garbage_library_is_refused_by_its_self_check(fake):
    junk = fake["tmp"] / "junk.so"
    junk.write_bytes(b"not a shared library at all")
    status = _probe(fake["env"], FAKE_SOURCE=str(junk))
    assert status.startswith("not used: its self-check failed (not loaded")


@pytest.mark.slow
def test_a_failed_compile_keeps_its_whole_log_and_is_not_retried(fake):
    status = _probe(fake["env"], FAKE_FAIL="no such header")
    tries = _calls(fake)  # one per flag set
    assert status.startswith("not compiled (fake-c++ failed: second line of the log)")
    log = status.rsplit("(log: ", 1)[1].rstrip(")")
    text = open(log).read()
    assert "error: no such header" in text and "second line of the log" in text and "-march=native" in text
    assert _probe(fake["env"], FAKE_FAIL="no such header") == status and _calls(fake) == tries


@pytest.mark.slow
def test_quiet_means_quiet_and_a_first_build_is_said_otherwise(fake):
    args = [sys.executable, "-m", "tfrnn", "fit", "--units", "4", "--epochs", "1", "--no-profile"]
    quiet = subprocess.run(
        [*args, "-q", "--out", str(fake["tmp"] / "a")], env=fake["env"], capture_output=True
    )
    assert quiet.returncode == 0 and quiet.stderr.decode().strip() == ""
    os.remove(fake["calls"])
    env = {**fake["env"], "XDG_CACHE_HOME": str(fake["tmp"] / "cache2")}
    loud = subprocess.run([*args, "--out", str(fake["tmp"] / "b")], env=env, capture_output=True, text=True)
    assert loud.returncode == 0 and "compiling the fused recurrence" in loud.stderr


def test_cxx_is_the_compiler_or_none(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert kernel._compiler() is None
    assert kernel._no_compiler() == "$CXX=/nonexistent/c++ is not a compiler tfrnn can run"


def test_an_unknown_cpu_gets_a_portable_build(monkeypatch):
    monkeypatch.setattr(kernel, "cpu_identity", lambda: None)
    key = kernel.build_key("/bin/true")
    assert key["flag_sets"] == [["-O3", "-DNDEBUG"]] and key["cpu"].startswith("unknown")
    monkeypatch.undo()
    if kernel.cpu_identity() is not None:  # this machine: native, keyed by its features
        assert all("-march=native" in f for f in kernel.build_key("/bin/true")["flag_sets"])


@pytest.mark.parametrize("value", ["0", "false", "no", "yes", "maybe"])
def test_tfrnn_kernel_takes_auto_on_off_only(tmp_path, monkeypatch, value):
    monkeypatch.setenv("TFRNN_KERNEL", value)
    result = run_cli("fit", "--units", 4, "--epochs", 1, "--out", tmp_path / "run")
    assert_one_line_error(result, f"$TFRNN_KERNEL must be one of auto, on, off, got {value!r}")
    assert list(tmp_path.iterdir()) == []


def test_tfrnn_kernel_on_fails_loudly_where_it_cannot_be_used(tmp_path, monkeypatch):
    monkeypatch.setattr(kernel, "_state", {})
    monkeypatch.setenv("TFRNN_KERNEL", "on")
    monkeypatch.setenv("CXX", str(tmp_path / "no-compiler"))
    result = run_cli("fit", "--units", 4, "--epochs", 1, "--no-profile", "--out", tmp_path / "run")
    assert_one_line_error(result, "$TFRNN_KERNEL=on, but the compiled recurrence cannot be used")
    assert not (tmp_path / "run").exists()


def test_kernel_status_and_info_say_where_it_stands(monkeypatch):
    monkeypatch.setenv("TFRNN_KERNEL", "off")
    status = run_cli("kernel", "status")
    assert status.exit_code == 0 and "setting:           off" in status.output
    info = run_cli("info")
    assert info.exit_code == 0
    for field in ("tensorflow:", "cpu:", "gpu:", "kernel:", "default data:"):
        assert field in info.output
    assert_one_line_error(run_cli("kernel", "build"), "$TFRNN_KERNEL=off: nothing to build")
