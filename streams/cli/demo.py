"""``eddyline demo``: the whole sensor path on one machine, observed from the outside.

It starts the embedded broker, a loopback alert receiver standing in for PagerDuty and Slack, the anomaly
flow and the notify flow (which delivers the alerts) as processes of their own (as in production), then
publishes simulated devices with injected anomalies and malformed messages. A watcher reads the output
topics as any consumer would, so the summary counts what really came out: readings scored, dead letters,
anomalies, alerts, deliveries.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from connectors.alert_explanation import explanation_text
from connectors.testing.alert_receiver import AlertReceiver
from connectors.broker import EmbeddedBroker
from connectors.kafka import DeliveryError, KafkaSettings, create_topics, make_consumer
from connectors.schema_registry import configured_serde
from schemas.scores import series_scores
from schemas.topics import TOPICS, dlq_topic
from streams.apps.live import LivePage
from streams.flows.sensor_anomaly import FLOW
from streams.producers.sensors import SensorProducer
from streams.producers.simulator import InjectedAnomaly, InjectedTally, tally_injected

CALLS_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "audio"  # espeak-ng recordings, ours
ROUTING_KEY = "eddylinedemo0000000000000000000r"  # PagerDuty integration keys are 32 characters

DLQ_SENSOR = dlq_topic("sensor.readings")


class OutputWatcher(threading.Thread):
    """Reads scores, alerts and dead letters from the beginning; counts each event id once."""

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(daemon=True, name="output-watcher")
        self.settings = settings
        self.serde = configured_serde(consumer=True)  # the flows write with the configured registry's ids
        self.topics = {settings.topic(t): t for t in ("scores.anomaly", "alerts", DLQ_SENSOR,
                                                      "transcripts", "scores.sentiment")}
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.scored = 0
        self.dlq = 0
        self.anomalies = 0
        self.alert_events = 0  # distinct alert events, every flow: each is one PagerDuty event once delivered
        self.alerts: dict[str, set[str]] = defaultdict(set)  # status -> incident keys, sensor flow
        self.call_alerts: dict[str, set[str]] = defaultdict(set)  # status -> incident keys, audio flow
        self.transcripts = 0
        self.sentiments = 0
        self.last_utterance: dict[str, Any] | None = None
        self.last_call_event = 0.0
        self.first_alert: dict[str, Any] | None = None
        self.hot: dict[tuple[str, str], list[int]] = defaultdict(list)  # (device, sensor) -> anomalous times
        self.scored_until: dict[tuple[str, str], int] = {}  # (device, sensor) -> last event time scored
        self._halt = threading.Event()

    def run(self) -> None:
        consumer = make_consumer(self.settings, "eddyline-demo-watcher")
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
        if topic == DLQ_SENSOR:
            key = f"dlq/{msg.partition()}/{msg.offset()}/{dict(msg.headers() or []).get('eddyline.dlq.offset')}"
            with self.lock:
                if key not in self.seen:
                    self.seen.add(key)
                    self.dlq += 1
            return
        rec = self.serde.decode(msg.value(), TOPICS[topic])
        with self.lock:
            if rec["event_id"] in self.seen:
                return
            self.seen.add(rec["event_id"])
            if topic in ("transcripts", "scores.sentiment"):
                self.last_call_event = time.monotonic()
                if topic == "transcripts":
                    self.transcripts += 1
                else:
                    self.sentiments += 1
                    self.last_utterance = rec
                return
            if topic == "alerts":
                self.alert_events += 1
                if rec["source"] != FLOW:
                    self.call_alerts[rec["status"]].add(rec["alert_key"])
                    return
                self.alerts[rec["status"]].add(rec["alert_key"])
                if self.first_alert is None and rec["status"] == "OPENED":
                    self.first_alert = rec
                return
            for s in rec["series"]:
                stamps, scores = series_scores(s)
                self.scored += len(scores)
                if len(stamps):
                    series = (rec["device_id"], s["sensor"])
                    self.scored_until[series] = max(self.scored_until.get(series, -1), int(stamps.max()))
                for t, score in zip(stamps.tolist(), scores.tolist()):
                    if score >= rec["threshold"]:
                        self.anomalies += 1
                        bisect.insort(self.hot[(rec["device_id"], s["sensor"])], t)

    def tally(self, injected: list[InjectedAnomaly]) -> InjectedTally:
        """The injected anomalies detected among those whose readings were all scored (``tally_injected``)."""
        with self.lock:
            return tally_injected(injected, self.hot, self.scored_until)

    def stop(self) -> None:
        self._halt.set()


PROGRESS_EVERY_S = 10.0


class ProgressLines:
    """A line of the demo's counts every ``every_s`` seconds where its live table does not draw (stderr is no
    terminal: a pipe, a CI log), which otherwise showed nothing until the summary, 35 to 64 s in.

    Parameters
    ----------
    console
        Where the demo writes; lines only if it is no terminal.
    every_s
        Seconds between lines; the first comes that long after the start.
    clock
        Seconds, monotonic.
    """

    def __init__(self, console: Any, every_s: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.every_s, self.clock = console, every_s, clock
        self.enabled = not console.is_terminal
        self._due = clock() + every_s

    def tick(self, line: Callable[[], str]) -> None:
        """Print ``line()`` if a line is due (``line`` is called only then)."""
        if self.enabled and self.clock() >= self._due:
            self._due = self.clock() + self.every_s
            self.console.print(line(), highlight=False, markup=False, soft_wrap=True)


def _start_flow(flow: str, settings: KafkaSettings, receiver: AlertReceiver, state_dir: Path, log_path: Path,
                **extra_env: str) -> subprocess.Popen:
    env = {
        **extra_env,
        **os.environ,
        "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "EDDYLINE_KAFKA_NAMESPACE": settings.namespace,
        "EDDYLINE_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "EDDYLINE_PAGERDUTY_URL": receiver.pagerduty_url,
        "EDDYLINE_PAGERDUTY_CA_FILE": str(receiver.ca_file),
        "EDDYLINE_SLACK_WEBHOOK_URL": receiver.slack_url,
        "EDDYLINE_RUNTIME_EPOCH_INTERVAL_S": "1",
    }
    cmd = [sys.executable, "-m", "streams.cli", "run", flow, "--state-dir", str(state_dir)]
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


def _sentiment_model_env() -> dict[str, str]:
    """The sentiment model trained here if there is one (`eddyline models train-sentiment`), else VADER."""
    from models.sentiment.model import default_model_dir

    trained = default_model_dir()
    return {} if trained.is_dir() and any(trained.glob("*.onnx")) else {"EDDYLINE_AUDIO_SENTIMENT_MODEL": "vader"}


CONVERSATIONS = {  # recordings joined into three calls: one turns sour, one is routine, one goes well
    "call-billing": ("call01", "call02", "call03", "call10"),
    "call-orders": ("call05", "call06", "call11", "call08"),
    "call-praise": ("call04", "call07", "call09", "call12"),
}
PAUSE = b"\x00\x00" * 12_800  # 0.8 s of silence between turns
CALL_TURNS = sum(len(clips) for clips in CONVERSATIONS.values())


def _play_calls(settings: KafkaSettings, folder: Path) -> None:
    """The recorded calls, a few seconds into the demo, at twice real time."""
    from connectors.wav import chunk_records, read_wav
    from streams.cli.audio import produce_calls

    time.sleep(3.0)
    calls = [
        list(chunk_records(PAUSE.join(read_wav(folder / f"{clip}.wav").pcm for clip in clips), name))
        for name, clips in CONVERSATIONS.items()
    ]
    produce_calls(settings, calls, speed=2.0, chunk_ms=200)


class ClickTrial(threading.Thread):
    """The click model's retraining loop, in process, on MovieLens clicks whose tastes turn around halfway:
    the drift flow finds it, a challenger is trained, registered and tried in shadow, the better one
    becomes the champion. Trainings and versions go to MLflow (``[mlflow]``: the embedded store by default)."""

    def __init__(self, events: int = 8000) -> None:
        super().__init__(daemon=True, name="click-trial")
        self.events, self.error = events, None
        self.result: dict[str, Any] = {}

    def run(self) -> None:
        try:
            self.result = self._trial()
        except Exception as exc:  # the demo goes on; the summary says what failed
            self.error = f"{type(exc).__name__}: {exc}"

    def _trial(self) -> dict[str, Any]:
        from dataclasses import replace

        from connectors.movielens import click_events, load
        from models import tracking
        from streams.flows import drift, retraining
        from streams.flows.names import MODEL_NAME
        from streams.processor import Event, run_local

        ratings = load(limit=self.events)
        half = len(ratings) // 2
        turned = ratings[:half] + [replace(r, rating=1.0 if r.liked else 5.0) for r in ratings[half:]]
        events = [Event("clicks", e["user_id"], e) for e in click_events(turned)]
        policy = {"train_window": 1000, "min_fresh": 1000, "shadow_events": 1000, "margin": 0.01, "quality_drop": 10.0}
        spec, drift_spec = retraining.flow(policy=policy), drift.flow()
        procs: dict[str, Any] = {}
        dprocs: dict[str, Any] = {}
        pending: list[Event] = []
        for start in range(0, len(events), 500):
            emitted = run_local(spec, pending + events[start : start + 500], procs)
            found = run_local(drift_spec, [Event(e.topic, e.key, e.record) for e in emitted], dprocs)
            pending = [Event(e.topic, e.key, e.record) for e in found if e.topic == "drift"]
            deadline = time.monotonic() + 60  # live, registry changes land between batches
            while procs[MODEL_NAME].outbox.settled() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        proc = procs[MODEL_NAME]
        proc.outbox.close()
        registry = proc.registry
        champion = registry.champion(MODEL_NAME)
        return {"tracking_uri": tracking.tracking_uri(), "model": MODEL_NAME,
                "versions": len(registry.versions(MODEL_NAME)), "champion": champion.version if champion else None,
                "serving": proc.version, "pending_registry_changes": proc.outbox.pending}


def run_demo(
    *,
    duration: float | None,
    bad_events: int = 0,
    devices: int = 20,
    rate: float = 3000.0,
    summary_json: Path | None = None,
    drain_timeout: float = 90.0,
    calls: bool = True,
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
        # the watcher reads every output topic from the start, the calls' too even when there are none to play
        create_topics(settings, ["sensor.readings", DLQ_SENSOR, "scores.anomaly", "alerts", "alerts.retry",
                                 dlq_topic("alerts"), "transcripts", "scores.sentiment", "routing"])
        live = LivePage(settings, "127.0.0.1", 0).start()
        console.print(f"live page: [bold]{live.login_url()}[/] (a one-time login link)")
        console.print(f"broker {broker.bootstrap} · alert receiver {receiver.pagerduty_url} · logs in {work}")
        flow = _start_flow("anomaly", settings, receiver, work / "state", work / "flow.log")
        notify = _start_flow("notify", settings, receiver, work / "notify-state", work / "notify.log")
        recordings = [CALLS_DIR / f"{c}.wav" for clips in CONVERSATIONS.values() for c in clips] if calls else []
        if calls and not all(p.is_file() for p in recordings):
            recordings = []
            console.print(f"no recorded calls in {CALLS_DIR}: the audio part of the demo is skipped")
        audio = None
        if recordings:
            create_topics(settings, ["audio.chunks", dlq_topic("audio.chunks")])
            audio = _start_flow("audio", settings, receiver, work / "audio-state", work / "audio.log",
                                **_sentiment_model_env())
            calling = threading.Thread(target=_play_calls, args=(settings, CALLS_DIR), daemon=True)
        watcher = OutputWatcher(settings)
        watcher.start()
        trial = ClickTrial()
        trial.start()
        if audio is not None:
            calling.start()
        producer = SensorProducer(settings, devices=devices, rate=rate, bad_events=bad_events)

        def title(phase: str) -> str:
            return f"eddyline demo: {phase} ({time.monotonic() - started:.0f} s)"

        def rows() -> list[tuple[str, str]]:
            s = producer.stats
            with watcher.lock:
                found = [
                    ("produced (readings + malformed)", f"{s.readings + s.bad:,}"),
                    ("scored readings", f"{watcher.scored:,}"),
                    ("dead letters", f"{watcher.dlq:,}"),
                    ("anomalous readings", f"{watcher.anomalies:,}"),
                    ("anomalies injected", f"{len(producer.sim.injected):,}"),
                    ("alerts opened / resolved", f"{len(watcher.alerts['OPENED'])} / {len(watcher.alerts['RESOLVED'])}"),
                    ("delivered to PagerDuty / Slack", f"{receiver.counts['pagerduty_events']} / {receiver.counts['slack_messages']}"),
                ]
                if audio is not None:
                    found.append(("calls: transcripts / sentiment scores", f"{watcher.transcripts} / {watcher.sentiments}"))
                    u = watcher.last_utterance
                    if u is not None:
                        found.append((f"{u['conversation_id']} said", f"{u['text'][:60]!r} ({u['label']}, {u['score']:+.2f})"))
            return found

        def table(phase: str) -> Table:
            t = Table(title=title(phase), show_header=False)
            for k, v in rows():
                t.add_row(k, v)
            return t

        progress = ProgressLines(console)

        def show(screen: Live, phase: str) -> None:
            """The live table on a terminal; elsewhere (a pipe, a CI log) a line now and then."""
            screen.update(table(phase))
            progress.tick(lambda: f"{title(phase)}: " + "; ".join(f"{k} {v}" for k, v in rows()))

        announced = False

        def announce(screen: Live) -> None:
            """The first alert as it happens: while producing, or while draining when the flows started late."""
            nonlocal announced
            if not announced and watcher.first_alert is not None:
                a = watcher.first_alert
                screen.console.print(f"first alert: [bold]{a['severity']}[/] {a['summary']}")
                if a.get("explanation"):
                    screen.console.print(f"  why: {explanation_text(a['explanation'])}")
                announced = True

        try:
            with Live(table("producing"), console=console, refresh_per_second=4, transient=True) as screen:
                producing = threading.Thread(target=producer.run, kwargs={"duration": duration, "stop": stop})
                producing.start()
                while producing.is_alive():
                    producing.join(0.25)
                    show(screen, "producing")
                    for proc, log_name in ((flow, "flow.log"), (notify, "notify.log"), (audio, "audio.log")):
                        if proc is not None and proc.poll() is not None:
                            raise RuntimeError(f"a flow exited with code {proc.returncode}; see {work / log_name}")
                    announce(screen)
                deadline = time.monotonic() + drain_timeout
                while time.monotonic() < deadline:
                    show(screen, "draining")
                    announce(screen)
                    with watcher.lock:
                        done = watcher.scored + watcher.dlq >= producer.stats.events
                        # the calls are done when all were played and no utterance came out for a while: a
                        # short while once every turn has a score, longer while transcription may be behind
                        quiet = time.monotonic() - watcher.last_call_event
                        calls_quiet = audio is None or (not calling.is_alive() and watcher.sentiments > 0 and (
                            quiet > 30 or (quiet > 8 and watcher.sentiments >= CALL_TURNS)))
                    if done and calls_quiet:
                        break
                    time.sleep(0.25)
                deadline = time.monotonic() + 30.0  # the notify flow delivers the last alerts
                while time.monotonic() < deadline and receiver.counts["pagerduty_events"] < watcher.alert_events:
                    show(screen, "delivering alerts")
                    time.sleep(0.25)
                deadline = time.monotonic() + 180.0  # the click model's trial ends
                while trial.is_alive() and time.monotonic() < deadline:
                    show(screen, "click model trial")
                    trial.join(0.25)
        finally:
            signal.signal(signal.SIGINT, previous)
            _stop_process(flow)
            _stop_process(notify)
            if audio is not None:
                _stop_process(audio)
            live.stop()
            watcher.stop()
            watcher.join(5)
            try:
                producer.close(5.0)
            except DeliveryError as exc:  # the run is over either way: say what did not get out
                console.print(f"sensor producer: {exc}")

        tally = watcher.tally(producer.sim.injected)
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
            "calls": len(CONVERSATIONS) if recordings else 0,
            "transcripts": watcher.transcripts,
            "sentiment_scores": watcher.sentiments,
            "call_alerts_opened": len(watcher.call_alerts["OPENED"]),
            "first_alert": _first_alert(watcher.first_alert),
            "injected_anomalies": tally.injected,
            "scored_injected_anomalies": tally.scored,
            "detected_injected_anomalies": tally.detected,
            "work_dir": str(work),
            "mlflow": trial.result or {"error": trial.error or "the click model's trial did not finish"},
        }
    console.print(table("done"))
    console.print(
        f"scored + dlq = {summary['scored'] + summary['dlq']:,} of {summary['produced']:,} produced; "
        f"{injected_line(tally)}; {summary['pagerduty_incidents']} PagerDuty incidents"
    )
    if summary["first_alert"] is not None:
        first = summary["first_alert"]
        console.print(f"first alert: {first['summary']}\n  why: {first['why'] or 'no explanation'}")
    m = summary["mlflow"]
    if "versions" in m:
        console.print(f"MLflow: {m['versions']} versions of {m['model']} (champion {m['champion']}) and their training "
                      f"runs in {m['tracking_uri']}; browse them with `eddyline models ui`", soft_wrap=True)
    else:
        console.print(f"MLflow: the click model's trial failed: {m['error']}")
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def injected_line(tally: InjectedTally) -> str:
    """The summary's words on injected anomalies: detected among those whose readings were all scored, and how many
    the run ended in the middle of (not counted either way).

    Parameters
    ----------
    tally
        The run's count.

    Examples
    --------
    >>> from streams.cli.demo import injected_line
    >>> from streams.producers.simulator import InjectedTally
    >>> injected_line(InjectedTally(injected=34, scored=33, detected=33))
    'detected 33/33 injected anomalies scored in full (100.0%; 1 more left out, not scored in full by the end)'
    """
    ratio = tally.detected / tally.scored if tally.scored else float("nan")
    line = f"detected {tally.detected}/{tally.scored} injected anomalies scored in full ({ratio:.1%}"
    if tally.unscored:
        line += f"; {tally.unscored} more left out, not scored in full by the end"
    return line + ")"


def _first_alert(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The first sensor alert as the summary shows it: what, when, and why it fired."""
    if rec is None:
        return None
    return {"entity": rec["entity"], "severity": rec["severity"], "event_time": rec["event_time"],
            "summary": rec["summary"], "why": explanation_text(rec.get("explanation")),
            "explanation": rec.get("explanation")}
