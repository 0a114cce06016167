"""Readings from a command's output: the shortest path from any vendor tool or script to the agent.

Each output line is ``sensor value [unit]`` or ``sensor=value``; lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from connectors.kafka_log import LogLimit
from edge_agent.sources.base import Chunk, now_ms

if TYPE_CHECKING:
    from edge_agent.settings import CommandSource


log = logging.getLogger(__name__)


def parse_output(text: str) -> tuple[list[tuple[str, float, str | None]], list[str]]:
    """Readings and the lines that were not readings (to report, never drop silently)."""
    readings, bad = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace("=", " ", 1).split() if "=" in line.split()[0] else line.split()
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            value = float(parts[1])
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            readings.append((parts[0], value, parts[2] if len(parts) == 3 else None))
        except ValueError:
            bad.append(line)
    return readings, bad


_BAD_SHOWN = 5  # different bad lines a warning quotes
_MAX_OUTPUT = 64 * 1024  # a few readings per run; more is a command gone wrong, not data to hold in memory


def _run(argv: list[str], timeout_s: float) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, the start of stderr); ``RuntimeError`` once the run takes too long or says too much.

    The command gets a process group of its own, killed whole: a script's hung child would otherwise outlive
    every timeout, one more each interval, for as long as the device runs.
    """
    out, err = bytearray(), bytearray()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ, out)  # type: ignore[arg-type]
            sel.register(proc.stderr, selectors.EVENT_READ, err)  # type: ignore[arg-type]
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(argv, timeout_s)
                for key, _ in sel.select(left):
                    data = os.read(key.fd, 65536)
                    if not data:
                        sel.unregister(key.fileobj)
                    elif key.data is err:
                        err += data[: max(0, 1000 - len(err))]
                    elif len(out) + len(data) > _MAX_OUTPUT:
                        raise RuntimeError(f"printed more than {_MAX_OUTPUT} bytes; a run reports a few readings")
                    else:
                        out += data
        status = proc.wait(max(0.0, deadline - time.monotonic()))  # output closed, the program may still run
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):  # not reaped yet, so the group id is still its own
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise RuntimeError(f"ran past {timeout_s}s; raise timeout_s or fix the command") from None
        raise
    finally:
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    return status, bytes(out), bytes(err)


class Command:
    def __init__(self, cfg: CommandSource) -> None:
        self.name = cfg.name
        self.interval_s = cfg.interval_s
        self.errors = 0
        self._cfg = cfg
        self._bad_log = LogLimit()
        self._bad_lines: dict[str, None] = {}  # the different bad lines since the last log: a header hid the rest

    def read(self) -> list[Chunk]:
        ts = now_ms()
        try:
            status, stdout, stderr = _run(self._cfg.command, self._cfg.timeout_s)
        except FileNotFoundError:
            raise RuntimeError(
                f"command {self._cfg.command[0]!r} not found; fix command= in source {self.name!r}"
            ) from None
        except RuntimeError as exc:
            raise RuntimeError(f"command {self._cfg.command!r} {exc}") from None
        if status != 0:
            raise RuntimeError(
                f"command {self._cfg.command!r} exited {status}: {stderr.decode(errors='replace').strip()[:300]}"
            )
        readings, bad = parse_output(stdout.decode(errors="replace"))
        self.errors += len(bad)
        for line in bad:
            if len(self._bad_lines) < _BAD_SHOWN:
                self._bad_lines.setdefault(line[:200])
        if self._bad_lines and self._bad_log.due(self.name):
            log.warning("source %s: output lines are not 'sensor value [unit]': %s (%d such lines so far; repeats are "
                        "logged once a minute)", self.name, ", ".join(map(repr, self._bad_lines)), self.errors)
            self._bad_lines.clear()
        return [Chunk(f"{self.name}.{s}", unit, [ts], [v]) for s, v, unit in readings]

    def close(self) -> None:
        pass
