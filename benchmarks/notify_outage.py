"""Scoring throughput while PagerDuty and Slack are down, against the same flow while they are up, in one run.

Three phases, receivers up, down, up again (so that a load that drifts during the run shows in the two
baselines instead of in the ratio), each run the production anomaly flow (``eddyline run anomaly``) over its
own copy of the same pre-filled topic, timed as ``benchmarks/sensor_flow.py`` times it (score events counted per
watcher fetch, from the first fetch that brought any to the last), with the notify flow
(``eddyline run notify``) delivering its alerts to the loopback PagerDuty/Slack receiver beside it. In the outage
phase the receiver answers every request with 503 for ``--outage`` seconds (one minute by default) from before the
flow starts; scoring is timed inside that window. After the outage the phase waits for the notify flow to deliver
every alert the flow raised, and counts what it lost (alerts with no PagerDuty event) and the incidents opened twice.
The notify process's CPU seconds are reported too: on a small machine it shares the cores with scoring.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from benchmarks.report import machine, write_json
from benchmarks.sensor_flow import time_flow
from benchmarks.timing import MeasurementError
from connectors.broker import EmbeddedBroker
from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from connectors.testing.alert_receiver import AlertReceiver
from edge_agent.health import process_cpu_seconds
from schemas import ALERT, SENSOR_BATCH, AvroSerde
from streams.producers.simulator import SensorSimulator

TOPIC = "sensor.readings"
ROUTING_KEY = "eddylinebench000000000000000000r"  # PagerDuty integration keys are 32 characters


def _notify(settings: KafkaSettings, receiver: AlertReceiver, log: Path) -> subprocess.Popen:
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": settings.namespace,
           "EDDYLINE_KAFKA_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
           "EDDYLINE_PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "EDDYLINE_PAGERDUTY_URL": receiver.pagerduty_url,
           "EDDYLINE_PAGERDUTY_CA_FILE": str(receiver.ca_file), "EDDYLINE_SLACK_WEBHOOK_URL": receiver.slack_url,
           "EDDYLINE_NOTIFY_BREAKER_RESET_S": "10"}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "notify"], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _phase(broker: EmbeddedBroker, receiver: AlertReceiver, name: str, records: list[dict], per_message: int,
           work: Path, outage_s: float) -> dict[str, Any]:
    """One phase in its own namespace: readings/s of the anomaly flow, and what became of its alerts."""
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace=f"bench-{name}.", session_timeout_ms=6000)
    create_topics(settings, [TOPIC, "alerts"])
    with EventProducer(settings) as producer:
        for rec in records:
            producer.produce(TOPIC, SENSOR_BATCH, rec, key=rec["device_id"])
    receiver.reset()
    (work / name).mkdir()
    notify = _notify(settings, receiver, work / name / "notify.log")
    try:
        started = time.monotonic()
        if outage_s:
            receiver.outage(503)
        readings_per_s = time_flow(settings, ["streams.cli", "run", "anomaly"], len(records), per_message,
                                   work / name).readings_per_s
        scored_in_s = time.monotonic() - started
        failed_during = receiver.counts["failures_injected"]
        if outage_s:
            time.sleep(max(0.0, outage_s - (time.monotonic() - started)))
            receiver.recover()
        recovered = time.monotonic()
        serde = AvroSerde()
        alerts = [serde.decode(m.value(), ALERT) for m in read_topic(settings, "alerts", timeout=30)]
        ids = {a["event_id"] for a in alerts}
        keys = {a["alert_key"] for a in alerts}
        receiver.wait_for(lambda r: r.counts["pagerduty_events"] >= len(ids) and set(r.incidents) >= keys
                          and r.counts["slack_messages"] >= len(ids), timeout=outage_s + 120)
        delivered_in_s = time.monotonic() - recovered
        notify_cpu_s = process_cpu_seconds(notify.pid)
    finally:
        notify.terminate()
        notify.wait(30)
    delivered = {e["payload"]["custom_details"].get("event_id") for e in receiver.events if "payload" in e}
    triggers = {a["event_id"] for a in alerts if a["status"] != "RESOLVED"}
    return {
        "readings_per_s": round(readings_per_s),
        "scored_within_s": round(scored_in_s, 1),
        "receiver_failures_while_scoring": failed_during,
        "alerts": len(ids),
        "pagerduty_events": receiver.counts["pagerduty_events"],
        "slack_messages": receiver.counts["slack_messages"],
        "lost_triggers": len(triggers - delivered),
        "slack_short": max(0, len(ids) - receiver.counts["slack_messages"]),
        "dead_letters": len(read_topic(settings, "dlq.alerts", timeout=5)),
        "incidents": len(receiver.incidents),
        "incidents_opened_twice": sum(1 for i in receiver.incidents.values() if i["opened"] > 1),
        "all_delivered_s_after_recovery": round(delivered_in_s, 1),
        "notify_cpu_s": None if notify_cpu_s is None else round(notify_cpu_s, 1),
    }


def run(json_path: Path | None = None, messages: int = 10_000, outage_s: float = 60.0) -> dict[str, Any]:
    from rich.console import Console

    console = Console(stderr=True)
    sim = SensorSimulator(devices=30, readings_per_message=50, anomaly_rate=0.004)
    records = list(itertools.islice(sim, messages))
    per_message = sim.readings_per_batch
    work = Path(tempfile.mkdtemp(prefix="eddyline-bench-notify-"))
    with EmbeddedBroker(log_path=work / "broker.log") as broker, AlertReceiver(tls=True) as receiver:
        with console.status("receivers up: anomaly flow + notify flow"):
            up = _phase(broker, receiver, "up", records, per_message, work, 0.0)
        with console.status(f"PagerDuty and Slack down for {outage_s:.0f} s: anomaly flow + notify flow"):
            down = _phase(broker, receiver, "outage", records, per_message, work, outage_s)
        with console.status("receivers up again: anomaly flow + notify flow"):
            again = _phase(broker, receiver, "up-again", records, per_message, work, 0.0)
    baseline = (up["readings_per_s"] + again["readings_per_s"]) / 2
    result = {
        "readings_per_s_receivers_up": round(baseline),
        "readings_per_s_during_outage": down["readings_per_s"],
        "outage_vs_up": round(down["readings_per_s"] / baseline, 3),
        "outage_s": outage_s,
        "up": up,
        "outage": down,
        "up_again": again,
        "messages": messages,
        "readings_per_message": per_message,
        "machine": machine(),
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    console.print(f"scoring during a {outage_s:.0f} s outage: {down['readings_per_s']:,} readings/s vs "
                  f"{round(baseline):,} with receivers up (before and after) = {result['outage_vs_up']:.2f} "
                  f"(goal ≥ 0.90); "
                  f"lost triggers {down['lost_triggers']}, incidents opened twice {down['incidents_opened_twice']}, "
                  f"all alerts delivered {down['all_delivered_s_after_recovery']} s after recovery")
    write_json(json_path, result)
    return result


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    messages: Annotated[int, typer.Option(help="Messages to pre-fill per phase (150 readings each).")] = 10_000,
    outage: Annotated[float, typer.Option(help="Seconds PagerDuty and Slack stay down in the outage phase.")] = 60.0,
) -> None:
    """Scoring throughput during a PagerDuty/Slack outage vs with them up (goal ≥ 90%), and alerts lost (goal 0)."""
    try:
        run(json_path=json_path, messages=messages, outage_s=outage)
    except MeasurementError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    typer.run(command)
