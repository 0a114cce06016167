"""The Bytewax processor step's items (``Outputs``): a batch's emits for the side sinks and, encoded in the same step,
the Kafka messages of those bound for Kafka, which are what the Kafka sink writes and all that crosses workers."""

from __future__ import annotations

import itertools
import math
import pickle
from datetime import timedelta

import pytest

from connectors.dlq import dlq_info
from connectors.kafka import KafkaSettings
from schemas import ANOMALY_SCORE, SENSOR_BATCH, AvroSerde
from streams.engines.bytewax import Outputs, _BucketLogic, _outputs
from streams.engines.output import DeadLetter, FlowOutput
from streams.flows import flow_spec
from streams.processor import Emit, Event, run_local
from streams.producers.simulator import SensorSimulator

SPEC = flow_spec("anomaly")
SETTINGS = KafkaSettings(namespace="t8.")


def events(n: int) -> list[Event]:
    sim = SensorSimulator(devices=3, readings_per_message=20, seed=4)
    return [Event("sensor.readings", r["device_id"], r) for r in itertools.islice(sim, n)]


def test_a_batch_becomes_one_item_whose_messages_are_its_kafka_bound_emits_encoded() -> None:
    batch = events(6)
    logic = _BucketLogic(SPEC, FlowOutput(SPEC, SETTINGS), None, None, timedelta(minutes=10), 1, None,
                         keep_decoded=timedelta(seconds=60), decoded_bytes=10**9)
    items, _ = logic.on_batch(batch)
    assert len(items) == 1
    out = items[0]
    reference = run_local(SPEC, batch)
    assert sorted(e.record["event_id"] for e in out if "event_id" in e.record) == \
        sorted(e.record["event_id"] for e in reference if "event_id" in e.record)  # grouped by device, not in order
    kafka = [e for e in out.emits if not e.topic.startswith("sink.")]
    assert [m.topic for m in out.messages] == [SETTINGS.topic(e.topic) for e in kafka]
    scores = [AvroSerde().decode(m.value, ANOMALY_SCORE) for m in out.messages if m.topic == "t8.scores.anomaly"]
    assert [s["event_id"] for s in scores] == [e.record["event_id"] for e in kafka if e.topic == "scores.anomaly"]


def test_an_emit_that_breaks_its_schema_travels_as_a_dead_letter_message() -> None:
    bad = Emit("scores.anomaly", "d-1", ANOMALY_SCORE, {"event_id": "x"})
    sink_only = Emit("sink.sensor_metrics", "d-1", "sensor_metrics", {"device_id": "d-1"})
    [out] = _outputs(FlowOutput(SPEC, SETTINGS), [bad, sink_only])
    assert out.emits == [bad, sink_only]
    [letter] = out.messages
    assert letter.topic == "t8.dlq.scores.anomaly" and letter.headers is not None
    assert _outputs(FlowOutput(SPEC, SETTINGS), []) == []


@pytest.mark.filterwarnings("error")  # the reason alone: no numpy RuntimeWarning beside it
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_reading_that_is_not_finite_is_dead_lettered_with_the_reason_before_any_detector(bad: float) -> None:
    rec = events(1)[0].record
    series = rec["series"][0]
    values = list(series["values"])
    values[3] = bad
    value = AvroSerde().encode(SENSOR_BATCH, {**rec, "series": [{**series, "values": values}]}, check=False)
    output = FlowOutput(SPEC, SETTINGS)
    dead = output.decode("t8.sensor.readings", rec["device_id"].encode(), value, 2, 41)
    assert isinstance(dead, DeadLetter) and dead.reason == "invalid"
    assert dead.error == "sensor_batch.series[0].values: holds NaN or infinity"
    letter = output.dead_letter(dead)
    assert letter.topic == "t8.dlq.sensor.readings" and letter.value == value
    assert dlq_info(letter.headers)["reason"] == "invalid"


def test_only_the_messages_cross_to_another_worker() -> None:
    out = Outputs([Emit("sink.x", "k", "t", {"n": 1})], [("t8.scores.anomaly", b"k", b"v", None)])
    again = pickle.loads(pickle.dumps(out))
    assert again.messages == out.messages
    assert again.emits == []


