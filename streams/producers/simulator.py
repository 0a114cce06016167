"""Simulated devices for demos and benchmarks: realistic sensor signals with anomalies injected on purpose.

Each device has a few sensors (a daily-like cycle plus noise, at one reading per ``interval_ms`` of
event time). After a warm-up, anomalies are injected at random: a spike, a level shift, or a burst of
noise, each a few readings long and recorded as ground truth, so that a run can report how many of the
injected anomalies the flow detected. Malformed messages can be mixed in to exercise the dead-letter path.
"""

from __future__ import annotations

import bisect
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas import derive_id
from schemas.scores import series_scores

SENSORS = {  # name: (unit, baseline, cycle amplitude, noise sd)
    "temperature": ("celsius", 21.0, 3.0, 0.25),
    "vibration": ("mm_s", 4.0, 0.5, 0.2),
    "pressure": ("kpa", 101.3, 0.8, 0.1),
}
KINDS = ("spike", "level_shift", "noise_burst")
QUIET_GAP = 300  # readings between two anomalies of one sensor, so that each stands apart


@dataclass(frozen=True)
class InjectedAnomaly:
    """One anomaly the simulator injected: the ground truth a run's alerts are compared with.

    Parameters
    ----------
    anomaly_id
        Stable id, derived from the device, sensor and reading index.
    device_id, sensor
        Where it was injected.
    kind
        ``spike`` (one reading), ``level_shift`` or ``noise_burst``.
    start_ms, end_ms
        Event times of the first and the last affected reading (inclusive).
    """

    anomaly_id: str
    device_id: str
    sensor: str
    kind: str
    start_ms: int
    end_ms: int  # inclusive: the last affected reading

    def caught(self, flagged: Mapping[tuple[str, str], Sequence[int]]) -> bool:
        """Whether one of its readings scored at or above the threshold: a flagged event time of its series
        within it (``flagged`` as ``flagged_times`` builds it, sorted per device and sensor).

        Parameters
        ----------
        flagged
            Flagged event times per (device, sensor), ascending.
        """
        times = flagged.get((self.device_id, self.sensor), ())
        i = bisect.bisect_left(times, self.start_ms)
        return i < len(times) and times[i] <= self.end_ms


def flagged_times(scores: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[int]]:
    """Event times scored at or above their record's threshold, ascending per (device, sensor): what
    ``InjectedAnomaly.caught`` compares the ground truth with, from ``anomaly_score`` records of either encoding.

    Parameters
    ----------
    scores
        The sensor flow's score records.
    """
    flagged: dict[tuple[str, str], list[int]] = defaultdict(list)
    for rec in scores:
        for series in rec["series"]:
            stamps, values = series_scores(series)
            flagged[(rec["device_id"], series["sensor"])].extend(stamps[values >= rec["threshold"]].tolist())
    for times in flagged.values():
        times.sort()
    return dict(flagged)


@dataclass(frozen=True, slots=True)
class InjectedTally:
    """How a run did on its injected anomalies, counting only those it could be judged on.

    Parameters
    ----------
    injected
        Anomalies injected in the readings produced.
    scored
        Those whose every reading was scored: the flow had them all, so missing one is a miss.
    detected
        Of the scored ones, those caught (``InjectedAnomaly.caught``).
    """

    injected: int
    scored: int
    detected: int

    @property
    def unscored(self) -> int:
        """Injected anomalies not judged: some of their readings were not scored (or not produced) by the end."""
        return self.injected - self.scored


def tally_injected(
    injected: Iterable[InjectedAnomaly], flagged: Mapping[tuple[str, str], Sequence[int]],
    scored_until: Mapping[tuple[str, str], int],
) -> InjectedTally:
    """Count the injected anomalies detected among those whose readings were all scored.

    A run stops producing in the middle of anomalies (a level shift is 20 readings long) and its last readings may
    not be scored when it ends; counting those as missed reported 32 of 33 where the flow had missed nothing.

    Parameters
    ----------
    injected
        The ground truth (``SensorSimulator.injected``).
    flagged
        Flagged event times per (device, sensor), ascending (``flagged_times``).
    scored_until
        The last event time scored per (device, sensor).

    Examples
    --------
    >>> from streams.producers.simulator import InjectedAnomaly, tally_injected
    >>> early = InjectedAnomaly("a", "d", "temperature", "spike", 1_000, 1_000)
    >>> late = InjectedAnomaly("b", "d", "temperature", "level_shift", 5_000, 24_000)
    >>> tally_injected([early, late], {}, {("d", "temperature"): 10_000})
    InjectedTally(injected=2, scored=1, detected=0)
    """
    total, scored, detected = 0, 0, 0
    for a in injected:
        total += 1
        if a.end_ms <= scored_until.get((a.device_id, a.sensor), -1):
            scored += 1
            detected += a.caught(flagged)
    return InjectedTally(total, scored, detected)


