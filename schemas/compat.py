"""Backward compatibility: can a reader on the new schema read every record written with an old one?"""

from __future__ import annotations

import io
from typing import Any

import fastavro


_PRIMITIVE = {"null": None, "boolean": True, "int": 7, "long": 7, "float": 1.5, "double": 1.5,
              "bytes": b"\x00\x01", "string": "x"}
_NAMED = ("record", "error", "enum", "fixed")


def _examples(t: Any, named: dict[str, Any], open_: frozenset[str] = frozenset()) -> list[Any]:
    """Values of a (parsed) schema that together take every union branch and enum symbol, at any depth.

    A removed branch or symbol only breaks resolution for data that used it, so each must be written once;
    union values use fastavro's ``(branch, value)`` notation so that an ambiguous value (7 for int or long)
    is written on the branch meant. A recursive reference yields nothing, which ends the recursion at the
    union, array or map that holds it.
    """
    if isinstance(t, str):
        if t in _PRIMITIVE:
            return [_PRIMITIVE[t]]
        return [] if t in open_ else _examples(named[t], named, open_)
    if isinstance(t, list):
        return [(_branch(b), v) for b in t for v in _examples(b, named, open_)]
    kind = t["type"]
    if kind in _NAMED:
        named[t["name"]] = t
        open_ = open_ | {t["name"]}
    if kind in ("record", "error"):
        fields = [(f["name"], _examples(f["type"], named, open_)) for f in t["fields"]]
        if any(not values for _, values in fields):
            return []
        base = {name: values[0] for name, values in fields}
        return [base] + [{**base, name: v} for name, values in fields for v in values[1:]]
    if kind == "array":
        return [[v] for v in _examples(t["items"], named, open_)] or [[]]
    if kind == "map":
        return [{"k": v} for v in _examples(t["values"], named, open_)] or [{}]
    if kind == "enum":
        return list(t["symbols"])
    if kind == "fixed":
        return [b"\x00" * t["size"]]
    return _examples(kind, named, open_)


def _branch(t: Any) -> str:
    """The name fastavro's tuple notation uses for a union branch."""
    if isinstance(t, str):
        return t
    return t["name"] if t["type"] in _NAMED else t["type"]


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Reasons a reader using ``new`` cannot read data written with ``old``; empty when compatible.

    Resolution is tried on records of the old schema that between them take every union branch and enum
    symbol; fastavro raises where the Avro resolution rules fail (a new field without default, a type change
    that does not promote, an enum symbol or a union branch removed that the old writer could use).

    Parameters
    ----------
    old
        The writer's schema (an earlier version), as JSON data.
    new
        The reader's schema (the newer version), as JSON data.

    Examples
    --------
    >>> from schemas.compat import incompatibilities
    >>> old = {"type": "record", "name": "r", "fields": [{"name": "a", "type": "int"}]}
    >>> with_default = {**old, "fields": [*old["fields"], {"name": "b", "type": "string", "default": ""}]}
    >>> incompatibilities(old, with_default)
    []
    >>> without_default = {**old, "fields": [*old["fields"], {"name": "b", "type": "string"}]}
    >>> len(incompatibilities(old, without_default)) > 0
    True
    """
    problems: list[str] = []
    old_p = fastavro.parse_schema(old, _write_hint=False)
    new_p = fastavro.parse_schema(new, _write_hint=False)
    for variant in _examples(old_p, {}):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, old_p, variant)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, old_p, new_p)
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {exc}")
    if isinstance(old, dict) and old.get("type") == "record":
        old_fields = {f["name"] for f in old["fields"]}
        for f in new.get("fields", []):
            if f["name"] not in old_fields and "default" not in f:
                problems.append(f"new field {f['name']!r} has no default")
    return sorted(set(problems))

