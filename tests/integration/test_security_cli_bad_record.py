"""One record on ``security.quarantine`` that is not a quarantine event (written by hand, a buggy producer) does not
stop on-call from listing and releasing sources: ``eddyline security`` skips it as the flows do, keeping the
standing before it, and says so. On the real broker (Tansu)."""

from __future__ import annotations

from typer.testing import CliRunner

from connectors.kafka import EventProducer, KafkaSettings, create_topics
from schemas import catalog
from streams.cli import app
from tests.unit.test_schemas_serde import EXAMPLES


def test_an_undecodable_record_on_the_quarantine_list_is_skipped_with_a_word(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["security.quarantine"], partitions=1)
    with EventProducer(kafka_settings) as out:
        for source in ("producer:bot", "producer:scraper"):
            record = {**EXAMPLES[catalog.QUARANTINE], "source": source, "event_id": source}
            out.produce("security.quarantine", catalog.QUARANTINE, record, key=source)
        out.produce_raw("security.quarantine", b"written by hand", b"producer:scraper")
    env = {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}

    listed = CliRunner().invoke(app, ["security", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["producer:bot", "producer:scraper"]
    assert "skipped 1 records" in listed.stderr and "offset 2" in listed.stderr, listed.stderr

    released = CliRunner().invoke(app, ["security", "release", "producer:scraper"], env=env)
    assert released.exit_code == 0, released.output
    assert "released producer:scraper" in released.stdout
