"""The model-security flow and the click flow as processes through the real broker: a producer flooding one item
is quarantined, its events are still scored but not learned, an alert says why, and an operator's release
lets it back in (``eddyline security list`` / ``release``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from schemas import ALERT, CLICK, FEEDBACK, PREDICTION, QUARANTINE, AvroSerde, derive_id
from streams.flows.clicks import MODEL_NAME
from streams.producers.clicks import produce_clicks
from tests.integration.test_mlops_flows import logs, start, stop
from tests.fixtures.config import empty_config

pytestmark = pytest.mark.integration
serde = AvroSerde()
HONEST = 600
BOT, TARGET = "bot.flood", "m-pushed"


def records(settings: KafkaSettings, topic: str, event_type: str) -> list[dict]:
    return [serde.decode(m.value(), event_type) for m in read_topic(settings, topic, timeout=5, idle=0.5)]


def wait_for(what: str, check, timeout: float, tmp: Path):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out waiting for {what}\n{logs(tmp)}")
        time.sleep(0.5)


class Bot:
    """Rated impressions of one item, liked, from fake users: the flood."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings, self.n = settings, 0

    def send(self, count: int) -> list[str]:
        ids = []
        with EventProducer(self.settings) as producer:
            for _ in range(count):
                self.n += 1
                eid = f"bot-{self.n}"
                user = f"fake-{self.n % 40}"
                rec = {"event_id": eid, "event_time": 1_500_000_000_000 + self.n * 1000, "producer": BOT,
                       "user_id": user, "item_id": TARGET, "action": "IMPRESSION", "impression_id": None,
                       "position": None, "rating": 5.0, "context": {"genres": "Drama"}}
                producer.produce("clicks", CLICK, rec, key=user)
                ids.append(eid)
        return ids


def pred_id(event_id: str) -> str:
    return derive_id(event_id, MODEL_NAME, "prediction")


def fed_back(settings: KafkaSettings, event_ids: list[str]) -> tuple[set[str], set[str]]:
    """Which of these impressions were scored, and which were learned (a feedback event carries what was)."""
    preds = {p["event_id"] for p in records(settings, "predictions", PREDICTION)}
    learned = {f["prediction_id"] for f in records(settings, "feedback", FEEDBACK)}
    wanted = {pred_id(e) for e in event_ids}
    return wanted & preds, wanted & learned


def probe_learned(bot: Bot) -> bool | None:
    """Send one bot impression and say whether the click flow learned it (None: not scored within 30 s)."""
    ids = bot.send(1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        scored, learned = fed_back(bot.settings, ids)
        if scored:
            return bool(learned)
        time.sleep(0.3)
    return None


def cli(settings: KafkaSettings, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDDYLINE_CONFIG": str(empty_config(tmp)),
           "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": settings.namespace}
    return subprocess.run([sys.executable, "-m", "streams.cli", "security", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_flooding_producer_is_quarantined_scored_not_learned_and_released(kafka_settings, tmp_path) -> None:
    create_topics(kafka_settings, ["clicks", "security.quarantine"], partitions=1)
    procs = {
        "model-security": start("model-security", kafka_settings, tmp_path),
        "clicks": start("clicks", kafka_settings, tmp_path,
                        EDDYLINE_RETRAINING_REGISTRY_DIR=str(tmp_path / "registry")),
    }
    try:
        honest = produce_clicks(kafka_settings, count=HONEST)
        bot = Bot(kafka_settings)
        flood = bot.send(120)  # one item, liked: past one_item_min (50) at a share of 1

        quarantined = wait_for("the quarantine record", lambda: [
            q for q in records(kafka_settings, "security.quarantine", QUARANTINE)
            if q["source"] == f"producer:{BOT}" and q["action"] == "QUARANTINE"], 90, tmp_path)[0]
        assert quarantined["rule"] == "one_item" and TARGET in quarantined["reason"]
        alert = wait_for("the alert", lambda: [
            a for a in records(kafka_settings, "alerts", ALERT)
            if a["entity"] == f"producer:{BOT}" and a["status"] == "OPENED"], 30, tmp_path)[0]
        assert alert["source"] == "model-security" and TARGET in alert["summary"]
        assert alert["details"]["release"] == f"eddyline security release producer:{BOT}"
        # no honest source was quarantined
        assert {q["source"] for q in records(kafka_settings, "security.quarantine", QUARANTINE)} == {f"producer:{BOT}"}

        # the click flow obeys the list once it has read it: a probe is then scored and not learned
        wait_for("the click flow to stop learning from the bot", lambda: probe_learned(bot) is False, 90, tmp_path)
        later = bot.send(100)
        scored, learned = wait_for("the later flood to be scored", lambda: (
            lambda s_l: s_l if len(s_l[0]) == len(later) else None)(fed_back(kafka_settings, later)), 60, tmp_path)
        assert len(scored) == len(later) and not learned  # every event predicted, none learned
        honest_scored, honest_learned = fed_back(
            kafka_settings, [r["event_id"] for r in records(kafka_settings, "clicks", CLICK)
                             if r["producer"] != BOT and r["action"] == "IMPRESSION"])
        assert len(honest_scored) == len(honest_learned) == honest.impressions  # honest traffic learned as before
        assert len(flood) == 120

        listed = cli(kafka_settings, tmp_path, "list")
        assert listed.returncode == 0 and f"producer:{BOT}" in listed.stdout and "one_item" in listed.stdout
        wrong = cli(kafka_settings, tmp_path, "release", "user:nobody")
        assert wrong.returncode == 2 and "is not quarantined" in wrong.stderr
        released = cli(kafka_settings, tmp_path, "release", f"producer:{BOT}", "--reason", "test traffic")
        assert released.returncode == 0, released.stderr
        assert "no source is quarantined" in cli(kafka_settings, tmp_path, "list").stdout

        wait_for("the resolved alert", lambda: [
            a for a in records(kafka_settings, "alerts", ALERT)
            if a["entity"] == f"producer:{BOT}" and a["status"] == "RESOLVED"], 60, tmp_path)

        wait_for("the click flow to learn from the released bot again", lambda: probe_learned(bot), 90, tmp_path)
        # still flooding, but inside its grace period: not quarantined again
        bot.send(100)
        time.sleep(3)
        assert [q["action"] for q in records(kafka_settings, "security.quarantine", QUARANTINE)] == [
            "QUARANTINE", "RELEASE"], logs(tmp_path)
    finally:
        for proc in procs.values():
            stop(proc)
