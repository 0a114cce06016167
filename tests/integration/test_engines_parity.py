"""Parity: the same input topic content through Bytewax and through Faust gives the same output events.

For every flow ``eddyline run`` knows, the inputs are published once (one partition per topic, so both
engines see one order), then both engines run the flow side by side, each with a recording sink that
keeps every emit (Kafka-bound and sink-only). Their sets of (topic, id, payload) must be equal, and equal
to the engine-free ``run_local`` over the same events.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from schemas import AvroSerde
from streams.processor import Emit, Event, run_local
from streams.flows import FLOWS, flow_spec
from tests.integration.test_faust_engine import stop, tail

pytestmark = pytest.mark.integration
serde = AvroSerde()


# Flows whose payloads depend on where Kafka polls cut the input into batches (not only on the input), so no
# two runs of one engine need agree on them; their output ids must still agree.
T0 = 1_767_225_600_000
MEASURED = {"latency_ms"}  # how long this run took to predict: a measurement, not a function of the input


def _id(row: str) -> tuple[str, str]:
    data = json.loads(row)
    return data["topic"], data["record"].get("event_id") or json.dumps(data["record"], sort_keys=True)


class Recorder:
    """Side sink: every emit as one JSON line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, emits: Sequence[Emit]) -> None:
        with self.path.open("a") as f:
            f.write("".join(json.dumps(_row(e)) + "\n" for e in emits))

    def close(self) -> None:
        return None


def _row(emit: Emit) -> dict:
    record = {k: v for k, v in emit.record.items() if k not in MEASURED}
    return {"topic": emit.topic, "key": emit.key, "record": json.loads(json.dumps(record, default=str))}


def _spec(flow: str, recorder_path: Path | None):
    spec = flow_spec(flow)
    spec.sinks = [lambda: Recorder(recorder_path)] if recorder_path is not None else []
    return spec


def serve(engine: str, flow: str, state_dir: str, seen: str) -> None:
    """Run ``flow`` on ``engine`` with only the recording sink (in a child process started by the tests)."""
    from streams import logs

    logs.setup()
    spec = _spec(flow, Path(seen))
    try:
        if engine == "faust":
            from streams.engines.faust import run

            run(spec, KafkaSettings(), state_dir=Path(state_dir), loglevel="WARNING")
        else:
            from datetime import timedelta

            from streams.engines.bytewax import run as run_bytewax

            run_bytewax(spec, KafkaSettings(), state_dir=Path(state_dir), epoch_interval=timedelta(seconds=0.5))
    except KeyboardInterrupt:
        pass


def _inputs(flow: str) -> list[Event]:
    if flow == "anomaly":
        from tests.integration.test_sensor_flow import simulated

        records, _ = simulated(devices=4, messages=80, seed=7)
        return [Event("sensor.readings", r["device_id"], r) for r in records]
    if flow == "clicks":
        from connectors.movielens import click_events, load

        return [Event("clicks", r["user_id"], r) for r in itertools.islice(click_events(load(400)), 600)]
    if flow == "model-security":  # honest replay, then a producer pushing one item: a quarantine and an alert
        from connectors.movielens import click_events, load

        honest = list(itertools.islice(click_events(load(400)), 500))
        pushed = [{**honest[-1], "event_id": f"bot-{i}", "producer": "bot", "user_id": f"fake-{i % 7}",
                   "item_id": "m-pushed", "action": "IMPRESSION", "impression_id": None} for i in range(60)]
        return [Event("clicks", r["user_id"], r) for r in honest + pushed]
    if flow == "drift":
        from tests.unit.test_drift_flow import _stream

        return _stream(2400, 1200, concept=True, data=True)  # past the detectors' 800-value warm-up
    if flow == "quality":
        from tests.unit.test_drift_flow import _fb, _pred, _stream

        far = 100_000  # both inputs move far ahead in event time: every window closes
        return [*_stream(900, 450, concept=True, data=False, seed=3), _pred(far, 0.5, 0.0), _fb(far, 1.0)]
    if flow == "audio":
        from connectors.wav import chunk_records, read_wav

        audio = read_wav(Path(__file__).parents[1] / "data" / "audio" / "call01.wav")
        return [Event("audio.chunks", "call-1", r) for r in chunk_records(audio, "call-1", start_ms=T0)]
    if flow == "sentiment":
        texts = ["Thanks, that fixed it, wonderful service.", "This is the third time it broke. Terrible.",
                 "I am really angry, nobody calls back.", "Awful. I want a refund now.", "Okay, thank you."]
        return [Event("transcripts", "call-2", {
            "event_id": f"t{i}", "event_time": T0 + i * 4000, "producer": "test", "conversation_id": "call-2",
            "segment": i, "start_ms": i * 4000, "end_ms": i * 4000 + 3000, "text": text, "language": "en",
            "confidence": None, "model": "test"}) for i, text in enumerate(texts)]
    if flow == "fleet":
        from tests.unit.test_fleet_flow import beat

        # pi-2 stops after 3 s and comes back; published with these broker timestamps (Tansu keeps create time)
        # (250 ms after the device's clock: the flow must judge by the broker's, on both engines)
        return [beat(d, T0 + t, broker=T0 + t + 250) for t in range(0, 12_000, 1000) for d in ("pi-1", "pi-2", "pi-3")
                if d != "pi-2" or t < 3000] + [beat("pi-2", T0 + 12_000, broker=T0 + 12_250)]
    raise AssertionError(f"no parity input for flow {flow!r}: add one here")


