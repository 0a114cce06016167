"""JSON bodies to Avro records, and the JSON Schema of those bodies, both derived from the ``.avsc`` files.

One walker over the Avro schema does both, so the OpenAPI spec cannot drift from what the gateway accepts:
Avro ``bytes`` travel as base64 strings, fields with a default may be left out, ``["null", T]`` is a
nullable ``T``, unknown fields are refused. ``event_id``, ``event_time`` and ``producer`` are optional:
the gateway fills them in. A few rules of the event types that JSON Schema can say (non-empty ids and keys,
the audio sample rate) are in the spec too; the rest (``schemas.validation``) answer 422 at encoding.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

from connectors.gateway.errors import Problem
from schemas import AUDIO_CHUNK, CLICK, SENSOR_BATCH, latest

GATEWAY_FILLED = ("event_id", "event_time", "producer")
MAX_PROBLEMS = 10
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_BASE64_PATTERN = r"^[A-Za-z0-9+/]*={0,2}$"


@dataclass(frozen=True)
class Endpoint:
    """An event type the gateway accepts: where it is posted, the topic it goes to and its partition key."""

    event_type: str
    path: str
    topic: str
    key_field: str
    title: str
    constraints: dict[str, dict[str, Any]]


ENDPOINTS: dict[str, Endpoint] = {
    e.event_type: e
    for e in (
        Endpoint(
            SENSOR_BATCH,
            "/v1/sensors",
            "sensor.readings",
            "device_id",
            "Sensor reading batches",
            {"series.sensor": {"minLength": 1}, "series.values": {"minItems": 1}},
        ),
        Endpoint(
            AUDIO_CHUNK,
            "/v1/audio",
            "audio.chunks",
            "conversation_id",
            "Audio chunks (PCM16 mono 16 kHz)",
            {"sample_rate": {"enum": [16000]}},
        ),
        Endpoint(CLICK, "/v1/clicks", "clicks", "user_id", "Impressions and clicks", {}),
    )
}


def _constraints(endpoint: Endpoint) -> dict[str, dict[str, Any]]:
    common = {"event_id": {"minLength": 1}, "event_time": {"minimum": 0}, endpoint.key_field: {"minLength": 1}}
    return {**common, **endpoint.constraints}


class _Walker:
    """Holds the named types of one schema while walking it."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.constraints = _constraints(endpoint)
        self.item_rules = {w for w, rule in self.constraints.items() if rule.keys() - {"minItems"}}  # checked per item
        self.names: dict[str, Any] = {}

    def resolve(self, t: Any) -> Any:
        if isinstance(t, str) and t in self.names:
            return self.names[t]
        if isinstance(t, dict) and t.get("type") in ("record", "enum", "fixed") and "name" in t:
            self.names[t["name"]] = t
            if "namespace" in t:
                self.names[f"{t['namespace']}.{t['name']}"] = t
        return t

    # -- JSON Schema ---------------------------------------------------------------------------------
    def schema(self, t: Any, where: str = "", top: bool = False) -> dict[str, Any]:
        t = self.resolve(t)
        out = self._schema(t, where, top)
        if doc := (t.get("doc") if isinstance(t, dict) else None):
            out.setdefault("description", doc)
        return out

    def _schema(self, t: Any, where: str, top: bool) -> dict[str, Any]:
        if isinstance(t, list):
            branches = [b for b in t if b != "null"]
            if len(branches) == 1 and len(t) == 2:
                return {**self.schema(branches[0], where), "nullable": True}
            return {"anyOf": [self.schema(b, where) for b in branches], **({"nullable": True} if "null" in t else {})}
        kind = t["type"] if isinstance(t, dict) else t
        if isinstance(kind, (dict, list)):
            return self.schema(kind, where)
        if kind == "null":
            return {"nullable": True, "enum": [None]}
        if kind == "boolean":
            return {"type": "boolean"}
        if kind in _INT_RANGE:
            lo, hi = _INT_RANGE[kind]
            return {"type": "integer", "format": "int32" if kind == "int" else "int64", "minimum": lo, "maximum": hi}
        if kind in ("float", "double"):
            return {"type": "number", "format": kind}
        if kind == "string":
            return {"type": "string"}
        if kind == "bytes":
            return {
                "type": "string",
                "format": "byte",
                "pattern": _BASE64_PATTERN,
                "description": "base64 (RFC 4648, standard alphabet, padded)",
            }
        if kind == "enum":
            return {"type": "string", "enum": list(t["symbols"])}
        if kind == "array":
            return {"type": "array", "items": self.schema(t["items"], where)}
        if kind == "map":
            return {"type": "object", "additionalProperties": self.schema(t["values"], where)}
        if kind == "record":
            props, required = {}, []
            for f in t["fields"]:
                name = f["name"]
                path = f"{where}.{name}" if where else name
                prop = self.schema(f["type"], path)
                if "doc" in f:
                    prop["description"] = f["doc"]
                prop.update(self.constraints.get(path, {}))
                if top and name in GATEWAY_FILLED:
                    prop["description"] = (prop.get("description", "") + _FILLED_DOC[name]).strip()
                elif "default" not in f:
                    required.append(name)
                props[name] = prop
            out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
            if required:
                out["required"] = required
            return out
        raise ValueError(f"{self.endpoint.event_type}: the gateway cannot map the Avro type {kind!r} to JSON")

    # -- JSON to record ------------------------------------------------------------------------------
    def convert(self, t: Any, v: Any, path: str, where: str, problems: list[Problem], top: bool = False) -> Any:
        t = self.resolve(t)
        if isinstance(t, list):
            if v is None and "null" in t:
                return None
            branches = [b for b in t if b != "null"]
            if len(branches) == 1:
                return self.convert(branches[0], v, path, where, problems)
            for b in branches:  # general unions: the first branch that takes the value
                trial: list[Problem] = []
                out = self.convert(b, v, path, where, trial)
                if not trial:
                    return out
            return _bad(problems, path, f"matches none of the allowed types ({_describe(t)})")
        kind = t["type"] if isinstance(t, dict) else t
        if isinstance(kind, (dict, list)):
            return self.convert(kind, v, path, where, problems)
        if kind == "boolean":
            return v if type(v) is bool else _bad(problems, path, f"expected true or false, got {_what(v)}")
        if kind in _INT_RANGE:
            if type(v) is float and v.is_integer():
                v = int(v)
            if type(v) is not int:
                return _bad(problems, path, f"expected an integer, got {_what(v)}")
            lo, hi = _INT_RANGE[kind]
            if not lo <= v <= hi:
                return _bad(problems, path, f"{v} is out of range for a {kind} ({lo}..{hi})")
            return self._check(v, path, where, problems)
        if kind in ("float", "double"):
            if type(v) is int:
                try:
                    v = float(v)
                except OverflowError:
                    return _bad(problems, path, "is too large for a double")
            if type(v) is not float:
                return _bad(problems, path, f"expected a number, got {_what(v)}")
            if not math.isfinite(v):
                return _bad(problems, path, "is too large for a double")
            return v
        if kind == "string":
            if type(v) is not str:
                return _bad(problems, path, f"expected a string, got {_what(v)}")
            return self._check(v, path, where, problems)
        if kind == "bytes":
            if type(v) is not str:
                return _bad(problems, path, f"expected a base64 string, got {_what(v)}")
            try:
                return base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                return _bad(problems, path, "is not valid base64 (standard alphabet A-Z a-z 0-9 + /, '=' padding)")
        if kind == "enum":
            if v not in t["symbols"] or type(v) is not str:
                return _bad(problems, path, f"expected one of {', '.join(t['symbols'])}, got {_what(v)}")
            return v
        if kind == "array":
            if type(v) is not list:
                return _bad(problems, path, f"expected an array, got {_what(v)}")
            least = self.constraints.get(where, {}).get("minItems", 0)
            if len(v) < least:
                return _bad(problems, path, f"must hold at least {least} item(s)")
            items = self.resolve(t["items"])
            fast = _primitive_array(items, v, where in self.item_rules)
            if fast is not None:
                return fast
            return [self.convert(items, x, f"{path}[{i}]", where, problems) for i, x in enumerate(v)]
        if kind == "map":
            if type(v) is not dict:
                return _bad(problems, path, f"expected an object, got {_what(v)}")
            return {k: self.convert(t["values"], x, f"{path}.{k}", where, problems) for k, x in v.items()}
        if kind == "record":
            return self._record(t, v, path, where, problems, top)
        raise ValueError(f"the gateway cannot map the Avro type {kind!r} to JSON")

    def _record(self, t: dict, v: Any, path: str, where: str, problems: list[Problem], top: bool) -> Any:
        if type(v) is not dict:
            return _bad(problems, path or "(body)", f"expected a JSON object, got {_what(v)}")
        out: dict[str, Any] = {}
        known = set()
        for f in t["fields"]:
            name = f["name"]
            known.add(name)
            fpath = f"{path}.{name}" if path else name
            fwhere = f"{where}.{name}" if where else name
            if name in v:
                out[name] = self.convert(f["type"], v[name], fpath, fwhere, problems)
            elif top and name in GATEWAY_FILLED:
                continue
            elif "default" in f:
                out[name] = f["default"]
            else:
                _bad(problems, fpath, "is required")
        for extra in v.keys() - known:
            _bad(
                problems,
                f"{path}.{extra}" if path else extra,
                f"is not a field of {t['name']}; known fields: {', '.join(sorted(known))}",
            )
        return out

    def _check(self, v: Any, path: str, where: str, problems: list[Problem]) -> Any:
        rule = self.constraints.get(where)
        if rule:
            if "minLength" in rule and len(v) < rule["minLength"]:
                return _bad(problems, path, "must not be empty")
            if "minimum" in rule and v < rule["minimum"]:
                return _bad(problems, path, f"must be at least {rule['minimum']}")
            if "enum" in rule and v not in rule["enum"]:
                return _bad(problems, path, f"must be one of {rule['enum']}")
        return v


