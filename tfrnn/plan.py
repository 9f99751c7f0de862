"""Which recurrence trains a model here, decided once, with the reason.

From the configuration, the machine (GPU or not, the compiled kernel's state) and the
shape (batch rows, units, steps), ``plan`` picks one of:

- ``compiled``: tfrnn's compiled CPU recurrence (``tfrnn.kernel``), where it can run: float32,
  batches of ``kernel.MIN_BATCH`` rows or more, no GPU, a library that built and passed its
  self-check. XLA cannot compile its op, so XLA is off. Its recurrent products are float32,
  or bfloat16 with float32 sums where the CPU has AVX512_BF16 and they are measured faster
  (``tfrnn.kernel_products``: ``products`` and ``products_reason``).
- ``keras-xla``: Keras' loops under XLA: asked for (``--xla on``), or chosen by ``auto`` on a
  CPU for small layers and short sequences in runs long enough to pay back compiling.
- ``cudnn``: a GPU: Keras' layers pick NVIDIA's cuDNN kernel.
- ``keras``: Keras' loops (tfrnn's faster hand-written LSTM/SimpleRNN loops where they apply).

Models that are saved or exported never use the compiled op: they load with TensorFlow
alone. ``metrics.json`` records the plan of a run as
``training_step.recurrence = {"implementation": ..., "reason": ...}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfrnn.config import TrainConfig, xla_setting
from tfrnn.cpu import has_gpu

IMPLEMENTATIONS = ("compiled", "keras-xla", "cudnn", "keras")

#: ``auto`` compiles with XLA up to this layer width and sequence length, for runs long
#: enough to pay back the compiling (10-20 s once, growing with the sequence length).
#: Measured with tools/bench.py on a 2-core CPU, seconds per epoch with XLA / without:
#: GRU-32 0.70/1.04, LSTM-32 0.65/0.92, GRU 3x32 2.13/2.58, SimpleRNN-64 0.58/0.71, but
#: LSTM-128 4.58/3.13.
XLA_MAX_UNITS = 64
XLA_MAX_STEPS = 64
XLA_MIN_EPOCHS = 20


@dataclass(frozen=True)
class RecurrencePlan:
    """The implementation that trains a model, and why."""

    implementation: str
    reason: str
    #: compiled only: the recurrent products' arithmetic (``tfrnn.kernel_products``), and why
    products: str = ""
    products_reason: str = ""

    @property
    def bf16(self) -> bool:
        return self.products == "bfloat16"

    @property
    def xla(self) -> bool:
        return self.implementation == "keras-xla"

    @property
    def compiled(self) -> bool:
        return self.implementation == "compiled"

    def as_dict(self) -> dict:
        out = {"implementation": self.implementation, "reason": self.reason}
        if self.products:
            out.update(products=self.products, products_reason=self.products_reason)
        return out


def kernel_unavailable(config: TrainConfig) -> str | None:
    """Why tfrnn's compiled recurrence cannot train ``config`` here (it computes in float32
    only; ``kernel.unavailable`` for batch rows, GPU and the library), or None when it can."""
    from tfrnn import kernel

    if config.precision != "float32":
        return f"precision {config.precision}"
    return kernel.unavailable(config.batch_size)


def _xla_pays(config: TrainConfig) -> str | None:
    """Why ``auto`` would not choose XLA for ``config`` on a CPU, or None when it would."""
    import tensorflow as tf

    if config.units > XLA_MAX_UNITS:
        return f"{config.units} units, more than {XLA_MAX_UNITS}"
    if config.num_steps > XLA_MAX_STEPS:
        return f"{config.num_steps} steps, more than {XLA_MAX_STEPS}"
    if config.epochs < XLA_MIN_EPOCHS:
        return f"{config.epochs} epochs, fewer than {XLA_MIN_EPOCHS}: compiling would not pay back"
    if tf.distribute.has_strategy():
        return "a tf.distribute strategy"
    return None


def plan(config: TrainConfig, xla: str | None = None) -> RecurrencePlan:
    """The recurrence that trains ``config`` here. ``xla``: auto, on or off (default
    ``$TFRNN_XLA``, else auto). Call it inside the run's ``tf.distribute`` scope."""
    setting = xla_setting(xla)
    if setting == "on":
        return RecurrencePlan("keras-xla", "XLA asked for (--xla on / $TFRNN_XLA=on)")
    if has_gpu():
        return RecurrencePlan("cudnn", "a GPU: Keras' layers run NVIDIA's cuDNN kernel")
    why_not = kernel_unavailable(config)
    if why_not is None:
        from tfrnn import kernel, kernel_products

        bf16, why = kernel_products.choose(config.cell, config.batch_size, config.units)
        return RecurrencePlan("compiled", kernel.status(), "bfloat16" if bf16 else "float32", why)
    why_no_xla = _xla_pays(config)
    if setting == "auto" and why_no_xla is None:
        return RecurrencePlan(
            "keras-xla",
            f"no compiled recurrence ({why_not}); XLA for {config.units} units and "
            f"{config.num_steps}-step sequences, where it is faster",
        )
    if setting == "off":
        return RecurrencePlan("keras", f"{why_not}; XLA off")
    return RecurrencePlan("keras", f"{why_not}; no XLA: {why_no_xla}")
