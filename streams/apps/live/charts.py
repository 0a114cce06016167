"""The live page's time series: ring buffers that the charts draw, folded from events, plain data, no Kafka.

Every buffer is bounded: points per series, sensors per device, devices and calls (the least recently
active go first), seconds of throughput and samples of lag. A chart's data goes out in the column form the
page's charting library draws (one x column, one column per series, ``None`` for a gap), times in seconds.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.scores import series_scores

__all__ = ["ChartLimits", "Charts", "bounded_get"]

Columns = list[list[Any]]


@dataclass
class ChartLimits:
    """How much each chart keeps.

    Parameters
    ----------
    devices
        Devices with readings kept (the least recently active is dropped first).
    sensors
        Sensors kept per device.
    points
        Readings and scores kept per sensor.
    alerts
        Alert markers kept per device.
    calls
        Conversations with sentiment kept.
    call_points
        Segments kept per conversation.
    seconds
        Seconds of output throughput kept.
    lag_samples
        Consumer-lag samples kept.
    """

    devices: int = 100
    sensors: int = 8
    points: int = 600
    alerts: int = 50
    calls: int = 100
    call_points: int = 300
    seconds: int = 300
    lag_samples: int = 300


class _Sensor:
    __slots__ = ("values", "scores")

    def __init__(self, points: int) -> None:
        self.values: deque[tuple[int, float]] = deque(maxlen=points)
        self.scores: deque[tuple[int, float]] = deque(maxlen=points)


class _Device:
    __slots__ = ("sensors", "alerts")

    def __init__(self, alerts: int) -> None:
        self.sensors: dict[str, _Sensor] = {}
        self.alerts: deque[dict[str, Any]] = deque(maxlen=alerts)


def _align(series: Iterable[Mapping[Any, Any]]) -> Columns:
    """Columns over the union of every series' x values, sorted, ``None`` where a series has no point."""
    maps = list(series)
    xs = sorted({x for m in maps for x in m})
    return [xs, *([m.get(x) for x in xs] for m in maps)]


def bounded_get(store: OrderedDict[str, Any], key: str, limit: int, make: Callable[[], Any]) -> Any:
    """The entry for ``key``, made if new, moved to the most recent end; the oldest go past ``limit``."""
    entry = store.pop(key, None)
    store[key] = entry if entry is not None else make()
    while len(store) > limit:
        store.popitem(last=False)
    return store[key]


class Charts:
    """The series behind the live page's charts.

    Parameters
    ----------
    limits
        How much each chart keeps (``ChartLimits()`` by default).

    Examples
    --------
    >>> c = Charts()
    >>> c.readings({"device_id": "d1",
    ...             "series": [{"sensor": "temp", "timestamps": [1000, 2000], "values": [20.5, 21.0]}]})
    >>> c.scores({"device_id": "d1", "series": [{"sensor": "temp", "timestamps": [2000], "scores": [0.9]}]})
    >>> c.device_view("d1", None)["data"]
    [[1.0, 2.0], [20.5, 21.0], [None, 0.9]]
    """

    def __init__(self, limits: ChartLimits | None = None) -> None:
        self.limits = limits or ChartLimits()
        self._devices: OrderedDict[str, _Device] = OrderedDict()
        self._calls: OrderedDict[str, deque[tuple[int, float, float | None]]] = OrderedDict()
        self._throughput: dict[int, dict[str, int]] = {}  # second -> topic -> events
        self._lag: deque[tuple[float, dict[str, int]]] = deque(maxlen=self.limits.lag_samples)

    # --- folding events ------------------------------------------------------------------------

    def _sensor(self, device: str, sensor: str) -> _Sensor | None:
        sensors = bounded_get(self._devices, device, self.limits.devices,
                               lambda: _Device(self.limits.alerts)).sensors
        if sensor not in sensors:
            if len(sensors) >= self.limits.sensors:
                return None
            sensors[sensor] = _Sensor(self.limits.points)
        return sensors[sensor]

    def readings(self, rec: Mapping[str, Any]) -> None:
        """A ``sensor.readings`` batch: each sensor's values."""
        for s in rec["series"]:
            sensor = self._sensor(rec["device_id"], s["sensor"])
            if sensor is not None:
                sensor.values.extend(zip(s["timestamps"], s["values"]))

    def scores(self, rec: Mapping[str, Any]) -> None:
        """A ``scores.anomaly`` batch: each sensor's scores, at its readings' times."""
        for s in rec["series"]:
            sensor = self._sensor(rec["device_id"], s["sensor"])
            if sensor is not None:
                stamps, scores = series_scores(s)  # either encoding of anomaly_score v2
                sensor.scores.extend(zip(stamps.tolist(), scores.tolist()))

    def alert(self, rec: Mapping[str, Any]) -> None:
        """An alert about a device's sensor (its details name both) becomes a marker on that device's chart."""
        details = rec.get("details") or {}
        device, sensor = details.get("device_id"), details.get("sensor")
        if device is None or sensor is None:
            return  # about a model or a call, not a device
        entry = bounded_get(self._devices, device, self.limits.devices, lambda: _Device(self.limits.alerts))
        entry.alerts.append({"time": rec["event_time"] / 1000, "sensor": sensor, "status": rec["status"],
                             "severity": rec["severity"], "summary": rec["summary"]})

    def sentiment(self, rec: Mapping[str, Any]) -> None:
        """A scored transcript segment: the call's score and rolling score."""
        points = bounded_get(self._calls, rec["conversation_id"], self.limits.calls,
                              lambda: deque(maxlen=self.limits.call_points))
        points.append((rec["event_time"], rec["score"], rec["rolling_score"]))

    def output(self, topic: str, second: int, now_s: float) -> None:
        """One event an output topic took during ``second`` (its broker time), seen at ``now_s``.

        A page that starts or restarts reads the topics' backlog at once: counted when read, hours of output
        looked like one burst now. An event from before the chart's window is left out; one stamped ahead of
        this host's clock counts as now.

        Parameters
        ----------
        topic
            The output topic.
        second
            When the broker took it (Unix seconds).
        now_s
            This host's clock.
        """
        now = int(now_s)
        if second <= now - self.limits.seconds:
            return
        second = min(second, now)
        counts = self._throughput.get(second)
        if counts is None:
            for old in [s for s in self._throughput if s <= now - self.limits.seconds]:
                del self._throughput[old]
            counts = self._throughput[second] = {}
        counts[topic] = counts.get(topic, 0) + 1

    def lag(self, at_s: float, lags: Mapping[str, int]) -> None:
        """One reading of consumer lag, messages per flow (all its partitions)."""
        self._lag.append((at_s, dict(lags)))

    # --- views ---------------------------------------------------------------------------------

    def overview(self, now_s: float) -> dict[str, Any]:
        """What every client's page gets: pickers, throughput (every second up to ``now_s``, quiet ones as 0)
        and lag."""
        topics = sorted({t for counts in self._throughput.values() for t in counts})
        end = int(now_s)
        first = max(min(self._throughput, default=end), end - self.limits.seconds + 1)
        seconds = list(range(first, end + 1)) if self._throughput else []
        empty: dict[str, int] = {}
        flows = sorted({f for _, lags in self._lag for f in lags})
        return {
            "devices": sorted(self._devices),
            "calls": list(reversed(self._calls)),
            "throughput": {
                "series": topics,
                "data": [seconds, *([self._throughput.get(s, empty).get(t, 0) for s in seconds] for t in topics)],
            },
            "lag": {
                "series": flows,
                "data": [[round(t, 3) for t, _ in self._lag], *([m.get(f) for _, m in self._lag] for f in flows)],
            },
        }

    def device_view(self, device: str | None, sensor: str | None) -> dict[str, Any] | None:
        """One sensor of one device (defaults: the most recently active device, its first sensor)."""
        if device not in self._devices:
            device = next(reversed(self._devices), None)
        if device is None:
            return None
        sensors = self._devices[device].sensors
        if sensor not in sensors:
            sensor = next(iter(sensors), None)
        if sensor is None:
            return None
        s = sensors[sensor]
        data = _align([{t / 1000: v for t, v in s.values}, {t / 1000: v for t, v in s.scores}])
        marks = [m for m in self._devices[device].alerts if m["sensor"] == sensor]
        return {"device": device, "sensor": sensor, "sensors": list(sensors), "data": data, "alerts": marks}

    def call_view(self, call: str | None) -> dict[str, Any] | None:
        """One conversation's sentiment over time (default: the most recently active)."""
        if call not in self._calls:
            call = next(reversed(self._calls), None)
        if call is None:
            return None
        points = self._calls[call]
        return {"call": call, "data": [[t / 1000 for t, _, _ in points], [s for _, s, _ in points],
                                       [r for _, _, r in points]]}
