"""Which arithmetic the compiled recurrence's products use in training: float32 or bfloat16.

Where the compiled library has bfloat16 products (built for a CPU with AVX512_BF16, and
passed the self-check's bfloat16 comparison: ``kernel.bf16_check``), a training step can
multiply each step's rows by the recurrent kernel in bfloat16, summing in float32
(``vdpbf16ps``), forward and backward. States, gates, gradients and weights stay float32,
and evaluation (validation, test, scoring, generation) is float32 throughout.

Whether it is faster depends on the CPU, not only on its features: the dot product does twice
an FMA's multiply-adds per instruction, but where it issues half as often (Intel Sapphire
Rapids: one per cycle against two FMAs) it gains only by halving the bytes of the packed
kernel that each step streams, which counts once that kernel outgrows the core's cache
(1,024 units). So ``auto`` considers bfloat16 only where the float32 recurrent kernel is
larger than a core's level-2 cache (``tfrnn.cpu.l2_cache_bytes``: below that the product is
bound by arithmetic, where bfloat16 cannot gain and rounds for nothing), then times both on
the model's shape (``TIMED_STEPS`` steps forward and back, about a second) and takes
bfloat16 only where it is faster by ``1 - MIN_RATIO`` or more. The timings are kept in the library's record
(``kernel.remembered``): every later run on this machine at that shape decides from the same
ones, so a resumed run or a repeated seed computes as the first did. The reason, with both
timings, goes into ``metrics.json`` (``training_step.recurrence``).

``$TFRNN_KERNEL_BF16``: ``auto`` (default), ``on`` (wherever the library has them; no
timing), ``off`` (float32 always).
"""

from __future__ import annotations

from tfrnn import kernel

ENV = "TFRNN_KERNEL_BF16"
#: ``auto`` takes bfloat16 where its timing is at most this fraction of float32's.
MIN_RATIO = 0.9
#: Steps of the timed sequence (forward and back), and the timings' repeats (median).
TIMED_STEPS, REPEATS = 16, 3
GATES = {"rnn": 1, "gru": 3, "lstm": 4}

_chosen: dict[tuple[str, int, int], tuple[bool, str]] = {}


def setting() -> str:
    """``$TFRNN_KERNEL_BF16``: ``auto`` (default), ``on`` or ``off``; anything else is refused."""
    return kernel.setting(ENV)


def unavailable() -> str | None:
    """Why bfloat16 products cannot be used here, or None when they can."""
    if setting() == "off":
        return f"${ENV}=off"
    if kernel.load() is None:
        return "no compiled recurrence"
    if "avx512_bf16" not in kernel.features():
        return "the library's target (this CPU) has no AVX512_BF16"
    check = kernel.bf16_check()
    if check != "ok":
        return f"its self-check: {check}"
    return None


def timed(cell: str, batch: int, units: int) -> tuple[float, float]:
    """Milliseconds of ``TIMED_STEPS`` steps of ``cell`` forward and back at ``batch`` x
    ``units``: (float32 products, bfloat16 products)."""
    import tensorflow as tf

    from tfrnn.measure import median_seconds

    module = kernel.load()
    width = GATES[cell] * units
    xp = tf.random.stateless_normal((batch, TIMED_STEPS, width), seed=(1, 2))
    h0 = tf.zeros((batch, units))
    u = tf.random.stateless_normal((units, width), seed=(3, 4)) / units**0.5
    bias = tf.zeros(width)
    d_hs = tf.random.stateless_normal((batch, TIMED_STEPS, units), seed=(5, 6))

    def step(bf16: bool) -> None:
        hs, last, saved = module.tfrnn_recurrence(xp, h0, h0, u, bias, bias, cell=cell, save=True, bf16=bf16)
        module.tfrnn_recurrence_grad(d_hs, tf.zeros_like(last), hs, saved, h0, h0, u, cell=cell, bf16=bf16)

    return tuple(1000 * median_seconds(lambda b=b: step(b), REPEATS) for b in (False, True))


def choose(cell: str, batch: int, units: int) -> tuple[bool, str]:
    """Whether training ``cell`` at ``batch`` rows x ``units`` uses bfloat16 products here,
    and why (one line, with the timings where it measured them)."""
    key = (cell, batch, units)
    if key not in _chosen:
        _chosen[key] = _choose(*key)
    return _chosen[key]


def _choose(cell: str, batch: int, units: int) -> tuple[bool, str]:
    why_not = unavailable()
    if why_not:
        return False, f"float32 products (bfloat16: {why_not})"
    if setting() == "on":
        return True, f"bfloat16 products, float32 sums (AVX512_BF16; ${ENV}=on)"
    from tfrnn.cpu import l2_cache_bytes

    kernel_bytes, (l2, source) = 4 * units * GATES[cell] * units, l2_cache_bytes()
    if kernel_bytes <= l2:
        return False, (
            f"float32 products (the recurrent kernel, {kernel_bytes / 2**20:.2f} MiB, fits a core's "
            f"{l2 / 2**20:g} MiB level-2 cache ({source}): bfloat16 would not be faster)"
        )
    # measured once per library and shape: later runs here (a resume, a repeated seed) decide alike
    f32, bf16 = kernel.remembered(f"timed {cell} {batch}x{units}", lambda: list(timed(cell, batch, units)))
    measured = f"{TIMED_STEPS} steps forward and back in {bf16:.1f} ms against float32's {f32:.1f}"
    if bf16 <= MIN_RATIO * f32:
        return True, f"bfloat16 products, float32 sums (AVX512_BF16): {measured}"
    return False, f"float32 products (bfloat16 measured no faster: {measured})"