def _primitive_array(items: Any, v: list, constrained: bool) -> list | None:
    """Arrays of numbers that are all fine, checked at C speed; None sends them to the per-item walk."""
    if constrained or not v or not isinstance(items, str):
        return None
    if items in ("double", "float"):
        kinds = set(map(type, v))
        if kinds == {float}:
            return v if all(map(math.isfinite, v)) else None
        if kinds <= {float, int}:
            try:
                out = [float(x) for x in v]
            except OverflowError:
                return None
            return out if all(map(math.isfinite, out)) else None
        return None
    if items in _INT_RANGE and set(map(type, v)) == {int}:
        lo, hi = _INT_RANGE[items]
        return v if lo <= min(v) and max(v) <= hi else None
    return None


_FILLED_DOC = {
    "event_id": (
        " Send a stable id so that a retry is recognised. Left out: derived from the key and `seq` when the"
        " event has them, else a new id per event (a retry then counts twice)."
    ),
    "event_time": " Optional: defaults to the time the gateway received the event.",
    "producer": (
        " Set by the gateway to 'gateway/<token name>'; leave it out (any other value is refused). Senders that"
        " must be told apart get a token each."
    ),
}


def _bad(problems: list[Problem], path: str, message: str) -> None:
    if len(problems) < MAX_PROBLEMS:
        problems.append(Problem(path, message))


