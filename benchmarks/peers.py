"""The sensor job on eddyline and on Quix Streams 3.28, over the same pre-filled topic and detectors, in one run.

Users choosing a Python stream processor would try Quix Streams. Its peer job (``quix_sensor_job.py``) runs in
its own virtual environment, made here on first use (quixstreams pins confluent-kafka below 2.13, so it cannot
share ours), with numpy, river and fastavro at our versions. Each pair runs over its own copy of the same
``sensor.readings`` on the embedded broker, and both sides are timed the same way, as ``bench scale`` times a
flow (``benchmarks.timing``): the readings whose ``scores.anomaly`` outputs a watcher fetched after its first
fetch that brought any, over the time from that fetch to the last, and the process's CPU seconds over the
same span per million of them:

- ``gauss`` (eddyline's EWMA z-score, numba) against a numpy z-score per series held in Quix state;
- ``hst`` (eddyline's compiled HalfSpaceTrees, numba: a reimplementation that gives river's scores exactly)
  against river's ``MinMaxScaler() | HalfSpaceTrees`` in Quix, as its users would run it;
- ``hst-river`` (river's own ``MinMaxScaler() | HalfSpaceTrees`` in eddyline) against the same in Quix: the
  same model code on both sides, so only the engines differ.

Each pair pre-fills enough messages that the faster side takes several seconds and the slower about a
minute or two on a quiet machine (``DEFAULT_MESSAGES``), so the whole command takes a few minutes.

eddyline runs its whole sensor flow (validation, alert policy, metrics sink, Bytewax recovery every 2 s);
the peer scores and writes scores only, committing its state every 2 s.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import typer

from benchmarks.report import machine, write_json
from benchmarks.sensor_flow import TOPIC, prefilled, ratio, rounded, time_flow, time_process
from benchmarks.timing import MeasurementError, Throughput
from connectors.broker import EmbeddedBroker
from connectors.kafka import KafkaSettings
from models.anomaly import make_detector
from schemas import ANOMALY_SCORE, SENSOR_BATCH
from schemas.catalog import latest, versions
from schemas.registry import LocalRegistry
from streams.producers.simulator import SensorSimulator

PEER_JOB = Path(__file__).with_name("quix_sensor_job.py")
PEER_DETECTOR = {"gauss": "zscore", "hst": "hst", "hst-river": "hst"}  # eddyline detector -> the peer's equivalent
DEFAULT_MESSAGES = {"gauss": 40_000, "hst": 10_000, "hst-river": 4_000}
DEFAULT_PEER_VENV = Path(".build/peers-venv")


class PeerUnavailable(MeasurementError):
    """The peer's environment could not be made; the message says what to do."""


def peer_requirements() -> list[str]:
    """Quix Streams 3.28 with our numpy, river and fastavro, so both sides run the same numerical code."""
    return ["quixstreams==3.28.*", *(f"{p}=={version(p)}" for p in ("numpy", "river", "fastavro"))]


def peer_python(venv: Path) -> Path:
    """The peer environment's interpreter: made with ``python -m venv`` and pip, reused while its pins match.

    Parameters
    ----------
    venv
        Where the environment lives; a cache: remove it to rebuild.
    """
    python = venv / "bin" / "python"
    stamp = venv / "eddyline-requirements.txt"
    wanted = "\n".join(peer_requirements()) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    pip = made if made.returncode else subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *peer_requirements()], capture_output=True, text=True)
    if pip.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise PeerUnavailable(f"making the Quix Streams environment in {venv} failed: pip needs a package index "
                              f"(set PIP_INDEX_URL), or pass --peer-venv a writable folder.\n{pip.stderr[-2000:]}")
    stamp.write_text(wanted)
    return python


