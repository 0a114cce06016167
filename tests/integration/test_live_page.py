"""The live page in headless Chromium while real events flow through the real broker.

Scores and alerts come from the anomaly flow's processor over simulated devices, drift and its alerts from
the drift flow's processor over predictions whose feature and errors shift; predictions and feedback also
feed model quality. Sentiment records are built to the schema (the audio flow needs a trained model).
The page must fill every panel, then update in place when more events arrive, without a reload. The charts
are read back from the page (the columns the charting library holds) and compared with what was produced:
a device's readings, scores and alert markers, output throughput, a flow group's consumer lag and a call's
sentiment. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from confluent_kafka import TopicPartition

from connectors.kafka import EventProducer, KafkaSettings, create_topics, make_consumer, read_topic
from schemas import FEEDBACK, PREDICTION, ROUTING_RECOMMENDATION, SENSOR_BATCH, SENTIMENT_SCORE
from streams.apps.live import LivePage
from streams.apps.live.charts import ChartLimits
from streams.apps.live.state import OUTPUTS, TOPICS, LiveLimits
from streams.engines.lag import consumer_group
from streams.flows import drift, fleet
from streams.processor import Emit, Event, run_local
from streams.flows.sensor_anomaly import sensor_anomaly_flow
from streams.producers.simulator import SensorSimulator

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PANELS = ("anomalies", "alerts", "sentiment", "quality", "drift", "fleet")
T0 = 1_700_000_000_000


def sensor_outputs() -> list[Emit]:
    """The simulated readings and what the anomaly flow made of them (scores, alerts)."""
    sim = SensorSimulator(devices=3, readings_per_message=40, anomaly_rate=0.01, seed=3)
    records = list(itertools.islice(sim, 90))
    emits = run_local(sensor_anomaly_flow(), [Event("sensor.readings", r["device_id"], r) for r in records])
    readings = [Emit("sensor.readings", r["device_id"], SENSOR_BATCH, r) for r in records]
    return readings + [e for e in emits if e.topic in TOPICS]


def model_events(n: int = 2400) -> list[Event]:
    """Predictions and feedback of one model whose 'amount' feature shifts halfway and whose errors grow
    (halfway is past the drift detectors' 800-value warm-up)."""
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        pid, score = f"p{i}", float(rng.uniform())
        out.append(
            Event(
                "predictions",
                "churn",
                {
                    "event_id": pid,
                    "event_time": T0 + i * 100,
                    "producer": "test",
                    "model_name": "churn",
                    "model_version": "1",
                    "subject_id": f"u{i % 7}",
                    "item_id": None,
                    "features_digest": "x",
                    "features": {"amount": float(rng.normal(0 if i < n // 2 else 3, 1))},
                    "score": score,
                    "label": None,
                    "latency_ms": 1.5 + i % 5,
                    "error": None,
                },
            )
        )
        right = float(score > 0.5) if i < n // 2 else float(score < 0.5)
        out.append(
            Event(
                "feedback",
                "churn",
                {
                    "event_id": f"f{i}",
                    "event_time": T0 + i * 100 + 50,
                    "producer": "test",
                    "model_name": "churn",
                    "prediction_id": pid,
                    "label": right,
                },
            )
        )
    return out


def sentiment(conversation: str, segment: int, score: float) -> dict[str, Any]:
    label = "negative" if score < -0.2 else "positive" if score > 0.2 else "neutral"
    return {
        "event_id": f"{conversation}-{segment}",
        "event_time": T0 + segment * 1000,
        "producer": "test",
        "source_event_id": f"t-{conversation}-{segment}",
        "conversation_id": conversation,
        "segment": segment,
        "text": f"segment {segment} of {conversation}",
        "label": label,
        "score": score,
        "probabilities": {},
        "rolling_score": score,
        "model": "minilm-head",
    }


def publish(settings: KafkaSettings, emits: list[Emit], chunk: int = 0) -> None:
    """``chunk``: flush every so many events, so that two topics arrive in step, as a live model's would."""
    with EventProducer(settings) as producer:
        for i, e in enumerate(emits, start=1):
            producer.produce(e.topic, e.event_type, e.record, key=e.key)
            if chunk and i % chunk == 0:
                producer.flush()


def fleet_outputs() -> list[Emit]:
    """Heartbeats of three devices, one of which stops, and the fleet flow's alert about it."""
    from schemas.catalog import DEVICE_HEALTH

    def beat(device: str, t: int) -> dict:
        return {"event_id": f"{device}-hb-{t}", "event_time": T0 + t, "producer": "test", "device_id": device,
                "seq": t // 1000, "device_class": "rpi4", "agent_version": "0.1.0", "interval_s": 1.0,
                "model_version": "residual_w16_int8" if device == "pi-3" else None, "model_state": "none",
                "model_message": None, "buffer_depth": 0, "buffer_readings": 0, "buffer_oldest_age_s": 0.0,
                "send_rate": 10.0, "sampled_readings": t, "acked_readings": t, "errors": 0, "dropped_readings": 0,
                "cpu_percent": 1.0, "rss_mb": 38.0, "inference_latency_ms": None, "clock_offset_ms": None}

    beats = [beat(d, t) for t in range(0, 10_000, 1000) for d in ("pi-1", "pi-2", "pi-3") if d != "pi-2" or t < 3000]
    emits = run_local(fleet.flow(silent_after_s=4), [Event("device.health", b["device_id"], b) for b in beats])
    assert [e.record["entity"] for e in emits if e.topic == "alerts"] == ["pi-2"]
    return [Emit("device.health", b["device_id"], DEVICE_HEALTH, b) for b in beats] + [
        e for e in emits if e.topic == "alerts"]


def first_batch() -> tuple[list[Emit], list[Emit]]:
    """The outputs of the flows, and the predictions and feedback (in event-time order) they came from."""
    events = model_events()
    emits = sensor_outputs() + fleet_outputs()
    emits += run_local(drift.flow(reference_size=200, window_size=200, check_every=100), events)
    emits += [
        Emit("scores.sentiment", c, SENTIMENT_SCORE, sentiment(c, s, v))
        for c, scores in {"call-01": [0.6, 0.1], "call-02": [-0.7, -0.5, -0.8]}.items()
        for s, v in enumerate(scores)
    ]
    emits.append(Emit("routing", "call-02", ROUTING_RECOMMENDATION, {
        "event_id": "route-call-02-2", "event_time": T0 + 2000, "producer": "test", "source_event_id": "t-call-02-2",
        "conversation_id": "call-02", "segment": 2, "action": "escalate_supervisor", "previous_action": "keep",
        "rule": "angry", "reason": "anger in 2 of the last 3 segments (furious), rolling sentiment -0.67",
        "rolling_score": -0.67, "trend": -0.1, "emotion": "anger", "emotion_share": 0.67, "emotion_model": "nrc"}))
    return emits, [Emit(e.topic, e.key, PREDICTION if e.topic == "predictions" else FEEDBACK, e.record) for e in events]


def rows(page: Any, panel: str) -> int:
    return page.locator(f"#panel-{panel} tbody tr").count()


def test_live_page_fills_every_panel_and_updates_without_reload(kafka_settings, chromium, tmp_path) -> None:
    create_topics(kafka_settings, list(TOPICS))
    outputs, model_inputs = first_batch()
    assert {e.topic for e in outputs + model_inputs} == set(TOPICS)
    with LivePage(kafka_settings, port=0) as live:
        assert live.url.startswith("http://127.0.0.1:")
        publish(kafka_settings, outputs)
        publish(kafka_settings, model_inputs, chunk=40)
        page = chromium.new_page()
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        page.goto(live.login_url())
        assert page.url == live.url, "the login link leads to the page"
        for panel in PANELS:
            page.wait_for_function(f"document.querySelector('#panel-{panel}').dataset.rows !== '0'", timeout=60_000)
        page.wait_for_selector("#status.up")
        loaded_at = page.evaluate("window.eddyline.loadedAt")
        before = {p: rows(page, p) for p in PANELS}
        assert all(before.values()), before
        view = live.snapshot()
        assert page.locator("#panel-drift tbody").inner_text().count("churn") == len(view["drift"]["recent"]) >= 2
        assert {w["model_name"] for w in view["quality"]["windows"]} == {"churn"}
        assert "call-02" in page.locator("#panel-sentiment").inner_text()
        assert "escalate_supervisor" in page.locator("#panel-sentiment").inner_text()  # the routing, with its reason
        assert "anger in 2 of the last 3 segments" in page.locator("#panel-sentiment").inner_text()
        whys = [a["why"] for a in view["alerts"]["open"] if a["source"] == "sensor-anomaly"]
        assert whys and all(whys), view["alerts"]["open"]  # every open sensor alert says why it fired
        assert whys[0] in page.locator("#panel-alerts tbody").inner_text()
        assert view["fleet"]["devices"] == 3 and [r["device"] for r in view["fleet"]["trouble"]] == ["pi-2"]
        assert "pi-2" in page.locator("#fleet-trouble tbody").inner_text()

        shot = tmp_path / "live_page.png"
        page.screenshot(path=str(shot), full_page=True)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "live_page.png")
        assert shot.stat().st_size > 10_000

        messages = page.evaluate("window.eddyline.messages")
        publish(kafka_settings, [Emit("scores.sentiment", "call-03", SENTIMENT_SCORE, sentiment("call-03", 0, -0.9))])
        page.wait_for_function(
            "document.querySelector('#panel-sentiment').innerText.includes('call-03')", timeout=30_000
        )
        assert rows(page, "sentiment") == before["sentiment"] + 1
        assert page.evaluate("window.eddyline.loadedAt") == loaded_at
        assert page.evaluate("window.eddyline.messages") > messages
        assert [u for u in navigations if "/login" not in u] == [live.url], "the page must update in place, never reload"


def chart(page: Any, name: str) -> list[list[Any]] | None:
    """The columns a chart on the page holds (x first), as the charting library has them."""
    return page.evaluate(f"window.eddyline.charts.{name}.data")


def commit_half(settings: KafkaSettings, group: str, topic: str) -> int:
    """Commit each partition of ``topic`` halfway for ``group``; returns the lag that leaves."""
    counts: dict[int, int] = {}
    for msg in read_topic(settings, topic, idle=2.0):
        counts[msg.partition()] = counts.get(msg.partition(), 0) + 1
    consumer = make_consumer(settings, group)
    consumer.commit(offsets=[TopicPartition(settings.topic(topic), p, n // 2) for p, n in counts.items()],
                    asynchronous=False)
    consumer.close()
    return sum(n - n // 2 for n in counts.values())


def test_charts_draw_what_was_sent(kafka_settings, chromium) -> None:
    create_topics(kafka_settings, list(TOPICS))
    outputs = sensor_outputs()
    calls = {"call-01": [0.6, 0.1, 0.4, 0.7], "call-02": [-0.7, -0.5, -0.8, -0.2, 0.1, -0.9]}
    outputs += [Emit("scores.sentiment", c, SENTIMENT_SCORE, sentiment(c, i, v))
                for c, scores in calls.items() for i, v in enumerate(scores)]
    alerts = [e.record for e in outputs if e.topic == "alerts" and e.record["details"].get("device_id")]
    assert alerts, "the simulated fleet must raise alerts for the markers"
    device, sensor = alerts[0]["details"]["device_id"], alerts[0]["details"]["sensor"]
    readings = {t: v for e in outputs if e.topic == "sensor.readings" and e.key == device
                for s in e.record["series"] if s["sensor"] == sensor for t, v in zip(s["timestamps"], s["values"])}
    scores = {t: v for e in outputs if e.topic == "scores.anomaly" and e.key == device
              for s in e.record["series"] if s["sensor"] == sensor for t, v in zip(s["timestamps"], s["scores"])}
    marks = [a for a in alerts if (a["details"]["device_id"], a["details"]["sensor"]) == (device, sensor)]
    sent = {t: sum(e.topic == t for e in outputs) for t in OUTPUTS if any(e.topic == t for e in outputs)}

    limits = LiveLimits(charts=ChartLimits(points=5_000))  # every reading sent fits: compared one by one
    with LivePage(kafka_settings, port=0, limits=limits, lag_interval_s=0.5) as live:
        publish(kafka_settings, outputs)
        lag = commit_half(kafka_settings, consumer_group("sensor-anomaly", "faust", kafka_settings),
                          "sensor.readings")
        page = chromium.new_page()
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        page.goto(live.login_url())
        page.wait_for_selector("#status.up")
        page.wait_for_function(f"document.querySelector('#pick-device').textContent.includes('{device}')",
                               timeout=60_000)
        page.select_option("#pick-device", device)
        page.wait_for_function(f"window.eddyline.view.device_chart.device === '{device}'", timeout=30_000)
        page.select_option("#pick-sensor", sensor)
        page.select_option("#pick-call", "call-02")
        total = len(readings)
        page.wait_for_function(
            f"""(() => {{ const v = window.eddyline.view, d = window.eddyline.charts.device.data;
                 return v.device_chart.sensor === '{sensor}' && v.call_chart.call === 'call-02'
                   && v.device_chart.alerts.length === {len(marks)}
                   && d && d[0].length === {total} && d[2].filter((x) => x !== null).length === {len(scores)}; }})()""",
            timeout=60_000,
        )
        xs, values, drawn_scores = chart(page, "device")
        assert {round(x * 1000): v for x, v in zip(xs, values)} == readings
        assert {round(x * 1000): v for x, v in zip(xs, drawn_scores) if v is not None} == scores
        drawn_marks = page.evaluate("window.eddyline.charts.device.extra.alerts")
        assert sorted((round(m["time"] * 1000), m["status"]) for m in drawn_marks) == sorted(
            (a["event_time"], a["status"]) for a in marks)  # alerts of different incidents: any partition order

        call_x, call_scores, rolling = chart(page, "call")
        assert call_scores == calls["call-02"] and rolling == calls["call-02"]
        assert call_x == [(T0 + i * 1000) / 1000 for i in range(len(calls["call-02"]))]

        page.wait_for_function(
            f"""(() => {{ const d = window.eddyline.charts.throughput.data;
                 const sum = (col) => col.reduce((a, b) => a + b, 0);
                 return d && d.slice(1).reduce((n, col) => n + sum(col), 0) === {sum(sent.values())}; }})()""",
            timeout=30_000,
        )
        names = page.evaluate("window.eddyline.view.charts.throughput.series")
        columns = chart(page, "throughput")[1:]
        assert {n: sum(col) for n, col in zip(names, columns)} == sent

        group_label = "sensor-anomaly · faust"
        page.wait_for_function(
            f"""(() => {{ const c = window.eddyline.view.charts.lag, d = window.eddyline.charts.lag.data;
                 const i = c.series.indexOf('{group_label}');
                 return d && i >= 0 && d[i + 1][d[i + 1].length - 1] === {lag}; }})()""",
            timeout=30_000,
        )
        assert page.evaluate("window.eddyline.view.charts.lag.series") == [group_label]  # no other group committed

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "live_charts.png"), full_page=True)
        page.locator("#charts").screenshot(path=str(ARTIFACTS / "live_charts_top.png"))

        # more readings for the chosen device: its chart grows in place, no reload
        loaded_at = page.evaluate("window.eddyline.loadedAt")
        sim = SensorSimulator(devices=3, readings_per_message=40, anomaly_rate=0.0, seed=3)
        more = [r for r in itertools.islice(sim, 120) if r["device_id"] == device][-3:]
        for i, r in enumerate(more):
            r["event_id"] = f"more-{i}"
            for s in r["series"]:
                s["timestamps"] = [t + 10_000_000 for t in s["timestamps"]]
        publish(kafka_settings, [Emit("sensor.readings", device, SENSOR_BATCH, r) for r in more])
        page.wait_for_function(f"window.eddyline.charts.device.data[0].length === {total + 3 * 40}", timeout=30_000)
        assert page.evaluate("window.eddyline.loadedAt") == loaded_at
        assert [u for u in navigations if "/login" not in u] == [live.url], "the charts must update in place, never reload"


def test_a_client_picks_its_charts_over_the_websocket_and_is_told_what_a_bad_pick_is(kafka_settings) -> None:
    import json

    from websockets.sync.client import connect

    create_topics(kafka_settings, list(TOPICS))
    records = list(itertools.islice(SensorSimulator(devices=2, readings_per_message=5, seed=1), 4))
    publish(kafka_settings, [Emit("sensor.readings", r["device_id"], SENSOR_BATCH, r) for r in records])
    with LivePage(kafka_settings, port=0) as live, connect(
        live.url.replace("http", "ws") + "ws", additional_headers={"Authorization": f"Bearer {live.token}"}
    ) as ws:
        view = json.loads(ws.recv())
        while len(view["charts"]["devices"]) < 2:
            view = json.loads(ws.recv(timeout=30))
        ws.send("not json")
        answer = json.loads(ws.recv(timeout=10))
        while "error" not in answer:  # a push may come first
            answer = json.loads(ws.recv(timeout=10))
        assert "JSON object" in answer["error"]
        ws.send(json.dumps({"device": ["not", "a", "name"], "call": 3}))  # the latest device and call instead
        assert json.loads(ws.recv(timeout=10))["device_chart"] is not None
        ws.send(json.dumps({"device": "device-000", "sensor": "vibration"}))
        view = json.loads(ws.recv(timeout=10))
        while "error" in view or view["device_chart"]["sensor"] != "vibration":
            view = json.loads(ws.recv(timeout=10))
        assert view["device_chart"]["device"] == "device-000"
        sent = [v for r in records if r["device_id"] == "device-000" for s in r["series"] if s["sensor"] == "vibration"
                for v in s["values"]]
        assert view["device_chart"]["data"][1] == sent


def test_a_bad_event_is_counted_and_a_silent_devices_age_survives_a_restart_of_the_page(
        kafka_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """An event a view's handler raised on (a model version with '|' once broke the quality join; here a handler
    that raises stands for any such bug) killed the page's reader (the page froze), and a device's 'last heard' was
    when the page read its heartbeat: 0 s ago for one silent an hour, after a restart."""
    import json
    import time
    import urllib.request

    from schemas import ALERT
    from schemas.catalog import DEVICE_HEALTH
    from streams.apps.live.state import LiveState

    def broken(self: LiveState, rec: dict[str, Any]) -> None:
        raise ValueError(f"cannot file {rec['event_id']}")

    monkeypatch.setattr(LiveState, "_feedback", broken)

    create_topics(kafka_settings, list(TOPICS))
    hour_ago = int(time.time() * 1000) - 3_600_000
    beat = next(e.record for e in fleet_outputs() if e.topic == "device.health" and e.key == "pi-2")
    silent = {"event_id": "silent-pi-2", "event_time": hour_ago + 60_000, "producer": "test", "alert_key": "silent",
              "status": "OPENED", "severity": "ERROR", "source": "fleet", "entity": "pi-2", "summary": "pi-2 silent",
              "value": None, "details": {"kind": "silent", "device_id": "pi-2"}}
    with EventProducer(kafka_settings) as producer:  # Tansu keeps the create time given: an hour-old heartbeat
        producer.produce("device.health", DEVICE_HEALTH, beat, key="pi-2", timestamp_ms=hour_ago)
        for e in model_events(20):
            producer.produce(e.topic, PREDICTION if e.topic == "predictions" else FEEDBACK, e.record, key=e.key)
        producer.produce("alerts", ALERT, silent, key="pi-2")
    limits = LiveLimits(quality_window_ms=100, quality_wait_ms=100, quality_lateness_ms=0)
    with LivePage(kafka_settings, port=0, limits=limits) as live:
        request = urllib.request.Request(live.url + "snapshot.json", headers={"Authorization": f"Bearer {live.token}"})
        view: dict[str, Any] = {}
        for _ in range(150):
            view = json.loads(urllib.request.urlopen(request, timeout=10).read())
            if view["fleet"]["trouble"] and view["rejected"]:
                break
            time.sleep(0.2)
        assert [(r["device"], r["state"]) for r in view["fleet"]["trouble"]] == [("pi-2", "silent")]
        assert view["fleet"]["trouble"][0]["age_s"] >= 3600
        assert set(view["rejected"]["feedback"]) == {"ValueError"}
        assert live.reader.is_alive()


def test_a_client_that_stops_reading_skips_views_instead_of_queueing_them(kafka_settings) -> None:
    """Every push went into a stalled client's write buffer (a laptop asleep, a stuck proxy) until the keepalive gave
    up: a hundred views in memory per such client, and a slow link's pongs stuck behind them. Now it gets the latest
    view once the last one has gone out."""
    import base64
    import json
    import os
    import socket

    from websockets.sync.client import connect

    create_topics(kafka_settings, list(TOPICS))
    with LivePage(kafka_settings, port=0, push_interval_s=0.01) as live:
        with live.lock:  # a view of some size: conversations' last words
            for c in range(100):
                live.state.apply("scores.sentiment", {**sentiment(f"call-{c}", 0, 0.1), "text": "words " * 33})
        view_bytes = len(json.dumps(live.snapshot()))
        with socket.socket() as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect((live.host, live.port))
            stalled.sendall((f"GET /ws HTTP/1.1\r\nHost: {live.host}:{live.port}\r\nUpgrade: websocket\r\n"
                             f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}"
                             f"\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {live.token}\r\n\r\n").encode())
            assert stalled.recv(12) == b"HTTP/1.1 101"  # and then it reads nothing for a while
            with connect(live.url.replace("http", "ws") + "ws",
                         additional_headers={"Authorization": f"Bearer {live.token}"}) as ws:
                ws.recv(timeout=10)
                for _ in range(200):  # 200 changes, each seen by the client that reads
                    with live.lock:
                        live.state.reject("drift", "undecodable")
                        want = live.state.version
                    while json.loads(ws.recv(timeout=10))["version"] < want:
                        pass
                (backlog,) = [c.transport.get_write_buffer_size() for c in live.clients
                              if c.remote_address[1] == stalled.getsockname()[1]]
            assert backlog < 2 * view_bytes, f"{backlog} bytes queued for a client that reads nothing"
            got = b""
            stalled.settimeout(10)
            while f'"version": {want},'.encode() not in got:  # reading again, it gets the latest view
                chunk = stalled.recv(65536)
                assert chunk, "the page closed the connection"
                got = got[-100:] + chunk
