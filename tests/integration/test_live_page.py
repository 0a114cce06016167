"""The live page in headless Chromium while real events flow through the real broker.

Scores and alerts come from the anomaly flow's processor over simulated devices, drift and its alerts from
the drift flow's processor over predictions whose feature and errors shift; predictions and feedback also
feed model quality. Sentiment records are built to the schema (the audio flow needs a trained model).
The page must fill every panel, then update in place when more events arrive, without a reload.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.kafka import EventProducer, KafkaSettings, create_topics
from schemas import FEEDBACK, PREDICTION, SENTIMENT_SCORE
from streams.flows import drift
from streams.apps.live import LivePage
from streams.apps.live.state import TOPICS
from streams.processor import Emit, Event, run_local
from streams.flows.sensor_anomaly import sensor_anomaly_flow
from streams.producers.simulator import SensorSimulator

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PANELS = ("anomalies", "alerts", "sentiment", "quality", "drift")
T0 = 1_700_000_000_000


def sensor_outputs() -> list[Emit]:
    sim = SensorSimulator(devices=3, readings_per_message=40, anomaly_rate=0.01, seed=3)
    records = list(itertools.islice(sim, 90))
    emits = run_local(sensor_anomaly_flow(), [Event("sensor.readings", r["device_id"], r) for r in records])
    return [e for e in emits if e.topic in TOPICS]


def model_events(n: int = 1200) -> list[Event]:
    """Predictions and feedback of one model whose 'amount' feature shifts halfway and whose errors grow."""
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


def first_batch() -> tuple[list[Emit], list[Emit]]:
    """The outputs of the flows, and the predictions and feedback (in event-time order) they came from."""
    events = model_events()
    emits = sensor_outputs()
    emits += run_local(drift.flow(reference_size=200, window_size=200, check_every=100), events)
    emits += [
        Emit("scores.sentiment", c, SENTIMENT_SCORE, sentiment(c, s, v))
        for c, scores in {"call-01": [0.6, 0.1], "call-02": [-0.7, -0.5, -0.8]}.items()
        for s, v in enumerate(scores)
    ]
    return emits, [Emit(e.topic, e.key, PREDICTION if e.topic == "predictions" else FEEDBACK, e.record) for e in events]


@pytest.fixture
def chromium(tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(  # a fresh profile in the test's own folder
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            viewport={"width": 1400, "height": 1100},
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


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
        page.goto(live.url)
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
        assert navigations == [live.url], "the page must update in place, never reload"
