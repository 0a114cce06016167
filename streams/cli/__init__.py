"""The ``eddyline`` command line: run the broker, flows, producers, the demo and the benchmarks.

Heavy modules are imported inside each command, and a command that lives in a module of its own is imported
only when it runs (``streams.cli.lazy``), so that every command starts without the others' imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.cli.errors import CliError, answering_kafka, friendly, output_file, until_interrupted
from streams.cli.lazy import Lazy, group, lazy_group

__all__ = ["CliError", "app", "friendly", "main"]



# The commands that live beside their subject (connectors/, models/, streams/): imported when they run
# (streams/cli/lazy.py); the help is the function docstring's first paragraph (tests/unit/test_cli_lazy.py checks).
app = group(help="eddyline: streaming-first event processing for ML operations.",
           cls=lazy_group(
    Lazy("gateway", "connectors.gateway:command",
         "Run the producer gateway: HTTP POST and WebSocket in, validated events out to Kafka."),
    Lazy("live", "streams.apps.live:command",
         "Serve the live page for the output topics of the configured Kafka (EDDYLINE_KAFKA_* or eddyline.toml) "
         "until Ctrl-C."),
    Lazy("transcribe", "streams.cli.audio:transcribe_command", "Print the text of each WAV file.")))
topics_app = group(help="Manage topics.")
produce_app = group(help="Publish events.", cls=lazy_group(
    Lazy("clicks", "streams.producers.clicks:command",
         "Replay the MovieLens ratings to the clicks topic as impressions and clicks, in event-time order."),
    Lazy("audio", "streams.cli.audio:produce_command",
         "Stream WAV files to ``audio.chunks`` as audio_chunk events, the conversations interleaved as if live.")))
# `eddyline bench NAME`: benchmarks register by entry point, so production code never imports benchmarks/.
bench_app = group(help="Benchmarks: each compares against a baseline in the same run; "
                        "`eddyline bench NAME --help` says what NAME measures.",
                        cls=lazy_group(plugins="eddyline.bench"))
models_app = group(help="Model registry and model training.", cls=lazy_group(
    Lazy("train-sentiment", "models.sentiment.commands:train_command",
         "Train the sentiment model, export it to ONNX int8 and write its model card."),
    Lazy("eval-sentiment", "models.sentiment.commands:eval_command",
         "Accuracy per domain and per text length on the held-out split, beside VADER's lexicon on the same texts."),
    Lazy("rebuild-onnx", "models.sentiment.commands:rebuild_command",
         "Export and quantise a trained sentiment model's ONNX again from its saved PyTorch weights."),
    Lazy("rollback", "streams.cli.models:rollback_command",
         "Restore the previous champion of MODEL (on MLflow: move its champion alias back); a running click flow "
         "switches to it within [mlflow] poll_s."),
    Lazy("list", "streams.cli.models:list_command",
         "Every registered version of MODEL: status, parent, metrics and why it exists."),
    Lazy("migrate-registry", "streams.cli.models:migrate_command",
         "Copy a local registry folder into MLflow's registry ([mlflow]): every version with its artifacts, "
         "statuses, metrics, lineage, champion alias and action ids. Running it again copies nothing twice."),
    Lazy("ui", "streams.cli.models:ui_command",
         "Serve MLflow's UI over the embedded store (runs, model versions, aliases) until Ctrl-C.")))
alerts_app = group(help="Alert delivery: dead letters of the notify flow.", cls=lazy_group(
    Lazy("redrive", "streams.cli.alerts:redrive_command",
         "Send dead-lettered alerts (dlq.alerts) again: back on alerts.retry, due now, for the notify flow.")))
bridge_app = group(help="Bridges from where devices already publish (MQTT) into Kafka.",
                   cls=lazy_group(
    Lazy("mqtt", "connectors.mqtt.bridge:command",
         "Bridge an MQTT broker's sensor topics into sensor.readings (QoS 1, acknowledged after Kafka delivery).")))
security_app = group(help="Model security: sources the online learners do not learn from.",
                     cls=lazy_group(
    Lazy("list", "streams.cli.security:list_command",
         "Sources the online learners do not learn from (their events are still scored), with why."),
    Lazy("release", "streams.cli.security:release_command",
         "Let a quarantined source back in: the click model learns from it again, and its alert is resolved.")))
edge_app = group(help="The edge device fleet: its state, and its models.", cls=lazy_group(
    Lazy("status", "streams.cli.edge:status_command",
         "The fleet by version and state: the latest heartbeat of every device in device.health, judged now."),
    Lazy("keygen", "streams.cli.edge_models:keygen_command",
         "Make an Ed25519 key pair: publish signs with the private key, agents verify with the public one."),
    Lazy("publish", "streams.cli.edge_models:publish_command",
         "Sign a model and publish it to the compacted models topic; nothing runs it until a rollout names it."),
    Lazy("rollout", "streams.cli.edge_models:rollout_command",
         "Send a model to a canary share of a class; promote it to all when the canaries stay healthy, else roll "
         "back."),
    Lazy("degraded", "streams.cli.edge_models:degraded_command",
         "Devices whose local model got slower than their peers (or their own start): re-optimise their class.")))
for _name, _group in (("topics", topics_app), ("produce", produce_app), ("bench", bench_app), ("alerts", alerts_app),
                      ("bridge", bridge_app), ("models", models_app), ("security", security_app), ("edge", edge_app)):
    app.add_typer(_group, name=_name)


def _kafka():  # noqa: ANN202
    from connectors.kafka import KafkaSettings

    return KafkaSettings()


@app.command()
@friendly
def broker(
    port: Annotated[int | None, typer.Option(help="Port (default from [broker] port: 9092).")] = None,
    host: Annotated[str | None, typer.Option(help="Listen address (default from [broker] host: 127.0.0.1).")] = None,
    storage: Annotated[str | None, typer.Option(
        help="memory://tansu/ (default; nothing kept across restarts) or s3://BUCKET/ (durable; credentials and "
             "endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL).")] = None,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu) until Ctrl-C."""
    from connectors.broker import BrokerError, BrokerSettings, PortInUse, check_storage, serve

    settings = BrokerSettings()
    try:
        serve(port=port or settings.port, host=host or settings.host,
              storage=check_storage(storage) if storage else settings.storage)
    except PortInUse as exc:
        raise CliError(f"{exc} (--port, or [broker] port in eddyline.toml)") from None
    except BrokerError as exc:  # not the command's fault: what the broker said, and exit 1 so a supervisor retries
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None


