"""The ``eddyline`` command line: run the broker, flows, producers, the demo and the benchmarks.

Heavy modules are imported inside each command so that ``eddyline --help`` stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from connectors.config import explain
from streams import logs

app = typer.Typer(help="eddyline: streaming-first event processing for ML operations.", no_args_is_help=True)
topics_app = typer.Typer(help="Manage topics.", no_args_is_help=True)
produce_app = typer.Typer(help="Publish events.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: each compares against a baseline in the same run.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(produce_app, name="produce")
models_app = typer.Typer(help="Model registry and model training.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alert delivery: dead letters of the notify flow.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(alerts_app, name="alerts")
bridge_app = typer.Typer(help="Bridges from where devices already publish (MQTT) into Kafka.", no_args_is_help=True)
app.add_typer(bridge_app, name="bridge")
app.add_typer(models_app, name="models")
security_app = typer.Typer(help="Model security: sources the online learners do not learn from.", no_args_is_help=True)
app.add_typer(security_app, name="security")
edge_app = typer.Typer(help="The edge device fleet: its state, and its models.", no_args_is_help=True)
app.add_typer(edge_app, name="edge")

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """An error the user can act on: the message says what to do."""


def friendly(fn: F) -> F:
    """Turn known failures into one line that says what to do. A mistake in the command or its settings exits 2
    (a supervisor must not restart it: nothing changes until someone edits it); a broker that does not answer
    exits 1, because it may be back in a minute and a restart is what the operator wants."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logs.setup()
        try:
            return fn(*args, **kwargs)
        except CliError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        except ValidationError as exc:  # settings: name the key and what to change
            typer.secho(f"error: {explain(exc)}", fg="red", err=True)
            raise typer.Exit(2) from None
        except (TimeoutError, ConnectionError) as exc:
            typer.secho(
                f"error: {exc}\nIs Kafka reachable? Start one with `eddyline broker` or set "
                "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS (or [kafka] bootstrap_servers in eddyline.toml).",
                fg="red",
                err=True,
            )
            raise typer.Exit(1) from None
        except ValueError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


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
    from connectors.broker import BrokerSettings, check_storage, serve

    settings = BrokerSettings()
    serve(port=port or settings.port, host=host or settings.host,
          storage=check_storage(storage) if storage else settings.storage)


@topics_app.command("create")
@friendly
def topics_create(
    partitions: Annotated[int | None, typer.Option(help="Partitions per topic (default from settings).")] = None,
) -> None:
    """Create every topic eddyline uses (idempotent)."""
    from connectors.kafka import create_topics
    from schemas.topics import ALL_TOPICS

    settings = _kafka()
    create_topics(settings, ALL_TOPICS, partitions=partitions)
    for t in ALL_TOPICS:
        typer.echo(settings.topic(t))