def _quix(settings: KafkaSettings, python: Path, detector: str, params: dict[str, Any], messages: int,
          per_message: int, work: Path) -> Throughput:
    scores = versions(ANOMALY_SCORE)[0]  # one double per reading, as a Quix user would write them
    cmd = [str(python), str(PEER_JOB), "--bootstrap", settings.bootstrap_servers,
           "--input", settings.topic(TOPIC), "--output", settings.topic("scores.anomaly"),
           "--group", f"quix-{detector}", "--state-dir", str(work / "state"), "--detector", detector,
           "--params", json.dumps(params), "--input-schema", json.dumps(latest(SENSOR_BATCH).schema),
           "--output-schema", json.dumps(scores.schema),
           "--output-schema-id", str(LocalRegistry().id_for(settings.topic("scores.anomaly"), scores)),
           "--session-timeout-ms", str(settings.session_timeout_ms)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the peer sees none of eddyline
    return time_process(settings, cmd, env, messages, per_message, work / "quix.log", by_fetches=True)


def run(detectors: list[str], messages: int | None = None, devices: int = 30, peer_venv: Path = DEFAULT_PEER_VENV,
        json_path: Path | None = None) -> dict[str, Any]:
    """Each detector's pair, eddyline then Quix, each over its own copy of the same pre-filled topic.

    Parameters
    ----------
    detectors
        eddyline detectors, each a key of ``PEER_DETECTOR``.
    messages
        Sensor batches to pre-fill per side (150 readings each); ``None``: ``DEFAULT_MESSAGES`` per detector.
    devices
        Simulated devices, 3 sensors each.
    peer_venv
        The peer's environment (see ``peer_python``).
    json_path
        Where to write the results, if anywhere.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    with console.status(f"peer environment in {peer_venv} (made on first use: about a minute)"):
        python = peer_python(peer_venv)
    counts = {d: messages or DEFAULT_MESSAGES[d] for d in detectors}
    sim = SensorSimulator(devices=devices, readings_per_message=50)
    records = list(itertools.islice(sim, max(counts.values())))
    per_message = sim.readings_per_batch
    work = Path(tempfile.mkdtemp(prefix="eddyline-bench-peers-"))
    runs = []
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        for detector in detectors:
            params = make_detector(detector).params()
            peer, n = PEER_DETECTOR[detector], counts[detector]
            ours_dir, theirs_dir = work / f"eddyline-{detector}", work / f"quix-{detector}"
            ours_dir.mkdir()
            theirs_dir.mkdir()
            settings = prefilled(broker, f"peers-eddyline-{detector}.", records[:n], console)
            with console.status(f"eddyline, {detector}, {n:,} messages"):
                ours = time_flow(settings, ["streams.cli", "run", "anomaly"], n, per_message, ours_dir,
                                 env={"EDDYLINE_RUNTIME_DETECTOR": detector}, by_fetches=True)
            settings = prefilled(broker, f"peers-quix-{detector}.", records[:n], console)
            with console.status(f"Quix Streams, {peer}, {n:,} messages"):
                theirs = _quix(settings, python, peer, params, n, per_message, theirs_dir)
            runs.append({
                "eddyline_detector": detector, "quix_detector": peer, "messages": n,
                **_side("eddyline", ours), **_side("quix", theirs),
                "eddyline_vs_quix": round(ours.readings_per_s / theirs.readings_per_s, 3),
                "eddyline_vs_quix_by_cpu": ratio(theirs.cpu_s_per_m_readings, ours.cpu_s_per_m_readings),
            })
            console.print(runs[-1])
    result = {
        "runs": runs,
        "devices": devices,
        "readings_per_message": per_message,
        "peer": {p.split("==")[0]: version_in(python, p.split("==")[0]) for p in peer_requirements()},
        "method": "each side over its own copy of the topic; wall: readings whose outputs a watcher fetched "
                  "after its first fetch that brought any, over the time from that fetch to the last (fetch wait "
                  "10 ms, as bench scale); cpu: the process's CPU seconds over the same span per million of those "
                  "readings; eddyline: whole sensor flow, Bytewax, epoch 2 s; Quix: Application, commit interval 2 s",
        "machine": machine(),
    }
    table = Table(title="sensor job, eddyline vs Quix Streams")
    for col in ("detector", "messages", "eddyline readings/s", "CPU s/1M", "Quix readings/s", "CPU s/1M",
                "eddyline / Quix", "by CPU"):
        table.add_column(col, justify="right")
    for r in runs:
        table.add_row(f"{r['eddyline_detector']} / {r['quix_detector']}", f"{r['messages']:,}",
                      f"{r['eddyline_readings_per_s']:,}", str(r["eddyline_cpu_s_per_m_readings"]),
                      f"{r['quix_readings_per_s']:,}", str(r["quix_cpu_s_per_m_readings"]),
                      f"{r['eddyline_vs_quix']:.2f}", str(r["eddyline_vs_quix_by_cpu"]))
    console.print(table)
    write_json(json_path, result)
    return result


def _side(name: str, t: Throughput) -> dict[str, Any]:
    return {f"{name}_readings_per_s": round(t.readings_per_s), f"{name}_cpu_s_per_m_readings": rounded(
        t.cpu_s_per_m_readings), f"{name}_span_s": rounded(t.span_s), f"{name}_fetches": t.fetches}


def version_in(python: Path, package: str) -> str:
    """The version of ``package`` installed in the environment of ``python``."""
    code = f"from importlib.metadata import version; print(version({package!r}))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    detectors: Annotated[str, typer.Option(help="eddyline detectors to pair with the peer: gauss, hst, hst-river.")]
        = ",".join(PEER_DETECTOR),
    messages: Annotated[int | None, typer.Option(
        help="Messages to pre-fill per side (150 readings each); default per detector: gauss 40,000, hst 10,000, "
             "hst-river 4,000.")] = None,
    devices: Annotated[int, typer.Option(help="Simulated devices (3 sensors each).")] = 30,
    peer_venv: Annotated[Path, typer.Option(help="Where the Quix Streams environment is made and reused.")]
        = DEFAULT_PEER_VENV,
) -> None:
    """Throughput of the sensor job on eddyline and on Quix Streams 3.28, same topic and detectors, one run."""
    chosen = [d.strip() for d in detectors.split(",") if d.strip()]
    unknown = sorted(set(chosen) - set(PEER_DETECTOR))
    if unknown or not chosen:
        raise typer.BadParameter(f"--detectors takes a comma-separated list of {', '.join(PEER_DETECTOR)}; "
                                 f"got {detectors!r}")
    if (messages is not None and messages < 10) or devices < 1:
        raise typer.BadParameter("use --messages 10 or more and --devices 1 or more")
    try:
        run(chosen, messages=messages, devices=devices, peer_venv=peer_venv, json_path=json_path)
    except MeasurementError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    typer.run(command)
