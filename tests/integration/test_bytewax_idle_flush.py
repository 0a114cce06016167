"""A key that leaves memory on Bytewax as bytes (resumed after a restart, or its processor dropped after
``keep_decoded_s``) hands on what it held back as a decoded one does: the sensor flow's batches waiting behind a
lost one are scored when the device goes idle, through the real broker, not kept where nothing may read them."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta
from pathlib import Path

import pytest

from connectors.kafka import KafkaSettings
from streams.engines.bytewax import idle_path
from streams.engines.bytewax_epochs import RecoveryEpochs
from streams.flows.sensor_anomaly import sensor_anomaly_flow
from streams.processor import Event, run_local
from streams.producers.simulator import SensorSimulator
from tests.fixtures.emits import plain
from tests.integration.test_sensor_flow import evicted_keys, publish, start_flow, stop, unique_scores

pytestmark = pytest.mark.integration


def with_a_gap() -> tuple[list[dict], dict[str, dict]]:
    """One device's batches with one lost (the rest wait behind it), and the scores the flow owes for them once
    the device goes idle: those it scored as they came and those its flush hands on."""
    sent = list(itertools.islice(SensorSimulator(devices=1, readings_per_message=40, seed=8), 6))
    del sent[2]
    spec = sensor_anomaly_flow()
    processors: dict = {}
    emits = run_local(spec, [Event("sensor.readings", r["device_id"], r) for r in sent], processors)
    emits += next(iter(processors.values())).flush()
    return sent, {e.record["event_id"]: e.record for e in plain(emits) if e.topic == "scores.anomaly"}


def wait_evicted(state: Path, device: str) -> set[str]:
    deadline = time.monotonic() + 60
    evicted: set[str] = set()
    while time.monotonic() < deadline and device not in evicted:
        time.sleep(0.5)
        evicted = evicted_keys(idle_path(state))
    return evicted


def run_until_scored(settings: KafkaSettings, state: Path, device: str, want: dict,
                     **env: str) -> tuple[set[str], dict, str]:
    """Run the flow with ``env`` until ``device`` left memory and the ``want`` scores are in, and stop it: the keys in
    the idle store, the scores and its log."""
    proc = start_flow(settings, state, **env)
    try:
        evicted = wait_evicted(state, device)
        scores = unique_scores(settings, len(want), timeout=30)
    finally:
        log = stop(proc)
    return evicted, scores, log


def checkpointed_holding_back(settings: KafkaSettings, state: Path, buckets: str) -> str:
    """Run the flow, never evicting, until the two batches before the gap are scored and a checkpoint past all
    of them is committed (a restart does not read them again), and stop it; its log."""
    proc = start_flow(settings, state, EDDYLINE_RUNTIME_IDLE_EVICT_S="0", EDDYLINE_RUNTIME_STATE_BUCKETS=buckets)
    epochs = RecoveryEpochs(state, timedelta(seconds=0.5))
    try:
        assert len(unique_scores(settings, 2, timeout=90)) == 2  # the two before the gap
        scored = epochs.resume_epoch() or 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (epochs.resume_epoch() or 0) < scored + 3:
            time.sleep(0.2)
        assert (epochs.resume_epoch() or 0) >= scored + 3
    finally:
        epochs.close()
        log = stop(proc)
    return log


@pytest.mark.parametrize("buckets", ["0", "2"], ids=["one-key-per-device", "2-buckets"])
def test_a_resumed_device_that_never_speaks_again_hands_on_what_it_held_when_evicted(
        kafka_settings: KafkaSettings, tmp_path: Path, buckets: str) -> None:
    sent, want = with_a_gap()
    device = sent[0]["device_id"]
    publish(kafka_settings, sent)
    state = tmp_path / "state"
    log = checkpointed_holding_back(kafka_settings, state, buckets)
    evicted, scores, more = run_until_scored(kafka_settings, state, device, want, EDDYLINE_RUNTIME_IDLE_EVICT_S="1",
                                             EDDYLINE_RUNTIME_STATE_BUCKETS=buckets)
    log += more
    assert evicted == {device}, log
    assert scores == want, "the batches it held were stored with its state, never scored"


def test_a_device_whose_processor_went_back_to_bytes_hands_on_what_it_held_when_evicted(
        kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    sent, want = with_a_gap()
    publish(kafka_settings, sent)
    state = tmp_path / "state"
    evicted, scores, log = run_until_scored(kafka_settings, state, sent[0]["device_id"], want,
                                            EDDYLINE_RUNTIME_IDLE_EVICT_S="2", EDDYLINE_RUNTIME_KEEP_DECODED_S="0",
                                            EDDYLINE_RUNTIME_STATE_BUCKETS="2")
    assert evicted == {sent[0]["device_id"]}, log
    assert scores == want, "the batches it held were stored with its state, never scored"


@pytest.mark.parametrize(("before", "after"), [("0", "2"), ("2", "3")], ids=["to-buckets", "another-bucket-count"])
def test_a_device_resumed_in_another_state_layout_hands_on_what_it_held(
        kafka_settings: KafkaSettings, tmp_path: Path, before: str, after: str) -> None:
    """A restart under another ``state_buckets`` moves the checkpoint's keys to the idle store; one that never speaks
    again hands on what it held there and then, as an evicted key does, not when retention deletes it."""
    sent, want = with_a_gap()
    device = sent[0]["device_id"]
    publish(kafka_settings, sent)
    state = tmp_path / "state"
    log = checkpointed_holding_back(kafka_settings, state, before)
    moved, scores, more = run_until_scored(kafka_settings, state, device, want, EDDYLINE_RUNTIME_IDLE_EVICT_S="0",
                                           EDDYLINE_RUNTIME_STATE_BUCKETS=after)
    log += more
    assert moved == {device}, log
    assert scores == want, "the batches it held were moved to the idle store with its state, never scored"
