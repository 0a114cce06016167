"""``eddyline-edge``: run the agent, check a config, inspect the buffer. Plain argparse to stay light."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from connectors.kafka import KafkaSettings
    from edge_agent.settings import EdgeSettings

log = logging.getLogger("edge_agent")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eddyline-edge", description="eddyline's device agent: sensors in, Kafka out.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command")

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument(
            "--config",
            type=Path,
            default=None,
            help="TOML file with [edge] and [kafka] tables (default: $EDDYLINE_CONFIG or ./eddyline.toml)",
        )
        return sp

    run = with_config(sub.add_parser("run", help="sample, buffer and publish until stopped (SIGTERM/Ctrl-C)"))
    run.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    run.add_argument("--flush-timeout", type=float, default=5.0, help="seconds to keep sending on shutdown")
    run.add_argument(
        "--in-process",
        action="store_true",
        help="run in this process instead of the lean runtime (keeps pydantic loaded: about 20 MB more)",
    )
    check = with_config(sub.add_parser("check-config", help="validate the config and open every source once"))
    check.add_argument("--json", action="store_true", help="print the effective settings as JSON")
    stats = with_config(sub.add_parser("buffer-stats", help="what is waiting in the disk buffer"))
    stats.add_argument("--buffer", type=Path, default=None, help="the buffer file (default: buffer_path from config)")
    model = sub.add_parser("build-model", help="build the int8 ONNX anomaly model (needs the onnx package)")
    model.add_argument("--out", type=Path, required=True)
    model.add_argument("--csv", type=Path, default=None, help="train on these readings (timestamp,sensor,value)")
    model.add_argument("--window", type=int, default=16)
    model.add_argument(
        "--optimise",
        action="store_true",
        help="treat --out as a folder: build fp32, int8 (dynamic, static) and pruned variants, measure size, "
        "latency (1 thread) and agreement with fp32, write <class>.onnx per device class and report.json",
    )
    model.add_argument(
        "--target",
        action="append",
        default=None,
        metavar="CLASS=AGREEMENT[:LATENCY_US]",
        help="a device class's bounds for --optimise (repeatable; default rpi4=0.95:50 jetson-nano=0.98:50 x86_64=0.99)",
    )
    return p


def _load(config: Path | None) -> tuple[EdgeSettings, KafkaSettings]:
    from connectors.kafka import KafkaSettings
    from edge_agent.settings import EdgeSettings, use_config_file

    use_config_file(config)
    try:
        return EdgeSettings(), KafkaSettings()
    except KeyError as exc:  # pydantic-settings' TOML source when a table is absent
        raise RuntimeError(
            f"{exc.args[0] if exc.args else exc}; add the missing table (an empty [kafka] or [edge] will do)"
        ) from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from edge_agent import __version__

        print(__version__)
        return 0
    if args.command is None:
        _parser().print_help()
        return 2
    from connectors.config import ConfigError, explain
    from edge_agent.buffer import BufferError
    from edge_agent.logs import setup_logging
    from edge_agent.sources import SourceError

    setup_logging("INFO")
    try:
        if args.command == "build-model":
            return _build_model(args)
        edge, kafka = _load(args.config)
        setup_logging(edge.log_level)
        if args.command == "run":
            return _run(edge, kafka, args)
        if args.command == "check-config":
            return _check(edge, kafka, args)
        if args.command == "buffer-stats":
            return _buffer_stats(edge, args)
    except ValidationError as exc:
        print(f"eddyline-edge: {explain(exc)}\n`eddyline-edge check-config --config FILE` validates without running",
              file=sys.stderr)
        return 2
    except (ConfigError, SourceError, BufferError, RuntimeError) as exc:
        print(f"eddyline-edge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path it was given or configured with: missing, a folder, under a file, unreadable
        if exc.filename is None:
            print(f"eddyline-edge: {exc}", file=sys.stderr)
            return 2
        print(f"eddyline-edge: {exc.strerror or exc}: {exc.filename}; check the path and its permissions, then run "
              "the command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eddyline-edge: {args.command} interrupted; run it again to finish", file=sys.stderr)
        return 130
    return 2


def _run(edge: EdgeSettings, kafka: KafkaSettings, args: argparse.Namespace) -> int:
    from edge_agent.launch import exec_runner

    if args.in_process:
        from edge_agent.agent import Agent

        agent = Agent.from_settings(edge, kafka)
        agent.install_signal_handlers()
        agent.run(duration=args.duration, shutdown_flush_s=args.flush_timeout)
        return 0
    exec_runner(edge, kafka, args.duration, args.flush_timeout)
    return 1  # exec failed


def _check(edge: EdgeSettings, kafka: KafkaSettings, args: argparse.Namespace) -> int:
    from edge_agent.sources import build_source

    for cfg in edge.sources:
        src = build_source(cfg)
        try:
            chunks = src.read()
        except Exception as exc:
            raise RuntimeError(f"source {cfg.name!r} failed its first read: {exc}") from None
        finally:
            src.close()
        print(
            f"source {cfg.name} ({cfg.kind}, every {cfg.interval_s:g}s): {sum(len(c.values) for c in chunks)} readings"
            f" from {len(chunks)} sensors on first read"
        )
    if edge.inference.enabled:
        from edge_agent.inference.local import LocalInference

        inf = LocalInference(edge.inference)
        print(f"inference: {inf.model_path} on {inf.providers[0]}")
    if edge.models.enabled:
        from schemas.signing import SignatureError, Verifier

        try:
            key = Verifier(edge.models.public_key.read_bytes()).key_id
        except SignatureError as exc:
            raise RuntimeError(f"[edge.models] public_key {edge.models.public_key}: {exc}") from None
        print(f"models: following {kafka.topic(edge.models.rollouts_topic)} for class {edge.device_class}, "
              f"trusting key {key}")
    if args.json:
        print(json.dumps({"edge": edge.model_dump(mode="json"), "kafka": kafka.model_dump(mode="json")}, indent=2))
    print(f"config OK: device {edge.device_id}, topic {kafka.topic(edge.topic)} on {kafka.bootstrap_servers}")
    return 0


def _buffer_stats(edge: EdgeSettings, args: argparse.Namespace) -> int:
    from edge_agent.buffer import read_stats

    print(json.dumps(asdict(read_stats(args.buffer or edge.buffer_path)), indent=2))
    return 0


def _build_model(args: argparse.Namespace) -> int:
    from edge_agent.inference.model import build_model, training_windows_from_csv

    if args.window < 4:
        raise RuntimeError(f"--window {args.window}: the window must be at least 4 readings")
    series = None
    if args.csv:
        try:
            series = training_windows_from_csv(args.csv)
            if not any(len(s) >= args.window for s in series):
                raise ValueError(f"no sensor has {args.window} readings")
        except (KeyError, ValueError) as exc:
            raise RuntimeError(f"--csv {args.csv}: {exc}; give a CSV with the header timestamp,sensor,value, "
                               f"numeric values and at least {args.window} readings of a sensor") from None
    if args.optimise:
        return _optimise(args, series)
    path = build_model(args.out, window=args.window, series=series)
    print(f"wrote {path}")
    _track_build([path], _build_params(args, series))
    return 0


def _optimise(args: argparse.Namespace, series: list | None) -> int:
    from edge_agent.inference.optimise import DEFAULT_TARGETS, markdown_table, optimise, parse_target

    targets = tuple(parse_target(t) for t in args.target) if args.target else DEFAULT_TARGETS
    report = optimise(args.out, targets, window=args.window, series=series)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(report))
    for cls, name in report["chosen"].items():
        print(f"{cls}: {name} -> {args.out / (cls + '.onnx')}")
    _track_build([args.out / "report.json", *(args.out / f"{cls}.onnx" for cls in report["chosen"])],
                 {**_build_params(args, series), "targets": [str(t) for t in targets]})
    return 0


def _build_params(args: argparse.Namespace, series: list | None) -> dict[str, object]:
    return {"window": args.window, "data.train.source": str(args.csv or "synthetic normal"),
            "data.train.series": len(series) if series is not None else "synthetic"}


def _track_build(files: list[Path], params: dict[str, object]) -> None:
    """Record the build as an MLflow run (experiment ``eddyline/edge-model``) where mlflow is installed: a
    development machine, never a device. ``[mlflow]`` says where; a store that cannot be reached is skipped."""
    try:
        import mlflow
    except ImportError:
        return
    from connectors.config import MlflowSettings

    settings = MlflowSettings()
    store = settings.store_dir.resolve()
    uri = settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store / 'mlflow.db'}"
    try:
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        if mlflow.get_experiment_by_name("eddyline/edge-model") is None:
            where = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / "eddyline_edge-model").as_uri() \
                if uri.startswith("sqlite:///") else None
            mlflow.create_experiment("eddyline/edge-model", artifact_location=where)
        mlflow.set_experiment("eddyline/edge-model")
        with mlflow.start_run(run_name="build-model"):
            mlflow.log_params(params)
            for path in files:
                if path.suffix == ".onnx":
                    mlflow.log_metric(f"{path.stem}_bytes", path.stat().st_size)
                mlflow.log_artifact(str(path))
        print(f"recorded in MLflow at {uri} (experiment eddyline/edge-model)")
    except Exception as exc:  # the model is built; tracking is a record of it, not a condition
        print(f"eddyline-edge: not recorded in MLflow at {uri}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
