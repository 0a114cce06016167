"""Run a flow as a Bytewax cluster of N processes on this machine, Bytewax's own scale-out.

Each process runs the same dataflow with its process id and every process's address; Bytewax splits
the Kafka partitions among the workers and routes each state key to one worker, and all of them
checkpoint into one shared recovery folder, so a restart with any process count resumes from it.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from connectors.broker import free_port
from connectors.kafka import KafkaSettings
from streams.processor import FlowSpec
from streams.runtime import BYTEWAX_DEFAULTS

log = logging.getLogger(__name__)


def _process(spec: FlowSpec, settings: KafkaSettings, index: int, addresses: list[str], state_dir: Path | None,
             workers_per_process: int, epoch_interval: timedelta, batch_size: int,
             lag_interval_s: float | None, idle_after: timedelta | None, idle_retention_s: float | None,
             buckets: int, linger: timedelta, keep_decoded: timedelta, decoded_bytes: int) -> None:
    from bytewax.recovery import RecoveryConfig

    from streams.engines.bytewax import idle_store, run_dataflow

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # the parent stops the cluster; children just end
    recovery = RecoveryConfig(state_dir) if state_dir is not None else None
    idle = idle_store(state_dir, index, idle_retention_s) if state_dir is not None else None
    run_dataflow(spec, settings, batch_size=batch_size, lag_interval_s=lag_interval_s, idle=idle,
                 idle_after=idle_after, buckets=buckets, linger=linger, keep_decoded=keep_decoded,
                 decoded_bytes=decoded_bytes, workers_per_process=workers_per_process,
                 process_id=index, addresses=addresses, epoch_interval=epoch_interval, recovery_config=recovery)


def run_cluster(
    spec: FlowSpec,
    settings: KafkaSettings,
    *,
    processes: int,
    state_dir: Path | None = None,
    workers_per_process: int = 1,
    epoch_interval: timedelta = BYTEWAX_DEFAULTS["epoch_interval"],
    batch_size: int = BYTEWAX_DEFAULTS["batch_size"],
    addresses: Sequence[str] | None = None,
    lag_interval_s: float | None = BYTEWAX_DEFAULTS["lag_interval_s"],
    idle_after: timedelta | None = BYTEWAX_DEFAULTS["idle_after"],
    idle_retention_s: float | None = BYTEWAX_DEFAULTS["idle_retention_s"],
    buckets: int = BYTEWAX_DEFAULTS["buckets"],
    linger: timedelta = BYTEWAX_DEFAULTS["linger"],
    keep_decoded: timedelta = BYTEWAX_DEFAULTS["keep_decoded"],
    decoded_bytes: int = BYTEWAX_DEFAULTS["decoded_bytes"],
) -> None:
    """Start ``processes`` Bytewax processes and run until interrupted or until one of them fails.

    ``addresses`` (host:port, one per process) default to free ports on 127.0.0.1. A process that dies
    takes the cluster down (Bytewax cannot go on without it): the others are stopped and the exit code
    is raised, so a supervisor restarts the whole cluster, which resumes from the recovery folder.

    Parameters
    ----------
    spec, settings, epoch_interval, batch_size, lag_interval_s
        As for ``streams.engines.bytewax.run``.
    processes
        Bytewax processes to start; at least 1.
    state_dir
        The recovery store shared by every process; None runs without checkpoints.
    workers_per_process
        Worker threads in each process.
    addresses
        host:port of each process, for the cluster's own communication.
    lag_interval_s
        How often each process's lag monitor reports (None: no monitor).
    idle_after
        With ``state_dir``, keys silent this long leave memory for their process's idle store (None: never).
    idle_retention_s
        How long an evicted key's state is kept there (None: for ever).
    buckets
        As for ``streams.engines.bytewax.build_dataflow``: Bytewax routes each bucket, so each key, to one worker.
    linger, keep_decoded, decoded_bytes
        As for ``streams.engines.bytewax.build_dataflow``; ``decoded_bytes`` is per process.
    """
    from bytewax.recovery import init_db_dir

    from streams.engines.bytewax import ensure_topics, move_legacy_idle_store

    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    addrs = list(addresses) if addresses is not None else [f"127.0.0.1:{free_port()}" for _ in range(processes)]
    if len(addrs) != processes:
        raise ValueError(f"{processes} processes need {processes} addresses, got {len(addrs)}")
    ensure_topics(spec, settings)
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        if not any(state_dir.glob("part-*.sqlite3")):
            init_db_dir(state_dir, processes * workers_per_process)
        move_legacy_idle_store(state_dir)
    supervise(spec.name, [
        (_process, (spec, settings, i, addrs, state_dir, workers_per_process, epoch_interval, batch_size,
                    lag_interval_s, idle_after, idle_retention_s, buckets, linger, keep_decoded, decoded_bytes))
        for i in range(processes)])


def supervise(name: str, targets: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
    """Fork one child per target and wait; the first to fail, or SIGTERM/SIGINT here, stops them all.

    Children die with this process (``PR_SET_PDEATHSIG``) even when it is killed outright. Forked, not
    spawned: flow specs hold lambdas, which children can only inherit.

    Parameters
    ----------
    name
        Names the children (``NAME-0``, ``NAME-1``, ...) in process lists and logs.
    targets
        (function, arguments) to run in each child.
    """
    from connectors.broker import _die_with_parent, _prctl

    prctl, parent = _prctl(), os.getpid()

    def child(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, inherited through fork
        _die_with_parent(prctl, parent)
        fn(*args)

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupted)
    # Kafka clients made here (topic creation) may linger in reference cycles; collected in a child, their
    # librdkafka handles would be destroyed where their threads do not exist, and the child aborts.
    gc.collect()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=child, args=(fn, args), name=f"{name}-{i}") for i, (fn, args) in enumerate(targets)]
    try:
        for p in procs:
            p.start()
        log.info("processes started", extra={"flow": name, "pids": [p.pid for p in procs]})
        while all(p.exitcode is None for p in procs):
            for p in procs:
                p.join(0.5)
    finally:
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            if p.pid is None:
                continue
            p.join(30)
            if p.exitcode is None:
                p.kill()
                p.join(5)
        signal.signal(signal.SIGTERM, previous)
    failed = [p.exitcode for p in procs if p.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        raise SystemExit(f"a {name} process exited with {failed[0]}; all were stopped")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m streams.engines.bytewax_cluster FLOW --processes N [--state-dir DIR]``, settings from the environment."""
    import argparse

    from streams import logs
    from streams.flows import flow_spec
    from streams.runtime import RuntimeSettings

    parser = argparse.ArgumentParser(prog="python -m streams.engines.bytewax_cluster", description=main.__doc__)
    parser.add_argument("flow")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers-per-process", type=int, default=1)
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logs.setup()
    runtime = RuntimeSettings()
    spec = flow_spec(args.flow)
    try:
        run_cluster(spec, KafkaSettings(), processes=args.processes, workers_per_process=args.workers_per_process,
                    state_dir=args.state_dir or runtime.state_dir / spec.name, **runtime.bytewax_options())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
