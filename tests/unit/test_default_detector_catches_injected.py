"""The sensor flow's default detector catches the simulator's injected anomalies without crying wolf.

The simulator injects spikes, 20-reading level shifts and 15-reading noise bursts (6-9 signal spreads)
into sinusoid-plus-noise sensors; an anomaly counts as caught when at least one of its readings scores at
or above the detector's threshold. The flow's processor is used exactly as in production.
"""

from __future__ import annotations

import itertools
from collections import Counter

from models.anomaly import DEFAULT_DETECTOR
from streams.processor import Event, run_local
from streams.flows.sensor_anomaly import ALERTS_TOPIC, SCORES_TOPIC, SOURCE_TOPIC, sensor_anomaly_flow
from streams.producers.simulator import SensorSimulator, flagged_times


def test_default_detector_catches_injected_anomalies() -> None:
    sim = SensorSimulator(devices=4, seed=3)
    records = list(itertools.islice(sim, 4 * 100))  # 5000 readings per sensor
    emits = run_local(
        sensor_anomaly_flow(detector=DEFAULT_DETECTOR),
        [Event(SOURCE_TOPIC, r["device_id"], r) for r in records],
    )
    flagged = flagged_times(e.record for e in emits if e.topic == SCORES_TOPIC)
    missed = Counter(a.kind for a in sim.injected if not a.caught(flagged))
    injected = len(sim.injected)
    assert injected >= 30 and {a.kind for a in sim.injected} == {"spike", "level_shift", "noise_burst"}
    assert (injected - sum(missed.values())) / injected >= 0.9, f"missed {dict(missed)} of {injected}"
    opened = sum(1 for e in emits if e.topic == ALERTS_TOPIC and e.record["status"] == "OPENED")
    assert opened <= 1.5 * injected, f"{opened} alerts opened for {injected} injected anomalies"