@produce_app.command("sensors")
@friendly
def produce_sensors(
    devices: Annotated[int, typer.Option(help="Simulated devices.")] = 10,
    rate: Annotated[float, typer.Option(help="Readings per second (0: as fast as possible).")] = 2000.0,
    count: Annotated[int | None, typer.Option(help="Stop after this many messages.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    anomaly_rate: Annotated[float, typer.Option(help="Chance per reading that an anomaly starts.")] = 0.002,
    bad_events: Annotated[int, typer.Option(help="Malformed messages to mix in.")] = 0,
    truth: Annotated[Path | None, typer.Option(help="Write the injected anomalies here (JSON).")] = None,
) -> None:
    """Publish simulated device readings with injected anomalies to sensor.readings."""
    from streams.producers.sensors import produce

    stats = produce(_kafka(), devices=devices, rate=rate, count=count, duration=duration,
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
    from datetime import timedelta

    from streams.flows import SERVICES, flow_spec
    from streams.runtime import RuntimeSettings

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

        serve(port, host=runtime.metrics_host)
    if service is not None:
        try:
            service()(_kafka())
        except KeyboardInterrupt:
            typer.echo(f"{flow} stopped", err=True)
        return
    assert spec is not None
    epoch = timedelta(seconds=runtime.epoch_interval_s)
    idle = timedelta(seconds=runtime.idle_evict_s) if runtime.idle_evict_s else None
    try:
        if engine == "faust":
            from streams.engines.faust import run as run_faust

            folder = state_dir or runtime.state_dir / f"{spec.name}-faust"
            run_faust(spec, _kafka(), state_dir=folder, workers=workers, batch_size=runtime.batch_size,
                      lag_interval_s=runtime.lag_interval_s)
        elif workers > 1:
            from streams.engines.bytewax_cluster import run_cluster

            folder = state_dir or runtime.state_dir / spec.name
            run_cluster(spec, _kafka(), processes=workers, state_dir=folder, epoch_interval=epoch,
                        batch_size=runtime.batch_size, lag_interval_s=runtime.lag_interval_s, idle_after=idle,
                        buckets=runtime.state_buckets)
        else:
            from streams.engines.bytewax import run

            folder = state_dir or runtime.state_dir / spec.name
            run(spec, _kafka(), state_dir=folder, epoch_interval=epoch, batch_size=runtime.batch_size,
                lag_interval_s=runtime.lag_interval_s, idle_after=idle, buckets=runtime.state_buckets)
    except KeyboardInterrupt:
        typer.echo(f"{spec.name} stopped; state kept in {folder}", err=True)


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
    duration: Annotated[float | None, typer.Option(help="Seconds to produce before the summary (default: until Ctrl-C).")] = None,
    bad_events: Annotated[int, typer.Option(help="Malformed messages to mix in; they must land in the DLQ.")] = 0,
    summary_json: Annotated[Path | None, typer.Option(help="Write the summary here as JSON.")] = None,
    devices: Annotated[int, typer.Option(help="Simulated devices.")] = 20,
    rate: Annotated[float, typer.Option(help="Readings per second.")] = 3000.0,
    calls: Annotated[bool, typer.Option(help="Also stream the recorded calls through the audio flow.")] = True,
) -> None:
    """Start a broker, the flows, simulated devices, recorded calls and a loopback alert receiver; print a summary."""
    from streams.cli.demo import run_demo

    summary = run_demo(duration=duration, bad_events=bad_events, devices=devices, rate=rate,
                       summary_json=summary_json, calls=calls)
    if summary["scored"] + summary["dlq"] != summary["produced"]:
        raise typer.Exit(1)


def _mount(group: typer.Typer, name: str, target: str) -> None:
    """Mount a command function that lives beside its subject (benchmarks/, models/)."""
    import importlib

    module, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    group.command(name)(friendly(fn))


def _mount_plugins(group: typer.Typer, entry_point_group: str) -> None:
    """Mount the commands other packages register (benchmarks register ``eddyline.bench``), by entry point.

    The dependency points from the plugin to the CLI: production code never imports ``benchmarks``.
    """
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=entry_point_group), key=lambda e: e.name):
        group.command(ep.name)(friendly(ep.load()))


_mount_plugins(bench_app, "eddyline.bench")
_mount(app, "gateway", "connectors.gateway:command")
_mount(bridge_app, "mqtt", "connectors.mqtt.bridge:command")
_mount(app, "live", "streams.apps.live:command")
_mount(produce_app, "clicks", "streams.producers.clicks:command")
_mount(produce_app, "audio", "streams.cli.audio:produce_command")
_mount(app, "transcribe", "streams.cli.audio:transcribe_command")
_mount(models_app, "train-sentiment", "models.sentiment.commands:train_command")
_mount(models_app, "eval-sentiment", "models.sentiment.commands:eval_command")
_mount(models_app, "rollback", "streams.cli.models:rollback_command")
_mount(models_app, "list", "streams.cli.models:list_command")
_mount(models_app, "migrate-registry", "streams.cli.models:migrate_command")
_mount(models_app, "ui", "streams.cli.models:ui_command")
_mount(alerts_app, "redrive", "streams.cli.alerts:redrive_command")
_mount(security_app, "list", "streams.cli.security:list_command")
_mount(security_app, "release", "streams.cli.security:release_command")
_mount(edge_app, "status", "streams.cli.edge:status_command")
_mount(edge_app, "keygen", "streams.cli.edge_models:keygen_command")
_mount(edge_app, "publish", "streams.cli.edge_models:publish_command")
_mount(edge_app, "rollout", "streams.cli.edge_models:rollout_command")
_mount(edge_app, "degraded", "streams.cli.edge_models:degraded_command")


def main() -> None:  # pragma: no cover
    app()
