"""What every benchmark's JSON shares: the machine it ran on, and how the file is written."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# the instruction sets an int8 speed-up depends on: int8 products (VNNI) or tiles (AMX) against fp32's FMAs
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def machine() -> str:
    """The machine line every benchmark JSON carries; the load average says how shared the cores were."""
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return (f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
            f"{platform.python_version()}{load}")


def cpu_flags(wanted: Sequence[str] = INT8_FLAGS, cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of ``wanted`` the CPU reports, so that an int8 speed ratio is read against the hardware it ran on:
    an int8 GEMM ran 9.5x an fp32 one with AMX (session 8's machine) and 3.1-4.4x with AVX-512 VNNI alone
    (session 11's), which caps what the int8 model can gain (BENCHMARKS-audio.md, Speed).

    Parameters
    ----------
    wanted
        Flag names as Linux spells them in ``/proc/cpuinfo``.
    cpuinfo
        Where to read them; a missing file (not Linux) gives an empty list.
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())
    return [f for f in wanted if f in flags]


def write_json(path: Path | None, result: Any) -> None:
    """Write a benchmark's result as indented JSON, when a path was given."""
    if path is not None:
        path.write_text(json.dumps(result, indent=2) + "\n")
