"""The gateway without a broker: the producer points at a closed loopback port, so every accepted event
waits in its queue, which is exactly what a broker slower than the clients looks like."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from pydantic import ValidationError
from starlette.testclient import TestClient

from connectors.broker import free_port
from connectors.gateway import GatewaySettings, create_app
from connectors.gateway.app import Gateway
from connectors.gateway.auth import TokenAuth
from connectors.gateway.errors import GatewayError
from connectors.gateway.openapi import openapi_spec
from connectors.gateway.records import ENDPOINTS, RecordMapper, json_schema
from connectors.kafka import EventProducer, KafkaSettings
from tests.fixtures.gateway import serve_gateway

TOKEN = "unit-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _sensor(seq: int = 1, device: str = "d1") -> dict:
    return {"device_id": device, "seq": seq, "series": [{"sensor": "t", "timestamps": [1, 2], "values": [1, 2.5]}]}


def _client(**overrides) -> TestClient:
    settings = GatewaySettings(
        **{"tokens": {"unit": TOKEN}, "create_topics": False, "shutdown_flush_s": 0, **overrides}
    )
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")  # nothing listens there
    return TestClient(create_app(settings, kafka, EventProducer(kafka, log_level=0)))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with _client() as c:
        yield c


# -- settings and auth ------------------------------------------------------------------------------------


def test_settings_refuse_short_tokens_and_a_gateway_nobody_can_use(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="shorter than 16"):
        GatewaySettings(tokens={"x": "short"})
    with pytest.raises(ValueError, match="no tokens"):
        GatewaySettings().check_usable()
    GatewaySettings(allow_anonymous=True).check_usable()
    monkeypatch.setenv("EDDYLINE_GATEWAY_TOKENS", json.dumps({"edge": TOKEN}))
    assert GatewaySettings().tokens["edge"].get_secret_value() == TOKEN


def test_token_auth_names_the_client_and_refuses_everything_else() -> None:
    auth = TokenAuth(GatewaySettings(tokens={"a": TOKEN, "b": TOKEN[::-1]}))
    assert auth.client(f"Bearer {TOKEN}") == "a" and auth.client(f"bearer  {TOKEN[::-1]}") == "b"
    for header, code in (
        (None, "missing_token"),
        (f"Basic {TOKEN}", "bad_authorization"),
        ("Bearer", "bad_authorization"),
        (f"Bearer {TOKEN}x", "invalid_token"),
        ("Bearer \udcff", "invalid_token"),
    ):
        with pytest.raises(GatewayError) as info:
            auth.client(header)
        assert info.value.status == 401 and info.value.code == code
        assert info.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert TokenAuth(GatewaySettings(allow_anonymous=True)).client(None) == "anonymous"


# -- JSON to Avro, and the spec ----------------------------------------------------------------------------


def test_json_maps_onto_the_avro_record_with_defaults_and_base64() -> None:
    record, problems = RecordMapper("audio_chunk").to_record(
        {"conversation_id": "c", "seq": 0, "offset_ms": 0, "pcm": base64.b64encode(b"\x01\x02").decode()}
    )
    assert problems == [] and record == {
        "conversation_id": "c",
        "seq": 0,
        "sample_rate": 16000,
        "offset_ms": 0,
        "pcm": b"\x01\x02",
        "final": False,
    }
    record, _ = RecordMapper("click").to_record({"user_id": "u", "item_id": "i", "action": "CLICK", "position": None})
    assert record["position"] is None and record["context"] == {} and record["impression_id"] is None


def test_every_problem_is_named_with_its_path() -> None:
    _, problems = RecordMapper("sensor_batch").to_record(
        {
            "device_id": "",
            "seq": 1.5,
            "extra": 1,
            "series": [{"sensor": "t", "timestamps": [1, "2"], "values": [True, 1e400]}],
        }
    )
    found = {p.path: p.message for p in problems}
    assert found.keys() == {
        "device_id",
        "seq",
        "extra",
        "series[0].timestamps[1]",
        "series[0].values[0]",
        "series[0].values[1]",
    }
    assert "must not be empty" in found["device_id"] and "known fields" in found["extra"]
    _, problems = RecordMapper("audio_chunk").to_record(
        {"conversation_id": "c", "seq": 0, "offset_ms": 0, "pcm": "not base64!", "sample_rate": 8000}
    )
    assert {p.path for p in problems} == {"pcm", "sample_rate"}


def test_number_arrays_are_checked_whole_and_converted() -> None:
    mapper = RecordMapper("sensor_batch")
    series = {"sensor": "t", "timestamps": [1, 2, 3], "values": [1, 2.5, 3]}
    record, _ = mapper.to_record({"device_id": "d", "seq": 0, "series": [series]})
    values = record["series"][0]["values"]
    assert values == [1.0, 2.5, 3.0] and all(type(x) is float for x in values)
    for bad, where in (
        ({"values": [1.0, 1e400, 2.0]}, "values[1]"),
        ({"values": [1.0, 10**400, 2.0]}, "values[1]"),
        ({"timestamps": [1, 2**63, 3]}, "timestamps[1]"),
        ({"values": [1.0, None, 2.0]}, "values[1]"),
    ):
        _, problems = mapper.to_record({"device_id": "d", "seq": 0, "series": [{**series, **bad}]})
        assert [p.path for p in problems] == [f"series[0].{where}"], bad
    _, problems = mapper.to_record({"device_id": "d", "seq": 0, "series": [{**series, "timestamps": [], "values": []}]})
    assert [(p.path, p.message) for p in problems] == [("series[0].values", "must hold at least 1 item(s)")]
    spec = json_schema("sensor_batch")["properties"]["series"]["items"]["properties"]["values"]
    assert spec["minItems"] == 1  # the spec says it, so generated valid bodies never break it


@pytest.mark.parametrize("event_type", list(ENDPOINTS))
def test_the_json_schema_says_what_the_mapper_requires(event_type: str) -> None:
    schema = json_schema(event_type)
    _, problems = RecordMapper(event_type).to_record({})
    assert {p.path for p in problems} == set(schema["required"])
    assert schema["additionalProperties"] is False
    assert not {"event_id", "event_time", "producer"} & set(schema["required"])


def test_the_spec_is_valid_openapi_with_every_route() -> None:
    spec = openapi_spec(GatewaySettings(allow_anonymous=True))
    operations = [r.ok() for r in schemathesis.openapi.from_dict(spec).get_all_operations()]
    assert {(o.method.upper(), o.path) for o in operations} == {
        *(("POST", e.path) for e in ENDPOINTS.values()),
        ("GET", "/health"),
    }


# -- the app -------------------------------------------------------------------------------------------


def test_requests_without_a_valid_token_get_401(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope-nope-nope-nope"}):
        r = client.post("/v1/sensors", json=_sensor(), headers=headers)
        assert r.status_code == 401 and r.json()["error"] in ("missing_token", "invalid_token")


def test_accepted_events_get_ids_stable_across_retries(client: TestClient) -> None:
    first = client.post("/v1/sensors", json=_sensor(5), headers=AUTH)
    retry = client.post("/v1/sensors", json=_sensor(5), headers=AUTH)
    assert first.status_code == retry.status_code == 202
    assert first.json()["event_ids"] == retry.json()["event_ids"] and first.json()["topic"] == "sensor.readings"
    other = client.post("/v1/sensors", json=[_sensor(6), {**_sensor(7), "event_id": "mine"}], headers=AUTH)
    assert other.json()["accepted"] == 2 and other.json()["event_ids"][1] == "mine"
    assert other.json()["event_ids"][0] != first.json()["event_ids"][0]
    click = {"user_id": "u", "item_id": "i", "action": "IMPRESSION"}
    ids = {client.post("/v1/clicks", json=click, headers=AUTH).json()["event_ids"][0] for _ in range(2)}
    assert len(ids) == 2  # no event_id, no seq: two identical clicks are two events, not a retry
    both = client.post("/v1/clicks", json=[click, click], headers=AUTH).json()["event_ids"]
    assert len(set(both)) == 2
    retried = {client.post("/v1/clicks", json={**click, "event_id": "c-1"}, headers=AUTH).json()["event_ids"][0]
               for _ in range(2)}
    assert retried == {"c-1"}


def test_the_producer_is_the_token_never_the_client_word(client: TestClient) -> None:
    framed = client.post("/v1/sensors", json=[_sensor(9), {**_sensor(8), "producer": "web-3"}], headers=AUTH)
    assert framed.status_code == 422 and framed.json()["problems"][0]["path"] == "[1].producer"
    message = framed.json()["problems"][0]["message"]
    assert "'gateway/unit'" in message and "'web-3'" in message  # what it is and what was sent
    assert "leave the field out" in message and "give each its own token ([gateway] tokens)" in message
    own = client.post("/v1/sensors", json={**_sensor(8), "producer": "gateway/unit"}, headers=AUTH)
    assert own.status_code == 202
    record = {"device_id": "d1", "seq": 8}
    Gateway._fill(ENDPOINTS["sensor_batch"], record, "unit", 0)
    assert record["producer"] == "gateway/unit"


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "bad_json"),
        (b'{"device_id": "d", "seq": NaN}', {"Content-Type": "application/json"}, 400, "bad_json"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "bad_json"),
        (b"[" * 100_000, {"Content-Type": "application/json"}, 400, "bad_json"),
        (json.dumps(_sensor()).encode(), {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (json.dumps(_sensor()).encode(), {}, 415, "unsupported_media_type"),
        (b"[]", {"Content-Type": "application/json"}, 422, "empty"),
        (b'"a string"', {"Content-Type": "application/json"}, 422, "invalid_event"),
        (
            json.dumps({**_sensor(), "series": [{"sensor": "t", "timestamps": [1], "values": []}]}).encode(),
            {"Content-Type": "application/json"},
            422,
            "invalid_event",
        ),
    ],
)
def test_bad_input_is_a_clear_4xx(client: TestClient, body: bytes, headers: dict, status: int, code: str) -> None:
    r = client.post("/v1/sensors", content=body, headers={**AUTH, **headers})
    assert r.status_code == status and r.json()["error"] == code and r.json()["message"]


def test_schema_rules_come_back_as_problems(client: TestClient) -> None:
    r = client.post(
        "/v1/audio",
        json={"conversation_id": "c", "seq": 0, "offset_ms": 0, "pcm": base64.b64encode(b"\x01\x02\x03").decode()},
        headers=AUTH,
    )
    assert r.status_code == 422 and "odd number of bytes" in r.json()["problems"][0]["message"]


def test_bodies_over_the_limit_get_413_declared_or_streamed() -> None:
    with _client(max_body_bytes=1000, max_events_per_request=2) as c:
        big = json.dumps({**_sensor(), "producer": "x" * 2000}).encode()
        r = c.post("/v1/sensors", content=big, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        r = c.post(
            "/v1/sensors",
            content=iter([big[:600], big[600:]]),  # chunked: no Content-Length
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert r.status_code == 413 and "content-length" not in {k.lower() for k in r.request.headers}
        r = c.post("/v1/clicks", json=[{"user_id": "u", "item_id": "i", "action": "CLICK"}] * 3, headers=AUTH)
        assert r.status_code == 413 and r.json()["error"] == "too_many_events"


def test_a_body_that_trickles_in_gets_408_and_its_connection_closed() -> None:
    """Slowloris: a POST that sends part of its body and then waits held its connection and what it sent for ever
    (uvicorn has no such limit), on real HTTP."""
    settings = GatewaySettings(tokens={"unit": TOKEN}, create_topics=False, shutdown_flush_s=0, body_timeout_s=0.2)
    with serve_gateway(settings, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")) as gw:
        host, port = gw.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(f"POST /v1/sensors HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                      f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n[{{".encode())
            s.settimeout(60)  # only ends a hung test
            answer = b""
            while chunk := s.recv(4096):  # until the gateway closes the connection
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and json.loads(body)["error"] == "body_timeout"


def test_a_connection_that_trickles_its_headers_or_sends_nothing_is_closed() -> None:
    """Slowloris on the request head: uvicorn times a connection only while it idles after an answer, so one that
    sent its headers a byte at a time, or nothing at all, held its connection for ever. Served as ``serve`` serves
    it, on real HTTP; a request sent at once, and the next one on its connection, are still answered."""
    import threading

    import uvicorn

    from connectors.gateway.server import uvicorn_options

    settings = GatewaySettings(tokens={"unit": TOKEN}, create_topics=False, shutdown_flush_s=0, head_timeout_s=0.3)
    app = create_app(settings, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **uvicorn_options(settings, "127.0.0.1", port)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the gateway did not start"
            thread.join(0.05)
        with socket.create_connection(("127.0.0.1", port)) as idle, \
                socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n")  # and the rest never
            for s in (idle, slow):
                s.settimeout(60)  # only ends a hung test
                assert s.recv(4096) == b""  # closed by the gateway
        with httpx.Client(timeout=60) as http:  # one kept-alive connection
            assert [http.get(f"http://127.0.0.1:{port}/openapi.json").status_code for _ in range(2)] == [200, 200]
    finally:
        server.should_exit = True
        thread.join(30)


def test_an_event_too_big_for_kafka_is_413_not_a_broker_error() -> None:
    with _client(max_body_bytes=10_000_000) as c:
        zeros = {**_sensor(), "series": [{"sensor": "t", "timestamps": [0] * 150_000, "values": [0] * 150_000}]}
        r = c.post("/v1/sensors", json=zeros, headers=AUTH)
        assert r.status_code == 413 and "Kafka message limit" in r.json()["message"]


def test_an_event_whose_key_takes_it_over_the_kafka_limit_is_413_not_503() -> None:
    """librdkafka counts key, headers and framing against message.max.bytes: an event whose Avro value fit but whose
    device id took it over was a 503 'retry with the same event_id', which no retry got past. On real HTTP."""
    settings = GatewaySettings(tokens={"unit": TOKEN}, create_topics=False, shutdown_flush_s=0)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"message.max.bytes": "2000"})
    with serve_gateway(settings, kafka) as gw:
        answers = {
            httpx.post(f"{gw.url}/v1/sensors", json=_sensor(device="d" * n), headers=AUTH, timeout=30).status_code
            for n in range(900, 1000, 5)  # from well within the limit to past it
        }
    assert answers == {202, 413}


def test_a_producer_queue_full_of_bytes_is_503_and_the_gateway_goes_on_answering() -> None:
    """Backpressure counts events; librdkafka's queue is bounded in bytes too, which large audio chunks reach first.
    Once it was full, producing waited for room on the event loop: no request, /health included, was answered
    until the broker came back. /health then said ok while every such event got 503, so a load balancer kept
    sending them; it is degraded until a delivery report frees room. On real HTTP, with nothing listening where
    the broker should be."""
    settings = GatewaySettings(tokens={"unit": TOKEN}, create_topics=False, shutdown_flush_s=0, retry_after_s=3)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"queue.buffering.max.kbytes": "256"})
    pcm = base64.b64encode(bytes(64_000)).decode()  # 2 s of 16 kHz audio
    with serve_gateway(settings, kafka) as gw:
        answers = []
        for seq in range(8):  # 4 fit in 256 KiB
            chunk = {"conversation_id": "c1", "seq": seq, "sample_rate": 16000, "offset_ms": 2000 * seq, "pcm": pcm}
            answers.append(httpx.post(f"{gw.url}/v1/audio", json=chunk, headers=AUTH, timeout=60))
        health = httpx.get(f"{gw.url}/health", timeout=60)
        gw.app.state.gateway.producer.client.purge()  # their failure reports free the room, as deliveries would
        for _ in range(600):  # only ends a hung test
            after = httpx.get(f"{gw.url}/health", timeout=60).json()
            if after["queue"] == 0:
                break
            time.sleep(0.05)
    refused = answers[-1]
    assert {r.status_code for r in answers} == {202, 503} and health.status_code == 503
    assert any("full of bytes" in p for p in health.json()["problems"])
    assert not any("full of bytes" in p for p in after["problems"])
    assert refused.headers["Retry-After"] == "3" and "queue is full" in refused.json()["message"]


def test_backpressure_answers_429_with_retry_after_while_the_broker_is_behind() -> None:
    with _client(max_queue=3, retry_after_s=2) as c:
        assert c.post("/v1/sensors", json=[_sensor(1), _sensor(2)], headers=AUTH).status_code == 202
        assert c.get("/health").status_code == 200
        assert c.post("/v1/sensors", json=_sensor(3), headers=AUTH).status_code == 202
        r = c.post("/v1/sensors", json=_sensor(4), headers=AUTH)
        assert r.status_code == 429 and r.headers["Retry-After"] == "2" and r.json()["error"] == "backpressure"
        health = c.get("/health")
        assert health.status_code == 503 and health.json()["queue"] == 3
        assert health.json()["refused_backpressure"] == 1 and health.json()["status"] == "degraded"
        with c.websocket_connect("/v1/ws", headers=AUTH) as ws:
            ws.send_text(json.dumps({"type": "sensor_batch", "event": _sensor(5), "ref": 9}))
            assert ws.receive_json() == {
                "ref": 9,
                "status": 429,
                "error": "backpressure",
                "message": r.json()["message"],
                "retry_after_s": 2,
            }


def test_websocket_acknowledges_each_frame(client: TestClient) -> None:
    with client.websocket_connect("/v1/ws", headers=AUTH) as ws:
        ws.send_text(
            json.dumps({"type": "click", "event": {"user_id": "u", "item_id": "i", "action": "CLICK"}, "ref": "r1"})
        )
        ack = ws.receive_json()
        assert ack["ref"] == "r1" and ack["status"] == 202 and ack["topic"] == "clicks"
        for frame, status in (
            ("nope", 400),
            ('{"type": "tweet", "event": {}}', 400),
            ('{"type": ["x"]}', 400),
            ('{"type": "click", "event": {}, "ref": 3}', 422),
            ('{"type": "click"}', 400),
            ('{"type": "click", "event": {}, "why": 1}', 400),
        ):
            ws.send_text(frame)
            answer = ws.receive_json()
            assert answer["status"] == status and answer["message"], frame
        ws.send_text("x" * 2_000_000)
        assert ws.receive_json()["status"] == 413


def test_websocket_without_a_token_is_refused(client: TestClient) -> None:
    from starlette.testclient import WebSocketDenialResponse

    with pytest.raises(WebSocketDenialResponse) as info, client.websocket_connect("/v1/ws"):
        pass
    assert info.value.status_code == 401


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.get("/v1/sensors")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"] == "method_not_allowed"
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/v1/sensors" in spec["paths"]


# -- scopes and per-token rates ---------------------------------------------------------------------------

OTHER = "another-unit-test-token-987"
THIRD = "a-third-unit-test-token-654"


def test_a_token_without_the_scope_gets_403_over_http_and_websocket() -> None:
    with _client(tokens={"unit": TOKEN, "edge": OTHER}, scopes={"edge": ["sensor_batch"]}) as c:
        edge = {"Authorization": f"Bearer {OTHER}"}
        assert c.post("/v1/sensors", json=_sensor(), headers=edge).status_code == 202
        r = c.post("/v1/clicks", json={"user_id": "u", "item_id": "i", "action": "CLICK"}, headers=edge)
        assert r.status_code == 403 and r.json()["error"] == "forbidden_event_type" and "sensor_batch" in r.json()["message"]
        assert c.post("/v1/clicks", json={"user_id": "u", "item_id": "i", "action": "CLICK"}, headers=AUTH).status_code == 202
        with c.websocket_connect("/v1/ws", headers=edge) as ws:
            ws.send_text(json.dumps({"type": "click", "event": {"user_id": "u", "item_id": "i", "action": "CLICK"}}))
            assert ws.receive_json()["status"] == 403


def test_a_token_with_key_scopes_acts_only_on_its_devices_and_calls() -> None:
    """Any token could post another device's readings, or hold another call system's conversation id so that the
    real call got 409. Tokens without key scopes still send every key."""
    from starlette.testclient import WebSocketDenialResponse

    scoped = {"edge": ["edge-*"], "acme": ["acme-call-1"]}
    with _client(tokens={"unit": TOKEN, "edge": OTHER, "acme": THIRD}, key_scopes=scoped) as c:
        edge, acme = {"Authorization": f"Bearer {OTHER}"}, {"Authorization": f"Bearer {THIRD}"}
        r = c.post("/v1/sensors", json=[_sensor(1, "edge-7"), _sensor(1, "pump-7")], headers=edge)
        assert r.status_code == 403 and r.json()["error"] == "forbidden_key" and "'pump-7'" in r.json()["message"]
        assert c.app.state.gateway.accepted == 0  # all or nothing
        assert c.post("/v1/sensors", json=_sensor(1, "edge-7"), headers=edge).status_code == 202
        assert c.post("/v1/sensors", json=_sensor(1, "pump-7"), headers=AUTH).status_code == 202  # unscoped
        with c.websocket_connect("/v1/ws", headers=edge) as ws:
            ws.send_text(json.dumps({"type": "sensor_batch", "event": _sensor(2, "pump-7")}))
            assert ws.receive_json()["status"] == 403
        with pytest.raises(WebSocketDenialResponse) as denied, \
                c.websocket_connect("/v1/audio/stream?conversation_id=acme-call-1", headers=edge):
            pass
        assert denied.value.status_code == 403
        with c.websocket_connect("/v1/audio/stream?conversation_id=acme-call-1", headers=acme) as ws:
            ws.send_bytes(b"\0\0" * 3200)
            assert ws.receive_json()["status"] == 202
        with c.websocket_connect("/v1/audio/twilio") as ws:
            ws.send_text(json.dumps({"event": "start", "start": {"callSid": "CA1",
                                                                 "customParameters": {"token": THIRD}}}))
            closed = ws.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 1008 and "forbidden_key" in closed["reason"]
    with pytest.raises(ValidationError, match="empty key"):
        GatewaySettings(tokens={"unit": TOKEN}, key_scopes={"unit": [""]})


def test_scopes_must_name_known_event_types_and_rates_be_positive() -> None:
    with pytest.raises(ValidationError, match="unknown event types"):
        GatewaySettings(tokens={"unit": TOKEN}, scopes={"unit": ["tweet"]})
    with pytest.raises(ValidationError, match="positive"):
        GatewaySettings(tokens={"unit": TOKEN}, rates={"unit": 0})


def test_over_the_rate_a_token_gets_429_with_retry_after_and_others_are_not_slowed() -> None:
    with _client(tokens={"unit": TOKEN, "edge": OTHER}, rates={"edge": 2}, rate_burst_s=2) as c:
        c.app.state.gateway.rates.clock = lambda: 0.0  # no refill while the test runs, however slowly
        edge = {"Authorization": f"Bearer {OTHER}"}
        assert c.post("/v1/sensors", json=[_sensor(1), _sensor(2), _sensor(3)], headers=edge).status_code == 202
        r = c.post("/v1/sensors", json=[_sensor(4), _sensor(5)], headers=edge)
        assert r.status_code == 429 and r.json()["error"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1 and "2 events per second" in r.json()["message"]
        big = c.post("/v1/sensors", json=[_sensor(i) for i in range(10, 15)], headers=edge)
        assert big.status_code == 413 and "split" in big.json()["message"]
        for i in range(20):  # a client without a rate is not limited by another's
            assert c.post("/v1/sensors", json=_sensor(100 + i), headers=AUTH).status_code == 202
        with c.websocket_connect("/v1/ws", headers=edge) as ws:
            ws.send_text(json.dumps({"type": "sensor_batch", "event": _sensor(6), "ref": 1}))
            ws.send_text(json.dumps({"type": "sensor_batch", "event": _sensor(7), "ref": 2}))
            answers = [ws.receive_json(), ws.receive_json()]
            assert answers[0]["status"] == 202 and answers[1]["status"] == 429 and answers[1]["retry_after_s"] >= 1


def test_the_rate_refills_with_time() -> None:
    from connectors.gateway.limits import RateLimits

    now = [0.0]
    rates = RateLimits({"*": 10}, burst_s=1, clock=lambda: now[0])
    rates.take("a", 10)
    with pytest.raises(GatewayError) as refused:
        rates.take("a", 5)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"
    rates.take("b", 10)  # each client has its own bucket under the default
    now[0] = 0.5
    rates.take("a", 5)
    with pytest.raises(GatewayError):
        rates.take("a", 1)


def test_refused_events_count_against_the_rate() -> None:
    # documented choice (RateLimits): the bucket guards the gateway's work too, so a flood of bad events is limited
    with _client(tokens={"unit": TOKEN, "edge": OTHER}, rates={"edge": 2}, rate_burst_s=1) as c:
        c.app.state.gateway.rates.clock = lambda: 0.0
        edge = {"Authorization": f"Bearer {OTHER}"}
        bad = c.post("/v1/sensors", json=[_sensor(1), {"device_id": "d1"}], headers=edge)
        assert bad.status_code == 422
        fixed = c.post("/v1/sensors", json=[_sensor(1), _sensor(2)], headers=edge)
        assert fixed.status_code == 429 and int(fixed.headers["Retry-After"]) >= 1


def test_an_unavailable_schema_registry_is_503_not_an_invalid_event(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.testing.schema_registry import SchemaRegistryStandIn

    registry = SchemaRegistryStandIn().start()
    registry.stop()  # configured, but nothing answers
    monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_URL", registry.url)
    monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_RETRIES", "0")
    with _client() as c:
        r = c.post("/v1/sensors", json=_sensor(), headers=AUTH)
        assert r.status_code == 503 and r.json()["error"] == "registry_unavailable"
        assert "unreachable" in r.json()["message"] and r.headers["Retry-After"] == "1"


def test_a_token_without_the_audio_scope_cannot_stream_a_call() -> None:
    from starlette.testclient import WebSocketDenialResponse

    with _client(tokens={"unit": TOKEN, "edge": OTHER}, scopes={"edge": ["sensor_batch"]}) as c:
        edge = {"Authorization": f"Bearer {OTHER}"}
        for path in ("/v1/audio/stream?conversation_id=c1", "/v1/audio/twilio"):
            with pytest.raises(WebSocketDenialResponse) as info, c.websocket_connect(path, headers=edge):
                pass
            assert info.value.status_code == 403, path
        with c.websocket_connect("/v1/audio/twilio") as ws:  # Twilio's way: the token as a stream parameter
            ws.send_text(json.dumps({"event": "start", "start": {"callSid": "CA1",
                                                                 "customParameters": {"token": OTHER}}}))
            closed = ws.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 1008 and "audio_chunk" in closed["reason"]
        with c.websocket_connect("/v1/audio/stream?conversation_id=c2", headers=AUTH) as ws:  # a token with it can
            ws.send_bytes(b"\0\0" * 3200)
            assert ws.receive_json()["status"] == 202


def test_a_call_stream_counts_against_its_token_rate() -> None:
    with _client(tokens={"unit": TOKEN, "edge": OTHER}, rates={"edge": 2}, rate_burst_s=1) as c:
        c.app.state.gateway.rates.clock = lambda: 0.0  # no refill while the test runs
        edge = {"Authorization": f"Bearer {OTHER}"}
        with c.websocket_connect("/v1/audio/stream?conversation_id=c1&chunk_ms=100", headers=edge) as ws:
            ws.send_bytes(b"\0\0" * 3200)  # 200 ms: two chunks, the token's whole burst
            assert [ws.receive_json()["status"] for _ in range(2)] == [202, 202]
            ws.send_bytes(b"\0\0" * 1600)
            closed = ws.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 1013 and "rate_limited" in closed["reason"]


def test_a_call_frame_over_the_message_limit_is_refused() -> None:
    with _client(max_body_bytes=4000) as c:
        with c.websocket_connect("/v1/audio/stream?conversation_id=c1", headers=AUTH) as ws:
            ws.send_bytes(b"\0\0" * 2001)
            closed = ws.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 1009 and "too_large" in closed["reason"]
        with c.websocket_connect("/v1/audio/twilio", headers=AUTH) as ws:
            ws.send_text(json.dumps({"event": "connected", "pad": "x" * 4000}))
            closed = ws.receive()
        assert closed["type"] == "websocket.close" and closed["code"] == 1009


def test_a_broker_refusal_partway_through_an_array_says_which_events_were_accepted(client: TestClient) -> None:
    from connectors.kafka import DeliveryError

    producer = client.app.state.gateway.producer
    produce, calls = producer.produce_raw, []

    def refuses_the_second(*args, **kwargs) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise DeliveryError("cannot produce: the broker went away")
        produce(*args, **kwargs)

    producer.produce_raw = refuses_the_second
    clicks = [{"user_id": "u", "item_id": f"i{i}", "action": "CLICK"} for i in range(3)]  # no ids of their own
    r = client.post("/v1/clicks", json=clicks, headers=AUTH)
    assert r.status_code == 503 and r.json()["accepted"] == 1 and "1 of the 3" in r.json()["message"]
    ids = r.json()["event_ids"]
    assert len(set(ids)) == 3 and client.app.state.gateway.accepted == 1
    retry = client.post("/v1/clicks", json=[{**c, "event_id": i} for c, i in zip(clicks, ids)], headers=AUTH)
    assert retry.status_code == 202 and retry.json()["event_ids"] == ids  # the accepted one again: a repeat to drop
    with client.websocket_connect("/v1/ws", headers=AUTH) as ws:  # the WebSocket answers the same
        calls.clear()
        ws.send_text(json.dumps({"type": "click", "event": clicks, "ref": 1}))
        answer = ws.receive_json()
    assert answer["status"] == 503 and answer["accepted"] == 1 and len(answer["event_ids"]) == 3
