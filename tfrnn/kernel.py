"""tfrnn's fused CPU recurrence (``kernels/recurrence.cc``), compiled once for this CPU.

TensorFlow's CPU wheel runs a recurrent layer as a loop of small operations (ten or more
per time step, forward and backward) in kernels built for AVX2 at most. The fused op runs a
whole sequence of SimpleRNN, GRU or LSTM steps as one op, and its gradient as another,
compiled here with the system's C++ compiler for this machine's vector units
(``-march=native``: AVX-512 where the CPU has it) against the installed TensorFlow's headers.
The same library holds two smaller ops the training step uses beside it: one-hot inputs as
rows of the input kernel (``gather_rows``) and the softmax cross-entropy (``cross_entropy``).

The shared library is cached under ``$XDG_CACHE_HOME/tfrnn/kernels`` (``~/.cache``), keyed by
the source, TensorFlow's version, the compiler and the CPU, and written under a temporary
name then renamed, so concurrent runs never read a half-written file. Where no compiler
works, ``load`` says why (``status``) and the layers keep Keras' own loops: everything runs,
only slower. ``$TFRNN_KERNEL=off`` turns it off. The ops are used for training and
evaluation only: exported SavedModels hold TensorFlow's own ops, so they load anywhere.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("kernels") / "recurrence.cc"

#: Tried in order: the first for CPUs whose AVX-512 FP16 instructions make the Eigen headers
#: TensorFlow ships fail to compile under GCC 12 (the op needs no FP16); the second for
#: compilers that do not know that flag.
FLAG_SETS = (["-O3", "-march=native", "-mno-avx512fp16"], ["-O3", "-march=native"])

_state: dict = {}

#: Seconds a compile may take before tfrnn gives up on it (it takes about 30).
COMPILE_TIMEOUT = 300

#: The op splits a batch's rows across the CPU's threads; with fewer rows than this its
#: small products lose to TensorFlow's (book preset, LSTM 2 x 512, batches of 64 on a 2-core
#: Xeon: 1,207 ms per training step against 908 in tfrnn's LSTM loop), so smaller batches
#: keep the layers' own loops. hw4's batches of 1,024 run it.
MIN_BATCH = 256


def setting() -> str:
    """``$TFRNN_KERNEL``: ``auto`` (default: use the kernel where it compiles) or ``off``."""
    value = os.environ.get("TFRNN_KERNEL", "auto").strip().lower() or "auto"
    return value if value in ("auto", "off") else "auto"


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tfrnn" / "kernels"


def _cpu_identity() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    wanted = ("model name", "flags")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def _build(compiler: str, target: Path) -> str | None:
    """Compile the op into ``target``; None, or why it could not be compiled."""
    import tensorflow as tf

    tf_flags = [*tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot write {target.parent}: {exc.strerror or exc}"
    error = ""
    for flags in FLAG_SETS:
        try:
            fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=target.parent)
        except OSError as exc:
            return f"cannot write {target.parent}: {exc.strerror or exc}"
        os.close(fd)
        cmd = [compiler, *flags, "-w", "-shared", "-fPIC", str(SOURCE), "-o", tmp, *tf_flags]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
            if done.returncode == 0:
                os.replace(tmp, target)
                return None
            error = (done.stderr.strip().splitlines() or ["no message"])[-1]
        except (OSError, subprocess.TimeoutExpired) as exc:
            error = str(exc)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return f"{Path(compiler).name} failed: {error}"


def library_path(compiler: str) -> Path:
    """The cached library for this source, TensorFlow, compiler and CPU."""
    import tensorflow as tf

    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), tf.__version__.encode(), compiler.encode(), _cpu_identity().encode()):
        key.update(part)
        key.update(b"\0")
    return cache_dir() / f"recurrence-{key.hexdigest()[:16]}.so"


def load():
    """The compiled op module (compiling it the first time on this machine), or None when
    ``$TFRNN_KERNEL`` is off or it cannot be compiled (``status`` says why)."""
    if setting() == "off":
        return None
    if "module" in _state:
        return _state["module"]
    module, status = None, ""
    if (compiler := _compiler()) is None:
        status = "no C++ compiler found (set $CXX)"
    else:
        path = library_path(compiler)
        error = None
        if not path.is_file():
            print("tfrnn: compiling the fused recurrence for this CPU (once; ~30 s)...", file=sys.stderr)
            error = _build(compiler, path)
        if error:
            status = f"not compiled ({error})"
        else:
            module, status = _import(path)
    _state.update(module=module, status=status)
    return module


def _import(path: Path):
    import tensorflow as tf

    try:
        module = tf.load_op_library(str(path))
    except (tf.errors.NotFoundError, OSError) as exc:
        return None, f"not loaded ({str(exc).splitlines()[0]})"
    _register_gradient(module)
    return module, f"fused, compiled for this CPU ({path.name})"


def unavailable(batch_size: int) -> str | None:
    """Why the compiled ops cannot run batches of ``batch_size`` rows here (too few rows for
    ``MIN_BATCH``, a GPU, or ``status``), or None when they can."""
    import tensorflow as tf

    if batch_size < MIN_BATCH:
        return f"batches of {batch_size} rows, fewer than {MIN_BATCH}"
    if tf.config.list_logical_devices("GPU"):
        return "a GPU: cuDNN"
    return None if load() is not None else status()


def status() -> str:
    """One line: the compiled library in use, or why there is none."""
    if setting() == "off":
        return "off ($TFRNN_KERNEL=off)"
    load()
    return _state["status"]


def _register_gradient(module) -> None:
    import tensorflow as tf

    @tf.RegisterGradient("TfrnnGatherRows")
    def _rows_gradient(op, d_rows):
        table, ids = op.inputs
        return module.tfrnn_scatter_rows(d_rows, ids, table), None

    @tf.RegisterGradient("TfrnnSoftmaxXent")
    def _xent_gradient(op, d_loss, _d_backprop):
        return op.outputs[1] * d_loss[..., None], None

    @tf.RegisterGradient("TfrnnRecurrence")
    def _gradient(op, d_hs, d_last, _d_saved):
        cell = op.get_attr("cell")
        hs, last, saved = op.outputs
        if not op.get_attr("save"):  # run without keeping the gates: run again, keeping them
            hs, last, saved = module.tfrnn_recurrence(*op.inputs, cell=cell, save=True)
        _, h0, c0, kernel, _, _ = op.inputs
        d_last = tf.zeros_like(last) if d_last is None else d_last
        return module.tfrnn_recurrence_grad(d_hs, d_last, hs, saved, h0, c0, kernel, cell=cell)


def gather_rows(table, ids):
    """``one_hot(ids, len(table)) @ table`` without the product: ``table``'s rows by id
    (ids outside it give zeros, as ``tf.one_hot`` encodes them). Differentiable in ``table``:
    the gradient is dense, the rows' gradients summed per id."""
    return load().tfrnn_gather_rows(table, ids)


