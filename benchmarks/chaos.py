"""Chaos: faults under continuous load, then an audit of what came out (``eddyline bench chaos``).

Everything runs as it would in production, on loopback: the durable broker (Tansu on S3, here s3rver on
disk), the anomaly flow and the notify flow as their own processes, the producer gateway as its own
process, the PagerDuty/Slack stand-in. Simulated devices publish straight to Kafka and through the gateway,
with malformed messages mixed in throughout. Meanwhile the anomaly flow is SIGKILLed and restarted at
random points, the broker is killed and restarted on its data, and the alert receiver answers 503 for
``outage_s``. A supervisor restarts any flow that dies on its own, as systemd would. Then the load stops,
the flows catch up, and the topics and the receiver are audited:

- ``readings``: readings in the valid messages the load had accepted (Kafka acknowledged them, or the gateway
  answered 202) and in every valid message found in ``sensor.readings``;
- ``lost``: of those, readings of messages that have no score (``accepted_not_in_topic`` says how many
  accepted messages never reached the topic);
- ``duplicate_scores``: input messages scored under more than one score id (replays must reuse the id);
- ``duplicate_incidents``: PagerDuty incidents opened more often than the flow opened that alert;
- ``undelivered_alerts``: alert events not delivered to PagerDuty or not to Slack;
- ``duplicate_slack_messages``: Slack messages beyond one per alert event (Slack has no dedup key);
- ``dlq``: malformed messages found in ``dlq.sensor.readings`` with a reason (of ``malformed`` sent);
- ``max_rss_mb``: the anomaly flow's largest resident memory (its process group), sampled every second.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from connectors.broker import EmbeddedBroker
from connectors.dlq import dlq_info
from connectors.kafka import DeliveryError, EventProducer, KafkaSettings, create_topics, read_to_end
from connectors.testing.alert_receiver import AlertReceiver
from connectors.testing.s3rver import S3rver
from schemas import ALERT, ANOMALY_SCORE, SENSOR_BATCH, AvroSerde, SchemaError
from streams.producers.simulator import SensorSimulator, malformed_messages

ROUTING_KEY = "0123456789abcdef0123456789abcdef"
TOKEN = "chaos-token-0123456789abcdef"
MALFORMED_KEY = "malformed-"
serde = AvroSerde()
# README, broker modes: consumers wait at least 100 ms per fetch on S3; producers are not idempotent, because
# Tansu's S3 engine can hand two producers that start together one producer id (their sequences then clash).
S3_CLIENT_SETTINGS = {"fetch.wait.max.ms": "100", "enable.idempotence": "false",
                      "max.in.flight.requests.per.connection": "1"}


@dataclass
class ChaosPlan:
    """What to break and how hard to push.

    Parameters
    ----------
    duration_s
        Seconds of load and faults; the catch-up and audit come after.
    kills
        SIGKILLs of the anomaly flow, at random points spread over the run.
    broker_restarts
        Broker SIGKILLs, each followed by a restart on the same data.
    outage_s
        Seconds the PagerDuty/Slack stand-in answers 503, once, in the middle third.
    rate
        Device messages per second to Kafka (``readings_per_message`` readings each); the gateway adds
        about a fifth of that.
    malformed_every
        One malformed message per this many good ones.
    durable
        The broker on S3 (s3rver here), as a deployment that must survive restarts runs it; False runs it in
        memory, which keeps nothing across a restart (so ``broker_restarts`` must be 0).
    """

    duration_s: float = 300.0
    kills: int = 10
    broker_restarts: int = 1
    outage_s: float = 60.0
    devices: int = 10
    rate: float = 5.0
    readings_per_message: int = 200
    malformed_every: int = 10
    anomaly_rate: float = 0.0005
    settle_s: float = 240.0
    seed: int = 13
    durable: bool = True


class _Process:
    """A child in its own process group, restartable; SIGKILL takes its children with it."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.args, self.env, self.log = name, args, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        from connectors.broker import _die_with_parent, _prctl

        prctl, parent = _prctl(), os.getpid()  # a killed harness leaves no flow behind
        self.proc = subprocess.Popen([sys.executable, *self.args], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=lambda: _die_with_parent(prctl, parent))
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, sig)
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def rss_mb(self) -> float:
        """Resident memory of the process group (the flow and any children), in MB."""
        if not self.alive():
            return 0.0
        assert self.proc is not None
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[2]) != self.proc.pid:  # process group id
                    continue
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except (OSError, IndexError, ValueError):
                continue
        return total / 1024


