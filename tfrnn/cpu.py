"""The CPU a run or benchmark ran on: model, cores and the vector units that decide speed.

python -m tfrnn.cpu      # one line, as benchmarks print it
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: CPU flags that change which kernels TensorFlow, XLA, oneDNN and PyTorch can use.
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_info() -> dict:
    """Model name, logical cores and which of ``FLAGS`` the CPU has (Linux /proc/cpuinfo)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "flags": {f: f in flags for f in FLAGS}}


def cpu_summary() -> str:
    """One line: ``Intel(R) Xeon(R) Processor, 2 cores, avx2 fma avx512f ... (no amx_tile)``."""
    info = cpu_info()
    have = " ".join(f for f, on in info["flags"].items() if on)
    lack = " ".join(f for f, on in info["flags"].items() if not on)
    return f"{info['model']}, {info['cores']} cores, {have}" + (f" (no {lack})" if lack else "")


if __name__ == "__main__":
    print(cpu_summary())


def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU (the one check tfrnn makes: tfrnn.plan, tfrnn.kernel and
    the LSTM layer ask it)."""
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))
