"""The fleet flow: ``device.health`` in, per-device fleet state out, alerts when a device goes wrong.

One ``FleetProcessor`` keeps a small plain record per device (latest health, a few counters, its open
incidents) and raises alerts on the ``alerts`` topic, which the notify flow delivers: a device silent for
too long (resolved when it speaks again), a buffer backlog that keeps growing, a high error rate, a skewed
clock, batches given up to its dead-letter file (readings the platform will never see unless someone fetches
the file). Each change of a device's state is a ``sink.fleet`` record for the time-series store (one point per
device and heartbeat); the fleet's counts by state, class and version are ``sink.fleet_summary`` records
for Prometheus (fleet aggregates only: no label carries a device id).

Refused rollout records are judged per device class, not per device: one forged or replayed record on the
rollouts topic (or a controller signing with a key the devices do not trust) is refused by every device of the
class, so it is one ERROR alert naming the class and how many devices refused, not a page per device. It opens
at the first refusal; as more devices of the class report theirs, the count follows as ``UPDATED`` (PagerDuty
folds it into the one incident) at most once per heartbeat interval; it resolves once every device that refused
has sent ``resolve_after`` heartbeats without a new refusal, or gone silent. With ``shards`` > 1 each shard
judges the devices it holds, so a class spread over shards is one alert per shard.

The clock. A silent device sends nothing, so nothing about it can wake a processor up; silence is judged
against the fleet's clock, which the other devices' heartbeats move. The clock is a high quantile of the
latest timestamps of the devices that are not silent: the largest once the top ``clock_ignore_share``
(10 %) of them is set aside, which in a fleet under ten devices is the largest. A timestamp is the broker's
(the message timestamp: append time on a topic with ``message.timestamp.type=LogAppendTime``, which is how
``eddyline topics create`` makes ``device.health``) or the device's own when the broker gives none. Setting
the top share aside means a few devices with clocks far ahead (possible only where the broker keeps create
times) cannot make the rest look silent; taking a high quantile rather than a median means the clock keeps
moving when many devices stop at once (a site losing its link), which is when the alerts matter. Event time
rather than wall time, so a replay after a crash gives the same alerts. A leap of the clock in which nobody
was heard for longer than the first device heard after it may be silent (the broker or the network down, or a
device's clock put far ahead on a broker that keeps create times) is nobody's silence: every device's silence
so far carries over the gap, so a fleet back from an hour-long outage pages only for the devices that do not
come back; a site offline while devices elsewhere keep beating is paged. The
honest limits: when the whole fleet (or every device of a shard) goes silent, the clock stops and no silence
alert opens (the operator's wall-clock view, ``eddyline edge status``, still shows every device's age); on a
broker that keeps create times, in a fleet under ten devices the clock follows a device with a clock far ahead,
and stops if that clock is set back, until the others catch up. A device is heard at the fleet clock of its
arrival, so a device whose own clock lags behind is not called silent.

State key: ``fleet`` by default (one processor sees the whole fleet, so one live device moves the clock for
all); ``shards`` > 1 splits the fleet by a stable hash of the device id, each shard with its own clock
(for fleets too large for one processor; each shard then needs live devices of its own).
"""

from __future__ import annotations

import bisect
import heapq
import zlib
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from schemas import ALERT, derive_id
from schemas.catalog import DEVICE_HEALTH
from streams.processor import Emit, Event, FlowSpec, Processor

FLOW = "fleet"
PRODUCER = "eddyline/fleet"
INPUT_TOPIC = "device.health"
ALERTS_TOPIC = "alerts"
STATE_TOPIC = "sink.fleet"  # sink-only: one record per device heartbeat, to the time-series store
SUMMARY_TOPIC = "sink.fleet_summary"  # sink-only: fleet counts for Prometheus
STATE_TYPE = "fleet_state"  # not a schemas event type: sink-only records
KINDS = ("silent", "backlog", "errors", "clock_skew", "dead_letters")  # a device's own alerts, worst first
STATES = ("ok", "silent", *KINDS[1:])
REFUSED = "rollouts_refused"  # the alert of a device class, not of one device
SEVERITY = {"silent": "ERROR", "backlog": "WARNING", "errors": "WARNING", "clock_skew": "WARNING",
            "dead_letters": "WARNING", REFUSED: "ERROR"}
