"""What dashboard viewers see of the sensor flow: per device and sensor, in InfluxDB and Prometheus.

The processor emits one ``sink.sensor_metrics`` record per series per batch (never written to Kafka).
In InfluxDB each becomes a point timed at the batch's last reading, so a replay overwrites rather than
doubles it: per-device values live there only. Prometheus gets what stays bounded at 100,000 devices: fleet
reading counters, the distribution of batch scores, and the top k most anomalous series.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np

from connectors.prometheus import metric
from streams.sinks.base import MetricsSink, Point
from streams.processor import Emit

TOPIC = "sink.sensor_metrics"
EVENT_TYPE = "sensor_metrics"
MEASUREMENT = "sensor"
TOP_K = 10
TOP_INTERVAL_S = 15.0
SCORE_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)


def _summarise(values: Any, scores: Any, threshold: float) -> tuple[float, float, float, float, int]:
    """(sum, min, max of the values, highest score, scores at or above ``threshold``) in one pass; the values are
    added in order, as the builtin ``sum`` does, so the mean is the same to the bit as before."""
    total = 0.0
    lo = hi = values[0]
    for i in range(values.shape[0]):
        v = values[i]
        total += v
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    top = scores[0]
    hot = 0
    for i in range(scores.shape[0]):
        sc = scores[i]
        if sc > top:
            top = sc
        if sc >= threshold:
            hot += 1
    return total, lo, hi, top, hot


@cache
def _summary_kernel() -> Callable[..., tuple[float, float, float, float, int]]:
    """``_summarise`` compiled (numba, cached on disk): numpy would take a call per statistic."""
    import numba

    return numba.njit(cache=True, nogil=True)(_summarise)


def series_metrics(device_id: str, sensor: str, values: Any, stamps: Any, scores: np.ndarray,
                   threshold: float) -> Emit:
    """One batch of one series, summarised in one compiled pass over its arrays.

    Parameters
    ----------
    device_id, sensor
        The series.
    values, stamps
        The batch's readings and their event times (ms): numpy arrays, or lists (converted). At least one: a
        summary is timed at its last reading, and the compiled pass reads the first without a bounds check, so
        an empty series is a ``ValueError`` here (the flow never scores one: ``schemas.validation`` refuses it).
    scores
        The anomaly score of each reading.
    threshold
        Scores at or above it count as anomalous.

    Examples
    --------
    >>> import numpy as np
    >>> from streams.sinks.sensor import series_metrics
    >>> scores = np.array([0.1, 0.2, 0.97])
    >>> emit = series_metrics("d-1", "temperature", [20.0, 21.0, 35.0], [1000, 2000, 3000], scores, threshold=0.9)
    >>> emit.topic, emit.record["time_ms"], emit.record["value_max"], emit.record["anomalous"]
    ('sink.sensor_metrics', 3000, 35.0, 1)
    """
    values = np.asarray(values, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(values)
    if n == 0 or len(scores) != n or len(stamps) != n:
        raise ValueError(f"{device_id}/{sensor}: a summary needs one score and time per reading and at least one "
                         f"reading, not {n} values, {len(stamps)} times and {len(scores)} scores")
    total, lo, hi, top, hot = _summary_kernel()(values, scores, float(threshold))
    record = {
        "device_id": device_id,
        "sensor": sensor,
        "time_ms": int(stamps[-1]),
        "readings": n,
        "value_last": float(values[-1]),
        "value_mean": total / n,
        "value_min": lo,
        "value_max": hi,
        "score_max": top,
        "score_mean": float(scores.sum()) / n,
        "anomalous": hot,
    }
    return Emit(TOPIC, device_id, EVENT_TYPE, record)


class TopSeries:
    """The k most anomalous series of the last interval, as a Prometheus gauge with at most k children.

    Each interval keeps a bounded min-heap of (highest score, series); when it ends, the gauge is set to that
    interval's top k and the children of series that left it are removed. Memory and exposed series stay at
    k whatever the fleet size.

    Parameters
    ----------
    gauge
        A gauge labelled (device, sensor).
    k
        How many series to expose.
    interval_s
        How long one ranking collects scores (wall clock).
    clock
        Seconds, monotonic; replaceable in tests.
    """

    def __init__(self, gauge: Any, k: int = TOP_K, interval_s: float = TOP_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gauge = gauge
        self.k = k
        self.interval_s = interval_s
        self.clock = clock
        self.heap: list[tuple[float, str, str]] = []
        self.best: dict[tuple[str, str], float] = {}  # this interval's candidates (at most k)
        self.shown: set[tuple[str, str]] = set()
        self.ends = clock() + interval_s

    def offer(self, device: str, sensor: str, score: float) -> None:
        """Count one series batch's highest score in this interval's ranking; publish when the interval ends.

        Parameters
        ----------
        device, sensor
            The series.
        score
            Its batch's highest anomaly score.
        """
        key = (device, sensor)
        if key in self.best:
            if score > self.best[key]:
                self.best[key] = score
                self.heap = [(self.best[d, s], d, s) for d, s in self.best]
                heapq.heapify(self.heap)
        elif len(self.heap) < self.k:
            heapq.heappush(self.heap, (score, device, sensor))
            self.best[key] = score
        elif score > self.heap[0][0]:
            _, d, s = heapq.heapreplace(self.heap, (score, device, sensor))
            del self.best[d, s]
            self.best[key] = score
        if self.clock() >= self.ends:
            self.publish()

    def publish(self) -> None:
        """Expose this interval's top k, drop the rest, start the next interval."""
        for key in self.shown - self.best.keys():
            self.gauge.remove(*key)
        for key, score in self.best.items():
            self.gauge.labels(*key).set(score)
        self.shown = set(self.best)
        self.heap, self.best = [], {}
        self.ends = self.clock() + self.interval_s


