"""What Bytewax's own resume costs: recovery time against the number of keys, with nothing of eddyline's in it.

For each key count, a dataflow with one trivial stateful step (each key's state is ``state_bytes`` of zeros) runs
once over that many keys with recovery on, then runs again on the same recovery folder with one new item: the
second run's wall time is what resuming costs (Bytewax reads every key's latest snapshot and builds every key's
logic before the new item goes through). No Kafka, no processors: the floor under ``bench scale``'s
``recovery_s``.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from benchmarks.report import machine, write_json


def _flow(items: list[str], state: bytes, built: list[int]) -> Any:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.operators import StatefulBatchLogic
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource

    class Logic(StatefulBatchLogic):
        def __init__(self, resume: bytes | None) -> None:
            built[0] += 1
            self.state = resume if resume is not None else state

        def on_batch(self, values: list[str]) -> tuple[list[int], bool]:
            return [len(values)], StatefulBatchLogic.RETAIN

        def snapshot(self) -> bytes:
            return self.state

    class Null(StatelessSinkPartition):
        def write_batch(self, items: list[Any]) -> None:
            return None

    class NullSink(DynamicSink):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Null:
            return Null()

    flow = Dataflow("resume")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(items, batch_size=5000)), lambda x: x)
    op.output("out", op.stateful_batch("state", keyed, Logic), NullSink())
    return flow


def measure(keys: int, state_bytes: int) -> dict[str, Any]:
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.testing import run_main

    folder = Path(tempfile.mkdtemp(prefix="eddyline-resume-"))
    init_db_dir(folder, 1)
    items = [f"device-{i:06d}" for i in range(keys)]
    built = [0]
    epoch = timedelta(seconds=2)
    start = time.perf_counter()
    run_main(_flow(items, bytes(state_bytes), built), epoch_interval=epoch, recovery_config=RecoveryConfig(folder))
    first_s = time.perf_counter() - start
    store = sum(p.stat().st_size for p in folder.glob("*"))
    built[0] = 0
    start = time.perf_counter()
    run_main(_flow([*items, "new"], bytes(state_bytes), built), epoch_interval=epoch,
             recovery_config=RecoveryConfig(folder))
    resume_s = time.perf_counter() - start
    for p in folder.glob("*"):
        p.unlink()
    folder.rmdir()
    return {"keys": keys, "state_bytes": state_bytes, "first_run_s": round(first_s, 2),
            "resume_s": round(resume_s, 2), "logics_built_on_resume": built[0], "store_mb": round(store / 2**20, 1),
            "load_average": round(os.getloadavg()[0], 1)}


def command(
    keys: Annotated[str, typer.Option(help="Key counts, comma-separated.")] = "10000,100000",
    state_bytes: Annotated[str, typer.Option(help="Bytes of state per key, comma-separated.")] = "100,9800",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    """Bytewax's resume time against its number of keys and their state size (no Kafka, no eddyline processors)."""
    runs = [measure(int(k), int(b)) for k in keys.split(",") for b in state_bytes.split(",")]
    for run in runs:
        typer.echo(run)
    write_json(json_path, {"runs": runs, "machine": machine()})


if __name__ == "__main__":
    typer.run(command)
