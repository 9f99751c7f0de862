"""tfrnn's fused CPU recurrence (``kernels/recurrence.cc``), compiled once for this CPU.

TensorFlow's CPU wheel runs a recurrent layer as a loop of small operations (ten or more
per time step, forward and backward) in kernels built for AVX2 at most. The fused op runs a
whole sequence of SimpleRNN, GRU or LSTM steps as one op, and its gradient as another,
compiled here with the system's C++ compiler for this machine's vector units
(``-march=native``: AVX-512 where the CPU has it) against the installed TensorFlow's headers.
The same library holds two smaller ops the training step uses beside it: one-hot inputs as
rows of the input kernel (``gather_rows``) and the softmax cross-entropy (``cross_entropy``).

Safe on any machine it meets:

- The library is cached under ``$XDG_CACHE_HOME/tfrnn/kernels`` (``~/.cache``) under a key of
  everything that changes its machine code: the source, TensorFlow's version and its compile
  and link flags, the compiler's path and ``--version``, the flags, the platform and the CPU's
  model and full feature set (``/proc/cpuinfo`` on Linux, x86 and Arm; ``sysctl`` on macOS).
  Where the CPU cannot be identified it is built without ``-march=native``, so a cache that
  travels to another machine never loads code for instructions that machine lacks.
- One process builds, under a lock (``.lock``); the others wait for it. The library is
  written under a temporary name and renamed into place.
- Before first use it passes a self-check in a child process (``tfrnn.kernel_check``:
  forward and gradient of each cell against Keras' loops, on this machine): a library that
  crashes (cut short: bus error; built for other instructions: illegal instruction) or
  computes wrongly takes the child down, not the run. The outcome is recorded beside the
  library (``.json``, with its SHA-256: a library changed afterwards is checked again); a
  failure's full log is kept (``.log``), said once in one line, and not retried until
  something in the key changes. The run goes on with Keras' loops.
- ``$TFRNN_KERNEL``: ``auto`` (use it where it works), ``on`` (fail loudly where it cannot be
  used), ``off``. ``tfrnn kernel build`` prebuilds it; ``tfrnn kernel status`` and ``tfrnn
  info`` say where it is and why it is (not) used.

Where the compiler targets AVX512_BF16 the library also has bfloat16 products (checked by
the self-check within bfloat16's rounding); ``tfrnn.kernel_products`` decides where training
uses them. The ops are used for training and evaluation only: exported SavedModels hold TensorFlow's
own ops, so they load anywhere. Results repeat bit for bit at the same thread count (the
batch's rows are split across TensorFlow's threads; weight gradients are summed in row
order).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tfrnn.errors import ConfigError, TfrnnError

SOURCE = Path(__file__).with_name("kernels") / "recurrence.cc"
ENV = "TFRNN_KERNEL"
SETTINGS = ("auto", "on", "off")

#: Tried in order where the CPU is known: the first for CPUs whose AVX-512 FP16 instructions
#: make the Eigen headers TensorFlow ships fail to compile under GCC 12 (the op needs no
#: FP16); the second for compilers that do not know that flag. Where the CPU is not known:
#: the compiler's portable default.
NATIVE_FLAG_SETS = (
    ["-O3", "-DNDEBUG", "-march=native", "-mno-avx512fp16"],
    ["-O3", "-DNDEBUG", "-march=native"],
)
PORTABLE_FLAG_SETS = (["-O3", "-DNDEBUG"],)

_state: dict = {}

#: Seconds a compile may take before tfrnn gives up on it (it takes about 30), and the
#: self-check (a child process importing TensorFlow).
COMPILE_TIMEOUT = 300
CHECK_TIMEOUT = 300

#: The op splits a batch's rows across the CPU's threads. It is used for batches of any
#: size: at every shape measured on the AMD EPYC below it beat tfrnn's Keras loops, and on
#: a 2-core Intel Xeon (AVX-512, AVX512_BF16) with the packed kernel: compiled/Keras ms
#: LSTM 2x512 x 64 492/565, GRU 2x512 x 64 402/487, LSTM 2x256 x 128 241/416, LSTM 3x1024
#: x 32 1,609/1,766 (bfloat16 products; float32 alone 2,146/1,823, the one shape where
#: Keras' loops, TensorFlow's MatMul of the whole batch per step, were faster). Training steps per batch,
#: compiled/Keras (book preset, 2 layers, 100 steps; tools/bench_book_shape.py, AMD EPYC
#: 2 cores, AVX2): LSTM-512 at batches of 16, 32, 64, 128: 1,412/2,504, 3,886/4,750,
#: 2,547/3,746, 4,739/6,004 ms; LSTM-256 x 64: 1,629/2,196; LSTM-1024 x 64: 12,490/16,993;
#: GRU-512 x 64: 2,037/2,891; GRU-256 x 32: 297/488; one stream of 50 characters through
#: LSTM 2 x 512 (scoring): forward 22/51 ms, with its gradient (dynamic evaluation) 47/261 ms;
#: hw4's batches of 1,024: faster too (tools/bench.py). (An earlier build, which summed the
#: weight gradients step by step inside the loop, lost to Keras below 256 rows.)
MIN_BATCH = 1

#: Where a first build is announced (stderr); ``set_quiet`` turns it off (``-q``).
_announce = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """Say nothing on stderr while building (the CLI's ``-q``); failures are still recorded."""
    _announce["quiet"] = quiet


def _say(message: str) -> None:
    if not _announce["quiet"]:
        print(f"tfrnn: {message}", file=sys.stderr, flush=True)


def setting(variable: str = ENV) -> str:
    """``$TFRNN_KERNEL`` (or another ``variable`` of the same kind): ``auto`` (default),
    ``on`` or ``off``; anything else is refused."""
    raw = os.environ.get(variable, "auto")
    value = raw.strip().lower() or "auto"
    if value not in SETTINGS:
        raise ConfigError(f"${variable} must be one of {', '.join(SETTINGS)}, got {raw!r}")
    return value


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tfrnn" / "kernels"


#: /proc/cpuinfo fields that identify the CPU and its instructions (x86 and Arm).
_CPU_FIELDS = (
    "vendor_id", "cpu family", "model", "model name", "flags",
    "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features", "isa",
)  # fmt: skip


def cpu_identity() -> str | None:
    """The CPU's model and full feature set as the platform reports them, or None where it
    cannot say (then nothing is built for this CPU alone)."""
    system, machine = platform.system(), platform.machine()
    lines: set[str] = set()
    if system == "Linux":
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key = line.split(":")[0].strip()
                if key in _CPU_FIELDS:
                    lines.add(" ".join(line.split()))
        if not any(line.split(":")[0].strip() in ("flags", "Features", "isa") for line in lines):
            return None
    elif system == "Darwin":
        for name in (
            "machdep.cpu.brand_string",
            "machdep.cpu.features",
            "machdep.cpu.leaf7_features",
            "hw.optional",
        ):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(["sysctl", name], capture_output=True, text=True, timeout=10).stdout
                lines.update(" ".join(x.split()) for x in out.splitlines() if x.strip())
        if not lines:
            return None
    else:
        return None
    return f"{system} {machine}\n" + "\n".join(sorted(lines))


def _compiler() -> str | None:
    """The C++ compiler: ``$CXX`` when set (and only it), else g++, c++ or clang++."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    return shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _no_compiler() -> str:
    if os.environ.get("CXX"):
        return f"$CXX={os.environ['CXX']} is not a compiler tfrnn can run"
    return "no C++ compiler found (install g++ or set $CXX)"


def _compiler_version(compiler: str) -> str:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
        return done.stdout.strip() or done.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"


def build_key(compiler: str) -> dict:
    """Everything that changes the library's machine code (its hash names the library)."""
    import tensorflow as tf

    identity = cpu_identity()
    return {
        "source_sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
        "tensorflow": tf.__version__,
        "tf_flags": [*tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()],
        "compiler": os.path.realpath(compiler),
        "compiler_version": _compiler_version(compiler),
        "flag_sets": [list(f) for f in (NATIVE_FLAG_SETS if identity else PORTABLE_FLAG_SETS)],
        "platform": [platform.system(), platform.machine(), platform.python_version()],
        "cpu": identity or "unknown: portable build",
    }


def library_path(compiler: str, key: dict | None = None) -> Path:
    """The cached library for this key (source, TensorFlow, compiler, flags, CPU); ``key``:
    ``build_key(compiler)`` when the caller has it already (it runs the compiler once)."""
    key = build_key(compiler) if key is None else key
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir() / f"recurrence-{digest[:16]}.so"


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("state") in ("ok", "failed") else None


def _write_state(path: Path, state: dict) -> None:
    with contextlib.suppress(OSError):
        tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path.with_suffix(".json"))