class SensorMetricsSink(MetricsSink):
    """The sensor flow's dashboards: an InfluxDB ``sensor`` point per series and batch (per-device values live
    there only), and Prometheus fleet totals, a batch-score histogram and a top-k gauge of at most k series.

    Parameters
    ----------
    influx
        Where points go; None keeps Prometheus only.
    top_k
        How many of the most anomalous series Prometheus shows.
    """

    def __init__(self, influx: Any | None = None, top_k: int = TOP_K) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        super().__init__(influx)
        self.readings = metric(Counter, "eddyline_sensor_readings", "Readings scored, whole fleet.")
        self.anomalous = metric(Counter, "eddyline_sensor_anomalous_readings",
                                "Readings scored at or above their detector's threshold, whole fleet.")
        self.batch_score = metric(Histogram, "eddyline_sensor_batch_anomaly_score",
                                  "Highest anomaly score of each scored series batch, whole fleet.",
                                  buckets=SCORE_BUCKETS)
        top = metric(Gauge, "eddyline_sensor_top_anomaly_score",
                     f"The {top_k} series with the highest anomaly score in the last {TOP_INTERVAL_S:g} s.",
                     ["device", "sensor"])
        self.top = TopSeries(top, k=top_k)

    def write(self, emits: Sequence[Emit]) -> None:
        """Update the fleet metrics once for the batch's series records (the counters take a lock per call), and
        build InfluxDB points only when there is an InfluxDB to write them to.

        Parameters
        ----------
        emits
            A batch of the flow's emits.
        """
        readings = anomalous = 0
        others: list[Emit] = []
        for e in emits:
            if e.topic != TOPIC:
                others.append(e)
                continue
            r = e.record
            readings += r["readings"]
            anomalous += r["anomalous"]
            self.batch_score.observe(r["score_max"])
            self.top.offer(r["device_id"], r["sensor"], r["score_max"])
        if readings:
            self.readings.inc(readings)
        if anomalous:
            self.anomalous.inc(anomalous)
        if self.influx is not None:
            super().write(emits)
        elif others:
            super().write(others)

    def points(self, e: Emit) -> list[Point]:
        if e.topic != TOPIC:
            return []
        r = e.record
        fields = {k: v for k, v in r.items() if k not in ("device_id", "sensor", "time_ms")}
        return [(MEASUREMENT, {"device_id": r["device_id"], "sensor": r["sensor"]}, fields, r["time_ms"])]


sensor_metrics_sink = SensorMetricsSink.from_settings