def _env(kafka: KafkaSettings, receiver: AlertReceiver, state: Path) -> dict[str, str]:
    defaults = state / "defaults.toml"  # empty: the defaults and this environment, no stray ./eddyline.toml
    defaults.touch()  # a set EDDYLINE_CONFIG must name a file
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
        "EDDYLINE_CONFIG": str(defaults),
        "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "EDDYLINE_KAFKA_NAMESPACE": kafka.namespace,
        "EDDYLINE_KAFKA_SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
        "EDDYLINE_KAFKA_LINGER_MS": str(kafka.linger_ms),
        "EDDYLINE_KAFKA_EXTRA": json.dumps(kafka.extra),
        "EDDYLINE_RUNTIME_EPOCH_INTERVAL_S": "1.0",
        "EDDYLINE_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "EDDYLINE_PAGERDUTY_URL": receiver.pagerduty_url,
        "EDDYLINE_PAGERDUTY_CA_FILE": str(receiver.ca_file),
        "EDDYLINE_PAGERDUTY_TIMEOUT": "5",
        "EDDYLINE_SLACK_WEBHOOK_URL": receiver.slack_url,
        "EDDYLINE_SLACK_TIMEOUT": "5",
        "EDDYLINE_NOTIFY_MAX_ATTEMPTS": "1000",  # an outage of any planned length delays, never dead-letters
        "EDDYLINE_NOTIFY_BACKOFF_S": "0.5",
        "EDDYLINE_NOTIFY_BACKOFF_CAP_S": "5",
        "EDDYLINE_NOTIFY_BREAKER_RESET_S": "2",
        "EDDYLINE_GATEWAY_TOKENS": json.dumps({"chaos": TOKEN}),
    }


