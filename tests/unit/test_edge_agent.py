"""Settings, batching and the agent loop with no broker to talk to: everything lands on disk, in order."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.broker import free_port
from connectors.kafka import KafkaSettings
from edge_agent.agent import Agent, _halves
from edge_agent.batching import BatchEncoder, Batcher
from edge_agent.cli import main
from edge_agent.deadletters import DeadLetterFile
from edge_agent.health import Heartbeat, process_cpu_seconds, process_rss_bytes
from edge_agent.logs import JournalFormatter
from edge_agent.settings import EdgeSettings, SimulatedSource, use_config_file
from edge_agent.sources import Chunk, SourceError
from schemas import SENSOR_BATCH, AvroSerde, derive_id


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "edge.toml"
    monkeypatch.setenv("EDDYLINE_CONFIG", str(path))  # --config sets it; restored after the test
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "127.0.0.1:{free_port()}"
namespace = "unit."
[edge]
device_id = "pi-7"
buffer_path = "{tmp_path / "buf.sqlite"}"
batch_max_readings = 50
batch_max_age_s = 0.1
[[edge.sources]]
kind = "simulated"
rate = 400
sensors = 2
interval_s = 0.02
[[edge.sources]]
kind = "proc"
interval_s = 0.5
"""
    )
    return path