def test_a_batch_with_a_series_of_no_readings_is_dead_lettered_with_the_reason() -> None:
    rec = events(1)[0].record
    empty = {**rec, "series": [{**rec["series"][0], "timestamps": [], "values": [], "local_flags": None}]}
    value = AvroSerde().encode(SENSOR_BATCH, empty, check=False)
    dead = FlowOutput(SPEC, SETTINGS).decode("t8.sensor.readings", rec["device_id"].encode(), value, 0, 7)
    assert isinstance(dead, DeadLetter) and dead.reason == "invalid" and "is empty" in dead.error


class Fragile:
    """Applies events in order; raises at a record whose producer is ``boom``."""

    state_version = 1

    def __init__(self, key: str) -> None:
        self.key, self.seen = key, []

    def process(self, events):
        out = []
        for e in events:
            if e.record["producer"] == "boom":
                raise RuntimeError(f"cannot take {e.record['event_id']}")
            self.seen.append(e.record["seq"])
            out.append(Emit("scores.anomaly", self.key, ANOMALY_SCORE, {"event_id": e.record["event_id"]}))
        return out

    def flush(self):
        raise RuntimeError("flush")

    def snapshot(self):
        return {"seen": self.seen}

    def restore(self, state):
        self.seen = state["seen"]

    def params(self):
        return {"key": self.key}


def fragile_events(device: str, producers: list[str]) -> list[Event]:
    rec = events(1)[0].record
    return [Event("sensor.readings", device, {**rec, "device_id": device, "seq": i, "event_id": f"{device}-{i}",
                                              "producer": p}, 3, 100 + i) for i, p in enumerate(producers)]


@pytest.mark.parametrize("buckets", [1, 0])
def test_a_processor_that_raises_dead_letters_its_calls_events_and_the_flow_goes_on(buckets: int, monkeypatch) -> None:
    """A processor's exception used to stop the worker, and the replay stopped it again at every restart."""
    from dataclasses import replace

    from streams.engines import bytewax

    spec = replace(SPEC, make_processor=Fragile, key=lambda e: e.key, sinks=[])
    output = FlowOutput(spec, SETTINGS)
    monkeypatch.setattr(output, "encode", lambda e: ("encoded", e.record["event_id"]))
    bad = fragile_events("d-bad", ["p", "boom", "p"])
    if buckets:
        logic = bytewax._BucketLogic(spec, output, None, None, None, 1, None, keep_decoded=timedelta(seconds=60),
                                     decoded_bytes=10**9)
        items, _ = logic.on_batch([*fragile_events("d-ok", ["p", "p"]), *bad])
        [out] = items
        assert out.messages[:2] == [("encoded", "d-ok-0"), ("encoded", "d-ok-1")]
        letters = out.messages[2:]
        processor = logic.live["d-bad"]
    else:
        logic = bytewax._ProcessorLogic(spec, output, None, None, None)
        [out], _ = logic.on_batch(bad)
        letters, processor = out.messages, logic.processor
    assert out.emits == [e for e in out.emits if e.key == "d-ok"]
    assert [m.topic for m in letters] == ["t8.dlq.sensor.readings"] * 3
    infos = [dlq_info(m.headers) for m in letters]
    assert {i["reason"] for i in infos} == {"processing_failed"}
    assert [i["offset"] for i in infos] == ["100", "101", "102"]
    assert "RuntimeError: cannot take d-bad-1" in infos[0]["error"]
    assert AvroSerde().decode(letters[1].value, SENSOR_BATCH)["event_id"] == "d-bad-1"  # the event, re-encoded
    assert processor.seen == [0], "kept as the call left it"
    [again], _ = logic.on_batch(fragile_events("d-bad", ["p", "p", "p", "p"])[3:])
    assert again.messages == [("encoded", "d-bad-3")] and processor.seen == [0, 3]
    assert bytewax._flush(spec, processor) == [], "a flush that raises is logged and counted, not fatal"
