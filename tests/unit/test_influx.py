"""InfluxSink without a time-series server: tags made fit for line protocol, bounded close and pending points.

The write path against a real server is in tests/integration/test_influx_sink.py; here the server is a local
HTTP handler that keeps each request's body (the line protocol the client sent), or nothing listens (an outage).
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from connectors.broker import free_port
from connectors.influx import (
    EMPTY_TAG,
    InfluxSettings,
    InfluxSink,
    InfluxWriteError,
    LineSpool,
    MalformedPointError,
    check_point,
    clean_tag,
)

T0 = 1_700_000_000_000


class WriteServer:
    """Answers every write with ``status`` (204) and keeps the line protocol lines of the writes it took."""

    def __init__(self) -> None:
        lines = self.lines = []
        buckets = self.buckets = []  # the bucket of each line taken
        self.status = 204
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if server.status == 204:
                    taken = body.decode().split("\n")
                    lines.extend(taken)
                    buckets.extend(parse_qs(urlparse(self.path).query)["bucket"] * len(taken))
                self.send_response(server.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def write_server() -> Iterator[WriteServer]:
    server = WriteServer()
    yield server
    server.stop()


def settings(url: str, **overrides: Any) -> InfluxSettings:
    values: dict[str, Any] = {"url": url, "flush_interval_ms": 50, "max_retries": 0, "timeout_ms": 2_000,
                              "max_retry_time_ms": 2_000}
    return InfluxSettings(**(values | overrides))


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain", "plain"),
        ("with space", "with space"),
        ("a,b=c", "a,b=c"),  # the client escapes these itself
        ('quo"te', 'quo"te'),
        ("uni-\u00e9\u4e2d\u00a0", "uni-\u00e9\u4e2d\u00a0"),
        ("tail\\", "tail/"),
        ("mid\\ x", "mid/ x"),
        ("new\nline\r\t\x00\x7f\x85", "new line     "),
        ("", EMPTY_TAG),
    ],
)
def test_clean_tag_leaves_only_what_line_protocol_carries(raw: str, clean: str) -> None:
    assert clean_tag(raw) == clean


def test_tags_are_sent_cleaned_and_each_change_is_counted(
    write_server: WriteServer, caplog: pytest.LogCaptureFixture
) -> None:
    sink = InfluxSink(settings(write_server.url))
    sink.write("m", {"entity": "tail\\", "k\\ey": "new\nline", "model_version": ""}, {"v": 1.0}, T0)
    sink.write("m", {"entity": "mid\\ x"}, {"v": 2.0}, T0 + 1)
    sink.flush()
    assert write_server.lines == [
        f"m,entity=tail/,k/ey=new\\ line,model_version=none v=1 {T0}",
        f"m,entity=mid/\\ x v=2 {T0 + 1}",
    ]
    assert sink.tags_normalised == {"backslash": 3, "control": 1, "empty": 1}
    assert sink.points_written == 2 and sink.points_lost == 0
    said = [r for r in caplog.records if getattr(r, "event", None) == "influx_tags_normalised"]
    assert len(said) == 1 and said[0].levelno == logging.WARNING  # the second write's change is held back
    sink.close()


def test_malformed_points_are_refused_with_a_reason_before_anything_is_queued() -> None:
    cases = [
        (("", {}, {"v": 1}, T0), "measurement"),
        (("m", {}, {}, T0), "no_fields"),
        (("m", {"": "x"}, {"v": 1}, T0), "tag"),
        (("m", {"a": None}, {"v": 1}, T0), "tag"),
        (("m", {}, {"": 1}, T0), "field_name"),
        (("m", {}, {"v": [1]}, T0), "field_type"),
        (("m", {}, {"v": float("nan")}, T0), "field_not_finite"),
        (("m", {}, {"v": 1}, 1.7e12), "time"),
    ]
    for point, reason in cases:
        with pytest.raises(MalformedPointError) as raised:
            check_point(*point)
        assert raised.value.reason == reason and isinstance(raised.value, ValueError)
    check_point("m", {"a": ""}, {"v": 1}, T0)  # clean_tag writes it as EMPTY_TAG
    sink = InfluxSink(settings(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(MalformedPointError, match="NaN"):
        sink.write_points([("m", {}, {"v": 1.0}, T0), ("m", {}, {"v": float("inf")}, T0 + 1)])
    assert sink.points_queued == 0
    sink.close()


def test_points_beyond_max_pending_points_are_dropped_and_counted_as_lost(caplog: pytest.LogCaptureFixture) -> None:
    # nothing listens and the batch waits a minute: everything written stays pending
    sink = InfluxSink(settings(f"http://127.0.0.1:{free_port()}", max_pending_points=5, flush_interval_ms=60_000))
    sink.write_points([("m", {"d": str(i)}, {"v": 1.0}, T0 + i) for i in range(8)])
    assert (sink.points_queued, sink.points_pending, sink.points_dropped, sink.points_lost) == (8, 5, 3, 3)
    sink.write("m", {"d": "late"}, {"v": 1.0}, T0 + 9)
    assert (sink.points_pending, sink.points_dropped) == (5, 4)
    assert [getattr(r, "event", None) for r in caplog.records].count("influx_points_dropped") == 1
    with pytest.raises(InfluxWriteError, match="9 points were not written"):
        sink.close()  # the five pending fail too: nothing listens
    assert sink.points_lost == 9 and sink.points_pending == 0


def test_close_in_an_outage_gives_up_the_queued_batches_instead_of_retrying_each() -> None:
    """close() waits as long as one batch's retries may take; the batches still queued then are lost, not sent
    (each would wait out its retries in turn), and the batch in flight is not counted twice when it ends."""
    batches, retries = 8, 3
    sink = InfluxSink(settings(f"http://127.0.0.1:{free_port()}", batch_size=1, flush_interval_ms=10, timeout_ms=100,
                               max_retries=retries, retry_interval_ms=100, max_retry_delay_ms=1_000,
                               max_retry_time_ms=1_000))
    sink.write_points([("m", {"d": str(i)}, {"v": 1.0}, T0 + i) for i in range(batches)])
    executor = sink._writer.scheduler.executor
    with pytest.raises(InfluxWriteError, match=f"{batches} points were not written"):
        sink.close()
    # a batch's backoffs alone add up to at least 7 retry intervals, longer than close waits for two of them
    assert sink.retries < batches * retries
    counted = (sink.points_lost, sink.errors, sink.retries)
    for t in list(executor._threads):  # the batch that was in flight ends in the background
        t.join(timeout=30)
    assert (sink.points_lost, sink.errors, sink.retries) == counted
    assert sink.points_lost == batches and sink.points_pending == 0


def wait_for(check: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    """Poll until ``check()`` holds; the limit only ends a hung test, nothing is asserted about time."""
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def test_a_torn_last_line_is_dropped_and_counted_and_the_rest_is_replayed_in_order(
    write_server: WriteServer, tmp_path: Path
) -> None:
    """A crash mid-append leaves a line without its newline at the end of that writer's segment only."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "00000000000000000001-1-0.lp").write_bytes(f"m v=1 {T0}\nm v=2 {T0 + 1}\nm v=3 {T0}".encode())
    (spool / "00000000000000000002-2-0.lp").write_bytes(f"m v=4 {T0 + 3}\n".encode())
    sink = InfluxSink(settings(write_server.url), spool=spool)
    wait_for(lambda: sink.points_replayed == 3, "the spool to be replayed")
    with pytest.raises(InfluxWriteError, match="1 points were not written.*torn"):
        sink.close()  # waits for the replay to end: its segment is deleted
    assert write_server.lines == [f"m v=1 {T0}", f"m v=2 {T0 + 1}", f"m v=4 {T0 + 3}"]
    assert sink.points_spool_dropped == 1 and list(spool.iterdir()) == []