@topics_app.command("create")
@friendly
def topics_create(
    partitions: Annotated[int | None, typer.Option(help="Partitions per topic (default from settings).")] = None,
    timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds to wait for the broker to answer at all; raise it to wait for one still starting.")
    ] = 5.0,
) -> None:
    """Create every topic eddyline uses (idempotent).

    alerts.delivered keeps records a day longer than the notify flow reads back (delivered_window_s in the notify
    table, EDDYLINE_NOTIFY_DELIVERED_WINDOW_S); an existing one keeps its retention and is warned about if shorter.
    """
    from connectors.kafka import create_topics
    from schemas.topics import ALL_TOPICS
    from streams.flows.notify import NotifySettings, create_notify_topics

    try:
        settings = answering_kafka(timeout)
    except ConnectionError as exc:
        raise ConnectionError(f"{exc}; raise --timeout to wait for a broker that is starting") from None
    create_notify_topics(settings, NotifySettings(), partitions=partitions)  # first: its window sets a retention
    create_topics(settings, ALL_TOPICS, partitions=partitions)
    for t in ALL_TOPICS:
        typer.echo(settings.topic(t))


@produce_app.command("sensors")
@friendly
def produce_sensors(
    devices: Annotated[int, typer.Option(min=1, help="Simulated devices.")] = 10,
    rate: Annotated[float, typer.Option(min=0, help="Readings per second (0: as fast as possible).")] = 2000.0,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many messages.")] = None,
    duration: Annotated[float | None, typer.Option(min=0, help="Stop after this many seconds.")] = None,
    anomaly_rate: Annotated[float, typer.Option(min=0, max=1, help="Chance per reading that an anomaly starts.")] = 0.002,
    bad_events: Annotated[int, typer.Option(min=0, help="Malformed messages to mix in.")] = 0,
    truth: Annotated[Path | None, typer.Option(
        help="Write the injected anomalies here (JSON).", callback=output_file)] = None,
) -> None:
    """Publish simulated device readings with injected anomalies to sensor.readings."""
    from streams.producers.sensors import produce

    stats = produce(answering_kafka(), devices=devices, rate=rate, count=count, duration=duration,
                    anomaly_rate=anomaly_rate, bad_events=bad_events, truth_path=truth, progress=True)
    typer.echo(f"produced {stats.messages} messages, {stats.readings} readings, {stats.bad} malformed, "
               f"{stats.injected} injected anomalies", err=True)


