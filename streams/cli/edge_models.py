"""``eddyline edge keygen | publish | rollout``: signed models for the device fleet, sent out by canary."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Annotated, Any

import typer


def keygen_command(
    out: Annotated[Path, typer.Option(help="Folder for edge-signing.pem (private) and edge-signing.pub.pem.")] = Path("."),
    name: Annotated[str, typer.Option(help="File name stem.")] = "edge-signing",
) -> None:
    """Make an Ed25519 key pair: publish signs with the private key, agents verify with the public one.

    Keep the private key off the devices; copy the .pub.pem to each agent's [edge.models] public_key.
    """
    from schemas.signing import generate_keypair

    private, public = out / f"{name}.pem", out / f"{name}.pub.pem"
    try:
        kid = generate_keypair(private, public)
    except FileExistsError as exc:
        raise ValueError(str(exc)) from None
    typer.echo(f"key {kid}: private {private} (mode 600), public {public}")


def publish_command(
    model: Annotated[Path, typer.Argument(help="The ONNX model file (from `eddyline-edge build-model`).")],
    version: Annotated[str, typer.Option(help="The model's version, unique per device class.")],
    device_class: Annotated[str, typer.Option(help="The hardware class it is built for, e.g. rpi4.")],
    key: Annotated[Path, typer.Option(envvar="EDDYLINE_EDGE_SIGNING_KEY", help="Private key from `eddyline edge keygen`.")],
    name: Annotated[str, typer.Option(help="What the model does.")] = "anomaly",
) -> None:
    """Sign a model and publish it to the compacted models topic; nothing runs it until a rollout names it.

    The record carries the packaged schema's id even where [schema_registry] url is set: edge agents read it,
    and they have no registry client.
    """
    from connectors.kafka import EventProducer, create_topics
    from streams.cli.errors import answering_kafka
    from schemas import AvroSerde
    from schemas.catalog import EDGE_MODEL
    from schemas.signing import SignatureError, sign_model
    from streams.flows.rollout import published_model

    if not model.is_file():
        raise ValueError(f"no model file at {model}; build one with `eddyline-edge build-model --out {model}`")
    if not key.is_file():
        raise ValueError(f"no private key at {key}; make one with `eddyline edge keygen` or pass --key")
    settings = answering_kafka()
    create_topics(settings, ["edge.models", "edge.rollouts"])
    data = model.read_bytes()
    try:
        record = sign_model(_model_record(name, version, device_class, data), key.read_bytes())
    except (SignatureError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot sign with {key}: {exc}") from None
    old = published_model(settings, device_class, version)
    if old is not None and old["sha256"] != record["sha256"]:
        raise ValueError(f"{device_class}/{version} is already published with other bytes; choose a new --version")
    with EventProducer(settings, AvroSerde()) as out:
        out.produce("edge.models", EDGE_MODEL, record, key=f"{device_class}/{version}")
    typer.echo(f"published {name} {version} for {device_class}: {len(data)} bytes, sha256 {record['sha256'][:16]}, "
               f"key {record['key_id']}")


def _model_record(name: str, version: str, device_class: str, data: bytes) -> dict[str, Any]:
    from schemas import new_id

    return {
        "event_id": new_id(),
        "event_time": int(time.time() * 1000),
        "producer": f"eddyline-cli@{socket.gethostname()}",
        "name": name,
        "version": version,
        "device_class": device_class,
        "format": "onnx",
        "model": data,
    }


def rollout_command(
    version: Annotated[str, typer.Argument(help="A published model version (`eddyline edge publish`).")],
    device_class: Annotated[str, typer.Option(help="The device class to roll out to.")],
    canary: Annotated[str | None, typer.Option(help="Share of the class that gets it first, e.g. 10%.")] = None,
    observe_s: Annotated[float | None, typer.Option(help="Seconds the canaries must stay healthy.")] = None,
    key: Annotated[Path | None, typer.Option(
        envvar="EDDYLINE_EDGE_SIGNING_KEY", help="The models' private key: it signs the rollout too.")] = None,
    running: Annotated[str | None, typer.Option(
        help="The version the class runs now: needed once, for its first rollout signed with this key.")] = None,
) -> None:
    """Send a model to a canary share of a class; promote it to all when the canaries stay healthy, else roll back.

    Bounds come from [rollout] (EDDYLINE_ROLLOUT_*). The state lives in the compacted rollouts topic: run the
    same command again to resume a rollout this command did not finish. Exit 1 when it was rolled back.
    Every record is signed with the models' key: agents act on no other. The last record written per class is
    also kept under [runtime] state_dir (rollouts/), so that an old record compacted over it on the topic cannot
    become the base of the next rollout: run rollouts from a host that keeps that folder.
    """
    from streams.cli.errors import answering_kafka
    from streams.flows.rollout import RolloutPolicy, run_rollout
    from streams.runtime import RuntimeSettings

    policy = RolloutPolicy()
    if observe_s is not None:
        policy = policy.model_copy(update={"observe_s": observe_s})

    share = _percent(canary) if canary else None
    if key is None or not key.is_file():
        where = "no --key given" if key is None else f"no private key at {key}"
        raise ValueError(f"{where}; rollouts are signed with the models' key: pass --key or set "
                         "EDDYLINE_EDGE_SIGNING_KEY to the private key from `eddyline edge keygen`")
    final = run_rollout(
        answering_kafka(), policy, device_class, version, private_pem=key.read_bytes(), canary_percent=share,
        producer=f"eddyline-rollout@{socket.gethostname()}", on_event=_show,
        kept=RuntimeSettings().state_dir / "rollouts", running=running,
    )
    if final["state"] != "promoted":
        raise typer.Exit(1)


def _percent(text: str) -> float:
    from schemas.canary import canary_share

    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise ValueError(f"--canary {text!r} is not a share; give e.g. --canary 10%") from None
    return canary_share(value)


def _show(record: dict[str, Any]) -> None:
    if record["state"] == "canary":
        typer.echo(f"canary: {record['version']} to {', '.join(record['canary_devices'])} "
                   f"({record['canary_percent']:g}% of {record['device_class']}; rollout {record['rollout_id']})")
    else:
        typer.echo(f"{record['state']}: {record['version']} on {record['device_class']}: {record['reason']}")


def degraded_command(
    factor: Annotated[float, typer.Option(help="Latency above this multiple of the reference is degraded.")] = 2.0,
    consecutive: Annotated[int, typer.Option(help="Heartbeats in a row above it before a device is flagged.")] = 3,
    timeout: Annotated[float, typer.Option(
        help="Give up after this many seconds; device.health is read up to its end as of the start.")] = 120.0,
) -> None:
    """Devices whose local model got slower than their peers (or their own start): re-optimise their class.

    Reads the device.health topic from its start up to its end as of now. Exit 1 when a device is flagged.
    """
    from schemas import AvroSerde, DecodeError, ValidationError
    from schemas.catalog import DEVICE_HEALTH
    from streams.cli.edge import scan_health
    from streams.flows.edge_reoptimise import ReoptimiseWatch

    serde, watch = AvroSerde(), ReoptimiseWatch(factor=factor, consecutive=consecutive)
    last: dict[str, dict[str, Any]] = {}
    bad = 0

    def fold(msg: Any) -> None:  # as read: the topic holds every heartbeat of its retention, the watch a few each
        nonlocal bad
        try:
            health = serde.decode(msg.value(), DEVICE_HEALTH)
        except (DecodeError, ValidationError):  # one bad message must not hide the fleet: counted, said below
            bad += 1
            return
        for flag in watch.process([health]):
            last[flag["device_id"]] = flag

    scan_health(fold, timeout)
    if bad:
        typer.echo(f"skipped {bad} message(s) on device.health that could not be decoded")
    if watch.invalid:
        typer.echo(f"skipped {watch.invalid} heartbeat(s) whose inference latency was not a finite, non-negative number")
    flagged = watch.flagged()
    for device in flagged:
        f = last[device]
        typer.echo(f"{device} ({f['device_class']}, model {f['model_version']}): {f['reason']}; "
                   f"rebuild with `eddyline-edge build-model --optimise` and roll out to {f['device_class']}")
    if not flagged:
        typer.echo(f"no degraded device among {len(watch.devices)}")
    raise typer.Exit(1 if flagged else 0)