_SCAN_EVERY_MS = 1_000  # silence is checked whenever the fleet clock has moved this far
_SUMMARY_EVERY_MS = 10_000  # and the fleet counts are sent this often (they cost a pass over the fleet)


class FleetSettings(Section):
    """``[fleet]`` / ``EDDYLINE_FLEET_*``: when a device counts as silent, behind, failing or skewed.

    Parameters
    ----------
    silent_after_s
        Silence that opens an alert; a device is given at least ``silent_beats`` of its own heartbeat
        intervals, so a device that reports every 10 minutes is not silent after 5.
    silent_beats
        Heartbeat intervals a device may miss before it counts as silent.
    backlog_batches
        Buffered batches from which a growing buffer is a backlog alert; it resolves below half of it.
    backlog_rising
        Heartbeats in a row with a deeper buffer before a backlog alert opens.
    error_rate_per_min
        Errors per minute (the agent's send, sensor and encoding errors) that open an alert.
    clock_skew_ms
        Clock offset (device minus broker, as the agent measures it) that opens an alert; resolves below half.
    resolve_after
        Heartbeats in a row under the error rate (or with no new dead letter) before an error (dead letters) alert
        resolves; a refused-rollouts alert resolves once every device that refused has sent as many with no new
        refusal.
    clock_ignore_share
        Share of the devices with the latest timestamps that the fleet clock sets aside (see the module doc).
    shards
        State keys the fleet is split into (see the module doc); 1 keeps the whole fleet on one clock.
    forget_after_s
        Silence (on the fleet clock) after which a device is taken out of the fleet state and its open alerts
        resolved: a decommissioned device would otherwise stay in the state, the counts and the pager for ever.
        0 keeps every device.
    """

    toml_table: ClassVar[str] = "fleet"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_FLEET_", extra="forbid")

    silent_after_s: float = Field(300.0, gt=0, description="Silence that opens an alert, seconds.")
    silent_beats: float = Field(3.0, gt=0, description="Missed heartbeat intervals before a device is silent.")
    backlog_batches: int = Field(100, ge=1, description="Buffered batches that count as a backlog.")
    backlog_rising: int = Field(3, ge=1, description="Heartbeats in a row with a growing buffer.")
    error_rate_per_min: float = Field(6.0, gt=0, description="Errors per minute that open an alert.")
    clock_skew_ms: float = Field(5_000.0, gt=0, description="Clock offset that opens an alert, ms.")
    resolve_after: int = Field(3, ge=1, description="Quiet heartbeats before an error alert resolves.")
    clock_ignore_share: float = Field(0.1, ge=0, lt=0.5, description="Latest device clocks the fleet clock ignores.")
    shards: int = Field(1, ge=1, description="State keys the fleet is split into.")
    forget_after_s: float = Field(7 * 86_400.0, ge=0, description="Silence after which a device is forgotten, "
                                  "seconds; 0: never.")

    def processor_params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"shards"})


def shard_of(device_id: str, shards: int) -> str:
    """The state key of a device: ``fleet``, or ``fleet-<n>`` with more than one shard (a stable hash).

    Parameters
    ----------
    device_id
        The device.
    shards
        How many shards.

    Examples
    --------
    >>> from streams.flows.fleet import shard_of
    >>> shard_of("pi-7", 1), shard_of("pi-7", 4)
    ('fleet', 'fleet-3')
    """
    return FLOW if shards <= 1 else f"{FLOW}-{zlib.crc32(device_id.encode()) % shards}"


def heard_at(ev: Event) -> int:
    """When the platform heard a heartbeat (ms): the broker's timestamp, else the device's ``event_time``.

    Silence is judged on broker time, so a device's wrong clock neither hides nor fakes it.

    Parameters
    ----------
    ev
        A decoded ``device_health`` event.
    """
    return ev.broker_ms if ev.broker_ms >= 0 else int(ev.record["event_time"])


def _new_device() -> dict[str, Any]:
    return {"t": 0, "heard": 0, "interval_s": 0.0, "depth": 0, "rising": 0, "errors": 0, "errors_t": 0,
            "dead_letters": 0, "refused": 0, "incidents": {}, "last_id": "", "info": {}}


