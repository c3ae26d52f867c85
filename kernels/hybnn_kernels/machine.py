"""Which CPU this is: its model name and the flags that decide kernel variants and float speed
(read from /proc/cpuinfo where present; no numba). Used by run provenance and by a bundle's
export-time encoder timings, which `predict --int8` compares with the CPU it runs on."""

from __future__ import annotations

import platform
from pathlib import Path

# CPU flags that decide which kernel variant runs and how fast float and int8 matmul can be.
CPU_FLAGS = ("avx", "avx2", "fma", "popcnt", "avx512f", "avx512bw", "avx512vl",
             "avx512_vpopcntdq", "avx512_bitalg", "avx512_vnni", "avx_vnni", "amx_tile")


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and which of `CPU_FLAGS` it has."""
    model, flags = platform.processor() or platform.machine() or "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = value.split()
                break
    except OSError:
        pass
    return model, [f for f in CPU_FLAGS if f in flags]
