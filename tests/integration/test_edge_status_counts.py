"""`eddyline edge status` shows what on-call needs of dead letters and refused rollout records.

A device whose dead-letter count rose is in the ``dead_letters`` state with its count; refused rollout records are
judged per device class (one forged record is refused by the whole class), so the table names the class and how
many of its devices refused. Both counts are in every ``--json`` row. On the real broker (Tansu).
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from connectors.kafka import EventProducer, KafkaSettings, create_topics
from schemas.catalog import DEVICE_HEALTH
from streams.cli import app
from tests.unit.test_schemas_serde import EXAMPLES


def test_edge_status_shows_dead_letters_and_refused_rollouts(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["device.health"], partitions=1)
    counts = {"pi-ok": (0, 0), "pi-letters": (7, 0), "pi-refusing": (0, 2)}
    with EventProducer(kafka_settings) as out:
        for device, (letters, refused) in counts.items():
            record = {**EXAMPLES[DEVICE_HEALTH], "device_id": device, "event_id": f"{device}-1",
                      "dead_letters": letters, "rollouts_refused": refused}
            out.produce("device.health", DEVICE_HEALTH, record, key=device)
    env = {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}

    as_json = CliRunner().invoke(app, ["edge", "status", "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    rows = {r["device_id"]: r for r in map(json.loads, as_json.stdout.splitlines())}
    assert {d: (r["dead_letters"], r["rollouts_refused"]) for d, r in rows.items()} == counts
    assert rows["pi-letters"]["state"] == "dead_letters"

    table = CliRunner().invoke(app, ["edge", "status"], env=env)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("agent"))
    column = lines[header].index("devices")
    by_version = lines[header + 1:lines.index("", header)]
    assert len(by_version) == 2 and all(line[column - 1] == " " and line[column].isdigit() for line in by_version)
    letters = next(line for line in lines if "pi-letters" in line)
    assert "dead_letters" in letters and "7 dead letters" in letters, letters
    assert "rollout records refused by 1 of 3 rpi4 devices (pi-refusing)" in table.stdout, table.stdout
    assert "pi-ok" not in table.stdout
