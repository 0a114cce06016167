"""Backward compatibility: can a reader on the new schema read every record written with an old one?"""

from __future__ import annotations

import io
from typing import Any

import fastavro


def _example(schema: Any) -> Any:
    """A record that exercises every field of a (parsed) schema, for a round trip through resolution."""
    t = schema
    if isinstance(t, str):
        return {"null": None, "boolean": True, "int": 7, "long": 7, "float": 1.5, "double": 1.5,
                "bytes": b"\x00\x01", "string": "x"}[t]
    if isinstance(t, list):
        return _example(t[-1])
    kind = t["type"]
    if kind == "record" or kind == "error":
        return {f["name"]: _example(f["type"]) for f in t["fields"]}
    if kind == "array":
        return [_example(t["items"])]
    if kind == "map":
        return {"k": _example(t["values"])}
    if kind == "enum":
        return t["symbols"][0]
    if kind == "fixed":
        return b"\x00" * t["size"]
    return _example(kind)


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Reasons a reader using ``new`` cannot read data written with ``old``; empty when compatible.

    Resolution is tried on a record that fills every field of the old schema; fastavro raises where the
    Avro resolution rules fail (a new field without default, a type change that does not promote, an
    enum symbol removed that the old writer used).

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
    for variant in _variants(old_p):
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


def _variants(schema: Any) -> list[Any]:
    """Records that use every enum symbol at the top level, so removed symbols show up."""
    base = _example(schema)
    out = [base]
    if isinstance(schema, dict) and schema.get("type") == "record":
        for f in schema["fields"]:
            ft = f["type"]
            if isinstance(ft, dict) and ft.get("type") == "enum":
                for sym in ft["symbols"][1:]:
                    out.append({**base, f["name"]: sym})
    return out