def test_past_its_bound_the_spool_drops_its_oldest_lines_and_counts_them(tmp_path: Path) -> None:
    spool = LineSpool(tmp_path, max_bytes=800)  # segments of 100 bytes or a little more
    lines = [f"m v={i} {T0}".encode() for i in range(40)]  # 21 bytes each with the newline
    dropped = sum(spool.append(b"\n".join(lines[i : i + 4])) for i in range(0, 40, 4))
    assert sum(p.stat().st_size for p in tmp_path.glob("*.lp")) <= 800
    kept = []
    while (segment := spool.claim()) is not None:
        kept += segment.lines
        spool.finish(segment)
    assert dropped > 0 and kept == lines[dropped:]


def test_a_segment_being_written_is_left_to_its_writer(tmp_path: Path) -> None:
    """The workers of a flow share their sink's folder: one replays no other's open segment, nor drops it."""
    mine, theirs = LineSpool(tmp_path, max_bytes=1 << 20), LineSpool(tmp_path, max_bytes=1 << 20)
    theirs.append(b"theirs v=1 1")
    mine.append(b"mine v=1 1")
    segment = mine.claim()
    assert segment is not None and segment.lines == [b"mine v=1 1"]
    assert mine.claim() is None  # theirs is still open, and locked
    mine.finish(segment)
    theirs.close()
    segment = mine.claim()
    assert segment is not None and segment.lines == [b"theirs v=1 1"]
    with open(segment.path, "rb") as other:  # locked while it is replayed
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    mine.finish(segment)


