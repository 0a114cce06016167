"""The gateway against the real broker, served by uvicorn on 127.0.0.1: events land on their topics,
WebSocket frames are acknowledged, and schemathesis finds no 5xx and no undocumented answer."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from websockets.sync.client import connect

from connectors.broker import EmbeddedBroker
from connectors.gateway import GatewaySettings
from connectors.kafka import KafkaSettings, read_topic
from schemas import AUDIO_CHUNK, CLICK, SENSOR_BATCH, AvroSerde
from tests.fixtures.gateway import LiveGateway, serve_gateway

TOKEN = "integration-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def gateway(broker: EmbeddedBroker) -> Iterator[LiveGateway]:
    kafka = KafkaSettings(
        bootstrap_servers=broker.bootstrap, namespace=f"t{uuid.uuid4().hex[:12]}.", session_timeout_ms=6000
    )
    settings = GatewaySettings(tokens={"itest": TOKEN}, max_body_bytes=64_000, shutdown_flush_s=5)
    with serve_gateway(settings, kafka) as live:
        yield live


def _sensor_event(device: str = "dev-1", seq: int = 7) -> dict:
    return {
        "device_id": device,
        "seq": seq,
        "series": [{"sensor": "temp", "unit": "C", "timestamps": [1000, 2000], "values": [21.5, 21.75]}],
    }


def test_a_valid_post_lands_on_the_topic_keyed_by_device(gateway: LiveGateway) -> None:
    r = httpx.post(gateway.url + "/v1/sensors", json=_sensor_event(), headers=AUTH)
    assert r.status_code == 202, r.text
    (event_id,) = r.json()["event_ids"]
    (msg,) = read_topic(gateway.kafka, "sensor.readings", expected=1, timeout=20)
    record = AvroSerde().decode(msg.value(), SENSOR_BATCH)
    assert msg.key() == b"dev-1"
    assert record["event_id"] == event_id and record["producer"] == "gateway/itest"
    assert record["series"][0]["values"] == [21.5, 21.75] and record["seq"] == 7
    assert dict(msg.headers())["gateway-client"] == b"itest"


def test_audio_pcm_travels_as_base64_and_clicks_keep_the_clients_id(gateway: LiveGateway) -> None:
    pcm = bytes(range(256)) * 4
    audio = {
        "conversation_id": "call-9",
        "seq": 0,
        "offset_ms": 0,
        "pcm": base64.b64encode(pcm).decode(),
        "final": True,
        "event_time": 1_700_000_000_000,
    }
    click = {"event_id": "client-chosen-id", "user_id": "u1", "item_id": "i1", "action": "CLICK", "position": 3}
    assert httpx.post(gateway.url + "/v1/audio", json=audio, headers=AUTH).status_code == 202
    r = httpx.post(gateway.url + "/v1/clicks", json=click, headers=AUTH)
    assert r.status_code == 202 and r.json()["event_ids"] == ["client-chosen-id"]
    (a,) = read_topic(gateway.kafka, "audio.chunks", expected=1, timeout=20)
    (c,) = read_topic(gateway.kafka, "clicks", expected=1, timeout=20)
    chunk = AvroSerde().decode(a.value(), AUDIO_CHUNK)
    assert chunk["pcm"] == pcm and chunk["event_time"] == 1_700_000_000_000 and a.key() == b"call-9"
    assert AvroSerde().decode(c.value(), CLICK)["event_id"] == "client-chosen-id" and c.key() == b"u1"


def test_an_invalid_array_is_refused_whole(gateway: LiveGateway) -> None:
    bad = {**_sensor_event("dev-arr", 2), "series": [{"sensor": "t", "timestamps": [1], "values": [1.0, 2.0]}]}
    r = httpx.post(gateway.url + "/v1/sensors", json=[_sensor_event("dev-arr", 1), bad], headers=AUTH)
    assert r.status_code == 422
    assert r.json()["problems"][0]["path"] == "[1]" and "pair up" in r.json()["problems"][0]["message"]
    ok = httpx.post(gateway.url + "/v1/sensors", json=_sensor_event("dev-arr", 3), headers=AUTH)
    assert ok.status_code == 202
    seqs = [
        AvroSerde().decode(m.value(), SENSOR_BATCH)["seq"]
        for m in read_topic(gateway.kafka, "sensor.readings", idle=1.0, timeout=20)
        if m.key() == b"dev-arr"
    ]
    assert seqs == [3]


def test_an_unauthenticated_request_is_refused(gateway: LiveGateway) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"}):
        r = httpx.post(
            gateway.url + "/v1/clicks", json={"user_id": "u", "item_id": "i", "action": "CLICK"}, headers=headers
        )
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"] in ("missing_token", "invalid_token", "bad_authorization")


def test_websocket_frames_are_acknowledged_and_land(gateway: LiveGateway) -> None:
    with connect(gateway.ws_url, additional_headers=AUTH) as ws:
        ws.send(json.dumps({"type": "sensor_batch", "event": _sensor_event("dev-ws", 1), "ref": "a"}))
        ack = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"type": "click", "event": {"user_id": "u"}, "ref": 2}))
        refused = json.loads(ws.recv(timeout=10))
        ws.send(b"\x00binary")
        binary = json.loads(ws.recv(timeout=10))
    assert ack["ref"] == "a" and ack["status"] == 202 and len(ack["event_ids"]) == 1
    assert refused["ref"] == 2 and refused["status"] == 422
    assert {p["path"] for p in refused["problems"]} == {"item_id", "action"}
    assert binary["status"] == 415
    msgs = [m for m in read_topic(gateway.kafka, "sensor.readings", idle=1.0, timeout=20) if m.key() == b"dev-ws"]
    assert [AvroSerde().decode(m.value(), SENSOR_BATCH)["event_id"] for m in msgs] == ack["event_ids"]


def test_websocket_without_a_token_is_refused(gateway: LiveGateway) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info, connect(gateway.ws_url):
        pass
    assert info.value.response.status_code == 401


def test_a_body_over_the_limit_is_413(gateway: LiveGateway) -> None:
    big = _sensor_event()
    big["series"][0]["values"] = [1.5] * 20_000
    r = httpx.post(gateway.url + "/v1/sensors", json=big, headers=AUTH)
    assert r.status_code == 413 and r.json()["error"] == "too_large"


_RULES_BEYOND_THE_SPEC = ("pair up", "surrogate", "odd number of bytes", "Kafka message limit",
                          "set by the gateway from your token", "must name the model that set local_flags")


def _operations(url: str) -> list[schemathesis.APIOperation]:
    """Loaded from the spec the server serves: what is checked is what clients read."""
    schema = schemathesis.openapi.from_dict(httpx.get(url + "/openapi.json").json())
    # an over-long array of invalid items is refused for its length first: 413 is a clear refusal too
    schema.config.checks.negative_data_rejection.expected_statuses.append("413")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_schemathesis_no_5xx_and_every_answer_documented(
    gateway: LiveGateway, mode: schemathesis.GenerationMode
) -> None:
    """Generated bodies, valid and invalid, against every operation: never a 5xx, every refusal a JSON 4xx
    the spec documents, and (schemathesis' checks) invalid data refused and requests without the token too.

    Schemathesis' positive-data-acceptance check is left out: a schema-valid body may still break a rule
    JSON Schema cannot state (as many timestamps as values); those 422s are checked here instead."""
    seen: dict[int, int] = {}
    for operation in _operations(gateway.url):
        if mode == schemathesis.GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # nothing to make invalid: /health and /openapi.json take no input

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                base_url=gateway.url, headers=AUTH, excluded_checks=[positive_data_acceptance]
            )
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            if case.path == "/health":
                return
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                assert response.json()["message"], response.text
            if response.status_code == 422 and mode == schemathesis.GenerationMode.POSITIVE:
                # schema-valid yet refused: only by the event rules JSON Schema cannot state
                problems = " ".join(p["message"] for p in response.json()["problems"])
                assert any(r in problems for r in _RULES_BEYOND_THE_SPEC), response.text

        check()
    assert 202 in seen if mode == schemathesis.GenerationMode.POSITIVE else any(400 <= s < 500 for s in seen)