class _Load:
    """Devices to Kafka, devices through the gateway, malformed messages: until ``stop`` is set."""

    def __init__(self, kafka: KafkaSettings, gateway_url: str, plan: ChaosPlan) -> None:
        self.kafka, self.gateway_url, self.plan = kafka, gateway_url, plan
        self.stop = threading.Event()
        self.sent = Counter[str]()
        self.errors = Counter[str]()
        self.accepted: dict[str, int] = {}  # event id -> readings, of every message Kafka or the gateway took
        self.threads = [threading.Thread(target=self._devices, daemon=True),
                        threading.Thread(target=self._gateway, daemon=True)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def _devices(self) -> None:
        sim = iter(SensorSimulator(devices=self.plan.devices, readings_per_message=self.plan.readings_per_message,
                                   anomaly_rate=self.plan.anomaly_rate, seed=self.plan.seed))
        bad = malformed_messages(10_000, seed=self.plan.seed)
        producer = EventProducer(self.kafka, **{"message.timeout.ms": 600_000})
        period, n = 1.0 / self.plan.rate, 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            record = next(sim)
            self._retry(lambda: producer.produce("sensor.readings", SENSOR_BATCH, record, key=record["device_id"]),
                        producer)
            self.accepted[record["event_id"]] = sum(len(s["values"]) for s in record["series"])
            self.sent["device_messages"] += 1
            n += 1
            if n % self.plan.malformed_every == 0:
                i = self.sent["malformed"]
                self._retry(lambda: producer.produce_raw("sensor.readings", bad[i % len(bad)][1],
                                                         key=f"{MALFORMED_KEY}{i}"), producer)
                self.sent["malformed"] += 1
            producer.poll(0)
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
        try:
            producer.flush(600)
        except DeliveryError as exc:  # counted: the audit then finds those readings lost
            self.errors[f"device_{type(exc).__name__}"] += 1

    def _retry(self, send: Callable[[], Any], producer: EventProducer) -> None:
        while True:
            try:
                send()
                return
            except BufferError:  # the local queue is full while the broker is away: wait, keep everything
                producer.poll(0.5)
            except Exception as exc:  # counted in the result, never a silent end of the load
                self.errors[f"device_{type(exc).__name__}"] += 1
                time.sleep(0.5)

    def _gateway(self) -> None:
        import httpx

        rng = random.Random(self.plan.seed + 1)
        period = 2.0 / self.plan.rate
        seq = Counter[str]()
        with httpx.Client(base_url=self.gateway_url, headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=10) as client:
            while not self.stop.is_set():
                device = f"gw-{rng.randrange(5)}"
                seq[device] += 1
                now = int(time.time() * 1000)
                body = {"device_id": device, "seq": seq[device], "series": [{
                    "sensor": "temp", "unit": "C", "timestamps": [now - 10 * (9 - i) for i in range(10)],
                    "values": [20.0 + rng.gauss(0, 0.5) for _ in range(10)]}]}
                for _ in range(30):  # the same body again on failure: the gateway answers 202 once it has it
                    try:
                        r = client.post("/v1/sensors", json=body)
                        if r.status_code == 202:
                            self.accepted[r.json()["event_ids"][0]] = len(body["series"][0]["values"])
                            self.sent["gateway_messages"] += 1
                            break
                        self.errors[f"gateway_{r.status_code}"] += 1
                    except httpx.HTTPError as exc:
                        self.errors[f"gateway_{type(exc).__name__}"] += 1
                    time.sleep(1.0)
                self.stop.wait(period)


def _schedule(plan: ChaosPlan, rng: random.Random) -> list[tuple[float, str]]:
    """Fault times: kills spread over the run with jitter, broker restarts and the outage in between."""
    events = []
    span = plan.duration_s * 0.9
    for i in range(plan.kills):
        slot = span / max(plan.kills, 1)
        events.append((5.0 + i * slot + rng.uniform(0.2, 0.8) * slot, "kill"))
    for i in range(plan.broker_restarts):
        events.append((plan.duration_s * (i + 1) / (plan.broker_restarts + 1) + rng.uniform(-3, 3), "broker"))
    if plan.outage_s > 0:
        start = rng.uniform(plan.duration_s / 3, max(plan.duration_s / 3, plan.duration_s * 2 / 3 - plan.outage_s))
        events += [(start, "outage"), (start + plan.outage_s, "recover")]
    return sorted(events)


def _decode(value: bytes | None, schema: str) -> dict[str, Any] | None:
    try:
        return serde.decode(value, schema) if value is not None else None
    except SchemaError:
        return None


class _Tail:
    """A topic read from the beginning in steps: each ``read`` adds what came since the last one.

    Not ``read_topic``'s idle wait: on S3 one fetch can take longer than any idle limit worth waiting.
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka, self.topic = kafka, topic
        self.positions: dict[int, int] = {}

    def read(self, timeout: float = 180.0) -> list[Any]:
        messages, pending = read_to_end(self.kafka, self.topic, self.positions, timeout=timeout)
        if pending:
            raise TimeoutError(f"{self.topic}: partitions {sorted(pending)} not read to the end in {timeout:.0f} s")
        return messages


_SLACK_CONTEXT = re.compile(r"alert `(?P<key>[^`]*)`(?: at <!date\^(?P<t>\d+)\^)?")


def _slack_ids(receiver: AlertReceiver) -> Counter[tuple[str, str, int | None]]:
    """Slack messages by (alert key, status, event second), read back from the message's blocks."""
    out = Counter[tuple[str, str, int | None]]()
    for m in list(receiver.slack_messages):
        body = m["body"]
        context = next(b for b in body["blocks"] if b["type"] == "context")["elements"][0]["text"]
        match = _SLACK_CONTEXT.search(context)
        fields = body["attachments"][0]["blocks"][0]["fields"]
        status = fields[0]["text"].split("\n", 1)[1]
        if match:
            out[(match["key"].replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"), status,
                 int(match["t"]) if match["t"] else None)] += 1
    return out


class _Audit:
    """What the topics and the receiver hold, read incrementally (the catch-up loop asks again and again)."""

    def __init__(self, kafka: KafkaSettings, receiver: AlertReceiver, accepted: dict[str, int]) -> None:
        self.receiver, self.accepted = receiver, accepted
        self.tails = {t: _Tail(kafka, t) for t in ("sensor.readings", "scores.anomaly", "alerts",
                                                   "dlq.sensor.readings")}
        self.inputs: dict[str, int] = {}  # input event id -> readings
        self.scored: dict[str, set[str]] = {}  # input event id -> score ids
        self.alerts: dict[str, dict[str, Any]] = {}
        self.dead_letters: set[str] = set()

    def scores(self) -> None:
        for m in self.tails["sensor.readings"].read():
            rec = _decode(m.value(), SENSOR_BATCH)
            if rec is not None:
                self.inputs[rec["event_id"]] = sum(len(s["values"]) for s in rec["series"])
        for m in self.tails["scores.anomaly"].read():
            rec = _decode(m.value(), ANOMALY_SCORE)
            if rec is not None:
                self.scored.setdefault(rec["source_event_id"], set()).add(rec["event_id"])

    def readings(self) -> dict[str, int]:
        """Readings per message: every valid message in the topic, and every one the load had accepted."""
        return {**self.accepted, **self.inputs}

    def unscored(self) -> dict[str, int]:
        return {k: n for k, n in self.readings().items() if k not in self.scored}

    def deliveries(self) -> tuple[int, int, int]:
        """(undelivered alerts, duplicate incidents, Slack messages beyond one per alert event)."""
        for m in self.tails["alerts"].read():
            rec = _decode(m.value(), ALERT)
            if rec is not None:
                self.alerts[rec["event_id"]] = rec
        events = list(self.receiver.events)
        triggered = {e["payload"]["custom_details"].get("event_id") for e in events if e["event_action"] == "trigger"}
        resolves = Counter(e["dedup_key"] for e in events if e["event_action"] == "resolve")
        slack = _slack_ids(self.receiver)
        expected = Counter((a["alert_key"], a["status"], a["event_time"] // 1000) for a in self.alerts.values())
        undelivered = 0
        for rec in sorted(self.alerts.values(), key=lambda a: a["event_time"]):
            if rec["status"] == "RESOLVED":
                pd_ok = resolves[rec["alert_key"]] > 0
                if pd_ok:
                    resolves[rec["alert_key"]] -= 1
            else:
                pd_ok = rec["event_id"] in triggered
            undelivered += not (pd_ok and slack[(rec["alert_key"], rec["status"], rec["event_time"] // 1000)] > 0)
        opened = Counter(a["alert_key"] for a in self.alerts.values() if a["status"] == "OPENED")
        duplicates = sum(max(0, i["opened"] - opened[k]) for k, i in dict(self.receiver.incidents).items())
        slack_extra = sum(max(0, n - expected[k]) for k, n in slack.items())
        return undelivered, duplicates, slack_extra

    def dlq(self) -> int:
        for m in self.tails["dlq.sensor.readings"].read():
            key = (m.key() or b"").decode(errors="replace")
            if key.startswith(MALFORMED_KEY) and dlq_info(m.headers()).get("reason"):
                self.dead_letters.add(key)
        return len(self.dead_letters)


def overlapping_batches(s3: S3rver) -> int:
    """Record batches the broker stored on offsets it had already given to other batches.

    Read from the objects on disk (one object per batch, named by its base offset; the batch header holds the
    offset delta of its last record). Each such batch hid or overwrote records the broker had acknowledged:
    loss that no client can see coming or undo. Counted so a run says whether the broker lost data. An object
    shorter than a batch header (one the store is still writing while the broker runs) says nothing yet: skipped.
    """
    rewinds = 0
    for records in (s3.directory / s3.bucket).glob("**/topics/*/partitions/*/records"):
        batches = sorted(records.glob("*.batch._S3rver_object"), key=lambda f: int(f.name.split(".")[0]))
        next_offset = 0
        for f in batches:
            base = int(f.name.split(".")[0])
            with f.open("rb") as fh:
                header = fh.read(27)
            if len(header) < 27:
                continue
            rewinds += base < next_offset
            next_offset = max(next_offset, base + struct.unpack(">i", header[23:27])[0] + 1)
    return rewinds


def run_chaos(plan: ChaosPlan, workdir: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the plan in ``workdir`` and return the audit (the JSON of ``eddyline bench chaos``)."""
    from connectors.broker import free_port

    rng = random.Random(plan.seed)
    workdir.mkdir(parents=True, exist_ok=True)
    if plan.broker_restarts and not plan.durable:
        raise ValueError("a broker in memory keeps nothing across a restart: set durable=True or broker_restarts=0")
    s3 = S3rver(workdir / "s3").start() if plan.durable else None
    broker = EmbeddedBroker(storage=f"s3://{s3.bucket}/", env={**os.environ, **s3.env()},
                            log_path=workdir / "tansu.log").start() if s3 else EmbeddedBroker().start()
    receiver = AlertReceiver(routing_keys={ROUTING_KEY}, tls=True).start()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace="chaos.", session_timeout_ms=6000,
                          linger_ms=1000 if s3 else 50,  # batch: on S3 every produce request is an object
                          extra=S3_CLIENT_SETTINGS if s3 else {})
    env = _env(kafka, receiver, workdir)
    # not at import: every `eddyline` start loads this module
    from streams.engines.output import flow_topics
    from streams.flows import flow_spec
    from streams.flows.notify import TOPICS as NOTIFY_TOPICS

    # every topic up front: a flow starting under load on S3 can wait longer for new topics than it should
    create_topics(kafka, [*flow_topics(flow_spec("anomaly")), *NOTIFY_TOPICS], timeout=120)
    gateway_port = free_port()
    flow = _Process("anomaly", ["-m", "streams.cli", "run", "anomaly", "--state-dir", str(workdir / "state")],
                    env, workdir / "anomaly.log")
    notify = _Process("notify", ["-m", "streams.cli", "run", "notify"], env, workdir / "notify.log")
    gateway = _Process("gateway", ["-m", "connectors.gateway", "--port", str(gateway_port)], env,
                       workdir / "gateway.log")
    result: dict[str, Any] = {"kills": 0, "broker_restarts": 0, "receiver_outage_s": 0.0}
    rss: list[float] = []
    unplanned = Counter[str]()
    load = _Load(kafka, f"http://127.0.0.1:{gateway_port}", plan)
    try:
        for p in (flow, notify, gateway):
            p.start()
        _wait_http(f"http://127.0.0.1:{gateway_port}/health", gateway)
        load.start()
        start = time.monotonic()
        outage_began = None
        plan_events = _schedule(plan, rng)
        say(f"chaos: {plan.duration_s:.0f} s, faults at {[(round(t), e) for t, e in plan_events]}")
        while time.monotonic() - start < plan.duration_s or plan_events:
            now = time.monotonic() - start
            while plan_events and plan_events[0][0] <= now:
                _, what = plan_events.pop(0)
                if what == "kill":
                    flow.signal(signal.SIGKILL)
                    result["kills"] += 1
                    flow.start()
                elif what == "broker":
                    broker.kill()
                    time.sleep(rng.uniform(1.0, 3.0))
                    broker.start()
                    result["broker_restarts"] += 1
                elif what == "outage":
                    receiver.outage(503)
                    outage_began = time.monotonic()
                elif what == "recover":
                    receiver.recover()
                    if outage_began is not None:
                        result["receiver_outage_s"] += round(time.monotonic() - outage_began, 1)
                    outage_began = None
                say(f"chaos: {now:6.1f} s {what}")
            for p in (flow, notify, gateway):
                if not p.alive():  # a flow that died on its own is restarted, as systemd would
                    unplanned[p.name] += 1
                    say(f"chaos: {p.name} exited with {p.proc.returncode if p.proc else None}; restarting")
                    p.start()
            rss.append(flow.rss_mb())
            time.sleep(1.0)
        load.join()
        say(f"chaos: load stopped: {dict(load.sent)}; waiting for the flows to catch up")
        deadline = time.monotonic() + plan.settle_s
        audit = _Audit(kafka, receiver, load.accepted)
        undelivered = duplicate_incidents = duplicate_slack = -1
        dlq = -1
        try:
            audit.scores()
            while time.monotonic() < deadline and audit.unscored():
                for p in (flow, notify):
                    if not p.alive():
                        unplanned[p.name] += 1
                        p.start()
                rss.append(flow.rss_mb())
                time.sleep(5)
                audit.scores()
            undelivered, duplicate_incidents, duplicate_slack = audit.deliveries()
            while undelivered and time.monotonic() < deadline:
                time.sleep(5)
                undelivered, duplicate_incidents, duplicate_slack = audit.deliveries()
            dlq = audit.dlq()
        except TimeoutError as exc:  # a broker that stops serving reads: say so, with what was read (-1: not read)
            result["audit_error"] = str(exc)
        result.update(
            readings=sum(audit.readings().values()),
            lost=sum(audit.unscored().values()),
            duplicate_scores=sum(1 for ids in audit.scored.values() if len(ids) > 1),
            duplicate_incidents=duplicate_incidents,
            undelivered_alerts=undelivered,
            dlq=dlq,
            max_rss_mb=round(max(rss, default=0.0), 1),
            # context for the write-up
            malformed=load.sent["malformed"],
            messages=len(audit.inputs),
            accepted_not_in_topic=len(set(load.accepted) - set(audit.inputs)),
            duplicate_slack_messages=duplicate_slack,
            device_messages=load.sent["device_messages"],
            gateway_messages=load.sent["gateway_messages"],
            alerts=len(audit.alerts),
            incidents=len(receiver.incidents),
            unplanned_restarts=dict(unplanned),
            load_errors=dict(load.errors),
            s3_objects=s3.objects() if s3 else None,
            broker_overlapping_batches=overlapping_batches(s3) if s3 else 0,
            plan=asdict(plan),
        )
        (workdir / "receiver.json").write_text(json.dumps(
            {"events": receiver.events, "slack": receiver.slack_messages, "incidents": receiver.incidents}, default=str))
        return result
    finally:
        load.stop.set()
        for p in (flow, notify, gateway):
            p.signal(signal.SIGKILL)
        receiver.stop()
        broker.stop()
        if s3:
            s3.stop()


def _wait_http(url: str, proc: _Process, timeout: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited while starting; see {proc.log}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{proc.name} did not answer {url} within {timeout:.0f} s; see {proc.log}")


def command(
    minutes: Annotated[float, typer.Option(help="Minutes of load and faults (the audit comes after).")] = 5.0,
    kills: Annotated[int, typer.Option(help="SIGKILLs of the anomaly flow.")] = 10,
    broker_restarts: Annotated[int, typer.Option(help="Broker SIGKILLs and restarts.")] = 1,
    outage: Annotated[float, typer.Option(help="Seconds the PagerDuty/Slack stand-in answers 503.")] = 60.0,
    durable: Annotated[bool, typer.Option("--durable/--memory", help="Broker on S3 (s3rver) or in memory.")] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result here.")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Keep logs and data here (default: a temporary folder).")] = None,
) -> None:
    """Kill the anomaly flow, the broker and the alert destinations under load; audit that nothing was lost."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop everything it started on SIGTERM too
    plan = ChaosPlan(duration_s=minutes * 60, kills=kills, broker_restarts=broker_restarts, outage_s=outage,
                     durable=durable)
    folder = workdir or Path(tempfile.mkdtemp(prefix="eddyline-chaos-"))
    result = run_chaos(plan, folder, say=lambda s: typer.echo(s, err=True))
    text = json.dumps(result, indent=2)
    typer.echo(text)
    if json_path:
        json_path.write_text(text + "\n")
    typer.echo(f"logs and data in {folder}", err=True)


if __name__ == "__main__":
    typer.run(command)
