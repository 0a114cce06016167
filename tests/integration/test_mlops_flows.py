"""The click, drift and quality flows as their own processes through the real broker, as production runs them.

Part of MovieLens is replayed to ``clicks`` with tastes inverted halfway (a concept drift at a known
point). ``eddyline run clicks`` predicts and learns, serving recommendations over HTTP; ``eddyline run
drift`` reads its predictions and feedback and raises drift events and alerts (delivered to a loopback
PagerDuty); ``eddyline run quality`` joins them into windowed metrics written to VictoriaMetrics through
influxdb-client. The drift events flow back to the click flow, which trains a challenger.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from connectors.broker import free_port
from connectors.testing.alert_receiver import AlertReceiver
from connectors.kafka import KafkaSettings, create_topics, read_topic
from models.registry import ModelRegistry
from schemas import ALERT, DRIFT, FEEDBACK, PREDICTION, AvroSerde
from streams.producers.clicks import produce_clicks, replay_ratings
from streams.flows.clicks import MODEL_NAME
from tests.fixtures.config import empty_config

pytestmark = pytest.mark.integration
RATINGS, INVERT_AT, MORE = 3000, 1500, 800
ROUTING_KEY = "fedcba9876543210fedcba9876543210"
serde = AvroSerde()


def start(flow: str, settings: KafkaSettings, tmp: Path, **env: str) -> subprocess.Popen:
    full = {
        **os.environ,
        "EDDYLINE_CONFIG": str(empty_config(tmp)),  # no stray eddyline.toml from the working directory
        "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "EDDYLINE_KAFKA_NAMESPACE": settings.namespace,
        "EDDYLINE_RUNTIME_EPOCH_INTERVAL_S": "0.5",
        **env,
    }
    log = (tmp / f"{flow}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "run", flow, "--state-dir", str(tmp / "state" / flow)],
        env=full, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def logs(tmp: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in sorted(tmp.glob("*.log")))


def unique(settings: KafkaSettings, topic: str, event_type: str, expected: int, timeout: float) -> dict[str, dict]:
    """Events by id (a replayed epoch repeats some), once ``expected`` distinct ones came or at ``timeout``."""
    deadline = time.monotonic() + timeout
    seen: dict[str, dict] = {}
    while True:
        for msg in read_topic(settings, topic, timeout=5, idle=0.5):
            rec = serde.decode(msg.value(), event_type)
            seen[rec["event_id"]] = rec
        if len(seen) >= expected or time.monotonic() >= deadline:
            return seen
        time.sleep(0.5)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def running(kafka_settings: KafkaSettings, tmp_path: Path, victoria, alert_receiver: AlertReceiver):
    alert_receiver.routing_keys = frozenset({ROUTING_KEY})
    # one partition: the click flow meets the replay in event-time order, so nothing is late by more than
    # the quality flow's lateness (with several, a fast replay of sparse history mixes days of event time in
    # one poll); predictions and feedback are still two topics, read at their own pace
    create_topics(kafka_settings, ["clicks"], partitions=1)
    port = free_port()
    influx = victoria.influx_settings("mlops")
    procs = {
        "clicks": start("clicks", kafka_settings, tmp_path, EDDYLINE_RECOMMEND_PORT=str(port),
                        EDDYLINE_RETRAINING_REGISTRY_DIR=str(tmp_path / "registry"),
                        EDDYLINE_RETRAINING_MIN_FRESH="300", EDDYLINE_RETRAINING_TRAIN_WINDOW="300",
                        EDDYLINE_RETRAINING_SHADOW_EVENTS="300", EDDYLINE_RETRAINING_COOLDOWN="100000"),
        "drift": start("drift", kafka_settings, tmp_path, EDDYLINE_DRIFT_REFERENCE_SIZE="400",
                       EDDYLINE_DRIFT_WINDOW_SIZE="400", EDDYLINE_DRIFT_CHECK_EVERY="200"),
        "notify": start("notify", kafka_settings, tmp_path, EDDYLINE_PAGERDUTY_ROUTING_KEY=ROUTING_KEY,
                        EDDYLINE_PAGERDUTY_URL=alert_receiver.pagerduty_url,
                        EDDYLINE_PAGERDUTY_CA_FILE=str(alert_receiver.ca_file), EDDYLINE_NOTIFY_BACKOFF_S="0.05"),
        "quality": start("quality", kafka_settings, tmp_path, EDDYLINE_INFLUX_URL=influx.url,
                         EDDYLINE_INFLUX_TOKEN="test-token", EDDYLINE_INFLUX_BUCKET="mlops",
                         EDDYLINE_INFLUX_FLUSH_INTERVAL_MS="100", EDDYLINE_INFLUX_BATCH_SIZE="100"),
    }
    stats = produce_clicks(kafka_settings, count=RATINGS, invert_after=INVERT_AT)
    try:
        yield {"procs": procs, "api": f"http://127.0.0.1:{port}", "stats": stats, "registry": tmp_path / "registry",
               "tmp": tmp_path}
    finally:
        for proc in procs.values():
            stop(proc)


def test_clicks_drift_and_quality_flows_run_as_processes_through_the_broker(
        running, kafka_settings, victoria, alert_receiver) -> None:
    tmp, stats = running["tmp"], running["stats"]
    ratings = replay_ratings(count=RATINGS, invert_after=INVERT_AT)
    assert stats.ratings == RATINGS and stats.impressions == RATINGS and stats.clicks == sum(r.liked for r in ratings)
    assert len(read_topic(kafka_settings, "clicks", expected=stats.events, timeout=30)) == stats.events

    preds = unique(kafka_settings, "predictions", PREDICTION, RATINGS, timeout=60)
    assert len(preds) == RATINGS, logs(tmp)
    feedback = unique(kafka_settings, "feedback", FEEDBACK, RATINGS, timeout=30)
    assert {f["prediction_id"] for f in feedback.values()} == set(preds), logs(tmp)
    assert {p["model_name"] for p in preds.values()} == {MODEL_NAME}

    # drift: data drift on the click model's rates and ratings, and concept drift on its errors (the
    # inverted tastes make one likely; test_retraining_flow.py pins the injected one down, in event-time order)
    deadline = time.monotonic() + 30
    while True:
        drifts = unique(kafka_settings, "drift", DRIFT, 10**9, timeout=0)  # whatever came so far
        if {d["kind"] for d in drifts.values()} == {"DATA", "CONCEPT"}:
            break
        assert time.monotonic() < deadline, f"drift events: {drifts}\n{logs(tmp)}"
        time.sleep(1)
    assert all(d["window_start"] <= d["window_end"] and d["model_name"] == MODEL_NAME for d in drifts.values())
    features = {d["feature"] for d in drifts.values() if d["kind"] == "DATA"}
    assert not features & {"item_log_count", "user_log_count", "bias"}  # growing counts are not watched
    alerts = unique(kafka_settings, "alerts", ALERT, 1, timeout=10)
    assert {a["details"]["drift_event_id"] for a in alerts.values() if a["status"] == "OPENED"} <= set(drifts)
    assert alert_receiver.wait_for(lambda r: len(r.incidents) >= 1, timeout=30), logs(tmp)
    assert not alert_receiver.rejected

    # retraining: the concept drift went back to the click flow, which trains a challenger on the outcomes
    # that follow it: the stream goes on (still inverted)
    produce_clicks(kafka_settings, count=MORE, skip=RATINGS, invert_after=0)
    assert unique(kafka_settings, "predictions", PREDICTION, RATINGS + MORE, timeout=30).keys() >= preds.keys()
    reg = ModelRegistry(running["registry"])
    deadline = time.monotonic() + 30
    while len(reg.versions(MODEL_NAME)) < 2:
        assert time.monotonic() < deadline, f"no challenger registered\n{logs(tmp)}"
        time.sleep(1)
    challenger = reg.get(MODEL_NAME, "2")
    assert challenger.parent == "1" and challenger.info["trigger_id"] in drifts
    assert drifts[challenger.info["trigger_id"]]["kind"] == "CONCEPT"

    # quality: windows in VictoriaMetrics, every closed window's predictions answered (none missing)
    deadline = time.monotonic() + 30
    while True:
        series = victoria.export(f'{{__name__=~"model_quality_.*",model_name="{MODEL_NAME}"}}')
        by_name: dict[str, list[float]] = {}
        for s in series:
            by_name.setdefault(s["metric"]["__name__"], []).extend(s["values"])
        if sum(by_name.get("model_quality_predictions", [])) >= RATINGS // 2:
            break
        assert time.monotonic() < deadline, (f"quality windows: {by_name.get('model_quality_predictions')}, late: "
                                             f"{sum(by_name.get('model_quality_late_events', []))}\n{logs(tmp)}")
        time.sleep(1)
    assert sum(by_name["model_quality_labelled"]) == sum(by_name["model_quality_predictions"])
    assert sum(by_name["model_quality_missing_feedback"]) == 0
    assert sum(by_name["model_quality_late_events"]) == 0
    assert by_name["model_quality_log_loss"] and all(v >= 0 for v in by_name["model_quality_log_loss"])


def test_recommendations_over_http_from_the_running_click_flow(running, kafka_settings) -> None:
    tmp = running["tmp"]
    ratings = replay_ratings(count=RATINGS, invert_after=INVERT_AT)
    unique(kafka_settings, "predictions", PREDICTION, RATINGS, timeout=60)  # the model has seen every rating
    user = max({r.user for r in ratings}, key=lambda u: sum(r.user == u for r in ratings))
    rated = {r.item for r in ratings if r.user == user}
    status, body = get(f"{running['api']}/recommendations/{user}?k=20")
    assert status == 200, logs(tmp)
    assert body["model_name"] == MODEL_NAME and body["model_version"] in {"1", "2", "3"}
    items = [i["item_id"] for i in body["items"]]
    assert len(items) == 20 and not set(items) & rated
    assert set(items) <= {r.item for r in ratings}
    status, body = get(f"{running['api']}/recommendations/{user}?k=20&include_seen=true")
    assert status == 200 and {i["item_id"] for i in body["items"]} & rated
    assert get(f"{running['api']}/models")[1]["models"][0]["model_name"] == MODEL_NAME