def _write_log(path: Path, text: str) -> str:
    log = path.with_suffix(".log")
    try:
        log.write_text(text)
    except OSError:
        return "no log: the cache cannot be written"
    return str(log)


@contextlib.contextmanager
def _locked(path: Path, seconds: float):
    """Hold ``path``'s build lock (waiting up to ``seconds`` for another process's build)."""
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("another process has been building it for too long") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def _die_with_parent() -> None:
    """In the compiler's process: end when tfrnn's process ends (Linux), so a killed run
    leaves no compiler running."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _compile(compiler: str, key: dict, target: Path) -> tuple[str | None, str]:
    """Compile into ``target`` (a temporary name, renamed); (None, log) or (why not, log)."""
    log, error = [], ""
    for stale in target.parent.glob(f"{target.stem}.*.so.tmp"):  # a killed build's (we hold the lock)
        stale.unlink(missing_ok=True)
    for flags in key["flag_sets"]:
        fd, tmp = tempfile.mkstemp(prefix=f"{target.stem}.", suffix=".so.tmp", dir=target.parent)
        os.close(fd)
        cmd = [compiler, *flags, "-w", "-shared", "-fPIC", str(SOURCE), "-o", tmp, *key["tf_flags"]]
        log.append("$ " + " ".join(cmd))
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT, preexec_fn=_die_with_parent
            )
            log.append(done.stdout + done.stderr + f"\n(exit {done.returncode})")
            if done.returncode == 0:
                os.replace(tmp, target)
                return None, "\n".join(log)
            error = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        except subprocess.TimeoutExpired:
            error = f"gave up after {COMPILE_TIMEOUT} s"
            log.append(error)
        except OSError as exc:
            error = str(exc)
            log.append(error)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return f"{Path(compiler).name} failed: {error}", "\n".join(log)


def _self_check(target: Path) -> tuple[str | None, str]:
    """Run ``tfrnn.kernel_check`` on ``target`` in a child process: (None, log) or (why not, log)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", ENV: "auto"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "tfrnn.kernel_check", str(target)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHECK_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return f"its self-check did not end within {CHECK_TIMEOUT} s", ""
    log = f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n(exit {done.returncode})"
    if done.returncode == 0:
        return None, log
    if done.returncode < 0:
        import signal

        name = signal.Signals(-done.returncode).name if -done.returncode in signal.valid_signals() else ""
        why = "a damaged library, or one built for another CPU"
        return f"its self-check crashed ({name or done.returncode}: {why})", log
    last = (done.stdout.strip().splitlines() or done.stderr.strip().splitlines() or ["no message"])[-1]
    return f"its self-check failed ({last[:200]})", log


