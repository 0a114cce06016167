"""``eddyline edge``: the device fleet as the platform sees it (``status``; model rollout commands join here).

``edge status`` reads ``device.health`` itself, from the start of its retention up to its end as of the
command's start (heartbeats that keep coming do not keep it reading), and folds it to the latest heartbeat per
device; it does not read a fleet-state topic. Why: the health topic is the source of truth and is there
whether or not the fleet flow runs, so the view cannot disagree with what the devices said, and no
second compacted topic (with its own schema and lag) has to be kept in step. States are judged with the
fleet flow's own rules (``FleetProcessor``, ``[fleet]`` thresholds) and then, unlike the flow, against wall
time: a device is silent when its last heartbeat is older than its silence bound *now*, which also covers a
fleet that went silent all at once (the flow's event-time clock stops then). Cost: it reads the topic's
retention (in time; its memory is a state per device, as it folds while it reads). A device silent for longer
than that retention is no longer listed at all, so the retention is also how long a dead device stays in view:
the broker's default week is a fair trade; shorter reads faster but forgets devices sooner.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer


class FleetView:
    """The fleet as ``edge status`` shows it, folded one ``device.health`` message at a time, in the order they come
    (as the fleet flow takes them): it holds the flow's small state per device, never the topic's retention, so a
    large fleet's week of heartbeats does not have to fit in memory.

    A device silent past ``[fleet] forget_after_s`` is left out, as the fleet flow forgets it: one renamed or
    retired within the topic's retention is not listed next to its new name.

    Parameters
    ----------
    params
        ``FleetProcessor`` settings (default: ``[fleet]``).
    """

    def __init__(self, **params: Any) -> None:
        from schemas import AvroSerde
        from streams.flows.fleet import FleetProcessor, FleetSettings

        self.serde = AvroSerde()
        self.fleet = FleetProcessor("status", **(FleetSettings().processor_params() | params))
        self.latest: dict[str, dict[str, Any]] = {}
        self.bad = 0

    def add(self, message: Any) -> None:
        """Fold one message in; one that is not a heartbeat is counted (the flow dead-letters it).

        Parameters
        ----------
        message
            A Kafka message of the health topic.
        """
        from schemas import DecodeError, ValidationError
        from schemas.catalog import DEVICE_HEALTH
        from streams.flows.fleet import heard_at
        from streams.processor import Event

        try:
            rec = self.serde.decode(message.value(), DEVICE_HEALTH)
        except (DecodeError, ValidationError):
            self.bad += 1
            return
        ts_type, ts = message.timestamp()
        ev = Event("device.health", rec["device_id"], rec, message.partition(), message.offset(),
                   ts if ts_type else -1)
        self.fleet.process([ev])
        t, seen = heard_at(ev), self.latest.get(rec["device_id"])
        if seen is None or t >= seen["_t"]:  # an older heartbeat sent late (from a buffer) is not the latest
            self.latest[rec["device_id"]] = rec | {"_t": t}

    def rows(self, now_ms: int) -> list[dict[str, Any]]:
        """One row per device, judged at ``now_ms``, then the count of undecodable messages if any.

        Parameters
        ----------
        now_ms
            Wall time to judge silence against.
        """
        from streams.flows.fleet import KINDS

        fleet, rows = self.fleet, []
        for device, rec in sorted(self.latest.items()):
            dev = fleet.devices.get(device)
            age_ms = max(0, now_ms - rec["_t"])
            if dev is None or 0 < fleet.forget_after_s * 1000 <= age_ms:
                continue  # forgotten as the flow forgets, by its clock or by wall time
            state = "silent" if age_ms >= fleet.silent_after_ms(dev) else next(
                (k for k in KINDS[1:] if k in dev["incidents"]), "ok")  # silence by wall time, not the flow's clock
            rows.append({"device_id": device, "state": state, "age_s": round(age_ms / 1000, 1),
                         "device_class": rec["device_class"], "agent_version": rec["agent_version"],
                         "model_version": rec["model_version"] or "none", "model_state": rec["model_state"],
                         "buffer_depth": rec["buffer_depth"], "errors": rec["errors"],
                         "clock_offset_ms": rec["clock_offset_ms"], "dead_letters": rec["dead_letters"],
                         "rollouts_refused": rec["rollouts_refused"]})
        if self.bad:
            rows.append({"undecodable_messages": self.bad})
        return rows


def fleet_status(messages: Iterable[Any], now_ms: int, **params: Any) -> list[dict[str, Any]]:
    """The latest state of every device in ``messages`` (``device.health`` Kafka messages), judged at ``now_ms``.

    Parameters
    ----------
    messages
        Raw messages of the health topic, in the order they were read.
    now_ms
        Wall time to judge silence against.
    params
        ``FleetProcessor`` settings (default: ``[fleet]``).
    """
    view = FleetView(**params)
    for m in messages:
        view.add(m)
    return view.rows(now_ms)


_NAMED = 5  # devices named per class in the refused-rollouts line; the rest are counted


def _refusing_by_class(devices: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Devices that refused rollout records since their agent started, by class: the fleet flow's alert is per
    class, because one forged or replayed record is refused by every device of it."""
    out: dict[str, list[str]] = {}
    for r in devices:
        if r["rollouts_refused"]:
            out.setdefault(r["device_class"], []).append(r["device_id"])
    return out


