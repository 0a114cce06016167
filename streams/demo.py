"""``eddyline demo``: the whole sensor path on one machine, observed from the outside.

It starts the embedded broker, a loopback alert receiver standing in for PagerDuty and Slack, and the
anomaly flow as its own process (as in production), then publishes simulated devices with injected
anomalies and malformed messages. A watcher reads the output topics as any consumer would, so the
summary counts what really came out: readings scored, dead letters, anomalies, alerts, deliveries.
"""

from __future__ import annotations

import bisect
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors.alert_receiver import AlertReceiver
from connectors.broker import EmbeddedBroker
from connectors.kafka import KafkaSettings, consumer_config, create_topics
from schemas import ALERT, ANOMALY_SCORE, AvroSerde
from streams.live import LivePage
from streams.sensor_producer import SensorProducer
from streams.sensor_simulator import InjectedAnomaly

ROUTING_KEY = "eddylinedemo0000000000000000000r"  # PagerDuty integration keys are 32 characters


class OutputWatcher(threading.Thread):
    """Reads scores, alerts and dead letters from the beginning; counts each event id once."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(daemon=True, name="output-watcher")
        self.settings = settings
        self.serde = AvroSerde()
        self.topics = {settings.topic(t): t for t in ("scores.anomaly", "alerts", "dlq.sensor.readings")}
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.scored = 0
        self.dlq = 0
        self.anomalies = 0
        self.alerts: dict[str, set[str]] = defaultdict(set)  # status -> incident keys
        self.first_alert: dict[str, Any] | None = None
        self.hot: dict[tuple[str, str], list[int]] = defaultdict(list)  # (device, sensor) -> anomalous times
        self._halt = threading.Event()

    def run(self) -> None:
        consumer = Consumer(consumer_config(self.settings, "eddyline-demo-watcher"))
        meta = consumer.list_topics(timeout=10)
        consumer.assign([
            TopicPartition(name, p, OFFSET_BEGINNING)
            for name in self.topics for p in meta.topics[name].partitions
        ])
        try:
            while not self._halt.is_set():
                for msg in consumer.consume(500, 0.2):
                    if msg.error() is None:
                        self._take(self.topics[msg.topic()], msg)
        finally:
            consumer.close()

    def _take(self, topic: str, msg: Any) -> None:
        if topic == "dlq.sensor.readings":
            key = f"dlq/{msg.partition()}/{msg.offset()}/{dict(msg.headers() or []).get('eddyline.dlq.offset')}"
            with self.lock:
                if key not in self.seen:
                    self.seen.add(key)
                    self.dlq += 1
            return
        event_type = ANOMALY_SCORE if topic == "scores.anomaly" else ALERT
        rec = self.serde.decode(msg.value(), event_type)
        with self.lock:
            if rec["event_id"] in self.seen:
                return
            self.seen.add(rec["event_id"])
            if topic == "alerts":
                self.alerts[rec["status"]].add(rec["alert_key"])
                if self.first_alert is None and rec["status"] == "OPENED":
                    self.first_alert = rec
                return
            for s in rec["series"]:
                self.scored += len(s["scores"])
                for t, score in zip(s["timestamps"], s["scores"]):
                    if score >= rec["threshold"]:
                        self.anomalies += 1
                        bisect.insort(self.hot[(rec["device_id"], s["sensor"])], t)

    def detected(self, anomaly: InjectedAnomaly) -> bool:
        with self.lock:
            times = self.hot.get((anomaly.device_id, anomaly.sensor), [])
            i = bisect.bisect_left(times, anomaly.start_ms)
            return i < len(times) and times[i] <= anomaly.end_ms

    def stop(self) -> None:
        self._halt.set()


def _start_flow(settings: KafkaSettings, receiver: AlertReceiver, state_dir: Path, log_path: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "EDDYLINE_KAFKA_NAMESPACE": settings.namespace,
        "EDDYLINE_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "EDDYLINE_PAGERDUTY_URL": receiver.pagerduty_url,
        "EDDYLINE_PAGERDUTY_CA_FILE": str(receiver.ca_file),
        "EDDYLINE_SLACK_WEBHOOK_URL": receiver.slack_url,
        "EDDYLINE_RUNTIME_EPOCH_INTERVAL_S": "1",
    }
    cmd = [sys.executable, "-m", "streams.cli", "run", "anomaly", "--state-dir", str(state_dir)]
    return subprocess.Popen(cmd, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_demo(
    *,
    duration: float | None,
    bad_events: int = 0,
    devices: int = 20,
    rate: float = 3000.0,
    summary_json: Path | None = None,
    drain_timeout: float = 90.0,
) -> dict[str, Any]:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    console = Console(stderr=True)
    work = Path(tempfile.mkdtemp(prefix="eddyline-demo-"))
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.monotonic()
    with (
        EmbeddedBroker(log_path=work / "broker.log") as broker,
        AlertReceiver(routing_keys={ROUTING_KEY}, tls=True) as receiver,
    ):
        # the demo's own clients outlive the broker by a moment at the end: keep librdkafka's complaints quiet
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace="", session_timeout_ms=6000,
                                 extra={"log_level": "2"})
        create_topics(settings, ["sensor.readings", "dlq.sensor.readings", "scores.anomaly", "alerts"])
        live = LivePage(settings, "127.0.0.1", 0).start()
        console.print(f"live page: [bold]{live.url}[/]")
        console.print(f"broker {broker.bootstrap} · alert receiver {receiver.pagerduty_url} · logs in {work}")
        flow = _start_flow(settings, receiver, work / "state", work / "flow.log")
        watcher = OutputWatcher(settings)
        watcher.start()
        producer = SensorProducer(settings, devices=devices, rate=rate, bad_events=bad_events)

        def table(phase: str) -> Table:
            t = Table(title=f"eddyline demo: {phase} ({time.monotonic() - started:.0f} s)", show_header=False)
            s = producer.stats
            with watcher.lock:
                rows = [
                    ("produced (readings + malformed)", f"{s.readings + s.bad:,}"),
                    ("scored readings", f"{watcher.scored:,}"),
                    ("dead letters", f"{watcher.dlq:,}"),
                    ("anomalous readings", f"{watcher.anomalies:,}"),
                    ("anomalies injected", f"{len(producer.sim.injected):,}"),
                    ("alerts opened / resolved", f"{len(watcher.alerts['OPENED'])} / {len(watcher.alerts['RESOLVED'])}"),
                    ("delivered to PagerDuty / Slack", f"{receiver.counts['pagerduty_events']} / {receiver.counts['slack_messages']}"),
                ]
            for k, v in rows:
                t.add_row(k, v)
            return t

        announced = False
        try:
            with Live(table("producing"), console=console, refresh_per_second=4, transient=True) as live:
                producing = threading.Thread(target=producer.run, kwargs={"duration": duration, "stop": stop})
                producing.start()
                while producing.is_alive():
                    producing.join(0.25)
                    live.update(table("producing"))
                    if flow.poll() is not None:
                        raise RuntimeError(f"the flow exited with code {flow.returncode}; see {work / 'flow.log'}")
                    if not announced and watcher.first_alert is not None:
                        a = watcher.first_alert
                        live.console.print(f"first alert: [bold]{a['severity']}[/] {a['summary']}")
                        announced = True
                deadline = time.monotonic() + drain_timeout
                while time.monotonic() < deadline:
                    live.update(table("draining"))
                    with watcher.lock:
                        done = watcher.scored + watcher.dlq >= producer.stats.events
                    if done:
                        break
                    time.sleep(0.25)
                time.sleep(1.0)  # the last alert deliveries
        finally:
            signal.signal(signal.SIGINT, previous)
            _stop_process(flow)
            live.stop()
            watcher.stop()
            watcher.join(5)

        injected = producer.sim.injected
        detected = sum(1 for a in injected if watcher.detected(a))
        summary = {
            "duration_s": round(time.monotonic() - started, 1),
            "produced": producer.stats.events,
            "produced_messages": producer.stats.messages + producer.stats.bad,
            "scored": watcher.scored,
            "dlq": watcher.dlq,
            "anomalies": watcher.anomalies,
            "alerts_opened": len(watcher.alerts["OPENED"]),
            "alerts_updated": len(watcher.alerts["UPDATED"]),
            "alerts_resolved": len(watcher.alerts["RESOLVED"]),
            "alerts_delivered": receiver.counts["pagerduty_events"],
            "slack_messages": receiver.counts["slack_messages"],
            "pagerduty_incidents": len(receiver.incidents),
            "injected_anomalies": len(injected),
            "detected_injected_anomalies": detected,
            "work_dir": str(work),
        }
    console.print(table("done"))
    ratio = detected / len(injected) if injected else float("nan")
    console.print(
        f"scored + dlq = {summary['scored'] + summary['dlq']:,} of {summary['produced']:,} produced; "
        f"detected {detected}/{len(injected)} injected anomalies ({ratio:.1%}); "
        f"{summary['pagerduty_incidents']} PagerDuty incidents"
    )
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary
