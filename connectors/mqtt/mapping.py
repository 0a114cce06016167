"""MQTT payloads to readings, by a configured mapping; a payload that does not map says why.

Fleets publish in a few shapes: one number per message on a topic per sensor (``plant/press-7/temperature``
-> ``21.5`` or ``{"value": 21.5, "ts": 1767225600000}``), arrays of samples (``{"value": [...], "ts": [...]}``),
or several sensors in one object (``{"device": "press-7", "temperature": 21.5, "humidity": 40}``). A
``Subscription`` names where the device id, the sensor name, the values and the times are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_SOURCES = ("topic", "payload", "fixed")
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: later is a unit mistake (us, ns), not a time
MAX_NAME = 256  # characters of a device id or sensor name: one name alone must not outgrow a Kafka message
_FORMS = {"topic": "topic:N (topic level N, from 0)", "payload": "payload:FIELD", "fixed": "fixed:NAME"}


class MappingError(ValueError):
    """A payload that does not map; ``reason`` is a short code for the dead letter's headers."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Readings:
    """One sensor's readings from one message."""

    device_id: str
    sensor: str
    unit: str | None
    timestamps: list[int]
    values: list[float]


def _spec(value: str, allowed: tuple[str, ...]) -> str:
    kind, sep, arg = value.partition(":")
    if not sep or kind not in allowed or not arg:
        raise ValueError(f"{value!r}: use {' or '.join(_FORMS[k] for k in allowed)}")
    if kind == "topic" and not arg.isdigit():
        raise ValueError(f"{value!r}: topic:N takes the 0-based level number, e.g. topic:1")
    return value


class Subscription(BaseModel):
    """A topic filter and how its payloads become readings.

    Parameters
    ----------
    topic
        MQTT topic filter (``+`` one level, ``#`` the rest), e.g. ``plant/+/+``.
    device
        Where the device id is: ``topic:N`` (level N, from 0) or ``payload:FIELD``. Device ids and sensor names
        are at most 256 characters of valid Unicode; a message with a longer one does not map.
    sensor
        Where the sensor name is: ``topic:N``, ``payload:FIELD`` or ``fixed:NAME``. Leave it out when
        ``fields`` names the sensors.
    fields
        Several sensors in one JSON object: each named field holds a number or an array of numbers.
    value
        The field that holds the value (a number or an array); empty: the payload itself is the number or array.
    time
        The field with the reading time (a number, or an array as long as the values); empty or absent
        in a payload: the time the bridge received it. Send device times: after a bridge crash the
        re-sent messages then fall into the same batches, and their duplicates are recognisable.
    time_unit
        ``ms`` or ``s`` since the Unix epoch, UTC; a time past the year 9999 does not map (``bad_time``).
    interval_ms
        For arrays with one start time (or none): the spacing of the samples; the first sample is at the time.
    unit
        The unit the readings carry downstream.
    """

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1)
    device: str = "topic:1"
    sensor: str | None = "topic:2"
    fields: list[str] = Field(default_factory=list)
    value: str = "value"
    time: str = "ts"
    time_unit: Literal["ms", "s"] = "ms"
    interval_ms: float | None = Field(None, gt=0)
    unit: str | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return _spec(v, ("topic", "payload"))

    @field_validator("sensor")
    @classmethod
    def _sensor(cls, v: str | None) -> str | None:
        return None if v is None or v == "" else _spec(v, _SOURCES)

    @model_validator(mode="after")
    def _one_sensor_source(self) -> Subscription:
        if self.fields:
            self.sensor = None
        elif self.sensor is None:
            raise ValueError(f"subscription {self.topic!r}: set sensor (topic:N, payload:F, fixed:NAME) or fields")
        levels = self.topic.split("/")
        if "#" in levels[:-1] or any(("#" in lv or "+" in lv) and len(lv) > 1 for lv in levels):
            raise ValueError(f"{self.topic!r} is not a valid MQTT topic filter")
        return self

    def matches(self, topic: str) -> bool:
        """MQTT filter matching: ``+`` is one level, a trailing ``#`` is any number of levels."""
        want, have = self.topic.split("/"), topic.split("/")
        for i, w in enumerate(want):
            if w == "#":
                return True
            if i >= len(have) or (w != "+" and w != have[i]):
                return False
        return len(want) == len(have)

    def overlaps(self, other: Subscription) -> bool:
        """Whether some topic matches both filters: the broker then delivers each such message once per filter.

        Parameters
        ----------
        other
            Another subscription of the same bridge.
        """
        a, b = self.topic.split("/"), other.topic.split("/")
        for i in range(max(len(a), len(b))):
            x, y = a[i] if i < len(a) else None, b[i] if i < len(b) else None
            if "#" in (x, y):
                return True
            if x is None or y is None or (x != y and "+" not in (x, y)):
                return False
        return True

    def map(self, topic: str, payload: bytes, received_ms: int) -> list[Readings]:
        """The readings in one message; raises ``MappingError`` with the reason when it does not map."""
        try:
            body: Any = json.loads(payload, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise MappingError("not_json", f"the payload is not JSON: {exc}") from None
        levels = topic.split("/")
        device = _text(self._pick(self.device, levels, body), "device id", self.device)
        times = self._times(body, received_ms)
        if self.fields:
            if type(body) is not dict:
                raise MappingError("not_object", f"expected a JSON object with fields {self.fields}, got {_what(body)}")
            found = [(f, body[f]) for f in self.fields if f in body]
            if not found:
                raise MappingError("no_value", f"none of the fields {self.fields} is in the payload")
        else:
            sensor = _text(self._pick(self.sensor or "", levels, body), "sensor name", self.sensor or "")
            if self.value:
                if type(body) is not dict or self.value not in body:
                    raise MappingError("no_value", f"the payload has no {self.value!r} field")
                found = [(sensor, body[self.value])]
            else:
                found = [(sensor, body)]
        return [Readings(device, name, self.unit, *self._series(name, raw, times)) for name, raw in found]

    def _pick(self, spec: str, levels: list[str], body: Any) -> Any:
        kind, _, arg = spec.partition(":")
        if kind == "fixed":
            return arg
        if kind == "topic":
            n = int(arg)
            if n >= len(levels):
                raise MappingError("bad_topic", f"the topic has {len(levels)} levels, the mapping reads level {n}")
            return levels[n]
        if type(body) is not dict or arg not in body:
            raise MappingError("no_field", f"the payload has no {arg!r} field ({spec})")
        return body[arg]

    def _times(self, body: Any, received_ms: int) -> int | list[int]:
        if not self.time or type(body) is not dict or self.time not in body:
            return received_ms
        raw = body[self.time]
        scale = 1000 if self.time_unit == "s" else 1
        if type(raw) is list:
            return _times_array(raw, scale)
        return _time(raw, scale)

    def _series(self, sensor: str, raw: Any, times: int | list[int]) -> tuple[list[int], list[float]]:
        if type(raw) is list:
            if not raw:
                raise MappingError("no_value", f"{sensor}: the array of values is empty")
            values = _numbers(raw, sensor)
            if type(times) is list:
                if len(times) != len(values):
                    raise MappingError("length_mismatch", f"{sensor}: {len(values)} values but {len(times)} times")
                return times, values
            if self.interval_ms is None and len(values) > 1:
                raise MappingError(
                    "no_times", f"{sensor}: an array of values needs an array of times or interval_ms in the mapping"
                )
            step = self.interval_ms or 0.0
            last = times + round((len(values) - 1) * step)
            if last > MAX_TIME_MS:
                raise MappingError("bad_time", f"{sensor}: the last sample's time {last} is past the year 9999")
            return [times + round(i * step) for i in range(len(values))], values
        if type(times) is list:
            raise MappingError("length_mismatch", f"{sensor}: one value but an array of {len(times)} times")
        return [times], [_number(raw, sensor)]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; send finite numbers")


def _text(v: Any, what: str, spec: str) -> str:
    if type(v) is int:
        v = str(v)
    reason = "bad_" + what.split()[0]
    if type(v) is not str or not v:
        raise MappingError(reason, f"the {what} ({spec}) must be a non-empty string, got {_what(v)}")
    if len(v) > MAX_NAME:
        raise MappingError(reason, f"the {what} ({spec}) is {len(v)} characters long, more than {MAX_NAME}")
    if not v.isascii():
        try:
            v.encode()
        except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): Avro strings and Kafka keys are UTF-8
            raise MappingError(reason, f"the {what} ({spec}) is not valid Unicode, got {_what(v)}") from None
    return v


def _number(v: Any, sensor: str) -> float:
    if type(v) not in (int, float):
        raise MappingError("bad_value", f"{sensor}: expected a number, got {_what(v)}")
    try:
        out = float(v)
    except OverflowError:
        raise MappingError("bad_value", f"{sensor}: {_what(v)} is too large for a double") from None
    if not math.isfinite(out):
        raise MappingError("bad_value", f"{sensor}: {v!r} is not a finite number")
    return out


def _numbers(raw: list, sensor: str) -> list[float]:
    """An array of finite numbers, checked at C speed; the per-item walk only finds what is wrong."""
    if set(map(type, raw)) <= {int, float}:
        try:
            out = list(map(float, raw))
        except OverflowError:
            out = []
        if out and all(map(math.isfinite, out)):
            return out
    return [_number(v, sensor) for v in raw]


def _times_array(raw: list, scale: int) -> list[int]:
    kinds = set(map(type, raw))
    if kinds == {int} and min(raw) >= 0 and max(raw) <= MAX_TIME_MS // scale:
        return raw if scale == 1 else [t * scale for t in raw]
    return [_time(t, scale) for t in raw]


def _time(v: Any, scale: int) -> int:
    # Compared, not converted: an int past a double's range, NaN and infinity all fail here.
    if type(v) not in (int, float) or not 0 <= v <= MAX_TIME_MS / scale:
        unit = "ms" if scale == 1 else "s"
        raise MappingError(
            "bad_time", f"the time must be {unit} since the epoch, from 0 to the year 9999, got {_what(v)}"
        )
    return int(round(v * scale))


def _what(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."