def test_settings_from_toml_and_env(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config_file(config)
    monkeypatch.setenv("EDDYLINE_EDGE_BATCH_MAX_READINGS", "77")
    monkeypatch.setenv("EDDYLINE_EDGE_INFERENCE__THRESHOLD", "6.5")
    s = EdgeSettings()
    assert s.device_id == "pi-7" and s.batch_max_readings == 77 and s.inference.threshold == 6.5
    assert [src.name for src in s.sources] == ["simulated", "proc"]
    assert isinstance(s.sources[0], SimulatedSource) and s.sources[0].rate == 400


def test_batcher_seals_on_count_or_age() -> None:
    b = Batcher(max_readings=4, max_age_s=3600)
    b.add([Chunk("a", None, [1, 2], [1.0, 2.0])])
    assert not b.due(0) and len(b) == 2
    b.add([Chunk("a", None, [3], [3.0]), Chunk("b", "volt", [3], [9.0])])
    assert b.due(0)
    series = b.seal()
    assert [(c.sensor, c.timestamps) for c in series] == [("a", [1, 2, 3]), ("b", [3])]
    assert len(b) == 0 and b.deadline() is None


def test_encoded_batch_carries_stable_identity() -> None:
    enc = BatchEncoder("pi-7", "eddyline-edge/test@pi-7", "sensor.readings")
    payload = enc.encode(41, [Chunk("temp", "celsius", [1000, 2000], [20.5, 20.75])])
    rec = AvroSerde().decode(payload, SENSOR_BATCH)
    assert rec["event_id"] == derive_id("pi-7", 41) and rec["seq"] == 41 and rec["event_time"] == 2000
    assert enc.encode(41, [Chunk("temp", "celsius", [1000, 2000], [20.5, 20.75])]) == payload


def test_agent_buffers_everything_while_the_broker_is_away(config: Path) -> None:
    use_config_file(config)
    agent = Agent.from_settings(EdgeSettings(), KafkaSettings())
    agent.sources.append(_Flaky())
    agent.run(duration=1.0, shutdown_flush_s=0.2)

    db = sqlite3.connect(config.parent / "buf.sqlite")
    rows = db.execute("SELECT seq, readings, payload FROM batches ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == list(range(len(rows))) and len(rows) >= 5
    serde = AvroSerde()
    decoded = [serde.decode(p, SENSOR_BATCH) for _, _, p in rows]
    assert all(d["device_id"] == "pi-7" for d in decoded)
    assert sum(r[1] for r in rows) == agent.sampled  # every sampled reading was sealed to disk
    ts = [t for d in decoded for s in d["series"] if s["sensor"] == "simulated.s0" for t in s["timestamps"]]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert agent.errors >= 2  # the flaky source's exception and its NaN were counted, not dropped silently
    with pytest.raises(RuntimeError, match="closed"):  # the agent's producer ended with it, broker or not
        agent.sender._producer.poll(0)


def test_a_batch_that_fails_to_encode_counts_its_readings_as_dropped(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    use_config_file(config)
    agent = Agent.from_settings(EdgeSettings(), KafkaSettings())
    agent.batcher.add([Chunk("temp", "celsius", [1000, 2000, 3000], [20.5, 20.75, 21.0])])
    agent.batcher.add([Chunk("hum", "percent", [1000], [40.0])])

    def broken(*_: object) -> bytes:
        raise ValueError("no schema")

    agent.encoder.encode = broken  # type: ignore[method-assign]
    with caplog.at_level("WARNING", logger="edge_agent"):
        agent._seal()
        agent.batcher.add([Chunk("temp", "celsius", [4000], [21.0])])
        agent._seal()
    hb = agent.heartbeat()
    assert hb.dropped_readings == 5 and agent.errors == 2 and agent.buffer.depth == 0
    logged = [r.getMessage() for r in caplog.records if "encoding" in r.getMessage()]
    assert len(logged) == 1 and "4 readings: no schema" in logged[0]
    assert str(agent.dead_letters.path) in logged[0]  # where to look
    letters = agent.dead_letters.read()  # the readings are kept on the device, with the reason
    assert [lt["reason"] for lt in letters] == ["encoding failed: ValueError: no schema"] * 2
    assert [[(c["sensor"], c["values"]) for c in lt["series"]] for lt in letters] == [
        [("temp", [20.5, 20.75, 21.0]), ("hum", [40.0])], [("temp", [21.0])]]
    assert letters[0]["device_id"] == "pi-7" and letters[0]["series"][0]["timestamps"] == [1000, 2000, 3000]
    agent.sender.close()
    agent.buffer.close()


def test_cli_buffer_stats_after_a_run(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Agent, "install_signal_handlers", lambda self: None)  # keep pytest's own handlers
    assert main(["run", "--in-process", "--duration", "0.5", "--flush-timeout", "0.1", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["buffer-stats", "--config", str(config)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["device_id"] == "pi-7" and stats["depth"] >= 1 and stats["next_seq"] == stats["depth"]
    assert stats["readings"] > 0 and stats["dropped_batches"] == 0


class _Flaky:
    name, interval_s = "flaky", 0.3

    def __init__(self) -> None:
        self.calls = 0

    def read(self) -> list[Chunk]:
        self.calls += 1
        if self.calls == 1:
            raise OSError("i2c bus timeout")
        return [Chunk("flaky.v", None, [1, 2], [float("nan"), 3.0])]

    def close(self) -> None:
        pass


def test_cli_check_config_and_buffer_stats(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "config OK: device pi-7, topic unit.sensor.readings" in out
    assert "source simulated (simulated" in out
    assert main(["buffer-stats", "--config", str(config)]) == 2  # nothing run yet: no buffer
    assert "the agent creates it on its first run" in capsys.readouterr().err


def test_cli_explains_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDDYLINE_CONFIG", "unset.toml")  # --config sets it; restored after the test
    bad = tmp_path / "bad.toml"
    bad.write_text('[kafka]\n[edge]\nbatch_max_readings = 0\n[[edge.sources]]\nkind = "gps"\n')
    assert main(["check-config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "[edge] batch_max_readings" in err and "sources" in err and "change it to a valid value" in err
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "pass --config with the path" in capsys.readouterr().err


def test_heartbeat_and_journal_lines() -> None:
    hb = Heartbeat("pi", 3, 30, 999, 1, 100, 70, 12.5, 0, 0, 1.25, 30.0)
    assert hb.line().startswith("heartbeat device_id=pi buffer_depth=3") and "send_rate=12.50" in hb.line()
    assert process_cpu_seconds() > 0 and process_rss_bytes() > 1 << 20
    import logging

    rec = logging.LogRecord("edge_agent", logging.WARNING, __file__, 1, "two\nlines", None, None)
    assert JournalFormatter("%(message)s").format(rec) == "<4>two | lines"
    assert json.dumps(hb.__dict__)


def test_health_events_are_droppable_and_counted_while_readings_stay_on_disk(config: Path) -> None:
    """With the broker away, one health event waits in the producer and later ones are skipped and counted;
    every reading still goes to the disk buffer (health never takes a reading's place)."""
    use_config_file(config)
    settings = EdgeSettings(heartbeat_interval_s=0.1, device_class="rpi4")
    agent = Agent.from_settings(settings, KafkaSettings())
    assert agent.health_topic == "unit.device.health"
    agent.run(duration=1.0, shutdown_flush_s=0.2)
    c = agent.sender.counters
    assert c.health_sent == 0 and c.health_skipped >= 5
    db = sqlite3.connect(config.parent / "buf.sqlite")
    assert db.execute("SELECT SUM(readings) FROM batches").fetchone()[0] == agent.sampled


def test_health_record_is_a_valid_device_health_event() -> None:
    from edge_agent.health import health_record
    from schemas.catalog import DEVICE_HEALTH

    hb = Heartbeat("pi", 3, 30, 3000, 1, 100, 70, 12.5, 2, 0, 1.5, 38.0, buffer_oldest_age_s=4.5, started_ms=17)
    rec = health_record(hb, seq=4, device_class="rpi4", agent_version="1.2", interval_s=60.0, event_time_ms=1000,
                        model={"model_version": "residual_w16_int8", "model_state": "running"},
                        inference_latency_ms=0.4, clock_offset_ms=-12.0)
    serde = AvroSerde()
    back = serde.decode(serde.encode(DEVICE_HEALTH, rec, topic="device.health"), DEVICE_HEALTH)
    assert back == rec and back["buffer_oldest_age_s"] == 4.5 and back["model_state"] == "running"
    assert rec["event_id"] == health_record(hb, seq=4, device_class="rpi4", agent_version="1.2", interval_s=60.0,
                                            event_time_ms=2000)["event_id"]  # stable: from device, start and seq


def test_no_logging_handler_outlives_the_test_that_made_it() -> None:
    # The CLI points the root logger at its test's captured stderr, closed after that test: the next test's logs
    # (here the agent's and librdkafka's) must not go there ("Logging error: I/O operation on closed file").
    here = Path(__file__)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-o", "addopts=",
         f"{here}::test_cli_check_config_and_buffer_stats",
         f"{here}::test_health_events_are_droppable_and_counted_while_readings_stay_on_disk"],
        capture_output=True, text=True, timeout=240, cwd=here.parents[2])
    assert "2 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Logging error" not in run.stdout + run.stderr


def test_the_dead_letter_file_moves_aside_past_its_size(tmp_path: Path) -> None:
    letters = DeadLetterFile(tmp_path / "buf.dead-letters.jsonl", max_bytes=400)
    for i in range(6):
        letters.write("encoding failed", {"series": [{"sensor": "t", "values": [float(i)] * 10}]})
    kept = letters.read()
    older = DeadLetterFile(tmp_path / "buf.dead-letters.jsonl.1").read()
    assert letters.path.stat().st_size <= 400 and kept and older
    assert [lt["series"][0]["values"][0] for lt in older + kept] == [float(i) for i in range(6 - len(older + kept), 6)]


def test_settings_cap_a_batch_at_what_one_kafka_message_holds() -> None:
    with pytest.raises(ValueError, match="batch_max_readings"):
        EdgeSettings(batch_max_readings=70_000, sources=[{"kind": "proc"}])


def test_a_send_timeout_beyond_what_librdkafka_counts_is_refused_in_the_settings(config: Path) -> None:
    """message.timeout.ms is a 32-bit count of ms: 25 days passed check-config, then the producer refused to start."""
    use_config_file(config)
    with pytest.raises(ValueError, match="send_timeout_s"):
        EdgeSettings(send_timeout_s=25 * 86400)
    agent = Agent.from_settings(EdgeSettings(send_timeout_s=2_147_483), KafkaSettings())  # the bound itself starts
    agent.sender.close()
    agent.buffer.close()


class _Plugin:
    name, interval_s = "serial", 1.0

    def read(self) -> list:
        return [Chunk("tank.level", "m", [1, 2, 3, 4, 5, 6, 7], [None, "21.5", True, 10**400, float("nan"), 20.0, 3]),
                {"sensor": "not a chunk"}, Chunk("tank.temp", "c", [1], [4.5])]

    def close(self) -> None:
        pass


def test_a_plugin_returning_what_is_not_a_number_is_counted_not_fatal(config: Path) -> None:
    use_config_file(config)
    agent = Agent.from_settings(EdgeSettings(), KafkaSettings())
    agent._sample(_Plugin())
    series = agent.batcher.seal()
    assert [(c.sensor, c.timestamps, c.values) for c in series] == [("tank.level", [6, 7], [20.0, 3]),
                                                                    ("tank.temp", [1], [4.5])]
    assert agent.errors == 2 and agent.sampled == 3  # five values rejected (one error), one chunk that is none
    agent.sender.close()
    agent.buffer.close()


class _Garbage:
    name, interval_s = "vendor", 1.0

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def read(self) -> object:
        return self.answer() if callable(self.answer) else self.answer

    def close(self) -> None:
        pass


def _fails_midway() -> Iterator[Chunk]:
    yield Chunk("tank.level", "m", [1000], [1.0])
    raise OSError("i2c bus gone")


def test_a_source_returning_garbage_neither_stops_the_agent_nor_loses_other_sensors(config: Path) -> None:
    use_config_file(config)
    agent = Agent.from_settings(EdgeSettings(), KafkaSettings())
    for answer in (None, 3, _fails_midway):  # not a list of chunks: counted like a raising read
        agent._sample(_Garbage(answer))
    agent.batcher.add([Chunk("good.temp", "c", [1000, 2000], [20.0, 21.0])])
    agent._sample(_Garbage([Chunk("", None, [1000], [1.0]), Chunk("x", 5, [1000], [1.0]),
                            Chunk("y", None, [1.7e9, "2000", None, -5, 2**63, True, 3000], [1.0] * 7)]))
    agent._seal()
    assert agent.unencodable == 0 and agent.buffer.depth == 1  # the good readings went out, not to dead letters
    payload = agent.buffer._db.execute("SELECT payload FROM batches").fetchone()[0]
    series = AvroSerde().decode(payload, SENSOR_BATCH)["series"]
    assert [(s["sensor"], s["timestamps"]) for s in series] == [("good.temp", [1000, 2000]), ("y", [3000])]
    assert agent.errors == 6
    agent.sender.close()
    agent.buffer.close()


class SerialPlugin:
    """A plug-in holding a resource (a port, a reader thread) until ``close``."""

    opened: list[SerialPlugin] = []

    def __init__(self, name: str, interval_s: float) -> None:
        self.name, self.interval_s, self.closed = name, interval_s, False
        SerialPlugin.opened.append(self)

    def read(self) -> list[Chunk]:
        return [Chunk(f"{self.name}.level", "m", [1000], [1.0])]

    def close(self) -> None:
        self.closed = True


def test_an_agent_that_cannot_start_closes_the_sources_it_built(config: Path) -> None:
    config.write_text(config.read_text() + f"""
[[edge.sources]]
kind = "plugin"
name = "tank"
target = "{__name__}:SerialPlugin"
[[edge.sources]]
kind = "thermal"
root = "{config.parent / "no-such-dir"}"
""")
    use_config_file(config)
    SerialPlugin.opened.clear()
    with pytest.raises(SourceError, match="no thermal zones"):
        Agent.from_settings(EdgeSettings(), KafkaSettings())
    assert [p.closed for p in SerialPlugin.opened] == [True]  # its threads would keep the process from exiting


def test_an_error_in_the_loop_still_seals_what_was_read_and_closes_the_sources(config: Path) -> None:
    use_config_file(config)
    agent = Agent.from_settings(EdgeSettings(), KafkaSettings())
    plugin = SerialPlugin("tank", 1.0)
    agent.sources.append(plugin)

    def broken() -> int:
        raise RuntimeError("the producer broke")

    agent.sender.pump = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="the producer broke"):
        agent.run(duration=5.0, shutdown_flush_s=0.1)
    assert plugin.closed
    stored = sqlite3.connect(config.parent / "buf.sqlite").execute("SELECT sum(readings) FROM batches").fetchone()[0]
    assert agent.sampled and stored == agent.sampled  # sealed to disk for the next start


class _ReadOnly:
    """The buffer's connection once the SD card remounted read-only after an I/O error: reads work, writes fail."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith(("BEGIN", "INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


def test_a_disk_gone_read_only_as_the_agent_stops_still_closes_the_producer_and_the_buffer(config: Path) -> None:
    use_config_file(config)
    agent = Agent.from_settings(EdgeSettings(), KafkaSettings())
    agent.buffer.append(0, agent.encoder.encode(0, [Chunk("tank.level", "m", [500], [0.5])]), 1, 500)
    agent.sender._acked.append(0)  # acknowledged just before the card went read-only
    agent.batcher.add([Chunk("tank.level", "m", [1000], [1.0])])
    db = agent.buffer._db
    agent.buffer._db = _ReadOnly(db)  # type: ignore[assignment]
    agent.stop()  # SIGTERM with readings in the open batch
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        agent.run()
    with pytest.raises(RuntimeError, match="closed"):  # else its threads retry the broker until the process exits
        agent.sender._producer.poll(0)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        db.execute("SELECT 1")


class _Runaway:
    """A plug-in whose bug yields readings far past any interval's worth."""

    name, interval_s = "vib", 1.0

    def __init__(self, chunks: int) -> None:
        self.chunks, self.pulled = chunks, 0

    def read(self) -> Iterator[Chunk]:
        for k in range(self.chunks):
            self.pulled += 1
            yield Chunk("vib.x", "g", list(range(k * 1000, k * 1000 + 1000)), [1.5] * 1000)

    def close(self) -> None:
        pass


def test_one_read_of_a_runaway_plugin_is_cut_at_the_bound_counted_and_logged(
    config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edge_agent.sources.base import MAX_READINGS_PER_READ as cap

    use_config_file(config)
    agent = Agent.from_settings(EdgeSettings(), KafkaSettings())
    runaway = _Runaway(3 * cap // 1000)
    with caplog.at_level("WARNING", logger="edge_agent"):
        agent._sample(runaway)
        agent._sample(_Garbage([Chunk("vib.y", "g", list(range(cap + 5)), [2.5] * (cap + 5))]))  # one list of them
    assert runaway.pulled <= cap // 1000 + 1  # the generator was left where the bound was reached
    assert agent.sampled == 2 * cap and len(agent.batcher) == 2 * cap and agent.errors == 2
    assert [len(c.values) for c in agent.batcher.seal()] == [cap, cap]
    assert any(f"more than {cap} readings in one read" in r.getMessage() for r in caplog.records)
    agent.sender.close()
    agent.buffer.close()


def _small_messages(config: Path) -> Agent:
    use_config_file(config)
    kafka = KafkaSettings(extra={"message.max.bytes": "20000"})
    return Agent.from_settings(EdgeSettings(), kafka)


def test_a_batch_too_large_for_one_message_is_stored_in_parts(config: Path) -> None:
    agent = _small_messages(config)
    n = 5000  # about 75 kB of Avro
    agent.batcher.add([Chunk("vib", "g", list(range(1000, 1000 + n)), [float(i) for i in range(n)]),
                       Chunk("temp", "c", [1000], [20.5])])
    agent._seal()
    rows = agent.buffer._db.execute("SELECT seq, size, payload FROM batches ORDER BY seq").fetchall()
    assert len(rows) > 1 and all(size <= agent.sender.max_payload for _, size, _ in rows)
    series = [s for _, _, p in rows for s in AvroSerde().decode(p, SENSOR_BATCH)["series"]]
    assert [v for s in series if s["sensor"] == "vib" for v in s["values"]] == [float(i) for i in range(n)]
    assert [t for s in series if s["sensor"] == "vib" for t in s["timestamps"]] == list(range(1000, 1000 + n))
    assert [s["values"] for s in series if s["sensor"] == "temp"] == [[20.5]]
    agent.sender.close()
    agent.buffer.close()


def test_a_series_with_flags_splits_where_its_bitmask_does() -> None:
    flags = bytes(range(1, 14))  # 100 readings
    c = Chunk("vib", "g", list(range(100)), [float(i) for i in range(100)], flags)
    [head], [tail] = _halves([c])
    assert (len(head.values), head.flags, tail.timestamps[0], tail.flags) == (48, flags[:6], 48, flags[6:])
    assert _halves([Chunk("vib", "g", [1], [1.0])]) is None


def test_a_stored_batch_the_producer_refuses_goes_to_the_dead_letters(config: Path) -> None:
    agent = _small_messages(config)
    buf = agent.buffer
    big = [Chunk("vib", "g", list(range(1000, 6000)), [1.5] * 5000)]
    buf.append(0, agent.encoder.encode(0, big), 5000, 5999)  # stored before message.max.bytes was lowered
    for seq in range(1, 6):
        buf.append(seq, agent.encoder.encode(seq, [Chunk("t", "c", [seq], [20.0])]), 1, seq)
    agent.sender.pump()
    assert sorted(agent.sender._in_flight) == [1, 2, 3, 4, 5]  # not held back behind it
    [letter] = agent.dead_letters.read()
    assert letter["seq"] == 0 and "too large" in letter["reason"]
    assert letter["series"][0]["values"] == [1.5] * 5000
    st = buf.stats()
    assert (st.depth, st.dropped_batches, st.dropped_readings) == (5, 1, 5000)
    assert agent.heartbeat().errors >= 1
    agent.sender.close()
    agent.buffer.close()


def test_a_torn_dead_letter_line_does_not_hide_the_others(tmp_path: Path) -> None:
    letters = DeadLetterFile(tmp_path / "buf.dead-letters.jsonl")
    letters.write("encoding failed", {"series": [{"sensor": "a", "values": [1.0]}]})
    with open(letters.path, "a") as f:
        f.write('{"time_ms": 17, "reason": "enc')  # a power cut in the middle of a write
    letters.write("encoding failed", {"series": [{"sensor": "b", "values": [2.0]}]})
    assert [lt["series"][0]["sensor"] for lt in letters.read()] == ["a", "b"]