def _publish(settings: KafkaSettings, spec, events: list[Event]) -> None:
    create_topics(settings, list(spec.inputs), partitions=1)
    with EventProducer(settings) as producer:
        for ev in events:
            producer.produce(ev.topic, spec.inputs[ev.topic], ev.record, key=ev.key or "",
                             timestamp_ms=ev.broker_ms if ev.broker_ms >= 0 else None)


def _recorded(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line for line in path.read_text().splitlines() if line.endswith("}")}


def _start(engine: str, flow: str, settings: KafkaSettings, tmp: Path, env_extra: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, **env_extra, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": settings.namespace, "EDDYLINE_KAFKA_PARTITIONS": "1",
           "EDDYLINE_KAFKA_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
           "EDDYLINE_AUDIO_SENTIMENT_MODEL": "vader"}  # the trained model is built by a command, not by the tests
    code = (f"from tests.integration.test_engines_parity import serve; "
            f"serve({engine!r}, {flow!r}, {str(tmp / 'state')!r}, {str(tmp / 'seen.jsonl')!r})")
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[2],
                            stdout=(tmp / "flow.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_bytewax_and_faust_give_the_same_output_events(flow, kafka_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("EDDYLINE_AUDIO_SENTIMENT_MODEL", "vader")
    events = _inputs(flow)
    want = {json.dumps(_row(e), sort_keys=True) for e in run_local(_spec(flow, None), events)}
    assert want, f"the {flow} parity input should make the flow emit something"
    runs = {}
    for engine in ("bytewax", "faust"):  # side by side, each on its own copy of the input topics
        settings = kafka_settings.model_copy(update={"namespace": f"{kafka_settings.namespace}{engine}."})
        _publish(settings, _spec(flow, None), events)
        work = tmp_path / engine
        work.mkdir()
        extra = {"EDDYLINE_RETRAINING_REGISTRY_DIR": str(work / "registry")}
        runs[engine] = (settings, work, _start(engine, flow, settings, work, extra))
    got: dict[str, set[str]] = {}
    want_ids = {_id(r) for r in want}
    try:
        deadline = time.monotonic() + 90
        for engine, (_, work, _) in runs.items():
            while time.monotonic() < deadline:
                if {_id(r) for r in _recorded(work / "seen.jsonl")} >= want_ids:
                    break
                time.sleep(0.5)
            time.sleep(1.0)  # anything beyond the reference would show up now
            got[engine] = {json.dumps(json.loads(r), sort_keys=True) for r in _recorded(work / "seen.jsonl")}
    finally:
        for _, _, proc in runs.values():
            stop(proc, signal.SIGTERM)
    logs = {engine: tail(work / "flow.log") for engine, (_, work, _) in runs.items()}
    ids = {engine: {_id(r) for r in rows} for engine, rows in got.items()}
    assert ids["bytewax"] == want_ids, logs["bytewax"]
    assert ids["faust"] == ids["bytewax"], logs["faust"]
    assert got["bytewax"] == want, logs["bytewax"]
    assert got["faust"] == got["bytewax"], logs["faust"]
    kafka_topics = [t for t in _spec(flow, None).outputs if not t.startswith("sink.")]
    for topic in kafka_topics:  # what reached Kafka is the same too
        ids = {}
        for engine, (settings, _, _) in runs.items():
            event_type = _spec(flow, None).outputs[topic]
            ids[engine] = {serde.decode(m.value(), event_type)["event_id"] for m in read_topic(settings, topic)}
        assert ids["faust"] == ids["bytewax"], topic
