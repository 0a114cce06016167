"""The README's first command, ``make demo``, run as a new user would, shortened to 30 seconds of traffic.

It starts its own broker, flows, simulated devices, recorded calls and the loopback alert receiver, so this
test needs nothing from the fixtures; it checks the summary the demo prints and writes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BAD_EVENTS = 25  # the Makefile's --bad-events


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme, "the README's first command changed: update this test"
    summary = tmp_path_factory.mktemp("demo") / "summary.json"
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run(
        ["make", "-s", "demo", "DURATION=30", f"SUMMARY={summary}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, f"make demo exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done, json.loads(summary.read_text())


@pytest.mark.e2e
def test_every_produced_event_is_scored_or_dead_lettered(demo) -> None:
    _, s = demo
    assert s["produced"] > 30 * 1000  # 30 s at the default 3,000 readings/s, with slack for a loaded machine
    assert s["scored"] + s["dlq"] == s["produced"]
    assert s["dlq"] == BAD_EVENTS


@pytest.mark.e2e
def test_injected_anomalies_are_found_and_page_someone(demo) -> None:
    _, s = demo
    assert 0 < s["scored_injected_anomalies"] <= s["injected_anomalies"]
    assert s["detected_injected_anomalies"] >= 0.8 * s["scored_injected_anomalies"]
    assert s["alerts_opened"] > 0
    assert s["pagerduty_incidents"] > 0 and s["alerts_delivered"] >= s["pagerduty_incidents"]


@pytest.mark.e2e
def test_recorded_calls_are_transcribed_and_scored(demo) -> None:
    _, s = demo
    assert s["calls"] == 3
    assert s["transcripts"] > 0 and s["sentiment_scores"] == s["transcripts"]


@pytest.mark.e2e
def test_the_console_shows_where_to_look_and_a_summary(demo) -> None:
    done, s = demo
    out = done.stdout + done.stderr  # the console writes to stderr
    assert re.search(r"live page: http://127\.0\.0\.1:\d+", out)
    assert "first alert:" in out
    assert f"scored + dlq = {s['scored'] + s['dlq']:,} of {s['produced']:,} produced" in out
    # captured, stderr is no terminal: no live table, a line of counts every 10 s instead of nothing till the end
    assert re.search(r"eddyline demo: producing \(\d+ s\): produced \(readings \+ malformed\) [\d,]+; scored", out)


@pytest.mark.e2e
def test_the_summary_says_why_the_first_alert_fired(demo) -> None:
    done, s = demo
    first = s["first_alert"]
    assert first is not None and first["explanation"] is not None, first
    assert first["explanation"]["rule"] in {"spike", "level_shift", "seasonal_break", "flat_line", "novelty"}
    assert first["explanation"]["lower"] <= first["explanation"]["expected"] <= first["explanation"]["upper"]
    assert f"why: {first['why'][:40]}" in done.stdout + done.stderr  # the console writes to stderr


@pytest.mark.e2e
def test_the_click_models_trainings_and_versions_are_in_mlflow_and_the_summary_says_where(demo) -> None:
    from mlflow import MlflowClient

    done, s = demo
    m = s["mlflow"]
    assert m.get("versions", 0) >= 2 and m["champion"] is not None and m["pending_registry_changes"] == 0, m
    assert f"in {m['tracking_uri']}; browse them with `eddyline models ui`" in done.stdout + done.stderr
    client = MlflowClient(tracking_uri=m["tracking_uri"], registry_uri=m["tracking_uri"])
    assert str(client.get_model_version_by_alias(m["model"], "champion").version) == m["champion"]
    experiment = client.get_experiment_by_name(f"eddyline/{m['model']}").experiment_id
    assert len(client.search_runs([experiment])) >= m["versions"]  # each version's training is a run