@dataclass
class _Device:
    device_id: str
    seq: int = 0
    t: int = 0  # readings emitted so far, per sensor
    offset_ms: float = 0.0  # added to every stamp: where this device's batches end within a batch span
    phase: dict[str, float] = field(default_factory=dict)
    pending: dict[str, tuple[str, int, float]] = field(default_factory=dict)  # sensor -> (kind, left, magnitude)
    quiet: dict[str, int] = field(default_factory=dict)  # sensor -> reading index before which none starts


class SensorSimulator:
    """Yields sensor_batch records device by device; ``injected`` collects the ground truth (or ``on_injected``).

    Each device has three sensors (temperature, vibration, pressure): a cycle plus noise. The same seed
    gives the same records and the same anomalies.

    A batch's readings are stamped ``start_ms + i * interval_ms`` (``interval_ms`` may be fractional); a live
    producer starts at the wall clock and sends each batch once its last reading's time has come
    (``due_s``), so event times never run ahead of the wall clock. With ``stagger`` the devices' batches end
    at evenly spread times instead of all together, as a real fleet's do.

    Parameters
    ----------
    devices
        Number of simulated devices (``device-000``, ``device-001``, ...).
    readings_per_message
        Readings per sensor in one record.
    interval_ms
        Event time between two readings of a sensor (may be fractional).
    anomaly_rate
        Chance per reading, after the warm-up, that an anomaly starts on that sensor.
    warmup_readings
        Readings per sensor before the first anomaly may start (detectors learn meanwhile).
    start_ms
        Event time of the first reading.
    seed
        Seeds the signals and the injections.
    producer
        The ``producer`` field of every record.
    stagger
        Spread the devices' batch ends evenly over one batch span (a live fleet) instead of aligning them.
    on_injected
        Given, each anomaly goes to it as it is injected instead of into ``injected``: a producer that runs for
        months writes its truth out as it goes, or keeps none (kept, they grew by some 100 MB a day).
        ``injected_count`` counts them either way.

    Examples
    --------
    >>> from itertools import islice
    >>> from streams.producers.simulator import SensorSimulator
    >>> sim = SensorSimulator(devices=2, readings_per_message=10, anomaly_rate=0.05, warmup_readings=0)
    >>> records = list(islice(sim, 20))
    >>> records[0]["device_id"], records[1]["device_id"], records[2]["seq"]
    ('device-000', 'device-001', 2)
    >>> [s["sensor"] for s in records[0]["series"]]
    ['temperature', 'vibration', 'pressure']
    >>> sim.readings, len(sim.injected) > 0
    (600, True)
    """

    def __init__(
        self,
        devices: int = 10,
        readings_per_message: int = 50,
        interval_ms: float = 1000,
        anomaly_rate: float = 0.002,
        warmup_readings: int = 600,
        start_ms: int = 1_767_225_600_000,
        seed: int = 7,
        producer: str = "eddyline/simulator",
        stagger: bool = False,
        on_injected: Callable[[InjectedAnomaly], None] | None = None,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.pyrng = random.Random(seed)
        self.readings_per_message = readings_per_message
        self.interval_ms = interval_ms
        self.anomaly_rate = anomaly_rate
        self.warmup = warmup_readings
        self.start_ms = start_ms
        self.producer = producer
        self.devices = [_Device(f"device-{i:03d}") for i in range(devices)]
        for i, d in enumerate(self.devices):
            d.phase = {s: self.pyrng.uniform(0, 2 * np.pi) for s in SENSORS}
            if stagger:  # device i's batches end i/devices of a batch later: a live fleet sends evenly
                d.offset_ms = i * readings_per_message * interval_ms / devices
        self.injected: list[InjectedAnomaly] = []
        self.injected_count = 0
        self._record = on_injected or self.injected.append
        self.readings = 0

    @property
    def readings_per_batch(self) -> int:
        return self.readings_per_message * len(SENSORS)

    def batch(self, device: _Device) -> dict:
        """The next ``sensor_batch`` record of one device (iterate the simulator to go round all of them).

        Parameters
        ----------
        device
            One of ``devices``.
        """
        n = self.readings_per_message
        idx = np.arange(device.t, device.t + n)
        stamps = (self.start_ms + device.offset_ms + idx * self.interval_ms).astype(np.int64)
        series = []
        for sensor, (unit, base, amp, sd) in SENSORS.items():
            values = base + amp * np.sin(2 * np.pi * idx / 600 + device.phase[sensor]) + self.rng.normal(0, sd, n)
            self._inject(device, sensor, values, stamps, float(np.hypot(amp / np.sqrt(2), sd)))
            series.append({"sensor": sensor, "unit": unit, "timestamps": stamps.tolist(), "values": values.tolist()})
        device.t += n
        device.seq += 1
        self.readings += n * len(SENSORS)
        return {
            "event_id": derive_id(device.device_id, device.seq),
            "event_time": int(stamps[-1]),
            "producer": self.producer,
            "device_id": device.device_id,
            "seq": device.seq,
            "series": series,
        }

    @staticmethod
    def due_s(record: dict) -> float:
        """When a live producer may send ``record``: the wall-clock second of its last reading.

        Parameters
        ----------
        record
            A record this simulator made.
        """
        return record["event_time"] / 1000.0

    def _inject(self, device: _Device, sensor: str, values: np.ndarray, stamps: np.ndarray, spread: float) -> None:
        i = 0
        n = len(values)
        while i < n:
            pending = device.pending.get(sensor)
            if pending is None:
                if device.t + i < max(self.warmup, device.quiet.get(sensor, 0)) or self.pyrng.random() >= self.anomaly_rate:
                    i += 1
                    continue
                kind = self.pyrng.choice(KINDS)
                length = {"spike": 1, "level_shift": 20, "noise_burst": 15}[kind]
                magnitude = spread * self.pyrng.uniform(6, 9) * self.pyrng.choice((-1, 1))
                self.injected_count += 1
                self._record(InjectedAnomaly(
                    derive_id("injected", device.device_id, sensor, device.t + i), device.device_id, sensor, kind,
                    int(stamps[i]), int(stamps[i] + (length - 1) * self.interval_ms)))
                pending = (kind, length, magnitude)
            kind, left, magnitude = pending
            take = min(left, n - i)
            if kind == "noise_burst":
                values[i:i + take] += self.rng.normal(0, abs(magnitude) / 2, take) + magnitude / 2
            else:
                values[i:i + take] += magnitude
            left -= take
            i += take
            if left:
                device.pending[sensor] = (kind, left, magnitude)
            else:
                device.pending.pop(sensor, None)
                device.quiet[sensor] = device.t + i + QUIET_GAP

    def __iter__(self) -> Iterator[dict]:
        while True:
            for device in self.devices:
                yield self.batch(device)


def malformed_messages(count: int, seed: int = 11) -> list[tuple[str, bytes]]:
    """Messages that must end in the dead-letter topic, each with the reason it should get.

    Parameters
    ----------
    count
        How many to make; they cycle through random bytes, truncated Avro, an unknown schema id and JSON.
    seed
        Seeds the random parts.

    Examples
    --------
    >>> from streams.producers.simulator import malformed_messages
    >>> [reason for reason, _ in malformed_messages(4)]
    ['undecodable', 'undecodable', 'unknown_schema', 'undecodable']
    """
    from schemas import SENSOR_BATCH, AvroSerde

    rng = random.Random(seed)
    good = AvroSerde().encode(SENSOR_BATCH, {
        "event_id": "x", "event_time": 1, "producer": "p", "device_id": "bad-device", "seq": 0,
        "series": [{"sensor": "s", "unit": None, "timestamps": [1, 2, 3], "values": [1.0, 2.0, 3.0]}],
    })
    makers = [
        ("undecodable", lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40))).replace(b"\x00", b"\x01")),
        ("undecodable", lambda: good[: rng.randint(6, len(good) - 2)]),
        ("unknown_schema", lambda: b"\x00\x7f\xff\xff\xfe" + good[5:]),
        ("undecodable", lambda: b"{\"device_id\": \"json-instead-of-avro\"}"),
    ]
    out = []
    for i in range(count):
        reason, make = makers[i % len(makers)]
        out.append((reason, make()))
    return out
