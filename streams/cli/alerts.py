"""``eddyline alerts``: what the notify flow could not deliver, and sending it again."""

from __future__ import annotations

from typing import Annotated

import typer


def redrive_command(
    idle: Annotated[float | None, typer.Option(
        hidden=True, help="No longer used: redrive reads dlq.alerts to its end as of its start.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Count the letters that would be redriven; write nothing.")] = False,
    timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds to read for; what is left is reported, and the next run takes it.")] = 120.0,
) -> None:
    """Send dead-lettered alerts (dlq.alerts) again: back on alerts.retry, due now, for the notify flow.

    Each letter is redriven once (a consumer group remembers where redrive stopped); delivery is idempotent
    (PagerDuty's dedup key is the alert key), so a letter sent twice opens no second incident. A namespace the notify
    flow never ran in (no dlq.alerts) is refused: "0 redriven" there would hide a mistyped namespace. Letters that
    sending again cannot deliver (undecodable bytes, an invalid alert) are skipped and counted: sent, they would come
    back to the DLQ, and every later redrive would repeat them. A run that ran out of time exits 1 and says where.
    """
    from confluent_kafka import KafkaException

    from connectors.kafka import DeliveryError as KafkaDeliveryError
    from connectors.kafka import make_admin
    from streams.cli.errors import BROKER_ANSWER_S, CliError, answering_kafka
    from streams.flows.notify import DLQ_TOPIC, redrive

    if idle is not None:  # scripts written for the idle timer keep working
        typer.echo("note: --idle is no longer used: redrive reads dlq.alerts to its end as of its start "
                   "(--timeout bounds it); drop --idle", err=True)
    kafka = answering_kafka()
    dlq = kafka.topic(DLQ_TOPIC)
    meta = make_admin(kafka).list_topics(timeout=BROKER_ANSWER_S).topics.get(dlq)  # asking for one may create it
    if meta is None or meta.error is not None:  # "redrove 0" would hide a wrong namespace, and redrive creates topics
        raise CliError(f"there is no topic {dlq} on {kafka.bootstrap_servers}: the notify flow never ran with the "
                       f"namespace {kafka.namespace!r}; set the one it runs with (EDDYLINE_KAFKA_NAMESPACE or "
                       "[kafka] namespace in eddyline.toml) and run redrive again")
    try:
        report = redrive(kafka, timeout_s=timeout, dry_run=dry_run)
    except (KafkaDeliveryError, KafkaException) as e:  # the broker stopped answering part-way
        raise ConnectionError(f"redrive stopped: {e}; run `eddyline alerts redrive` again once Kafka answers: it "
                              "goes on from where this run last committed") from e
    verb = "would redrive" if dry_run else "redrove"
    typer.echo(f"{verb} {report.redriven} dead-lettered alerts")
    for reason, n in sorted(report.by_reason.items()):
        typer.echo(f"  reason {reason}: {n}")
    for destination, n in sorted(report.by_destination.items()):
        typer.echo(f"  destination {destination}: {n}")
    if report.skipped:
        typer.echo(f"skipped {sum(report.skipped.values())} that sending again cannot deliver (they stay on {dlq})")
        for reason, n in sorted(report.skipped.items()):
            typer.echo(f"  reason {reason}: {n}")
    if report.redriven and not dry_run:
        typer.echo("the notify flow (`eddyline run notify`) delivers them", err=True)
    if report.unfinished:
        left = ", ".join(map(str, report.unfinished))
        typer.echo(f"{dlq} not read to its end within {timeout:g} s (partitions left: {left}): run `eddyline "
                   "alerts redrive` again (it goes on where this run stopped), or raise --timeout", err=True)
        raise typer.Exit(1)
