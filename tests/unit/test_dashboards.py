"""The Grafana dashboards: generated, well formed, on provisioned datasources, and querying only what is written."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams import catalog

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "docker" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
FLUX_COLUMNS = {"_time", "_value", "_field", "_measurement", "_start", "_stop"}
PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "increase",
    "topk",
    "max",
    "histogram_quantile",
    "without",
    "avg",
    "min",
    "count",
    "on",
    "ignoring",
    "offset",
    "bool",
}


def load_generator() -> Any:
    """docker/ is not a package: load the script by path (dataclasses need it in sys.modules)."""
    if "grafana_generate" not in sys.modules:
        spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["grafana_generate"] = module
        spec.loader.exec_module(module)
    return sys.modules["grafana_generate"]


def datasources() -> dict[str, str]:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "eddyline.yml").read_text())
    return {d["uid"]: d["type"] for d in doc["datasources"]}


def flux_names(query: str) -> list[str]:
    """Problems with one Flux query: unknown measurement, field, tag or column; empty when it is sound."""
    problems = []
    if not query.startswith('from(bucket: "${bucket}")') or "|> range(" not in query:
        problems.append("a Flux query starts from the bucket and has a range")
    measurements = re.findall(r'r\._measurement == "([^"]+)"', query)
    if len(measurements) != 1:
        return [*problems, f"names {len(measurements)} measurements, not one"]
    m = catalog.measurements().get(measurements[0])
    if m is None:
        return [*problems, f"measurement {measurements[0]!r} is not written"]
    fields = re.findall(r'r\._field == "([^"]+)"', query)
    if not fields:
        problems.append("names no field")
    problems += [f"{m.name} has no field {f!r}" for f in fields if f not in m.fields]
    tags = re.findall(r"\br\.([A-Za-z]\w*)\s*(?:==|=~|!=)", query)
    problems += [f"{m.name} has no tag {t!r}" for t in tags if t not in m.tags]
    for cols in re.findall(r"columns: (\[[^\]]*\])", query):
        problems += [f"{m.name} has no column {c!r}" for c in json.loads(cols) if c not in FLUX_COLUMNS | set(m.tags)]
    return problems


def promql_names(expr: str, legend: str) -> list[str]:
    """Problems with one PromQL expression: unknown metrics or labels; empty when it is sound."""
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", re.sub(r"\[[^\]]*\]", "", expr)))
    metrics = {n for n in names if n.startswith("eddyline_")}
    problems = [
        f"{n!r} is neither a written metric nor PromQL"
        for n in names - metrics - PROMQL_WORDS
        if not n.isdigit() and n not in _labels_used(expr)
    ]
    if not metrics:
        problems.append("names no eddyline metric")
    known = catalog.prometheus_names()
    problems += [f"metric {n!r} is not written" for n in metrics if n not in known]
    labels = {"le"} | {
        lab for m in catalog.metrics().values() for lab in m.labels if any(n in m.samples for n in metrics)
    }
    problems += [
        f"label {lab!r} is not on {sorted(metrics)}"
        for lab in _labels_used(expr) | _legend(legend)
        if lab not in labels
    ]
    return problems


def _labels_used(expr: str) -> set[str]:
    return {
        lab.strip()
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        for lab in group.split(",")
        if lab.strip()
    }


def _legend(legend: str) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))


def test_committed_dashboards_are_what_the_generator_makes() -> None:
    rendered = load_generator().render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], f"{path.name} is stale: run docker/grafana/generate.py"


def test_one_dashboard_per_concern() -> None:
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {
        "eddyline · devices and anomalies",
        "eddyline · conversations and sentiment",
        "eddyline · models and drift",
        "eddyline · pipeline health",
        "eddyline · edge fleet",
    }


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure_and_datasources(path: Path) -> None:
    d = json.loads(path.read_text())
    sources = datasources()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) and d["panels"]
    cells: set[tuple[int, int]] = set()
    variables = {v["name"] for v in d["templating"]["list"]}
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(g["x"] + i, g["y"] + j) for i in range(g["w"]) for j in range(g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        assert sources.get(p["datasource"]["uid"]) == p["datasource"]["type"], p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            text = t.get("query") or t.get("expr")
            key = "query" if p["datasource"]["type"] == "influxdb" else "expr"
            assert t.get(key), f"{p['title']}: a {p['datasource']['type']} target carries {key}"
            refs = set(re.findall(r"\$\{(\w+)(?::\w+)?\}", text)) - {"__interval"}
            assert refs <= variables, f"{p['title']} uses undefined variables {refs - variables}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_names_what_the_system_writes(path: Path) -> None:
    d = json.loads(path.read_text())
    problems = []
    for p in d["panels"]:
        for t in p["targets"]:
            if "query" in t:
                problems += [f"{p['title']}: {x}" for x in flux_names(t["query"])]
            else:
                problems += [f"{p['title']}: {x}" for x in promql_names(t["expr"], t.get("legendFormat", ""))]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            m, tag = re.search(r'measurement: "(\w+)", tag: "(\w+)"', v["query"]).groups()
            if tag not in catalog.measurements()[m].tags:
                problems.append(f"variable {v['name']}: {m} has no tag {tag}")
    assert not problems, "\n".join(problems)


def test_the_checks_catch_names_nobody_writes() -> None:
    gen = load_generator()
    assert flux_names(gen.flux("sensor", ["value_last"])) == []
    assert flux_names(gen.flux("sensor", ["value_latest"])) == ["sensor has no field 'value_latest'"]
    assert flux_names(gen.flux("sensors", ["value_last"])) == ["measurement 'sensors' is not written"]
    assert flux_names(gen.flux("sensor", ["readings"], filters='r.device == "a"')) == ["sensor has no tag 'device'"]
    assert promql_names("max by (device) (eddyline_sensor_top_anomaly_score)", "{{device}}") == []
    assert promql_names("sum by (device) (rate(eddyline_sensor_readings_total[5m]))", "{{device}}") == [
        "label 'device' is not on ['eddyline_sensor_readings_total']"
    ]
    assert promql_names("rate(eddyline_sensor_reading_total[5m])", "") == [
        "metric 'eddyline_sensor_reading_total' is not written"
    ]
    assert promql_names("sum by (device_id) (eddyline_sensor_top_anomaly_score)", "") == [
        "label 'device_id' is not on ['eddyline_sensor_top_anomaly_score']"
    ]
    assert promql_names("eddyline_sensor_top_anomaly_score", "{{host}}") == [
        "label 'host' is not on ['eddyline_sensor_top_anomaly_score']"
    ]


def test_fleet_dashboard_names_every_device_state_and_shows_dead_letters_and_refusals() -> None:
    from streams.flows.fleet import KINDS

    panels = load_generator().fleet()["panels"]
    states = next(p for p in panels if p["title"] == "Devices by state")["description"]
    assert [k for k in KINDS if k not in states] == [], states
    for name in ("dead_letters", "rollouts_refused"):
        mine = [(p, t["query"]) for p in panels for t in p["targets"] if f'r._field == "{name}"' in t.get("query", "")]
        fleet_wide = [q for p, q in mine if p["type"] != "table" and 'group(columns: ["_field"])' in q]
        top = [int(n) for p, q in mine if p["type"] == "table" for n in re.findall(r"top\(n: (\d+)\)", q)]
        assert fleet_wide, f"no panel sums {name} over the fleet"
        assert top and max(top) <= 20, f"no bounded top-k table of devices by {name}"
