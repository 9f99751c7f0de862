"""The CPU a run or benchmark ran on: model, cores and the vector units that decide speed.

python -m tfrnn.cpu      # one line, as benchmarks print it, and the float32 peak
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
    vendor, family = "", None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key == "flags":
                flags = set(value.split())
            elif key == "vendor_id":
                vendor = value.strip()
            elif key == "cpu family" and value.strip().isdigit():
                family = int(value)
    except OSError:
        pass
    return {
        "model": model,
        "cores": os.cpu_count(),
        "flags": {f: f in flags for f in FLAGS},
        "vendor": vendor,
        "family": family,
    }


def cpu_summary() -> str:
    """One line: ``Intel(R) Xeon(R) Processor, 2 cores, avx2 fma avx512f ... (no amx_tile)``."""
    info = cpu_info()
    have = " ".join(f for f, on in info["flags"].items() if on)
    lack = " ".join(f for f, on in info["flags"].items() if not on)
    return f"{info['model']}, {info['cores']} cores, {have}" + (f" (no {lack})" if lack else "")


def clock_mhz() -> float | None:
    """The cores' clock in MHz: the highest the kernel's cpufreq driver allows, else what
    /proc/cpuinfo reports (a virtual machine's nominal clock); None where neither says."""
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "cpu MHz":
                return float(value)
    except (OSError, ValueError):
        pass
    return None


#: What ``l2_cache_bytes`` assumes where the system does not say (a common size per core).
DEFAULT_L2_BYTES = 1 << 20


def l2_cache_bytes() -> tuple[int, str]:
    """One core's level-2 cache in bytes, and where that came from: Linux's sysfs, macOS's
    ``hw.l2cachesize``, else ``DEFAULT_L2_BYTES``."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip()
                return int(size.rstrip("KMG")) * units.get(size[-1:], 1), "sysfs"
        except (OSError, ValueError):
            continue
    if platform.system() == "Darwin":
        import subprocess

        try:
            cmd = ["sysctl", "-n", "hw.l2cachesize"]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            return int(done.stdout.strip()), "sysctl"
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return DEFAULT_L2_BYTES, "assumed"


#: AMD families whose AVX-512 instructions run as two halves on 256-bit units (Zen 4 is
#: family 25; Zen 5, family 26, has whole 512-bit units on its server parts).
AMD_HALF_WIDTH_AVX512 = (25,)


def fma_flops_per_cycle(info: dict | None = None) -> tuple[int, str]:
    """float32 operations one core can finish per cycle, from its vector features (``info``:
    ``cpu_info()`` by default), assuming two fused multiply-add units (Zen, Skylake-SP
    Gold/Platinum and later; some Xeon Silver and Bronze have one): (flops, what that assumes)."""
    info = info or cpu_info()
    flags = info["flags"]
    machine = platform.machine().lower()
    half_width = info.get("vendor") == "AuthenticAMD" and info.get("family") in AMD_HALF_WIDTH_AVX512
    if flags["avx512f"] and half_width:
        return 32, "AVX-512 on 2 x 256-bit FMA units, as Zen 4 runs it (8 lanes x 2 flops x 2)"
    if flags["avx512f"]:
        return 64, "2 x 512-bit FMA units (16 lanes x 2 flops x 2)"
    if flags["avx2"] and flags["fma"]:
        return 32, "2 x 256-bit FMA units (8 lanes x 2 flops x 2)"
    if machine in ("aarch64", "arm64"):
        return 16, "2 x 128-bit NEON FMA units (4 lanes x 2 flops x 2)"
    return 8, "no FMA: 128-bit multiply and add units (4 lanes x 2)"


def fma_peak_gflops(cores: int | None = None) -> tuple[float | None, str]:
    """The float32 peak of ``cores`` cores (all of them by default) in GFLOP/s, at
    ``clock_mhz``, and how it was reckoned; (None, why) where the clock is unknown."""
    cores = cores or os.cpu_count() or 1
    per_cycle, units = fma_flops_per_cycle()
    mhz = clock_mhz()
    if mhz is None:
        return None, "the clock is unknown"
    return cores * per_cycle * mhz / 1000, f"{cores} cores x {mhz:.0f} MHz x {per_cycle} ({units})"


def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU (the one check tfrnn makes: tfrnn.plan, tfrnn.kernel and
    the LSTM layer ask it)."""
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


if __name__ == "__main__":
    print(cpu_summary())
    peak, how = fma_peak_gflops()
    print(f"float32 peak: {peak:.0f} GFLOP/s ({how})" if peak else f"float32 peak: unknown ({how})")