def _what(v: Any) -> str:
    if v is None:
        return "null"
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }
    kind = names.get(type(v), type(v).__name__)
    if isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 40):
        return f"{kind} ({v!r})" if not isinstance(v, bool) else f"{str(v).lower()}"
    return kind


def _describe(t: list) -> str:
    return ", ".join(b if isinstance(b, str) else b.get("type", "?") for b in t)


def json_schema(event_type: str) -> dict[str, Any]:
    """The JSON Schema (OpenAPI 3.0 dialect) of one event as the gateway accepts it."""
    endpoint = ENDPOINTS[event_type]
    return _Walker(endpoint).schema(latest(event_type).schema, top=True)


class RecordMapper:
    """Converts one event type's JSON values into Avro-ready records, collecting every problem on the way."""

    def __init__(self, event_type: str) -> None:
        self.endpoint = ENDPOINTS[event_type]
        self._schema = latest(event_type).schema
        self._walker = _Walker(self.endpoint)
        self._walker.schema(self._schema)  # registers the named types

    def to_record(self, value: Any, path: str = "") -> tuple[dict[str, Any] | None, list[Problem]]:
        problems: list[Problem] = []
        record = self._walker.convert(self._schema, value, path, "", problems, top=True)
        return (None, problems) if problems else (record, problems)
