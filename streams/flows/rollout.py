"""The canary rollout controller: send a model to a share of a device class, promote it or roll it back.

A plain processor. It starts a rollout by naming canaries (``schemas.canary``: by device id hash, among the
devices of the class heard from recently), then reads the canaries' ``device_health`` events, their
readings' local flags and the platform's scores of the same readings (``streams.flows.agreement``) and
decides: promote once every canary has run the new version, healthy, for ``observe_s`` and agrees with
the platform's detector on at least ``min_agreement`` of ``min_joined_readings`` or more readings; roll back
as soon as one refuses the model, reports errors or a slow model beyond the bounds, falls silent, or does
not switch in ``swap_timeout_s``, and at the end of the observation when one disagrees (or, by
``swap_timeout_s`` after it, still has too few joined readings to tell). Each decision is an
``edge_rollout`` record; the compacted rollouts topic is the durable state (agents act on its latest
record per class, and a restarted controller resumes from it).
Times are the controller's clock at arrival, so a device's wrong clock does not decide anything.

Records are signed with the models' key (``schemas.signing.sign_rollout``) and carry a ``sequence`` above
every earlier record of their class: agents act on no other, so whoever can write the topic without the key
can neither forge a rollout nor replay an old one to send devices back to an older model. The controller
likewise reads only the records its key signed, and keeps the last one it wrote per class on its own disk
(``kept``): the log cleaner keeps only a key's last record, so a replayed old one (or a tombstone) under the
class's key would otherwise leave the controller an older latest to base the next rollout on, and sign it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from schemas import derive_id
from schemas.canary import choose_canaries
from streams.flows.agreement import AgreementJoin

log = logging.getLogger(__name__)


class RolloutPolicy(Section):
    """The bounds a canary must stay within: ``[rollout]`` / ``EDDYLINE_ROLLOUT_*``.

    Parameters
    ----------
    canary_percent
        Share of the class that gets the model first.
    observe_s
        How long every canary must run the new model, healthy, before it goes to all.
    swap_timeout_s
        A canary that does not report the new version this long after the start fails the rollout.
    max_error_rate_per_min
        Agent errors per minute (the health event's ``errors`` counter) a canary may add while on the model.
    max_latency_ms
        Local inference latency (per batch, the health event's ``inference_latency_ms``) a canary may report.
    silence_intervals
        Heartbeat intervals without a health event after which a canary counts as silent.
    fleet_window_s
        Devices heard from within this window make up the class the canaries are drawn from.
    min_agreement
        Share of a canary's readings on which its model and the platform's detector must agree to promote.
    min_joined_readings
        Readings per canary, flagged by the new model and scored by the platform, needed to judge agreement;
        0 turns the agreement gate off (a class whose agents do not score locally).
    min_recall
        Share of the platform's anomalies a canary must also flag, judged only when the platform flagged some;
        0 (the default) leaves it out: anomalies are rare, so recall over one window is often a handful.
    max_pending_readings
        Readings kept per canary and sensor while waiting for the other side of the join (bounds memory).
    """

    toml_table = "rollout"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_ROLLOUT_", extra="forbid")

    canary_percent: float = Field(10.0, gt=0, le=100)
    observe_s: float = Field(600.0, gt=0)
    swap_timeout_s: float = Field(300.0, gt=0)
    max_error_rate_per_min: float = Field(1.0, ge=0)
    max_latency_ms: float = Field(50.0, gt=0)
    silence_intervals: float = Field(3.0, gt=0)
    fleet_window_s: float = Field(900.0, gt=0)
    min_agreement: float = Field(0.9, ge=0, le=1)
    min_joined_readings: int = Field(500, ge=0)
    min_recall: float = Field(0.0, ge=0, le=1)
    max_pending_readings: int = Field(4096, gt=0)


@dataclass
class CanaryWatch:
    """What one canary has shown since the rollout started (plain numbers; rebuilt from health on resume)."""

    last_seen: float = 0.0
    interval_s: float = 60.0
    switched_at: float | None = None  # first heartbeat on the new version
    errors: int = 0  # the agent's cumulative counter, as last reported
    errors_since_switch: int = 0  # added up across agent restarts, which reset the counter
    latency_ms: float = 0.0
    refusal: str | None = None
    seen: bool = False


class RolloutController:
    """Decides one rollout of one device class.

    Parameters
    ----------
    policy
        The bounds.
    rollout
        The ``edge_rollout`` record in state ``canary`` (from ``start`` or the rollouts topic on resume).
    started_at
        The controller's clock (seconds) when the canary started; on resume, when the controller restarted
        (timeouts then count from the resume: a restart never fails a rollout by itself).
    """

    def __init__(self, policy: RolloutPolicy, rollout: dict[str, Any], started_at: float | None = None) -> None:
        if rollout["state"] != "canary":
            raise ValueError(f"rollout {rollout['rollout_id']} is {rollout['state']}, nothing to decide")
        self.policy = policy
        self.rollout = rollout
        self.started_at = time.time() if started_at is None else started_at
        self.canaries = {d: CanaryWatch() for d in rollout["canary_devices"]}
        self.agreement = AgreementJoin(list(self.canaries), rollout["version"], policy.max_pending_readings)

    @staticmethod
    def start(
        policy: RolloutPolicy,
        device_class: str,
        version: str,
        previous_version: str | None,
        fleet: list[str],
        now_ms: int,
        producer: str,
        canary_percent: float | None = None,
        after: int = 0,
    ) -> dict[str, Any]:
        """The ``canary`` record that starts a rollout (unsigned): canaries drawn from ``fleet`` by device id hash.

        Parameters
        ----------
        policy
            The bounds (its ``canary_percent`` unless ``canary_percent`` is given).
        device_class, version
            What goes where.
        previous_version
            What the class runs now: where a rollback sends it.
        fleet
            The class's devices heard from recently.
        now_ms
            The controller's clock.
        producer
            The record's producer identity.
        canary_percent
            Overrides ``policy.canary_percent``.
        after
            The ``sequence`` of the class's latest record: this one's is above it, whatever the clock says.
        """
        if not fleet:
            raise ValueError(
                f"no device of class {device_class!r} reported health in the last {policy.fleet_window_s:g} s; "
                "check the class name (`eddyline edge status`) or raise [rollout] fleet_window_s"
            )
        if version == previous_version:
            raise ValueError(f"version {version} already runs on class {device_class}; publish a new version first")
        percent = canary_percent if canary_percent is not None else policy.canary_percent
        rollout_id = derive_id("edge.rollouts", device_class, version, now_ms)
        return {
            "event_id": derive_id(rollout_id, "canary"),
            "event_time": now_ms,
            "producer": producer,
            "rollout_id": rollout_id,
            "device_class": device_class,
            "version": version,
            "previous_version": previous_version,
            "state": "canary",
            "canary_percent": float(percent),
            "canary_devices": choose_canaries(rollout_id, fleet, percent),
            "started_ms": now_ms,
            "reason": None,
            "sequence": max(now_ms, after + 1),
            "key_id": None,
            "signature": None,
        }

    def observe(self, health: list[dict[str, Any]], now: float) -> None:
        """Take the canaries' health events that arrived at ``now`` (others are ignored)."""
        for h in health:
            w = self.canaries.get(h["device_id"])
            if w is None or h["device_class"] != self.rollout["device_class"]:
                continue
            errors = int(h["errors"])
            if w.switched_at is not None:
                w.errors_since_switch += errors - w.errors if errors >= w.errors else errors  # a restart resets it
            w.seen, w.last_seen, w.interval_s, w.errors = True, now, h["interval_s"], errors
            if h["model_version"] == self.rollout["version"]:
                if w.switched_at is None:
                    w.switched_at, w.errors_since_switch = now, 0
                if h["inference_latency_ms"] is not None:
                    w.latency_ms = h["inference_latency_ms"]
            elif h["model_state"] == "refused" and _about(h["model_message"], self.rollout["version"]):
                w.refusal = h["model_message"]

    def decide(self, now: float) -> dict[str, Any] | None:
        """A ``promoted`` or ``rolled_back`` record once the canaries settle it, else None."""
        p = self.policy
        healthy_since = []
        for device, w in sorted(self.canaries.items()):
            if w.refusal:
                return self._finish("rolled_back", f"{device} refused the model: {w.refusal}", now)
            silent_for = now - (w.last_seen if w.seen else self.started_at)
            if silent_for > p.silence_intervals * w.interval_s and (w.seen or silent_for > p.swap_timeout_s):
                return self._finish("rolled_back", f"{device} silent for {silent_for:.0f} s", now)
            if w.switched_at is None:
                if now - self.started_at > p.swap_timeout_s:
                    return self._finish(
                        "rolled_back", f"{device} did not switch to {self.rollout['version']} in {p.swap_timeout_s:g} s",
                        now,
                    )
                healthy_since.append(None)
                continue
            minutes = max(now - w.switched_at, w.interval_s) / 60
            rate = w.errors_since_switch / minutes
            if rate > p.max_error_rate_per_min:
                return self._finish("rolled_back", f"{device}: {rate:.1f} errors/min on the new model", now)
            if w.latency_ms > p.max_latency_ms:
                return self._finish(
                    "rolled_back", f"{device}: inference {w.latency_ms:.1f} ms, bound {p.max_latency_ms:g} ms", now
                )
            healthy_since.append(w.switched_at)
        if not healthy_since or None in healthy_since or now - max(healthy_since) < p.observe_s:  # type: ignore[type-var]
            return None
        n = len(self.canaries)
        healthy = f"{n} canar{'y' if n == 1 else 'ies'} healthy for {p.observe_s:g} s"
        if p.min_joined_readings == 0:
            return self._finish("promoted", healthy, now)
        worst = None
        for device, w in sorted(self.canaries.items()):
            a = self.agreement.counts[device]
            if a.joined < p.min_joined_readings:
                waited = now - w.switched_at - p.observe_s  # type: ignore[operator]
                if waited > p.swap_timeout_s:
                    return self._finish(
                        "rolled_back",
                        f"{device}: only {a.joined} of {p.min_joined_readings} readings joined with the platform's "
                        f"scores; is the anomaly flow running and the device sending raw readings?", now,
                    )
                return None
            if a.agreement < p.min_agreement:  # type: ignore[operator]
                return self._finish("rolled_back", f"{device} disagrees with the platform's detector: "
                                    f"{a.describe()}, bound {p.min_agreement:g}", now)
            if a.recall is not None and a.recall < p.min_recall:
                return self._finish("rolled_back", f"{device} misses the platform's anomalies: "
                                    f"{a.describe()}, bound {p.min_recall:g}", now)
            if worst is None or a.agreement < worst.agreement:  # type: ignore[operator]
                worst = a
        return self._finish("promoted", f"{healthy}; lowest {worst.describe()}", now)  # type: ignore[union-attr]

    def _finish(self, state: str, reason: str, now: float) -> dict[str, Any]:
        r, now_ms = self.rollout, int(now * 1000)
        return {**r, "event_id": derive_id(r["rollout_id"], state), "event_time": now_ms, "state": state,
                "reason": reason, "sequence": max(now_ms, r["sequence"] + 1), "key_id": None, "signature": None}


def _about(message: str | None, version: str) -> bool:
    """Whether an agent's refusal message is about ``version`` (they start ``model <version>``)."""
    return bool(message) and (message.startswith(f"model {version}:") or message.startswith(f"model {version} "))


def previous_version(latest: dict[str, Any] | None) -> str | None:
    """What a class runs once ``latest`` (its newest rollout record) is settled: the base of the next rollout."""
    if latest is None:
        return None
    return latest["previous_version"] if latest["state"] == "rolled_back" else latest["version"]


def latest_rollouts(settings: Any, verifier: Any, untrusted: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """The ``edge_rollout`` record of highest ``sequence`` per device class that ``verifier``'s key signed.

    The whole rollouts topic is read, not its latest value per key: a record forged without the key, or an
    old one replayed, must neither steer the next rollout (its ``previous_version`` is where a rollback sends
    the class) nor hide the last one the controller signed; a record that does not decode is skipped alike.

    Parameters
    ----------
    settings
        ``KafkaSettings``.
    verifier
        ``schemas.signing.Verifier`` of the signing key.
    untrusted
        Given, it collects the classes of records the key did not verify (unsigned ones written before rollouts
        were signed, or signed with a key since rotated).
    """
    from connectors.kafka import read_to_end
    from schemas import AvroSerde
    from schemas.catalog import EDGE_ROLLOUT
    from schemas.errors import RegistryUnavailableError, SchemaError
    from schemas.signing import SignatureError

    messages, pending = read_to_end(settings, "edge.rollouts", {})
    if pending:
        raise TimeoutError(f"the rollouts topic was not read to its end (partitions {sorted(pending)}); "
                           "is the broker overloaded? try again")
    serde = AvroSerde()
    latest: dict[str, dict[str, Any]] = {}
    for msg in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        if msg.value() is None:
            continue
        try:  # bytes anyone can write must not stop the controller, which also rolls back
            r = serde.decode(msg.value(), EDGE_ROLLOUT)
        except RegistryUnavailableError:
            raise
        except SchemaError as exc:
            log.warning("ignoring a record on the rollouts topic (offset %d): %s", msg.offset(), exc)
            continue
        try:
            verifier.verify_rollout(r)
        except SignatureError as exc:
            log.warning("ignoring a record on the rollouts topic (offset %d): %s", msg.offset(), exc)
            if untrusted is not None:
                untrusted.add(r["device_class"])
            continue
        if r["sequence"] >= latest.get(r["device_class"], r)["sequence"]:
            latest[r["device_class"]] = r
    return latest


def _kept_path(kept: Path, settings: Any, device_class: str) -> Path:
    return kept / settings.topic("edge.rollouts") / f"{derive_id('edge.rollouts', device_class)}.json"


def kept_rollout(kept: Path | None, settings: Any, device_class: str, verifier: Any) -> dict[str, Any] | None:
    """The last record of ``device_class`` this host's controller wrote (``keep_rollout``), if its key signed it.

    Parameters
    ----------
    kept
        The folder; None keeps nothing.
    settings
        ``KafkaSettings``: its rollouts topic (namespace included) names a subfolder.
    device_class
        The class.
    verifier
        ``schemas.signing.Verifier`` of the signing key: a record it does not verify is not trusted.
    """
    from schemas.signing import SignatureError

    if kept is None or not (path := _kept_path(kept, settings, device_class)).exists():
        return None
    try:
        record = json.loads(path.read_text())
        record["signature"] = bytes.fromhex(record["signature"])
        verifier.verify_rollout(record)
        if record["device_class"] != device_class:
            raise SignatureError(f"it is class {record['device_class']}'s")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # SignatureError is a ValueError
        log.warning("the rollout kept in %s is not used (%s)", path, exc)
        return None
    return record


def keep_rollout(kept: Path | None, settings: Any, record: dict[str, Any]) -> None:
    """Keep ``record`` (signed) as its class's last one, atomically; a disk that refuses costs the memory only.

    Parameters
    ----------
    kept
        The folder; None keeps nothing.
    settings
        ``KafkaSettings``.
    record
        A signed ``edge_rollout`` record just written to the topic.
    """
    if kept is None:
        return
    path = _kept_path(kept, settings, record["device_class"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({**record, "signature": record["signature"].hex()}))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot keep rollout %s in %s: %s", record["rollout_id"], path, exc)


def published_model(settings: Any, device_class: str, version: str) -> dict[str, Any] | None:
    """The ``edge_model`` record for a class and version (key ``class/version``) on the models topic, or None.

    Read as the edge agents read it (the packaged schemas' ids, no registry client): a record they cannot read
    (one written with a schema registry's ids) is not published for them, and publishing again replaces it.

    Parameters
    ----------
    settings
        ``KafkaSettings``.
    device_class, version
        The model's key.
    """
    from connectors.kafka import read_latest
    from schemas import AvroSerde, SchemaError
    from schemas.catalog import EDGE_MODEL

    value = read_latest(settings, "edge.models").get(f"{device_class}/{version}".encode())
    if value is None:
        return None
    try:
        return AvroSerde().decode(value, EDGE_MODEL)
    except SchemaError as exc:
        log.warning("the model record %s/%s on the models topic is one edge agents cannot read (%s); publish it "
                    "again", device_class, version, exc)
        return None


def run_rollout(
    settings: Any,
    policy: RolloutPolicy,
    device_class: str,
    version: str,
    *,
    private_pem: bytes,
    canary_percent: float | None = None,
    producer: str = "eddyline-rollout",
    on_event: Any = None,
    kept: Path | None = None,
    running: str | None = None,
) -> dict[str, Any]:
    """Start (or resume) a rollout and drive it to ``promoted`` or ``rolled_back``; returns the final record.

    Parameters
    ----------
    settings
        ``KafkaSettings``.
    policy
        The canary bounds.
    device_class, version
        What goes where; the version must be published (``eddyline edge publish``) first.
    private_pem
        The key that signs the models: it signs every record written, and only records it signed are read.
    canary_percent
        Overrides ``policy.canary_percent``.
    producer
        The records' producer identity.
    on_event
        Called with each record written (the CLI prints them).
    kept
        Where the last record written per class is kept (``keep_rollout``); when it is newer than the topic's
        latest signed one, the topic lost it (a replay or tombstone compacted over it): it is used, and written
        to the topic again for devices that start afresh. None: the topic alone is trusted.
    running
        The version the class runs now, where no record the key signed says it: the class's first rollout signed
        with this key (after the upgrade to signed rollouts, or a key rotation) is refused without it when the
        topic holds the class's records, since a rollout naming no previous version sends every device that is
        not a canary back to the model it shipped with.
    """
    import uuid

    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

    from connectors.kafka import EventProducer, create_topics, make_consumer
    from connectors.schema_registry import configured_serde
    from schemas import AvroSerde
    from schemas.catalog import ANOMALY_SCORE, DEVICE_HEALTH, EDGE_ROLLOUT, SENSOR_BATCH
    from schemas.signing import Verifier, sign_rollout

    try:
        verifier = Verifier.for_signing_key(private_pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot sign rollouts with the given key ({exc}); give the private key from "
                         "`eddyline edge keygen` that signs the models") from None
    create_topics(settings, ["edge.models", "edge.rollouts", "device.health", "sensor.readings", "scores.anomaly"])
    untrusted: set[str] = set()
    latest = latest_rollouts(settings, verifier, untrusted).get(device_class)
    mine = kept_rollout(kept, settings, device_class, verifier)
    lost = mine is not None and (latest is None or mine["sequence"] > latest["sequence"])
    if lost:
        log.warning("the rollouts topic's latest signed record of %s is %s, older than %s kept in %s: an old record "
                    "or a tombstone was compacted over it; following the kept one and writing it again",
                    device_class, f"sequence {latest['sequence']}" if latest else "none", mine["sequence"], kept)
        latest = mine
    if latest is None and running is None and device_class in untrusted:
        raise ValueError(
            f"no rollout record of {device_class} on the topic is signed with this key ({verifier.key_id}): they "
            "were written before rollouts were signed, or with a key since rotated, so what the class runs now is "
            "not known; give it with --running VERSION (`eddyline edge status` shows what its devices run), else "
            "every device that is not a canary would go back to the model it shipped with"
        )
    if latest is not None and latest["state"] == "canary" and latest["version"] != version:
        raise ValueError(
            f"a rollout of {latest['version']} to {device_class} is in progress (rollout {latest['rollout_id']}); "
            f"resume it with `eddyline edge rollout {latest['version']} --device-class {device_class}` first"
        )
    if latest is not None and running is not None and running != previous_version(latest):
        raise ValueError(f"--running {running}: the class's latest signed rollout says it runs "
                         f"{previous_version(latest)}; leave --running out")
    base = previous_version(latest) if latest is not None else running
    if published_model(settings, device_class, version) is None:
        raise ValueError(
            f"no model {version} for class {device_class} on the models topic; "
            f"`eddyline edge publish MODEL --version {version} --device-class {device_class}` first"
        )
    serde = configured_serde(consumer=True)  # the anomaly flow's scores carry the configured registry's ids
    health_topic = settings.topic("device.health")
    consumer = make_consumer(settings, f"eddyline-rollout-{uuid.uuid4().hex}")
    joined = make_consumer(settings, f"eddyline-rollout-agreement-{uuid.uuid4().hex}")
    try:
        meta = consumer.list_topics(health_topic, timeout=10)
        consumer.assign([TopicPartition(health_topic, p, OFFSET_BEGINNING) for p in meta.topics[health_topic].partitions])
        fleet: set[str] = set()
        now_ms = time.time() * 1000
        give_up = time.monotonic() + 30.0
        while time.monotonic() < give_up:  # the past: who is in the class (end offsets can't be trusted)
            batch = consumer.consume(1000, timeout=1.0)
            for h in _decoded(serde, batch, DEVICE_HEALTH):
                if h["device_class"] == device_class and h["event_time"] >= now_ms - policy.fleet_window_s * 1000:
                    fleet.add(h["device_id"])
            if not batch or batch[-1].timestamp()[1] >= now_ms:
                break
        with EventProducer(settings, AvroSerde()) as out:  # the agents read rollouts without a registry client
            if lost:
                out.produce("edge.rollouts", EDGE_ROLLOUT, latest, key=device_class)
                out.flush()
            if latest is not None and latest["state"] == "canary":
                record = latest  # resume: the agents already act on it
            else:
                record = sign_rollout(RolloutController.start(
                    policy, device_class, version, base, sorted(fleet), int(time.time() * 1000),
                    producer, canary_percent, after=latest["sequence"] if latest is not None else 0,
                ), private_pem)
                out.produce("edge.rollouts", EDGE_ROLLOUT, record, key=device_class)
                out.flush()
                keep_rollout(kept, settings, record)
            if on_event is not None:
                on_event(record)
            controller = RolloutController(policy, record)
            if policy.min_joined_readings:  # from now on: readings before the start are the old model's
                data_topics = [settings.topic("sensor.readings"), settings.topic("scores.anomaly")]
                joined.assign([TopicPartition(t, p, OFFSET_END) for t in data_topics
                               for p in joined.list_topics(t, timeout=10).topics[t].partitions])
            scores_topic = settings.topic("scores.anomaly")
            while True:
                batch = consumer.consume(1000, timeout=0.5)
                now = time.time()
                controller.observe(list(_decoded(serde, batch, DEVICE_HEALTH)), now)
                if policy.min_joined_readings:
                    data = [m for m in joined.consume(10_000, timeout=0.05)
                            if m.error() is None and m.key() is not None
                            and controller.agreement.watches(m.key().decode(errors="replace"))]
                    for m in data:
                        if m.topic() == scores_topic:
                            for rec in _decoded(serde, [m], ANOMALY_SCORE):
                                controller.agreement.add_scores(rec)
                        else:
                            for rec in _decoded(serde, [m], SENSOR_BATCH):
                                controller.agreement.add_readings(rec)
                final = controller.decide(now)
                if final is not None:
                    final = sign_rollout(final, private_pem)
                    out.produce("edge.rollouts", EDGE_ROLLOUT, final, key=device_class)
                    out.flush()
                    keep_rollout(kept, settings, final)
                    if on_event is not None:
                        on_event(final)
                    return final
    finally:
        consumer.close()
        joined.close()


def _decoded(serde: Any, batch: list[Any], event_type: str) -> Any:
    for msg in batch:
        if msg.error() is None and msg.value() is not None:
            try:
                yield serde.decode(msg.value(), event_type)
            except Exception:  # a bad event is its own flow's to dead-letter, not the controller's
                continue