def _prepare(compiler: str, key: dict, path: Path) -> dict:
    """Build and self-check the library at ``path``, under the lock; returns the state to
    record. Called only when no valid state is recorded for it."""
    _say("compiling the fused recurrence for this CPU (once; ~30-60 s)...")
    error, log = _compile(compiler, key, path)
    if error:
        return {"state": "failed", "reason": f"not compiled ({error})", "log": _write_log(path, log)}
    error, check_log = _self_check(path)
    if error:
        return {"state": "failed", "reason": f"not used: {error}", "log": _write_log(path, log + check_log)}
    _say(f"compiled and checked {path}")
    # the bfloat16 products' own verdict (tfrnn.kernel_check's "bf16:" line): recorded, and
    # only "ok" lets tfrnn.kernel_products use them
    bf16 = [line.split(":", 1)[1].strip() for line in check_log.splitlines() if line.startswith("bf16:")]
    return {"state": "ok", "sha256": _sha256(path), "key": key, "bf16": bf16[-1] if bf16 else "not checked"}


def load():
    """The compiled op module (building and checking it the first time on this machine),
    or None when ``$TFRNN_KERNEL`` is off or it cannot be used (``status`` says why)."""
    if setting() == "off":
        return None
    if "module" in _state:
        return _state["module"]
    module, status = None, ""
    compiler = _compiler()
    if compiler is None:
        status = _no_compiler()
    else:
        module, status = _load_with(compiler)
    _state.update(module=module, status=status)
    return module


