"""Replaced bucket versions against Bytewax's own recovery partitions: deleted once no resume can reach them."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

import streams.engines.bytewax as engine
from streams.engines.bytewax import StagedStates
from streams.engines.bytewax_epochs import RecoveryEpochs
from streams.state import IdleStore

INTERVAL = timedelta(milliseconds=50)


def _slow_flow(out: list) -> Dataflow:
    flow = Dataflow("epochs")
    items = op.input("in", flow, TestingSource(range(20)))
    keyed = op.key_on("key", op.map("slow", items, lambda x: time.sleep(0.03) or x), lambda _: "k")
    op.output("out", op.stateful_map("sum", keyed, lambda s, x: ((s or 0) + x,) * 2), TestingSink(out))
    return flow


def _executions(db_dir: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(db_dir / "part-0.sqlite3") as db:
        return db.execute("SELECT ex_num, resume_epoch FROM exs ORDER BY ex_num").fetchall()


def test_the_resume_epoch_read_is_the_one_bytewax_resumes_from_and_epochs_keep_to_the_bound(tmp_path):
    init_db_dir(tmp_path, 1)
    epochs = RecoveryEpochs(tmp_path, INTERVAL)
    assert epochs.resume_epoch() is None and epochs.start_epoch == 1
    out: list = []
    run_main(_slow_flow(out), epoch_interval=INTERVAL, recovery_config=RecoveryConfig(tmp_path))
    first = epochs.resume_epoch()
    assert first is not None and first > 3  # the run spanned several epochs
    assert first <= epochs.running_bound()  # no epoch came sooner than the interval allows
    again = RecoveryEpochs(tmp_path, INTERVAL)
    run_main(_slow_flow(out), epoch_interval=INTERVAL, recovery_config=RecoveryConfig(tmp_path))
    assert _executions(tmp_path)[-1][1] == first  # Bytewax resumed where the reader said it would
    assert again.start_epoch >= first


def _record(db_dir: Path, ex: int, resume: int, frontier: int | None) -> None:
    """What Bytewax writes as an execution starts (``exs``) and as its worker's frontier moves (``fronts``)."""
    with sqlite3.connect(db_dir / "part-0.sqlite3") as db:
        db.execute("INSERT OR IGNORE INTO exs (ex_num, worker_count, resume_epoch) VALUES (?, 1, ?)", (ex, resume))
        if frontier is not None:
            db.execute("INSERT OR REPLACE INTO fronts (ex_num, worker_index, worker_frontier) VALUES (?, 0, ?)",
                       (ex, frontier))


def test_a_replaced_version_is_kept_while_the_commit_lags_and_deleted_once_it_passes(tmp_path, monkeypatch):
    clock = [time.monotonic()]
    monkeypatch.setattr(engine.time, "monotonic", lambda: clock[0])  # the time module both modules use
    init_db_dir(tmp_path, 1)
    _record(tmp_path, 0, 1, 7)  # a previous execution got to epoch 7
    store = IdleStore(tmp_path / "idle" / "idle-0.sqlite3")
    epochs = RecoveryEpochs(tmp_path, timedelta(seconds=2))
    staged = StagedStates(store, epochs)
    _record(tmp_path, 1, 7, None)  # this execution resumes from 7
    old = staged.stage("dev-1", b"old")
    staged.flush(force=True)
    new = staged.stage("dev-1", b"new")
    staged.flush(force=True)
    staged.forget("dev-1", new)  # a snapshot now refers to the new version
    bound = epochs.running_bound()
    assert bound == 7 + 2
    clock[0] += 3600.0  # an hour later the commit is still stuck (a slow sink, a stalled process)
    _record(tmp_path, 1, 7, bound)
    staged.flush(force=True)
    assert store.get_version("dev-1", old) == b"old"  # a restart now still loads a snapshot that refers to it
    _record(tmp_path, 1, 7, bound + 1)
    staged.flush(force=True)
    assert store.get_version("dev-1", old) is None
    assert store.get_version("dev-1", new) == b"new"


def _until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the writer did not get there"
        time.sleep(0.01)


def test_a_background_writer_writes_off_the_snapshot_and_deletes_only_past_the_resume_epoch_the_worker_read(
        tmp_path, monkeypatch):
    monkeypatch.setattr(StagedStates, "WRITE_EVERY_S", 0.01)
    monkeypatch.setattr(StagedStates, "FLUSH_EVERY_S", 0.0)
    init_db_dir(tmp_path, 1)
    _record(tmp_path, 0, 1, 7)
    store = IdleStore(tmp_path / "idle" / "idle-0.sqlite3")
    epochs = RecoveryEpochs(tmp_path, timedelta(seconds=2))
    staged = StagedStates(store, epochs, background=True)
    _record(tmp_path, 1, 7, None)
    try:
        old = staged.stage("dev-1", b"old")
        _until(lambda: staged.written() >= old)  # written by the thread; a snapshot only reads how far it got
        assert store.get_version("dev-1", old) == b"old"
        new = staged.stage("dev-1", b"new")
        _until(lambda: staged.written() >= new)
        staged.forget("dev-1", new)
        bound = epochs.running_bound()
        _record(tmp_path, 1, 7, bound + 1)  # the commit passed the bound, but no snapshot has read it yet
        time.sleep(0.2)
        assert store.get_version("dev-1", old) == b"old"
        staged.written()  # the worker's thread reads the resume epoch; the writer deletes with its next write
        _until(lambda: store.get_version("dev-1", old) is None)
        assert store.get_version("dev-1", new) == b"new"
    finally:
        staged.close()


def test_a_failed_background_write_fails_the_next_snapshot_and_keeps_the_state(tmp_path, monkeypatch):
    monkeypatch.setattr(StagedStates, "WRITE_EVERY_S", 0.01)
    store = IdleStore(tmp_path / "idle-0.sqlite3")
    staged = StagedStates(store, background=True)
    monkeypatch.setattr(store, "put_versions", lambda *a: (_ for _ in ()).throw(sqlite3.OperationalError("full")))
    version = staged.stage("dev-1", b"state")
    _until(lambda: staged._failed is not None)
    try:
        staged.written()
    except RuntimeError as exc:
        assert "full" in str(exc)
    else:
        raise AssertionError("a snapshot after a failed write must fail: its epoch is not committed")
    assert staged.durable < version and staged._staged == [("dev-1", version, b"state")]
    staged.close()