@app.command("run")
@friendly
def run_flow(
    flow: Annotated[str, typer.Argument(
        help="Which flow: anomaly, audio, sentiment, clicks, drift, quality, model-security, fleet, notify.")],
    engine: Annotated[str, typer.Option(help="bytewax (checkpointed dataflow) or faust (agents, changelog tables).")] = "bytewax",
    workers: Annotated[int, typer.Option(help="Processes (bytewax) or workers in one group (faust).")] = 1,
    state_dir: Annotated[Path | None, typer.Option(help="Checkpoint folder (default from [runtime] state_dir).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on PORT (one process only).")] = None,
) -> None:
    """Run a flow until interrupted; its state is checkpointed so a restart resumes where it stopped."""
    from streams.flows import FLOWS, SERVICES, flow_spec
    from streams.runtime import RuntimeSettings

    if flow not in FLOWS and flow not in SERVICES:
        import difflib

        names = sorted([*FLOWS, *SERVICES])
        close = difflib.get_close_matches(flow, names, n=1)
        raise CliError(f"unknown flow {flow!r}" + (f"; did you mean {close[0]}?" if close else "")
                       + f" Choose one of: {', '.join(names)}")
    if engine not in ("bytewax", "faust"):
        raise CliError(f"unknown engine {engine!r}; use --engine bytewax or --engine faust")
    if workers < 1:
        raise CliError("--workers must be at least 1")
    runtime = RuntimeSettings()
    _check_sink_settings()
    service = SERVICES.get(flow)
    if service is not None and (engine != "bytewax" or workers != 1):
        raise CliError(f"{flow} runs its own consumer, not an engine: drop --engine and --workers "
                       f"(start more `eddyline run {flow}` processes to share its consumer group)")
    spec = flow_spec(flow) if service is None else None
    port = metrics_port if metrics_port is not None else runtime.metrics_port
    if port is not None:
        if workers > 1:
            raise CliError("--metrics-port serves one process; run with --workers 1 per metrics port")
        from connectors.prometheus import serve

        try:
            serve(port, host=runtime.metrics_host)
        except OSError as exc:
            raise CliError(f"cannot serve metrics on {runtime.metrics_host}:{port} ({exc.strerror or exc}); choose "
                           "another port (--metrics-port, or [runtime] metrics_port) or stop what holds it") from None
    if service is not None:
        with until_interrupted(f"{flow} stopped"):
            service()(_kafka())
        return
    assert spec is not None
    folder = state_dir or runtime.state_dir / (f"{spec.name}-faust" if engine == "faust" else spec.name)
    with until_interrupted(f"{spec.name} stopped; state kept in {folder}"):
        if engine == "faust":
            from streams.engines.faust import run as run_faust

            run_faust(spec, _kafka(), state_dir=folder, workers=workers, **runtime.faust_options())
        elif workers > 1:
            from streams.engines.bytewax_cluster import run_cluster

            run_cluster(spec, _kafka(), processes=workers, state_dir=folder, **runtime.bytewax_options())
        else:
            from streams.engines.bytewax import run

            run(spec, _kafka(), state_dir=folder, **runtime.bytewax_options())


def _check_sink_settings() -> None:
    """Read the side sinks' settings now: a typo there must stop the start, not fail inside the engine."""
    from connectors.influx import InfluxSettings
    from connectors.pagerduty import PagerDutySettings
    from connectors.slack import SlackSettings

    for section in (InfluxSettings, PagerDutySettings, SlackSettings):
        section()


@app.command()
@friendly
def demo(
    duration: Annotated[float | None, typer.Option(
        min=0, help="Seconds to produce before the summary (default: until Ctrl-C).")] = None,
    bad_events: Annotated[int, typer.Option(min=0, help="Malformed messages to mix in; they must land in the DLQ.")] = 0,
    summary_json: Annotated[Path | None, typer.Option(
        help="Write the summary here as JSON.", callback=output_file)] = None,
    devices: Annotated[int, typer.Option(min=1, help="Simulated devices.")] = 20,
    rate: Annotated[float, typer.Option(min=0, help="Readings per second.")] = 3000.0,
    calls: Annotated[bool, typer.Option(help="Also stream the recorded calls through the audio flow.")] = True,
) -> None:
    """Start a broker, the flows, simulated devices, recorded calls and a loopback alert receiver; print a summary."""
    from streams.cli.demo import run_demo

    summary = run_demo(duration=duration, bad_events=bad_events, devices=devices, rate=rate,
                       summary_json=summary_json, calls=calls)
    if summary["scored"] + summary["dlq"] != summary["produced"]:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    app()