def _stale(state: dict | None, path: Path) -> bool:
    """Whether the library at ``path`` must be built anew: no record of it, or a library
    changed since it was checked (cut short, replaced): tfrnn did not leave it so."""
    return state is None or (state["state"] == "ok" and state.get("sha256") != _sha256(path))


def _load_with(compiler: str):
    """The module for ``compiler``: from a recorded, checked library, or built and checked now."""
    try:
        key = build_key(compiler)
        path = library_path(compiler, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"{path.parent} is not writable")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return None, f"not compiled (cannot write {cache_dir()}: {reason})"
    state = _read_state(path)
    if _stale(state, path):
        try:
            with _locked(path, COMPILE_TIMEOUT + CHECK_TIMEOUT + 60):
                state = _read_state(path)  # another process may have built it meanwhile
                if _stale(state, path):
                    path.unlink(missing_ok=True)
                    state = _prepare(compiler, key, path)
                    _write_state(path, state)
                    if state["state"] == "failed":
                        _say(f"the compiled recurrence is not used: {state['reason']}; log: {state['log']}")
        except (OSError, TimeoutError) as exc:
            return None, f"not compiled ({exc})"
    if state["state"] == "failed":
        return None, f"{state['reason']} (log: {state['log']})"
    _state.update(bf16=state.get("bf16", "not checked"), library=path)
    return _import(path)


def remembered(name: str, compute):
    """``compute()``'s JSON value for ``name``, computed once per library and kept in its
    record, so that every later process on this machine makes the same choice (a resumed
    run, a repeated seed). Where there is no record to keep it in, computed each time."""
    path = _state.get("library")
    if path is None:
        return compute()
    try:
        with _locked(path, COMPILE_TIMEOUT + CHECK_TIMEOUT + 60):
            state = _read_state(path)
            kept = (state or {}).get("measured", {})
            if name in kept:
                return kept[name]
            value = compute()
            if state and state["state"] == "ok":
                state["measured"] = {**kept, name: value}
                _write_state(path, state)
            return value
    except (OSError, TimeoutError):
        return compute()


def features() -> set[str]:
    """What the loaded library computes beyond float32 (``{"avx512_bf16"}`` where its
    compiler's target has bfloat16 dot products); empty where none is loaded."""
    if "features" not in _state:
        module = load()
        found = module.tfrnn_features().numpy().decode() if module is not None else ""
        _state["features"] = set(found.split())
    return _state["features"]


