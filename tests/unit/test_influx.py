"""InfluxSink without a time-series server: tags made fit for line protocol, bounded close and pending points.

The write path against a real server is in tests/integration/test_influx_sink.py; here the server is a local
HTTP handler that keeps each request's body (the line protocol the client sent), or nothing listens (an outage).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connectors.broker import free_port
from connectors.influx import (
    EMPTY_TAG,
    InfluxSettings,
    InfluxSink,
    InfluxWriteError,
    MalformedPointError,
    check_point,
    clean_tag,
)

T0 = 1_700_000_000_000


class WriteServer:
    """Answers every write with 204 and keeps the line protocol lines it was sent."""

    def __init__(self) -> None:
        lines = self.lines = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                lines.extend(body.decode().split("\n"))
                self.send_response(204)
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
