"""Which devices need their model re-optimised: local inference that got slower, from health events.

A plain processor over ``device_health`` events. A device is flagged when its local inference latency
stays above ``factor`` times a reference for ``consecutive`` heartbeats: the median of its peers (same class,
same model version, at least ``min_peers`` of them), else its own baseline (the median of its first
``baseline_heartbeats`` on that version). A new model version starts a new baseline. Agreement with the
platform's detector is not in the health event, so only latency is judged here.

State is a few numbers per device (version, baseline samples, the last latency, a counter), and per class
and version the devices' last latencies kept sorted, so a peers' median costs a bisection, not a pass over
the fleet.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from dataclasses import dataclass, field
from typing import Any

_MIN_REFERENCE_MS = 1e-3  # a reference of 0 ms (below the clock's resolution) would make any latency "degraded"


@dataclass
class _Device:
    device_class: str
    version: str | None
    baseline: list[float] = field(default_factory=list)
    latency: float | None = None
    over: int = 0
    flagged: bool = False


class ReoptimiseWatch:
    """Flags devices whose local model latency degraded.

    Parameters
    ----------
    factor
        Latency above this multiple of the reference counts as degraded.
    consecutive
        Heartbeats in a row above it before a device is flagged (one slow batch is not a trend).
    baseline_heartbeats
        Heartbeats on a new version whose median is the device's own baseline.
    min_peers
        Peers (same class and version, the device excluded) needed to judge against the peers' median.
    """

    def __init__(self, factor: float = 2.0, consecutive: int = 3, baseline_heartbeats: int = 5, min_peers: int = 3) -> None:
        if factor <= 1:
            raise ValueError("factor must be above 1 (a multiple of the normal latency)")
        self.factor = factor
        self.consecutive = consecutive
        self.baseline_heartbeats = baseline_heartbeats
        self.min_peers = min_peers
        self.devices: dict[str, _Device] = {}
        self._latencies: dict[tuple[str, str | None], list[float]] = {}  # (class, version) -> last latencies, sorted
        self.invalid = 0  # heartbeats whose latency is not a finite, non-negative number: counted, not judged

    def process(self, health: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Take health events; return one flag per device that just became degraded (or recovered)."""
        out = []
        for h in health:
            latency = h.get("inference_latency_ms")
            d = self.devices.get(h["device_id"])
            if d is None or d.version != h["model_version"] or d.device_class != h["device_class"]:
                if d is not None:
                    self._forget_latency(d)
                d = self.devices[h["device_id"]] = _Device(h["device_class"], h["model_version"])
            if latency is None:
                continue
            if not math.isfinite(latency) or latency < 0:
                self.invalid += 1
                continue
            self._forget_latency(d)  # a device is not its own peer
            if len(d.baseline) < self.baseline_heartbeats:
                d.baseline.append(latency)
                self._keep_latency(d, latency)
                continue
            reference, basis = self._reference(d)
            self._keep_latency(d, latency)
            d.over = d.over + 1 if latency > self.factor * reference else 0
            degraded = d.over >= self.consecutive
            if degraded != d.flagged:
                d.flagged = degraded
                out.append({
                    "device_id": h["device_id"], "device_class": d.device_class, "model_version": d.version,
                    "degraded": degraded, "latency_ms": latency, "reference_ms": reference, "basis": basis,
                    "reason": (f"inference {latency:.2f} ms, {latency / reference:.1f}x the {basis} {reference:.2f} ms"
                               if degraded else "latency back within bounds"),
                })
        return out

    def _keep_latency(self, d: _Device, latency: float) -> None:
        d.latency = latency
        insort(self._latencies.setdefault((d.device_class, d.version), []), latency)

    def _forget_latency(self, d: _Device) -> None:
        if d.latency is None:
            return
        key = (d.device_class, d.version)
        group = self._latencies[key]
        del group[bisect_left(group, d.latency)]
        if not group:
            del self._latencies[key]
        d.latency = None

    def _reference(self, d: _Device) -> tuple[float, str]:
        """Called while ``d``'s own latency is out of its group: the others' median, or its baseline's."""
        peers = self._latencies.get((d.device_class, d.version), [])
        if len(peers) >= self.min_peers:
            return max(_median(peers), _MIN_REFERENCE_MS), "peers' median"
        return max(_median(sorted(d.baseline)), _MIN_REFERENCE_MS), "device's own baseline"

    def flagged(self) -> list[str]:
        """Devices flagged now, for re-optimisation (``eddyline-edge build-model --optimise`` for their class)."""
        return sorted(k for k, d in self.devices.items() if d.flagged)


def _median(ordered: list[float]) -> float:
    """The median of an ascending list (as ``statistics.median``, without sorting again)."""
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
