"""Readings grouped into one ``sensor_batch`` per device and time window, so that a replay rebuilds the same batches.

A message goes into the window of its first reading's time (``window_ms`` long). A window closes when the
device has sent a reading ``lateness_ms`` past its end, or ``max_wait_ms`` after its first message arrived,
or when it holds ``max_readings``. A batch's slot is ``window * 1000 + part``: it grows with the device's
time, needs no counter that a crash could lose, and the messages the MQTT broker sends again after a crash
fall into the same window, part and content. The ``event_id`` derives from the device, the slot and the
readings, so a re-sent batch carries the same id and a straggler that reopens a window gets a new one.

The batch carries no sequence number (``seq`` -1): the flows count a missing number as a lost batch, and a
window without readings is not one, so slots are not numbers a sequencer can wait for (each batch would be
held behind a "gap" until eight more came). The sensor flow then applies the bridge's batches as they arrive
and knows a re-sent one by its id.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from connectors.mqtt.mapping import Readings
from schemas import derive_id

PARTS = 1000  # parts per window in the seq; a window never splits that often at sane max_readings
_KEEP_CLOSED = 8  # per device: closed windows whose part count is remembered for stragglers
IDLE_EVICT_S = 300.0  # a device with nothing open and no message for this long is forgotten


@dataclass
class _Window:
    opened: float  # monotonic time of its first message
    series: dict[tuple[str, str | None], tuple[list[int], list[float]]] = field(default_factory=dict)
    tokens: list[Hashable] = field(default_factory=list)
    count: int = 0


@dataclass
class _Device:
    open: dict[int, _Window] = field(default_factory=dict)
    parts: dict[int, int] = field(default_factory=dict)  # window -> parts already sent
    watermark: int = -1  # newest reading time seen
    last: float = 0.0  # monotonic time of its last message


@dataclass(frozen=True)
class Batch:
    """A ``sensor_batch`` record and the acknowledgement tokens of the messages in it."""

    device_id: str
    record: dict[str, Any]
    tokens: list[Hashable]
    slot: int = -1  # window * PARTS + part, which the event id derives from


class DeviceWindows:
    """Per-device open windows; ``add`` readings of a message, take the ``ready`` batches.

    Parameters
    ----------
    producer
        The ``producer`` field of every batch, e.g. ``eddyline-mqtt/<client id>``.
    window_ms, lateness_ms, max_wait_ms, max_readings
        See ``MqttSettings``.
    """

    def __init__(
        self, producer: str, window_ms: int = 1000, lateness_ms: int = 1000, max_wait_ms: int = 2000,
        max_readings: int = 10_000,
    ) -> None:
        self.producer = producer
        self.window_ms = window_ms
        self.lateness_ms = lateness_ms
        self.max_wait_s = max_wait_ms / 1000
        self.max_readings = max_readings
        self.devices: OrderedDict[str, _Device] = OrderedDict()  # the least recently heard from first
        self._open: dict[str, _Device] = {}  # those with open windows, all that ``ready`` has to look at
        self.unsent = 0  # messages in open windows

    def add(self, readings: list[Readings], token: Hashable, now: float) -> list[Batch]:
        """Put one message's readings (all of one device) in their window; returns the batches it closed.

        A message with more than ``max_readings`` readings fills parts of its window one after the other (a batch
        must fit one Kafka message); its token goes with the last part, so it is acknowledged after all of them,
        and that part closes with the others: delivered alone, they would come again with a message the broker
        sends again, in other parts, and count twice.

        Parameters
        ----------
        readings
            The message's readings, as ``Subscription.map`` gives them.
        token
            What acknowledges the message once its batch is delivered.
        now
            Monotonic time, for ``max_wait_ms``.
        """
        if not readings:
            raise ValueError("a message without readings has nothing to batch")
        device_id = readings[0].device_id
        dev = self.devices.setdefault(device_id, _Device())
        self.devices.move_to_end(device_id)
        dev.last = now
        first = min(r.timestamps[0] for r in readings)
        k = first // self.window_ms
        win = dev.open.get(k)
        if win is None:
            win = dev.open[k] = _Window(opened=now)
        out = []
        split = False
        for r in readings:
            done = 0
            while done < len(r.values):
                if win.count >= self.max_readings:
                    out.append(self._close(device_id, dev, k))
                    split = True
                    win = dev.open[k] = _Window(opened=now)
                take = min(len(r.values) - done, self.max_readings - win.count)
                ts, vs = win.series.setdefault((r.sensor, r.unit), ([], []))
                ts.extend(r.timestamps[done:done + take])
                vs.extend(r.values[done:done + take])
                win.count += take
                done += take
            dev.watermark = max(dev.watermark, max(r.timestamps))
        win.tokens.append(token)
        self.unsent += 1
        if win.count >= self.max_readings or split:
            out.append(self._close(device_id, dev, k))
        out.extend(self._due(device_id, dev, now, force=False))
        if dev.open:
            self._open[device_id] = dev
        return out

    def ready(self, now: float, force: bool = False) -> list[Batch]:
        """Batches whose windows are due (all open windows with ``force``)."""
        out: list[Batch] = []
        for device_id, dev in list(self._open.items()):  # not every device of the fleet, every 50 ms
            out.extend(self._due(device_id, dev, now, force))
            if not dev.open:
                del self._open[device_id]
        while self.devices:  # memory follows active devices
            device_id, dev = next(iter(self.devices.items()))
            if dev.open or now - dev.last < IDLE_EVICT_S:
                break
            self.devices.popitem(last=False)
        return out

    def _due(self, device_id: str, dev: _Device, now: float, force: bool) -> list[Batch]:
        late = dev.watermark - self.lateness_ms
        closing = [
            k for k, w in dev.open.items()
            if force or now - w.opened >= self.max_wait_s or late >= (k + 1) * self.window_ms
        ]
        return [self._close(device_id, dev, k) for k in sorted(closing)]

    def _close(self, device_id: str, dev: _Device, k: int) -> Batch:
        win = dev.open.pop(k)
        part = dev.parts.get(k, 0)
        dev.parts[k] = part + 1
        while len(dev.parts) > _KEEP_CLOSED:
            del dev.parts[min(dev.parts)]
        slot = k * PARTS + min(part, PARTS - 1)
        series = []
        digest = hashlib.blake2b(digest_size=16)
        for (sensor, unit), (ts, vs) in sorted(win.series.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            if ts == sorted(ts):
                ts_sorted, vs_sorted = ts, vs
            else:
                order = sorted(range(len(ts)), key=ts.__getitem__)
                ts_sorted, vs_sorted = [ts[i] for i in order], [vs[i] for i in order]
            digest.update(sensor.encode() + b"\x1f" + struct.pack(f"<{len(ts)}q{len(vs)}d", *ts_sorted, *vs_sorted))
            series.append({"sensor": sensor, "unit": unit, "timestamps": ts_sorted, "values": vs_sorted})
        record = {
            "event_id": derive_id("mqtt", device_id, slot, digest.hexdigest()),
            "event_time": min(s["timestamps"][0] for s in series),
            "producer": self.producer,
            "device_id": device_id,
            "seq": -1,
            "series": series,
        }
        self.unsent -= len(win.tokens)
        return Batch(device_id, record, win.tokens, slot)
