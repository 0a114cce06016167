"""The agent's health: its own CPU and memory from /proc/self, the heartbeat it logs and publishes.

Every heartbeat is a log line (``heartbeat key=value ...``: it gets out when the broker does not, which is
when it matters most, and journald keeps it with the unit) and a ``device.health`` event for the platform's
fleet flow. ``health_record`` is the one place that record is built. Health events never go through the disk
buffer and never displace readings: one is in flight at a time, a heartbeat due while the previous one is
still unacknowledged (the link is down) is skipped, and skips and failures are counted.

Clock offset: the device clock minus the broker's, from the broker's append time of the agent's own
acknowledged messages (NTP-style: the append happened between send and acknowledgement, so the offset is
the midpoint minus the append time, known to within half the round trip; the tightest recent round trip
wins). Only a topic with ``message.timestamp.type=LogAppendTime`` reports append times; on other topics (and
on brokers that ignore that setting, such as Tansu 0.6) the offset stays null rather than guessed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def process_cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU seconds of a process, all its threads, from /proc/<pid>/stat.

    The one reading of a process's CPU time: the agent's heartbeat and the benchmarks (``benchmarks.timing``)
    both use it, so a CPU column means the same wherever it is printed.

    Parameters
    ----------
    pid
        The process; ``"self"`` for this one. One that is gone (or no /proc) raises ``OSError``.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def process_rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class CpuMeter:
    """CPU share of this process between two calls, in percent of one core."""

    def __init__(self) -> None:
        self._cpu = process_cpu_seconds()
        self._wall = time.monotonic()

    def percent(self) -> float:
        cpu, wall = process_cpu_seconds(), time.monotonic()
        share = 100.0 * (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        self._cpu, self._wall = cpu, wall
        return share


@dataclass
class Heartbeat:
    device_id: str
    buffer_depth: int
    buffer_readings: int
    buffer_bytes: int
    in_flight: int
    sampled_readings: int
    acked_readings: int
    send_rate: float  # readings acknowledged per second since the last heartbeat
    errors: int
    dropped_readings: int
    cpu_percent: float
    rss_mb: float
    buffer_oldest_age_s: float = 0.0
    health_dropped: int = 0  # health events skipped (previous one unacknowledged) or failed, since start
    started_ms: int = 0  # when the agent started (device clock): keeps health ids unique across restarts
    dead_letters: int = 0  # batches given up for good since start: in the dead-letter file, not on the platform
    rollouts_refused: int = 0  # rollout records refused since start (unsigned, foreign key, older replayed)

    def line(self) -> str:
        return "heartbeat " + " ".join(f"{k}={_fmt(v)}" for k, v in self.__dict__.items() if k != "started_ms")


def _fmt(v: object) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


_LOG_APPEND_TIME = 2  # confluent_kafka.TIMESTAMP_LOG_APPEND_TIME, without importing it here


class ClockOffset:
    """Device clock minus broker clock, in ms, from acknowledged messages that carry the broker's append time.

    Parameters
    ----------
    keep
        Estimates kept; the one with the shortest round trip among them is reported.

    Examples
    --------
    >>> from edge_agent.health import ClockOffset
    >>> clock = ClockOffset()
    >>> clock.observe(sent_ms=1_000, acked_ms=1_040, ts_type=1, ts_ms=900)  # create time: says nothing
    >>> clock.offset_ms is None
    True
    >>> clock.observe(sent_ms=1_000, acked_ms=1_040, ts_type=2, ts_ms=520)
    >>> clock.offset_ms
    500.0
    """

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._estimates: list[tuple[float, float]] = []  # (round trip, offset)

    def observe(self, sent_ms: float, acked_ms: float, ts_type: int, ts_ms: int) -> None:
        """Take one acknowledgement: when it was sent and acknowledged (device clock) and the message's timestamp."""
        if ts_type != _LOG_APPEND_TIME or ts_ms <= 0 or acked_ms < sent_ms:
            return
        self._estimates.append((acked_ms - sent_ms, (sent_ms + acked_ms) / 2 - ts_ms))
        del self._estimates[: -self.keep]

    @property
    def offset_ms(self) -> float | None:
        return min(self._estimates)[1] if self._estimates else None


def health_record(hb: Heartbeat, *, seq: int, device_class: str, agent_version: str, interval_s: float,
                  event_time_ms: int, model: dict[str, Any] | None = None,
                  inference_latency_ms: float | None = None, clock_offset_ms: float | None = None) -> dict[str, Any]:
    """The ``device_health`` record of one heartbeat: the one function that builds it.

    Parameters
    ----------
    hb
        The heartbeat's numbers.
    seq
        Heartbeat number since the agent started; the event id derives from device, start and seq.
    device_class, agent_version, interval_s
        What the fleet flow groups and judges by.
    event_time_ms
        The device clock when the heartbeat was taken.
    model
        What the inference layer runs: ``model_version``, ``model_state`` (none, running, refused,
        rolled_back) and ``model_message``; None without a model.
    inference_latency_ms
        Mean local model latency per window; None without a model.
    clock_offset_ms
        From ``ClockOffset``; None until known.
    """
    from schemas import derive_id

    model = model or {}
    return {
        "event_id": derive_id("device.health", hb.device_id, hb.started_ms, seq),
        "event_time": event_time_ms,
        "producer": f"eddyline-edge/{agent_version}@{hb.device_id}",
        "device_id": hb.device_id,
        "seq": seq,
        "device_class": device_class,
        "agent_version": agent_version,
        "interval_s": float(interval_s),
        "model_version": model.get("model_version"),
        "model_state": model.get("model_state", "none"),
        "model_message": model.get("model_message"),
        "buffer_depth": hb.buffer_depth,
        "buffer_readings": hb.buffer_readings,
        "buffer_oldest_age_s": float(hb.buffer_oldest_age_s),
        "send_rate": float(hb.send_rate),
        "sampled_readings": hb.sampled_readings,
        "acked_readings": hb.acked_readings,
        "errors": hb.errors,
        "dropped_readings": hb.dropped_readings,
        "cpu_percent": float(hb.cpu_percent),
        "rss_mb": float(hb.rss_mb),
        "inference_latency_ms": inference_latency_ms,
        "clock_offset_ms": clock_offset_ms,
        "dead_letters": hb.dead_letters,
        "rollouts_refused": hb.rollouts_refused,
    }
