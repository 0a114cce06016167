"""``eddyline alerts``: what the notify flow could not deliver, and sending it again."""

from __future__ import annotations

from typing import Annotated

import typer


def redrive_command(
    idle: Annotated[float, typer.Option(help="Stop when no dead letter came for this many seconds.")] = 2.0,
    dry_run: Annotated[bool, typer.Option(help="Count the letters that would be redriven; write nothing.")] = False,
) -> None:
    """Send dead-lettered alerts (dlq.alerts) again: back on alerts.retry, due now, for the notify flow.

    Each letter is redriven once (a consumer group remembers where redrive stopped); delivery is idempotent
    (PagerDuty's dedup key is the alert key), so a letter sent twice opens no second incident. A namespace the notify
    flow never ran in (no dlq.alerts) is refused: "0 redriven" there would hide a mistyped namespace.
    """
    from connectors.kafka import make_admin
    from streams.cli.errors import BROKER_ANSWER_S, CliError, answering_kafka
    from streams.flows.notify import DLQ_TOPIC, redrive

    if idle <= 0:
        raise ValueError("--idle must be positive (seconds without a new letter before redrive stops)")
    kafka = answering_kafka()
    dlq = kafka.topic(DLQ_TOPIC)
    meta = make_admin(kafka).list_topics(timeout=BROKER_ANSWER_S).topics.get(dlq)  # asking for one may create it
    if meta is None or meta.error is not None:  # "redrove 0" would hide a wrong namespace, and redrive creates topics
        raise CliError(f"there is no topic {dlq} on {kafka.bootstrap_servers}: the notify flow never ran with the "
                       f"namespace {kafka.namespace!r}; set the one it runs with (EDDYLINE_KAFKA_NAMESPACE or "
                       "[kafka] namespace in eddyline.toml) and run redrive again")
    report = redrive(kafka, idle_s=idle, dry_run=dry_run)
    verb = "would redrive" if dry_run else "redrove"
    typer.echo(f"{verb} {report.redriven} dead-lettered alerts")
    for reason, n in sorted(report.by_reason.items()):
        typer.echo(f"  reason {reason}: {n}")
    for destination, n in sorted(report.by_destination.items()):
        typer.echo(f"  destination {destination}: {n}")
    if report.redriven and not dry_run:
        typer.echo("the notify flow (`eddyline run notify`) delivers them", err=True)