def cross_entropy(labels, logits):
    """Per-character cross-entropy of integer ``labels`` under ``logits`` (the shape of
    ``labels`` plus a class axis), as ``tf.nn.sparse_softmax_cross_entropy_with_logits``
    computes it, compiled. Differentiable in ``logits`` (once)."""
    import tensorflow as tf

    if labels.dtype not in (tf.int32, tf.int64):
        labels = tf.cast(labels, tf.int32)
    return load().tfrnn_softmax_xent(logits, labels)[0]


def recurrence(cell: str, xp, h0, c0, kernel, input_bias, bias, training: bool = True):
    """Every state of ``cell`` (``rnn``, ``gru``, ``lstm``) over batch-major ``xp``
    (``x W``, shape ``(B, T, G*H)``) from ``h0`` (and ``c0``: LSTM; ignored otherwise):
    ``(hs (B, T, H), last c of an LSTM / last h otherwise)``. ``input_bias`` is added to
    ``xp``, ``bias`` to ``h U`` (GRU's recurrent bias; zeros for the others).
    Differentiable; with ``training`` False it keeps no gates for the gradient (a gradient
    asked for anyway runs it again)."""
    op = load().tfrnn_recurrence
    hs, last, _ = op(xp, h0, c0, kernel, input_bias, bias, cell=cell, save=bool(training))
    return hs, last
