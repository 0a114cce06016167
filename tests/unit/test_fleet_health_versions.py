"""The fleet flow reads heartbeats of every ``device_health`` version: a fleet's agents are upgraded one by one."""

from __future__ import annotations

import io

import fastavro

from connectors.kafka import KafkaSettings
from edge_agent.health import Heartbeat, health_record
from schemas import AvroSerde, catalog, wire
from schemas.catalog import DEVICE_HEALTH
from schemas.registry import local_schema_id
from streams.engines.output import Codec
from streams.flows.fleet import flow
from streams.processor import Event, run_local

NEW_FIELDS = ("dead_letters", "rollouts_refused")


def _heartbeat(device: str, **kw: int) -> dict:
    hb = Heartbeat(device, 2, 200, 9000, 1, 5000, 4800, 30.0, 1, 0, 3.0, 41.0, started_ms=7, **kw)
    return health_record(hb, seq=1, device_class="rpi4", agent_version="0.1.0", interval_s=10.0,
                         event_time_ms=1_700_000_000_000)


def _as_v1(record: dict) -> bytes:
    """What an agent from before ``device_health`` v2 sends: v1's fields, under v1's schema id."""
    v1 = catalog.versions(DEVICE_HEALTH)[0]
    assert v1.version == 1 and not {f["name"] for f in v1.schema["fields"]} & set(NEW_FIELDS)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, v1.parsed, {k: v for k, v in record.items() if k not in NEW_FIELDS})
    return wire.frame(local_schema_id(v1.canonical), body.getvalue())


def test_the_fleet_flow_reads_heartbeats_from_old_and_new_agents() -> None:
    spec = flow()
    codec = Codec(KafkaSettings(namespace="unit."), spec.inputs, serde=AvroSerde(compiled=True))
    old = _as_v1(_heartbeat("pi-old"))
    new = AvroSerde().encode(DEVICE_HEALTH, _heartbeat("pi-new", dead_letters=3, rollouts_refused=1))
    events = [codec.decode("unit.device.health", device.encode(), value, 0, offset, broker_ms=1_700_000_000_500)
              for offset, (device, value) in enumerate([("pi-old", old), ("pi-new", new)])]
    assert all(isinstance(e, Event) for e in events), events  # neither is a dead letter
    assert [(e.record["dead_letters"], e.record["rollouts_refused"]) for e in events] == [(0, 0), (3, 1)]
    out = run_local(spec, events)
    states = {e.record["device_id"]: e.record for e in out if e.topic == "sink.fleet"}
    assert {d: s["state"] for d, s in states.items()} == {"pi-old": "ok", "pi-new": "dead_letters"}
    assert [(s["dead_letters"], s["rollouts_refused"]) for s in states.values()] == [(0, 0), (3, 1)]
    assert [(e.record["entity"], e.record["details"]["kind"]) for e in out if e.topic == "alerts"] == [
        ("pi-new", "dead_letters"), ("rpi4", "rollouts_refused")]
