"""Schema evolution: every shipped version reads all earlier ones, and the checker catches breaking changes."""

from __future__ import annotations

import copy
import io
import itertools
import json
import os
import subprocess
import sys

import fastavro
import pytest

from schemas import LocalRegistry, catalog, event_types
from schemas.compat import incompatibilities
from schemas.registry import local_schema_id

PAIRS = [
    (t, old.version, new.version)
    for t in event_types()
    for old, new in itertools.combinations(catalog.versions(t), 2)
]


def test_every_event_type_has_a_schema() -> None:
    assert set(event_types()) >= {
        "sensor_batch", "audio_chunk", "transcript", "click", "prediction", "feedback",
        "anomaly_score", "sentiment_score", "drift", "alert",
    }


@pytest.mark.parametrize(("event_type", "old", "new"), PAIRS or [pytest.param("", 0, 0, marks=pytest.mark.skip(
    reason="every event type has a single version so far"))])
def test_new_versions_read_old_data(event_type: str, old: int, new: int) -> None:
    versions = {v.version: v for v in catalog.versions(event_type)}
    assert incompatibilities(versions[old].schema, versions[new].schema) == []


@pytest.mark.parametrize("event_type", event_types())
def test_versions_are_numbered_without_gaps(event_type: str) -> None:
    assert [v.version for v in catalog.versions(event_type)] == list(range(1, len(catalog.versions(event_type)) + 1))


@pytest.mark.parametrize("event_type", event_types())
def test_latest_is_compatible_with_itself(event_type: str) -> None:
    schema = catalog.latest(event_type).schema
    assert incompatibilities(schema, schema) == []


def _click() -> dict:
    return copy.deepcopy(catalog.latest(catalog.CLICK).schema)


def _field(schema: dict, name: str) -> dict:
    return next(f for f in schema["fields"] if f["name"] == name)


def test_new_field_without_default_is_caught() -> None:
    old, new = _click(), _click()
    new["fields"].append({"name": "session_id", "type": "string"})
    problems = incompatibilities(old, new)
    assert any("session_id" in p for p in problems)


def test_new_field_with_default_is_fine() -> None:
    old, new = _click(), _click()
    new["fields"].append({"name": "session_id", "type": ["null", "string"], "default": None})
    assert incompatibilities(old, new) == []


def test_removed_enum_symbol_is_caught() -> None:
    old, new = _click(), _click()
    _field(new, "action")["type"]["symbols"] = ["IMPRESSION"]
    assert incompatibilities(old, new) != []


def test_added_enum_symbol_is_fine() -> None:
    old, new = _click(), _click()
    _field(new, "action")["type"]["symbols"] = ["IMPRESSION", "CLICK", "DISMISS"]
    assert incompatibilities(old, new) == []


def test_removed_union_branch_is_caught() -> None:
    """Old data on any removed branch cannot be read, not only data on the last branch of the union."""
    old, new = _click(), _click()
    _field(old, "context")["type"]["values"] = ["null", "string", "double"]
    _field(new, "context")["type"]["values"] = ["null", "double"]
    assert incompatibilities(old, new) != []
    _field(new, "context")["type"]["values"] = ["null", "string", "double"]
    _field(new, "rating").update(type="double", default=0.0)
    assert incompatibilities(old, new) != []


def test_added_union_branch_is_fine() -> None:
    old, new = _click(), _click()
    _field(new, "rating")["type"] = ["null", "double", "string"]
    assert incompatibilities(old, new) == []


def test_removed_enum_symbol_inside_a_collection_is_caught() -> None:
    old, new = _click(), _click()
    for schema, symbols in ((old, ["IMPRESSION", "CLICK"]), (new, ["IMPRESSION"])):
        _field(schema, "action")["type"] = {"type": "array", "items": {"type": "enum", "name": "ClickAction",
                                                                          "symbols": symbols}}
    assert incompatibilities(old, new) != []


def test_recursive_schema_is_checked() -> None:
    node = {"type": "record", "name": "Node", "fields": [
        {"name": "kind", "type": ["null", "string", "double"]}, {"name": "next", "type": ["null", "Node"]}]}
    narrowed = copy.deepcopy(node)
    narrowed["fields"][0]["type"] = ["null", "double"]
    assert incompatibilities(node, node) == []
    assert incompatibilities(node, narrowed) != []


def test_type_change_that_does_not_promote_is_caught() -> None:
    old, new = _click(), _click()
    _field(new, "item_id")["type"] = "long"
    assert incompatibilities(old, new) != []


def test_int_to_long_promotion_is_fine() -> None:
    old = copy.deepcopy(catalog.latest(catalog.TRANSCRIPT).schema)
    new = copy.deepcopy(old)
    _field(new, "segment")["type"] = "long"
    assert incompatibilities(old, new) == []


def test_removed_field_is_fine_for_readers() -> None:
    old, new = _click(), _click()
    new["fields"] = [f for f in new["fields"] if f["name"] != "context"]
    assert incompatibilities(old, new) == []


def test_old_data_decodes_with_new_default() -> None:
    """What the compatibility rule buys: data written before a field existed reads with its default."""
    old, new = _click(), _click()
    new["fields"].append({"name": "campaign", "type": "string", "default": "none"})
    buf = io.BytesIO()
    record = {"event_id": "e", "event_time": 1, "producer": "p", "user_id": "u", "item_id": "i",
              "action": "CLICK"}
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), record)
    buf.seek(0)
    decoded = fastavro.schemaless_reader(buf, fastavro.parse_schema(old), fastavro.parse_schema(new))
    assert decoded["campaign"] == "none"


def test_local_ids_are_distinct() -> None:
    ids = [local_schema_id(v.canonical) for t in event_types() for v in catalog.versions(t)]
    assert len(ids) == len(set(ids))
    assert all(0 < i < 2**31 for i in ids)


def test_local_ids_are_stable_across_processes() -> None:
    here = {t: LocalRegistry().id_for("any-topic", catalog.latest(t)) for t in event_types()}
    code = ("import json; from schemas import LocalRegistry, catalog, event_types; "
            "print(json.dumps({t: LocalRegistry().id_for('other', catalog.latest(t)) for t in event_types()}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout) == here


def test_local_registry_resolves_its_ids() -> None:
    reg = LocalRegistry()
    for t in event_types():
        for v in catalog.versions(t):
            assert reg.schema_for(reg.id_for("", v)) == v.canonical


def test_ids_ignore_docs_and_formatting() -> None:
    schema = copy.deepcopy(catalog.latest(catalog.FEEDBACK).schema)
    schema["doc"] = "a different comment"
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    assert local_schema_id(canonical) == local_schema_id(catalog.latest(catalog.FEEDBACK).canonical)