_FULL_DISK = textwrap.dedent(f"""
    import resource, signal, sys
    from connectors.influx import LineSpool

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails as on a full disk, after a short one
    spool = LineSpool(sys.argv[1], max_bytes=1 << 20)
    spool.append(b"m v=1 {T0}")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (30, hard))
    try:
        spool.append(b"m v=2 {T0}\\nm v=3 {T0}")
    except OSError as exc:
        print("refused", exc.errno)
    segment = spool.claim()  # the replay thread, while the disk is still full
    print("claimed", segment.lines)
    spool.finish(segment)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    spool.append(b"m v=4 {T0}")
    spool.close()
    segment = spool.claim()
    print("claimed", segment.lines, segment.torn)
""")


def test_a_full_disk_leaves_no_part_of_a_line_and_the_spool_takes_points_again_once_there_is_room(
    tmp_path: Path
) -> None:
    """A write that fills the disk may write part of its lines first: a part left in the segment would join the next
    append's first line (a line the server refuses, with the chunk it is replayed in), and a part left in a buffer
    made every later append fail (a flow's write_points raised ValueError for good)."""
    done = subprocess.run([sys.executable, "-c", _FULL_DISK, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "refused 27",  # EFBIG; counted lost by the sink
        f"claimed [b'm v=1 {T0}']",
        f"claimed [b'm v=4 {T0}'] 0",
    ]


def test_flows_of_one_sink_kind_writing_to_two_buckets_spool_apart(write_server: WriteServer, tmp_path: Path) -> None:
    """The audio and sentiment flows both feed SentimentMetricsSink: a spool is replayed into the bucket of the sink
    that replays it, so one shared by both wrote the calls' points into the chat bucket."""
    from streams.sinks.sentiment import SentimentMetricsSink

    calls, chat = (settings(write_server.url, bucket=b, spool_dir=tmp_path) for b in ("calls", "chat"))
    for s, line in ((calls, f"m,of=calls v=1 {T0}"), (chat, f"m,of=chat v=1 {T0}")):  # the calls' segment is older
        spool = LineSpool(SentimentMetricsSink.spool_folder(s), max_bytes=1 << 20)
        spool.append(line.encode())
        spool.close()
    sink = InfluxSink(chat, spool=SentimentMetricsSink.spool_folder(chat))
    wait_for(lambda: f"m,of=chat v=1 {T0}" in write_server.lines, "the chat spool to be replayed")  # oldest first
    sink.close()
    assert (write_server.lines, write_server.buckets) == ([f"m,of=chat v=1 {T0}"], ["chat"])
    sink = InfluxSink(calls, spool=SentimentMetricsSink.spool_folder(calls))
    wait_for(lambda: len(write_server.lines) == 2, "the calls spool to be replayed")
    sink.close()
    assert write_server.buckets == ["chat", "calls"] and write_server.lines[1] == f"m,of=calls v=1 {T0}"


def test_points_beyond_max_pending_points_are_spooled_when_there_is_a_spool(
    write_server: WriteServer, tmp_path: Path
) -> None:
    sink = InfluxSink(settings(write_server.url, max_pending_points=5, flush_interval_ms=60_000), spool=tmp_path)
    sink.write_points([("m", {"d": str(i)}, {"v": 1.0}, T0 + i) for i in range(8)])
    assert (sink.points_pending, sink.points_spooled, sink.points_dropped, sink.points_lost) == (5, 3, 0, 0)
    wait_for(lambda: sink.points_replayed == 3, "the spool to be replayed")
    sink.close()
    assert sorted(write_server.lines) == sorted(f"m,d={i} v=1 {T0 + i}" for i in range(8))
    assert sink.points_written == 5 and sink.points_pending == 0


def test_the_spool_log_says_why_the_points_were_not_written(
    write_server: WriteServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A token without write access is no outage, and its points are spooled too: the log said "down or behind"."""
    write_server.status = 401
    sink = InfluxSink(settings(write_server.url), spool=tmp_path)
    sink.write("m", {}, {"v": 1.0}, T0)
    wait_for(lambda: sink.points_spooled == 1, "the refused batch to be spooled")
    sink.close()
    [spooled] = [r for r in caplog.records if getattr(r, "event", None) == "influx_points_spooled"]
    assert "(401)" in spooled.getMessage() and "Unauthorized" in spooled.error


def test_spooled_lines_the_server_refuses_for_good_are_dropped_and_counted(
    write_server: WriteServer, tmp_path: Path
) -> None:
    """A 400 would refuse them on every replay and hold back the lines after them for ever."""
    (tmp_path / "00000000000000000001-1-0.lp").write_bytes(f"m v=1 {T0}\n".encode())
    write_server.status = 400
    sink = InfluxSink(settings(write_server.url), spool=tmp_path)
    wait_for(lambda: sink.points_spool_dropped == 1, "the refused line to be dropped")
    with pytest.raises(InfluxWriteError, match="refused"):
        sink.close()
    assert sink.points_replayed == 0 and list(tmp_path.iterdir()) == []


def test_flow_sinks_spool_under_the_state_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.sinks.drift import DriftMetricsSink
    from streams.sinks.sensor import SensorMetricsSink

    monkeypatch.setenv("EDDYLINE_RUNTIME_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("EDDYLINE_INFLUX_URL", f"http://127.0.0.1:{free_port()}")
    sensor = tmp_path / "state" / "influx-spool" / "sensor" / "eddyline" / "eddyline"
    assert SensorMetricsSink.spool_folder(InfluxSettings()) == sensor
    assert DriftMetricsSink.spool_folder(InfluxSettings(spool_dir=tmp_path / "s", org="a/b", bucket="..")) == (
        tmp_path / "s" / "drift" / "a%2Fb" / "%2E%2E"
    )
    sink = SensorMetricsSink.from_settings()
    try:
        assert sink.influx._spool.folder == sensor
    finally:
        sink.close()
    monkeypatch.setenv("EDDYLINE_INFLUX_SPOOL_MAX_BYTES", "0")
    sink = SensorMetricsSink.from_settings()
    assert sink.influx._spool is None
    sink.close()


def test_points_written_in_an_outage_go_to_the_spool_not_the_batching_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The batching writer cannot hand its queued batches back: queued in an outage, they were lost when close()
    stopped waiting (up to max_pending_points on a restart mid-outage), the gap the spool was meant to close."""
    sink = InfluxSink(settings(f"http://127.0.0.1:{free_port()}", batch_size=1, flush_interval_ms=10, timeout_ms=100,
                               max_retries=1, retry_interval_ms=50, max_retry_delay_ms=200, max_retry_time_ms=300),
                      spool=tmp_path)
    sink.write("m", {"d": "first"}, {"v": 1.0}, T0)
    wait_for(lambda: sink.points_spooled == 1, "the outage to be noticed")
    sink.write_points([("m", {"d": str(i)}, {"v": 1.0}, T0 + i) for i in range(50)])
    sink.write_points([("m", {"d": "late"}, {"v": 1.0}, T0)])
    sink.close()  # nothing lost: nothing to raise
    assert (sink.points_queued, sink.points_spooled, sink.points_lost, sink.points_pending) == (52, 52, 0, 0)
    assert sum(len(p.read_bytes().splitlines()) for p in tmp_path.glob("*.lp")) == 52
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("influx_outage") == 1 and "influx_outage_over" not in events


def test_new_points_are_sent_again_once_a_replay_succeeds(
    write_server: WriteServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_server.status = 503
    sink = InfluxSink(settings(write_server.url, retry_interval_ms=10, max_retry_delay_ms=50), spool=tmp_path)
    sink.write("m", {}, {"v": 1.0}, T0)
    wait_for(lambda: sink.points_spooled == 1, "the failed batch to be spooled")
    sink.write("m", {}, {"v": 2.0}, T0 + 1)
    assert sink.points_spooled == 2
    write_server.status = 204
    wait_for(lambda: sink.points_replayed == 2, "the spool to be replayed")
    sink.write("m", {}, {"v": 3.0}, T0 + 2)
    sink.close()
    assert (sink.points_written, sink.points_spooled, sink.points_lost) == (1, 2, 0)
    assert sorted(write_server.lines) == [f"m v=1 {T0}", f"m v=2 {T0 + 1}", f"m v=3 {T0 + 2}"]
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("influx_outage") == 1 and events.count("influx_outage_over") == 1


def test_a_replay_the_server_refuses_for_good_ends_the_outage(write_server: WriteServer, tmp_path: Path) -> None:
    """A 400 is an answer: the server is up, so new points go to it again instead of waiting in the spool."""
    write_server.status = 503
    sink = InfluxSink(settings(write_server.url, retry_interval_ms=10, max_retry_delay_ms=50), spool=tmp_path)
    sink.write("m", {}, {"v": 1.0}, T0)
    wait_for(lambda: sink.points_spooled == 1, "the failed batch to be spooled")
    write_server.status = 400
    wait_for(lambda: sink.points_spool_dropped == 1, "the spooled line to be refused")
    write_server.status = 204
    sink.write("m", {}, {"v": 2.0}, T0 + 1)
    with pytest.raises(InfluxWriteError, match="1 points were not written"):
        sink.close()
    assert (sink.points_written, sink.points_spooled) == (1, 1)
    assert write_server.lines == [f"m v=2 {T0 + 1}"]


def test_the_replay_thread_logs_an_error_and_goes_on_draining_the_spool(
    write_server: WriteServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A segment that could not be deleted killed the thread without a word: the spool was never drained again."""
    finished = []
    finish = LineSpool.finish

    def failing_once(spool: LineSpool, segment: Any) -> None:
        finished.append(segment.path.name)
        if len(finished) == 1:
            raise PermissionError(13, "Permission denied", str(segment.path))
        finish(spool, segment)

    monkeypatch.setattr(LineSpool, "finish", failing_once)
    (tmp_path / "00000000000000000001-1-0.lp").write_bytes(f"m v=1 {T0}\n".encode())
    sink = InfluxSink(settings(write_server.url, retry_interval_ms=10, max_retry_delay_ms=50), spool=tmp_path)
    wait_for(lambda: len(finished) == 2, "the segment to be deleted on the second try")
    (tmp_path / "00000000000000000002-1-0.lp").write_bytes(f"m v=2 {T0}\n".encode())
    wait_for(lambda: sink.points_replayed == 2, "the next segment to be replayed")
    sink.close()
    assert write_server.lines == [f"m v=1 {T0}", f"m v=2 {T0}"] and list(tmp_path.iterdir()) == []
    [error] = [r for r in caplog.records if getattr(r, "event", None) == "influx_replay_error"]
    assert error.levelno == logging.ERROR and "Permission denied" in error.getMessage() and error.exc_info


def test_the_replay_retry_log_says_a_short_delay_as_it_is(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "00000000000000000001-1-0.lp").write_bytes(f"m v=1 {T0}\n".encode())
    sink = InfluxSink(settings(f"http://127.0.0.1:{free_port()}", retry_interval_ms=10), spool=tmp_path)
    wait_for(lambda: any(getattr(r, "event", None) == "influx_replay_failed" for r in caplog.records), "a failure")
    sink.close()
    [failed] = [r for r in caplog.records if getattr(r, "event", None) == "influx_replay_failed"]
    assert "retrying in 0.01 s" in failed.getMessage()  # it said "retrying in 0.0 s"
