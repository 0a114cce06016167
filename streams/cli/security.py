"""``eddyline security``: the quarantine list of the online learners, and letting a source back in.

The list is the compacted topic ``security.quarantine`` (keyed by source; the latest record per source is its
standing). The model-security flow writes quarantines; ``release`` writes a release, which the click flow obeys
(it learns from the source again) and the model-security flow too (fresh history, a grace period).
"""

from __future__ import annotations

import getpass
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from streams.flows.names import QUARANTINE_TOPIC as TOPIC

if TYPE_CHECKING:
    from connectors.kafka import KafkaSettings


def standing(kafka: KafkaSettings, timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """Every source's latest quarantine record, read from the start of the quarantine list to its end as of now.

    A record that is not a quarantine event (written by hand, or by a buggy producer) is skipped, as the flows
    dead-letter it and keep the source's standing before it: one bad record must not hide a quarantine, nor stop
    the operator from listing and releasing the others.

    Parameters
    ----------
    kafka
        The Kafka settings.
    timeout_s
        Seconds to read at most (``TimeoutError`` if the list is not read to its end by then).
    """
    from connectors.kafka import create_topics, read_to_end
    from connectors.schema_registry import configured_serde
    from schemas import QUARANTINE, DecodeError, ValidationError

    create_topics(kafka, [TOPIC])
    serde = configured_serde()
    messages, unread = read_to_end(kafka, TOPIC, {}, timeout=timeout_s)
    if unread:
        raise TimeoutError(f"partitions {sorted(unread)} of {kafka.topic(TOPIC)} not read to their end in "
                           f"{timeout_s:g} s from {kafka.bootstrap_servers}")
    latest: dict[bytes | None, dict[str, Any]] = {}
    bad = []
    for m in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        if m.value() is None:  # a tombstone
            latest.pop(m.key(), None)
            continue
        try:
            latest[m.key()] = serde.decode(m.value(), QUARANTINE)
        except (DecodeError, ValidationError) as exc:
            bad.append(f"partition {m.partition()} offset {m.offset()} ({exc})")
    if bad:
        typer.echo(f"skipped {len(bad)} records of {kafka.topic(TOPIC)} that are not quarantine records, as the "
                   f"flows skip them: {'; '.join(bad[:3])}", err=True)
    return {r["source"]: r for r in latest.values()}


def list_command(
    all_: Annotated[bool, typer.Option("--all", help="Also show released sources.")] = False,
) -> None:
    """Sources the online learners do not learn from (their events are still scored), with why."""
    from streams.cli.errors import answering_kafka

    rows = [r for r in standing(answering_kafka()).values() if all_ or r["action"] == "QUARANTINE"]
    if not rows:
        typer.echo("no source is quarantined" if not all_ else "the quarantine list is empty")
        return
    for r in sorted(rows, key=lambda r: r["event_time"]):
        when = datetime.fromtimestamp(r["event_time"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(f"{r['source']}\t{r['action'].lower()}\t{when} UTC\t{r['rule']}\t{r['reason']}")


def release_command(
    source: Annotated[str, typer.Argument(help="producer:NAME or user:ID, as `eddyline security list` shows it.")],
    reason: Annotated[str, typer.Option(help="Why it is let back in (goes to the list and the alert).")] =
        "released by an operator",
) -> None:
    """Let a quarantined source back in: the click model learns from it again, and its alert is resolved."""
    from connectors.kafka import EventProducer
    from streams.cli.errors import answering_kafka
    from models.security import parse_source
    from schemas import QUARANTINE, derive_id

    parse_source(source)
    kafka = answering_kafka()
    current = standing(kafka).get(source)
    if current is None or current["action"] != "QUARANTINE":
        raise ValueError(f"{source} is not quarantined; `eddyline security list` shows the sources that are")
    now = int(time.time() * 1000)
    record = {"event_id": derive_id(TOPIC, source, "release", current["event_id"]), "event_time": now,
              "producer": f"operator:{getpass.getuser()}", "source": source, "action": "RELEASE",
              "rule": "operator", "reason": reason, "statistic": None, "threshold": None, "events": None}
    with EventProducer(kafka) as producer:
        producer.produce(TOPIC, QUARANTINE, record, key=source)
    typer.echo(f"released {source} (quarantined for: {current['reason']})")