def _added(count: int, before: int) -> int:
    """What an agent's count since its start added since ``before``: a lower count is a restart, all of it new."""
    return count - before if count >= before else count


class FleetProcessor(Processor):
    """Per-device fleet state of one shard of the fleet and the alerts it raises; see the module doc.

    Parameters
    ----------
    shard
        The state key (``fleet`` or ``fleet-<n>``).
    silent_after_s, silent_beats, backlog_batches, backlog_rising, error_rate_per_min, clock_skew_ms, resolve_after
        As in ``FleetSettings``.
    clock_ignore_share, forget_after_s
        As in ``FleetSettings``.

    Examples
    --------
    >>> from streams.flows.fleet import FleetProcessor
    >>> from streams.processor import Event
    >>> def beat(device, t, **kw):
    ...     return Event("device.health", device, {"event_id": f"{device}-{t}", "event_time": t, "device_id": device,
    ...         "device_class": "rpi4", "agent_version": "1.0", "interval_s": 1.0, "buffer_depth": 0, "errors": 0,
    ...         "clock_offset_ms": None, **kw}, broker_ms=t)
    >>> fleet = FleetProcessor("fleet", silent_after_s=5)
    >>> out = fleet.process([beat(d, 0) for d in ("a", "b", "c")])
    >>> out = [e for t in range(1000, 8000, 1000) for e in fleet.process([beat("b", t), beat("c", t)])]
    >>> [(e.record["status"], e.record["entity"]) for e in out if e.topic == "alerts"]
    [('OPENED', 'a')]
    >>> [(e.record["status"], e.record["entity"]) for e in fleet.process([beat("a", 8000)]) if e.topic == "alerts"]
    [('RESOLVED', 'a')]
    """

    state_version: ClassVar[int] = 1

    def __init__(self, shard: str, silent_after_s: float = 300.0, silent_beats: float = 3.0,
                 backlog_batches: int = 100, backlog_rising: int = 3, error_rate_per_min: float = 6.0,
                 clock_skew_ms: float = 5_000.0, resolve_after: int = 3, clock_ignore_share: float = 0.1,
                 forget_after_s: float = 7 * 86_400.0) -> None:
        self.shard = shard
        self.silent_after_s, self.silent_beats = silent_after_s, silent_beats
        self.backlog_batches, self.backlog_rising = backlog_batches, backlog_rising
        self.error_rate_per_min, self.clock_skew_ms, self.resolve_after = error_rate_per_min, clock_skew_ms, resolve_after
        self.clock_ignore_share = clock_ignore_share
        self.forget_after_s = forget_after_s
        self.devices: dict[str, dict[str, Any]] = {}
        self.classes: dict[str, dict[str, Any]] = {}  # device class -> its open refused-rollouts incident
        self.clock = 0
        self.scanned = 0  # the fleet clock at the last silence scan
        self.summarised = 0  # and at the last fleet counts
        self._live: list[int] = []  # sorted latest timestamps of the devices not silent: the clock's quantile
        self._due: list[tuple[float, str, int]] = []  # heap: (silent from, device, heard then); stale ones skipped
        self._forget: list[tuple[float, str, int]] = []  # heap of silent devices: (forgotten from, device, heard then)
        self._stood: list[float] | None = None  # the first heartbeat heard while the clock stood: [stamp, interval_s]

    def params(self) -> dict[str, Any]:
        return {"shard": self.shard, "silent_after_s": self.silent_after_s, "silent_beats": self.silent_beats,
                "backlog_batches": self.backlog_batches, "backlog_rising": self.backlog_rising,
                "error_rate_per_min": self.error_rate_per_min, "clock_skew_ms": self.clock_skew_ms,
                "resolve_after": self.resolve_after, "clock_ignore_share": self.clock_ignore_share,
                "forget_after_s": self.forget_after_s}

    def silent_after_ms(self, dev: dict[str, Any]) -> float:
        """How long this device may say nothing: ``silent_after_s``, or more for a slow heartbeat."""
        return 1000 * max(self.silent_after_s, self.silent_beats * dev["interval_s"])

    def state_of(self, dev: dict[str, Any]) -> str:
        """The device's state for views: its worst open incident, else ``ok``."""
        return next((k for k in KINDS if k in dev["incidents"]), "ok")

    def process(self, events: Sequence[Event]) -> list[Emit]:
        out: list[Emit] = []
        for ev in events:
            rec = ev.record
            t = heard_at(ev)
            device = rec["device_id"]
            dev = self.devices.get(device)
            if dev is None:
                dev = self.devices[device] = _new_device()
            elif "silent" not in dev["incidents"]:
                self._live.pop(bisect.bisect_left(self._live, dev["t"]))
            bisect.insort(self._live, t)
            top = len(self._live) - 1
            before, self.clock = self.clock, max(self.clock, self._live[top - int(top * self.clock_ignore_share)])
            if self.clock == before:  # a beat stamped after the clock stood: someone heard in the gap
                self._stood = self._stood or ([t, float(rec["interval_s"])] if t > before else None)
            else:
                first_t, first_interval = self._stood or (t, float(rec["interval_s"]))
                self._stood = None
                if self.clock - before >= 1000 * self.silent_after_s:
                    self._leapt(self.clock - before, min(first_t, self.clock) - before, first_interval)
            out.extend(self._heard(device, dev, rec, t))
            heapq.heappush(self._due, (dev["heard"] + self.silent_after_ms(dev), device, dev["heard"]))
            if self.clock - self.scanned >= _SCAN_EVERY_MS:
                self.scanned = self.clock
                out.extend(self._scan())
            if self.clock - self.summarised >= _SUMMARY_EVERY_MS:
                self.summarised = self.clock
                out.append(self._summary())
        return out

    def _heard(self, device: str, dev: dict[str, Any], rec: dict[str, Any], t: int) -> list[Emit]:
        out: list[Emit] = []
        eid = rec["event_id"]
        if "silent" in dev["incidents"]:
            gap_s = (self.clock - dev["heard"]) / 1000
            out.append(self._resolve(device, dev, "silent", eid, f"{device} is reporting again after {gap_s:.0f} s"))
        elapsed_min = max(t - dev["errors_t"], 1) / 60_000 if dev["errors_t"] else 0.0
        errors = int(rec["errors"])
        new_errors = _added(errors, dev["errors"])
        dead_letters, refused = int(rec.get("dead_letters") or 0), int(rec.get("rollouts_refused") or 0)  # 0 in v1
        new_dead, new_refused = _added(dead_letters, dev["dead_letters"]), _added(refused, dev["refused"])
        depth = int(rec["buffer_depth"])
        dev["rising"] = dev["rising"] + 1 if depth > dev["depth"] else 0
        dev.update(t=t, heard=self.clock, interval_s=float(rec["interval_s"]), depth=depth, errors=errors,
                   errors_t=t, dead_letters=dead_letters, refused=refused, last_id=eid,
                   info={k: rec.get(k) for k in ("device_class", "agent_version", "model_version", "model_state")})
        # backlog: a buffer that keeps growing past the bound; resolved once it is back under half of it
        if "backlog" not in dev["incidents"]:
            if depth >= self.backlog_batches and dev["rising"] >= self.backlog_rising:
                out.append(self._open(device, dev, "backlog", eid, t, float(depth),
                                      f"{device}: {depth} batches buffered and growing for {dev['rising']} heartbeats"))
        elif depth < self.backlog_batches / 2:
            out.append(self._resolve(device, dev, "backlog", eid, f"{device}: buffer down to {depth} batches"))
        # error rate, from the agent's cumulative count
        rate = new_errors / elapsed_min if elapsed_min else 0.0
        out.extend(self._until_quiet(device, dev, "errors", rate >= self.error_rate_per_min, eid, t, rate,
                                     f"{device}: {rate:.1f} errors per minute",
                                     f"{device}: error rate back to {rate:.1f}/min"))
        out.extend(self._until_quiet(device, dev, "dead_letters", new_dead > 0, eid, t, float(dead_letters),
                                     f"{device}: dead-letter file up by {new_dead} to {dead_letters} batches since "
                                     "the agent started: their readings are not on the platform",
                                     f"{device}: no batch given up for {self.resolve_after} heartbeats"))
        out.extend(self._refusals(device, dev, new_refused, eid, t))
        # clock skew, as the agent measured it against the broker
        offset = rec.get("clock_offset_ms")
        if offset is not None:
            if "clock_skew" not in dev["incidents"] and abs(offset) >= self.clock_skew_ms:
                out.append(self._open(device, dev, "clock_skew", eid, t, float(offset),
                                      f"{device}: clock {offset / 1000:+.1f} s off the broker's"))
            elif "clock_skew" in dev["incidents"] and abs(offset) < self.clock_skew_ms / 2:
                out.append(self._resolve(device, dev, "clock_skew", eid, f"{device}: clock back in step"))
        out.append(self._state(device, dev, rec, t))
        return out

    def _until_quiet(self, device: str, dev: dict[str, Any], kind: str, firing: bool, cause: str, t: int,
                     value: float, opened: str, resolved: str) -> list[Emit]:
        """Open ``kind`` when ``firing``; resolve it after ``resolve_after`` heartbeats in a row that are not, so
        a device failing every other heartbeat does not page twice a minute."""
        inc = dev["incidents"].get(kind)
        if firing:
            if inc is None:
                return [self._open(device, dev, kind, cause, t, value, opened)]
            inc["quiet"] = 0
        elif inc is not None:
            inc["quiet"] = inc.get("quiet", 0) + 1
            if inc["quiet"] >= self.resolve_after:
                return [self._resolve(device, dev, kind, cause, resolved)]
        return []

    def _refusals(self, device: str, dev: dict[str, Any], new: int, cause: str, t: int) -> list[Emit]:
        """The refused-rollouts incident of the device's class (see the module doc); its ``devices`` map each
        device that refused to its heartbeats since without a new refusal, ``pending`` counts those under
        ``resolve_after``."""
        cls = str(dev["info"]["device_class"])
        inc = self.classes.get(cls)
        if new:
            if inc is None:
                inc = self.classes[cls] = {"key": derive_id(FLOW, cls, REFUSED, cause), "opened_at": t,
                                           "devices": {device: 0}, "pending": 1, "told": 1, "told_at": t}
                return [self._class_alert(cls, inc, "OPENED", t)]
            if inc["devices"].get(device, self.resolve_after) >= self.resolve_after:
                inc["pending"] += 1
            inc["devices"][device] = 0
        elif inc is not None and inc["devices"].get(device, self.resolve_after) < self.resolve_after:
            inc["devices"][device] += 1
            if inc["devices"][device] >= self.resolve_after:
                inc["pending"] -= 1
                if not inc["pending"]:
                    return [self._resolve_class(cls, cause)]
        if inc is not None and len(inc["devices"]) > inc["told"] and t - inc["told_at"] >= 1000 * dev["interval_s"]:
            inc.update(told=len(inc["devices"]), told_at=t)
            return [self._class_alert(cls, inc, "UPDATED", t)]
        return []

    def _release(self, device: str, cause: str) -> list[Emit]:
        """A device gone silent cannot tell that it refuses no more: its class's incident stops waiting for it."""
        out = []
        for cls, inc in list(self.classes.items()):
            if inc["devices"].get(device, self.resolve_after) < self.resolve_after:
                inc["devices"][device] = self.resolve_after
                inc["pending"] -= 1
                if not inc["pending"]:
                    out.append(self._resolve_class(cls, cause))
        return out

    def _class_alert(self, cls: str, inc: dict[str, Any], status: str, t: int, **details: str) -> Emit:
        n = len(inc["devices"])
        if status == "RESOLVED":
            summary = f"{cls}: no rollout record refused for {self.resolve_after} heartbeats; devices that refused: {n}"
        else:
            summary = (f"{cls}: devices refusing rollout records (unsigned, another key's or an older one replayed): "
                       f"{n}; a forged record on the rollouts topic, or a key these devices do not trust")
        return self._alert(cls, REFUSED, inc, status, t, summary, float(n),
                           {"device_class": cls, "devices": n, **details})

    def _resolve_class(self, cls: str, cause: str) -> Emit:
        return self._class_alert(cls, self.classes.pop(cls), "RESOLVED", self.clock, resolved_by=cause)

    def _scan(self) -> list[Emit]:
        out: list[Emit] = []
        while self._due and self._due[0][0] <= self.clock:
            _, device, heard = heapq.heappop(self._due)
            dev = self.devices.get(device)
            if dev is None or dev["heard"] != heard or "silent" in dev["incidents"]:
                continue  # heard again since, already silent, or forgotten
            self._live.pop(bisect.bisect_left(self._live, dev["t"]))
            silent_s = (self.clock - dev["heard"]) / 1000
            out.append(self._open(device, dev, "silent", dev["last_id"], self.clock, silent_s,
                                  f"{device} silent for {silent_s:.0f} s (heartbeat every {dev['interval_s']:g} s)"))
            out.extend(self._release(device, dev["last_id"]))
            self._forget_later(device, dev)
        while self._forget and self._forget[0][0] <= self.clock:
            _, device, heard = heapq.heappop(self._forget)
            dev = self.devices.get(device)
            if dev is not None and dev["heard"] == heard and "silent" in dev["incidents"]:
                out.extend(self._forget_device(device, dev))
        return out

    def _leapt(self, gap: int, quiet: float, interval_s: float) -> None:
        """The fleet clock leapt by ``gap``; for ``quiet`` of it nobody was heard, until a device beating every
        ``interval_s`` (the first heard since the clock stood, else the one that moved it).

        A quiet long enough for that device to count as silent itself (a broker or network outage, the platform
        down, a clock put forward) counts as silence for no one: judged after it, every device would be silent at
        once, a page per device for one outage. A device silent already keeps its silence's start. Counted from the
        first device heard, not from the one that moves the clock: a site offline while a few devices elsewhere beat
        on (under the share the clock ignores) was nobody's silence. Otherwise a device stamped at or above the new
        clock (the top the clock ignores) was heard while the clock stood, and is heard at the new one, not paged
        silent while beating every few seconds."""
        outage = quiet >= 1000 * max(self.silent_after_s, self.silent_beats * interval_s)
        for dev in self.devices.values():
            if "silent" in dev["incidents"]:
                continue
            if outage:
                dev["heard"] += gap
            elif dev["t"] >= self.clock:
                dev["heard"] = self.clock
        self._index()

    def _index(self) -> None:
        """The due times of silence and of forgetting, from the devices' state."""
        self._due = [(d["heard"] + self.silent_after_ms(d), k, d["heard"]) for k, d in self.devices.items()
                     if "silent" not in d["incidents"]]
        heapq.heapify(self._due)
        self._forget = []
        for k, d in self.devices.items():
            if "silent" in d["incidents"]:
                self._forget_later(k, d)

    def _forget_later(self, device: str, dev: dict[str, Any]) -> None:
        if self.forget_after_s > 0:
            heapq.heappush(self._forget, (dev["heard"] + 1000 * self.forget_after_s, device, dev["heard"]))

    def _forget_device(self, device: str, dev: dict[str, Any]) -> list[Emit]:
        """Drop a device silent for ``forget_after_s``, resolving what it left open: it was decommissioned or
        replaced, and heard again it starts afresh."""
        days = (self.clock - dev["heard"]) / 86_400_000
        out = [self._resolve(device, dev, kind, dev["last_id"], f"{device} forgotten after {days:.1f} days silent")
               for kind in KINDS if kind in dev["incidents"]]
        del self.devices[device]
        return out

    def _open(self, device: str, dev: dict[str, Any], kind: str, cause: str, t: int, value: float,
              summary: str) -> Emit:
        inc = dev["incidents"][kind] = {"key": derive_id(FLOW, device, kind, cause), "opened_at": t}
        return self._alert(device, kind, inc, "OPENED", t, summary, value, {"device_id": device, **dev["info"]})

    def _resolve(self, device: str, dev: dict[str, Any], kind: str, cause: str, summary: str) -> Emit:
        inc = dev["incidents"].pop(kind)
        return self._alert(device, kind, inc, "RESOLVED", self.clock, summary, None,
                           {"device_id": device, **dev["info"], "resolved_by": cause})

    def _alert(self, entity: str, kind: str, inc: dict[str, Any], status: str, t: int, summary: str,
               value: float | None, details: dict[str, Any]) -> Emit:
        rec = {
            "event_id": derive_id(ALERTS_TOPIC, inc["key"], status), "event_time": int(t), "producer": PRODUCER,
            "alert_key": inc["key"], "status": status, "severity": SEVERITY[kind], "source": FLOW, "entity": entity,
            "summary": summary, "value": value,
            "details": {"kind": kind, "opened_at_ms": str(inc["opened_at"]),
                        **{k: str(v) for k, v in details.items() if v is not None}},
        }
        return Emit(ALERTS_TOPIC, inc["key"], ALERT, rec)

    def _state(self, device: str, dev: dict[str, Any], rec: dict[str, Any], t: int) -> Emit:
        fields = {k: rec.get(k) for k in STATE_FIELDS}
        return Emit(STATE_TOPIC, device, STATE_TYPE, {
            "device_id": device, "time_ms": t, "state": self.state_of(dev), **dev["info"], **fields,
            "delay_ms": float(t - int(rec["event_time"])),
        })

    def _summary(self) -> Emit:
        """Devices counted by state, class, agent and model version, one row each: the versions are the devices' own
        free text, so no joined key could be split back (a model version "2|canary")."""
        counts: dict[tuple[str, str, str, str], int] = {}
        for dev in self.devices.values():
            info = dev["info"]
            key = (self.state_of(dev), str(info.get("device_class")), str(info.get("agent_version")),
                   str(info.get("model_version") or "none"))
            counts[key] = counts.get(key, 0) + 1
        rows = [{"state": state, "device_class": device_class, "agent_version": agent, "model_version": model,
                 "devices": n} for (state, device_class, agent, model), n in sorted(counts.items())]
        return Emit(SUMMARY_TOPIC, self.shard, STATE_TYPE, {"shard": self.shard, "time_ms": self.clock,
                                                            "counts": rows})

    def snapshot(self) -> dict[str, Any]:
        return {"devices": self.devices, "classes": self.classes, "clock": self.clock, "scanned": self.scanned,
                "summarised": self.summarised, "stood": self._stood}

    def restore(self, state: dict[str, Any]) -> None:
        self.devices = {k: dict(v) for k, v in state["devices"].items()}
        for d in self.devices.values():  # a checkpoint from before dead letters and refusals were judged
            d.setdefault("dead_letters", 0)
            d.setdefault("refused", 0)
            quiet = d.pop("quiet", 0)
            if "errors" in d["incidents"]:
                d["incidents"]["errors"].setdefault("quiet", quiet)
        self.classes = {k: dict(v) for k, v in state.get("classes", {}).items()}
        self.clock, self.scanned, self.summarised = int(state["clock"]), int(state["scanned"]), int(state["summarised"])
        self._stood = list(state["stood"]) if state.get("stood") else None
        self._live = sorted(d["t"] for d in self.devices.values() if "silent" not in d["incidents"])
        self._index()


STATE_FIELDS = ("seq", "interval_s", "buffer_depth", "buffer_readings", "buffer_oldest_age_s", "send_rate",
                "sampled_readings", "acked_readings", "errors", "dropped_readings", "cpu_percent", "rss_mb",
                "inference_latency_ms", "clock_offset_ms", "dead_letters", "rollouts_refused")


def flow(sinks: list[Any] | None = None, **params: Any) -> FlowSpec:
    """The fleet flow: ``device.health`` in, ``alerts`` out, fleet state to the side sinks.

    Parameters
    ----------
    sinks
        Side sink factories (the time-series sink).
    params
        ``FleetProcessor`` settings; what is not given comes from ``FleetSettings``.
    """
    settings = FleetSettings()
    merged = settings.processor_params() | params
    shards = settings.shards
    return FlowSpec(
        name=FLOW,
        inputs={INPUT_TOPIC: DEVICE_HEALTH},
        outputs={ALERTS_TOPIC: ALERT},
        make_processor=lambda shard: FleetProcessor(shard, **merged),
        key=lambda ev: shard_of(ev.record["device_id"], shards),
        sinks=list(sinks or []),
    )