def bf16_check() -> str:
    """The self-check's verdict on the loaded library's bfloat16 products ("ok" or why not)."""
    load()
    return _state.get("bf16", "not checked")


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
    ``MIN_BATCH``, a GPU, or ``status``), or None when they can. ``$TFRNN_KERNEL=on`` uses
    them for any batch, and raises instead of falling back."""
    from tfrnn.cpu import has_gpu

    forced = setting() == "on"
    if batch_size < MIN_BATCH and not forced:
        return f"batches of {batch_size} rows, fewer than {MIN_BATCH}"
    if has_gpu():
        if forced:
            raise TfrnnError(f"${ENV}=on, but this machine has a GPU: tfrnn trains there with cuDNN")
        return "a GPU: cuDNN"
    if load() is not None:
        return None
    if forced:
        raise TfrnnError(f"${ENV}=on, but the compiled recurrence cannot be used: {status()}")
    return status()


def status() -> str:
    """One line: the compiled library in use, or why there is none."""
    if setting() == "off":
        return f"off (${ENV}=off)"
    load()
    return _state["status"]


def describe() -> dict:
    """What ``tfrnn kernel status`` and ``tfrnn info`` print: setting, compiler, key, path,
    state and why."""
    info: dict = {"setting": setting(), "cache": str(cache_dir())}
    compiler = _compiler()
    info["compiler"] = compiler or _no_compiler()
    if compiler:
        key = build_key(compiler)
        path = library_path(compiler, key)
        state = _read_state(path)
        info.update(
            library=str(path),
            exists=path.is_file(),
            recorded=(state or {}).get("state", "not built yet"),
            cpu_key="this CPU's features" if "unknown" not in key["cpu"] else key["cpu"],
            flag_sets=key["flag_sets"],
            compiler_version=key["compiler_version"].splitlines()[0] if key["compiler_version"] else "",
        )
        if state and state["state"] == "failed":
            info["reason"], info["log"] = state["reason"], state["log"]
        if state and state["state"] == "ok":
            info["bf16_products"] = state.get("bf16", "not checked")
    info["status"] = status()
    return info


def _register_gradient(module) -> None:
    import tensorflow as tf

    @tf.RegisterGradient("TfrnnGatherRows")
    def _rows_gradient(op, d_rows):
        table, ids = op.inputs
        return module.tfrnn_scatter_rows(d_rows, ids, table), None

    @tf.RegisterGradient("TfrnnSoftmaxXent")
    def _xent_gradient(op, d_loss, _d_backprop):
        # as TensorFlow's own sparse cross-entropy: a second derivative is an error, not zero
        backprop = tf.raw_ops.PreventGradient(
            input=op.outputs[1],
            message="tfrnn's compiled cross-entropy has no second derivative: set $TFRNN_KERNEL=off",
        )
        return backprop * d_loss[..., None], None

    @tf.RegisterGradient("TfrnnRecurrence")
    def _gradient(op, d_hs, d_last, _d_saved):
        cell = op.get_attr("cell")
        hs, last, saved = op.outputs
        bf16 = op.get_attr("bf16")
        if not op.get_attr("save"):  # run without keeping the gates: run again, keeping them
            hs, last, saved = module.tfrnn_recurrence(*op.inputs, cell=cell, save=True, bf16=bf16)
        _, h0, c0, kernel, _, _ = op.inputs
        d_last = tf.zeros_like(last) if d_last is None else d_last
        grads = module.tfrnn_recurrence_grad(d_hs, d_last, hs, saved, h0, c0, kernel, cell=cell, bf16=bf16)
        dxp, dh0, dc0, dhp_n = grads
        gru = cell in (b"gru", "gru")
        return (dxp, dh0, dc0, *_weight_gradients(gru, dxp, dhp_n, hs, h0))


def _weight_gradients(gru: bool, dxp, dhp_n, hs, h0):
    """The recurrent kernel's and biases' gradients: over all steps at once, one matrix
    product (TensorFlow's threaded MatMul) of the states before each step and the gradients
    of ``h_prev U`` (``dxp``; GRU's last block is ``dhp_n``), instead of one thin product
    per step inside the loop."""
    import tensorflow as tf

    units = tf.shape(hs)[2]
    dhp = tf.concat([dxp[..., : 2 * units], dhp_n], axis=-1) if gru else dxp
    h_prev = tf.concat([h0[:, None], hs[:, :-1]], axis=1)
    width = tf.shape(dhp)[2]
    d_kernel = tf.matmul(tf.reshape(h_prev, [-1, units]), tf.reshape(dhp, [-1, width]), transpose_a=True)
    return d_kernel, tf.reduce_sum(dxp, axis=[0, 1]), tf.reduce_sum(dhp, axis=[0, 1])


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


def recurrence(cell: str, xp, h0, c0, kernel, input_bias, bias, training: bool = True, bf16: bool = False):
    """Every state of ``cell`` (``rnn``, ``gru``, ``lstm``) over batch-major ``xp``
    (``x W``, shape ``(B, T, G*H)``) from ``h0`` (and ``c0``: LSTM; ignored otherwise):
    ``(hs (B, T, H), last c of an LSTM / last h otherwise)``. ``input_bias`` is added to
    ``xp``, ``bias`` to ``h U`` (GRU's recurrent bias; zeros for the others).
    Differentiable; with ``training`` False it keeps no gates for the gradient (a gradient
    asked for anyway runs it again). ``bf16``: the products by ``kernel``, forward and
    backward, in bfloat16 with float32 sums (a library with ``features`` avx512_bf16 only;
    ``tfrnn.kernel_products`` decides)."""
    op = load().tfrnn_recurrence
    hs, last, _ = op(xp, h0, c0, kernel, input_bias, bias, cell=cell, save=bool(training), bf16=bool(bf16))
    return hs, last
