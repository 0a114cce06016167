"""Memory over a long run: the sensor flow's resident memory as it scores a large pre-filled topic, per source tree.

One broker, one pre-filled ``sensor.readings`` (``--devices`` devices, ``--readings`` readings, 150 a message, as
``bench scale``), then ``eddyline run anomaly`` (Bytewax, 1,024 buckets, idle eviction off, as ``bench scale``) from
each ``--tree`` in turn, each from the topic's start with a state folder of its own: its resident memory (``VmRSS``)
and peak (``VmHWM``) when the watcher has seen the scores of each ``--marks`` readings, and 2, 5 and 10 s after the
last, with the flow's CPU seconds. Trees run in the order given: give them twice, in both orders, to compare
builds on a loaded machine (BENCHMARKS.md, "Session 10: memory over a long run").
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from benchmarks.scale import READINGS_PER_MESSAGE, SCORES, Flow, _consumer, _prefill
from connectors.broker import EmbeddedBroker
from connectors.kafka import KafkaSettings, create_topics
from streams.producers.simulator import SensorSimulator

AFTER_S = (2.0, 5.0, 10.0)  # samples after the last mark: what the flow keeps once the backlog is scored


def _drain(watcher: Any) -> None:
    """Skip the scores an earlier tree wrote to the shared output topic."""
    while watcher.consume(10_000, 1.0):
        pass


def measure(settings: KafkaSettings, tree: Path, work: Path, marks: list[int], per_message: int) -> dict[str, Any]:
    """One tree's flow over the whole pre-filled topic: RSS, peak and CPU at each mark and after the last."""
    env = {"EDDYLINE_RUNTIME_IDLE_EVICT_S": "0", "EDDYLINE_RUNTIME_STATE_BUCKETS": "1024", "PYTHONPATH": str(tree)}
    name = f"{tree.name}-{time.time_ns()}"
    flow = Flow(settings, "bytewax", work / name, work / f"{name}.log", env, cwd=tree)
    flow.argv[0] = str(tree / ".venv" / "bin" / "python")
    watcher = _consumer(settings, settings.topic(SCORES))
    samples: list[dict[str, Any]] = []

    def sample(**at: Any) -> None:
        samples.append({**at, "rss_mb": round(flow.rss() / 2**20), "peak_mb": round(flow.peak_rss() / 2**20),
                        "cpu_s": round(flow.cpu_s(), 1), "wall_s": round(time.monotonic() - started, 1)})

    try:
        _drain(watcher)
        started = flow.start()
        seen = 0
        for mark in marks:
            while seen * per_message < mark:
                flow.alive()
                if time.monotonic() - started > 3600:
                    raise RuntimeError(f"{tree}: {seen * per_message:,} readings scored in an hour; see {flow.log}")
                seen += sum(1 for m in watcher.consume(20_000, 0.5) if m.error() is None)
            sample(readings=mark)
        last = time.monotonic()
        for after in AFTER_S:
            time.sleep(max(0.0, last + after - time.monotonic()))
            sample(after_s=after)
    finally:
        watcher.close()
        flow.stop()
    return {"tree": str(tree), "samples": samples}


def command(
    trees: Annotated[list[Path], typer.Option("--tree", help="A source tree with its .venv; repeat for each run.")],
    devices: Annotated[int, typer.Option(help="Fleet size.")] = 1000,
    readings: Annotated[float, typer.Option(help="Pre-filled readings.")] = 30e6,
    marks: Annotated[str, typer.Option(help="Readings scored at which to sample, comma-separated.")] =
        "1e6,5e6,10e6,15e6,20e6,25e6,29.9e6",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    """Resident memory of the sensor flow over a long pre-filled run, for each source tree in turn."""
    points = sorted(int(float(m)) for m in marks.split(",") if m.strip())
    if not points or points[-1] > readings:
        raise typer.BadParameter("marks must be readings scored, at most --readings")
    work = Path(tempfile.mkdtemp(prefix="eddyline-memory-"))
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace="memory.", session_timeout_ms=6000)
        sim = SensorSimulator(devices=devices, readings_per_message=READINGS_PER_MESSAGE, seed=5)
        _prefill(settings, sim, int(readings) // sim.readings_per_batch)
        create_topics(settings, [SCORES])
        runs = []
        for tree in trees:
            runs.append(measure(settings, tree.resolve(), work, points, sim.readings_per_batch))
            typer.echo(json.dumps(runs[-1]))
    out = {"devices": devices, "readings": int(readings), "runs": runs}
    if json_path is not None:
        json_path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(command)
