"""What every benchmark's JSON shares: the machine it ran on, and how the file is written."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine() -> str:
    """The machine line every benchmark JSON carries; the load average says how shared the cores were."""
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return (f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
            f"{platform.python_version()}{load}")


def write_json(path: Path | None, result: Any) -> None:
    """Write a benchmark's result as indented JSON, when a path was given."""
    if path is not None:
        path.write_text(json.dumps(result, indent=2) + "\n")