def scan_health(on_message: Callable[[Any], None], timeout: float) -> None:
    """Hand every message on ``device.health`` up to its end as of now to ``on_message``, as it is read: heartbeats
    that keep coming do not keep it reading.

    Partitions not read to their end within ``timeout`` are named on stderr (devices there may be missing or
    stale); a broker that cannot be read is a ``ConnectionError`` that says where.

    Parameters
    ----------
    on_message
        Called with each Kafka message, in offset order per partition.
    timeout
        Seconds to try.
    """
    from confluent_kafka import KafkaException

    from connectors.kafka import KafkaSettings, scan_to_end

    if timeout <= 0:
        raise ValueError("--timeout must be positive seconds")
    kafka = KafkaSettings()
    try:
        unread = scan_to_end(kafka, kafka.topic("device.health"), on_message, timeout=timeout)
    except KafkaException as exc:
        raise ConnectionError(f"cannot read {kafka.topic('device.health')} from {kafka.bootstrap_servers}: "
                              f"{exc.args[0].str() if exc.args else exc}") from None
    if unread:
        typer.echo(f"partitions {sorted(unread)} of {kafka.topic('device.health')} were not read to their end "
                   f"within {timeout:g} s: devices on them may be missing or stale; raise --timeout", err=True)


def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per device instead of the tables.")] = False,
    timeout: Annotated[float, typer.Option(
        help="Give up after this many seconds; device.health is read up to its end as of the start.")] = 30.0,
) -> None:
    """The fleet by version and state: the latest heartbeat of every device in device.health, judged now."""
    view = FleetView()
    scan_health(view.add, timeout)
    rows = view.rows(int(time.time() * 1000))
    devices = [r for r in rows if "device_id" in r]
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))
        return
    if not devices:
        typer.echo("no device has reported on device.health; is an agent running with this [kafka] namespace?")
        return
    from streams.flows.fleet import STATES

    typer.echo(f"{len(devices)} devices")
    by = Counter((r["agent_version"], r["model_version"], r["state"]) for r in devices)
    wide = max(map(len, STATES)) + 1
    typer.echo(f"{'agent':<14} {'model':<24} {'state':<{wide}} devices")
    for (agent, model, state), n in sorted(by.items()):
        typer.echo(f"{agent:<14} {model:<24} {state:<{wide}} {n}")
    trouble = [r for r in devices if r["state"] != "ok"]
    if trouble:
        typer.echo("\nnot ok:")
        for r in trouble:
            letters = f", {r['dead_letters']} dead letters" if r["dead_letters"] else ""
            typer.echo(f"  {r['device_id']:<24} {r['state']:<{wide}} last heard {r['age_s']:.0f} s ago, "
                       f"buffer {r['buffer_depth']} batches, {r['errors']} errors{letters}")
    for cls, refused in sorted(_refusing_by_class(devices).items()):
        of = sum(r["device_class"] == cls for r in devices)
        named = ", ".join(refused[:_NAMED]) + (f", {len(refused) - _NAMED} more" if len(refused) > _NAMED else "")
        typer.echo(f"\nrollout records refused by {len(refused)} of {of} {cls} devices ({named}): a forged or "
                   "replayed record on the rollouts topic, or a key these devices do not trust")
    for r in rows:
        if "undecodable_messages" in r:
            typer.echo(f"\n{r['undecodable_messages']} undecodable messages skipped (see dlq.device.health)")
