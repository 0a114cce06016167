"""InfluxSink writing through the InfluxDB v2 write API into a real VictoriaMetrics, read back by export."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connectors.broker import free_port
from connectors.influx import InfluxPoint, InfluxSink, InfluxWriteError, MalformedPointError, clean_tag
from schemas import ALERT
from streams.processor import Emit
from streams.sinks.base import MetricsSink
from tests.fixtures import timeseries
from tests.fixtures.timeseries import VictoriaMetrics, victoria_binary

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def unique(prefix: str) -> str:
    """VictoriaMetrics 1.79 does not label the bucket, so each test writes its own measurement."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def by_name(series: list[dict]) -> dict[str, dict]:
    return {s["metric"]["__name__"]: s for s in series}


def test_points_are_written_and_read_back(victoria: VictoriaMetrics) -> None:
    m = unique("anomaly")
    with InfluxSink(victoria.influx_settings("scores")) as sink:
        sink.write(m, {"device": "dev-7", "sensor": "temp"}, {"score": 0.25, "count": 3, "is_anomaly": False}, T0)
        sink.write(m, {"device": "dev-7", "sensor": "temp"}, {"score": 0.97, "count": 4, "is_anomaly": True}, T0 + 1000)
        sink.write_points([InfluxPoint(m, {"device": "dev-8", "sensor": "temp"}, {"score": 0.5}, T0 + 500)])
        sink.flush()
        assert sink.points_written == 3 and sink.errors == 0 and sink.points_pending == 0

    series = victoria.export(f'{{__name__=~"{m}_.*"}}')
    names = sorted((s["metric"]["__name__"], s["metric"]["device"]) for s in series)
    assert names == [
        (f"{m}_count", "dev-7"),
        (f"{m}_is_anomaly", "dev-7"),
        (f"{m}_score", "dev-7"),
        (f"{m}_score", "dev-8"),
    ]
    dev7 = by_name([s for s in series if s["metric"]["device"] == "dev-7"])
    assert dev7[f"{m}_score"]["metric"]["sensor"] == "temp"
    assert dev7[f"{m}_score"]["timestamps"] == [T0, T0 + 1000]
    assert dev7[f"{m}_score"]["values"] == [0.25, 0.97]
    assert dev7[f"{m}_count"]["values"] == [3, 4]
    assert dev7[f"{m}_is_anomaly"]["values"] == [0, 1]
    dev8 = by_name([s for s in series if s["metric"]["device"] == "dev-8"])
    assert dev8[f"{m}_score"]["timestamps"] == [T0 + 500]


def test_a_replayed_point_overwrites_instead_of_adding(victoria: VictoriaMetrics) -> None:
    m = unique("drift")
    with InfluxSink(victoria.influx_settings("drift")) as sink:
        for _ in range(3):  # a replay after a crash writes the same series and time again
            sink.write(m, {"model": "ctr"}, {"psi": 0.12}, T0)
        sink.flush()
        sink.write(m, {"model": "ctr"}, {"psi": 0.12}, T0)
    [series] = victoria.export(f'{{__name__="{m}_psi"}}')
    assert series["timestamps"] == [T0] and series["values"] == [0.12]


def test_batches_larger_than_batch_size_all_arrive(victoria: VictoriaMetrics) -> None:
    m = unique("bulk")
    points = [InfluxPoint(m, {"device": f"d{i % 5}"}, {"v": float(i)}, T0 + i) for i in range(1000)]
    with InfluxSink(victoria.influx_settings("bulk", batch_size=128)) as sink:
        sink.write_points(points)
        sink.flush()
        assert sink.points_written == 1000
    series = victoria.export(f'{{__name__="{m}_v"}}')
    assert len(series) == 5
    assert sum(len(s["values"]) for s in series) == 1000
    d3 = next(s for s in series if s["metric"]["device"] == "d3")
    assert d3["values"][:3] == [3.0, 8.0, 13.0] and d3["timestamps"][:3] == [T0 + 3, T0 + 8, T0 + 13]


def test_an_unreachable_server_is_surfaced_not_silent(
    victoria: VictoriaMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    settings = victoria.influx_settings("lost", url=f"http://127.0.0.1:{free_port()}", max_retries=1)
    sink = InfluxSink(settings)
    sink.write("lost", {"device": "d1"}, {"v": 1.0}, T0)
    sink.write("lost", {"device": "d2"}, {"v": 2.0}, T0)
    with pytest.raises(InfluxWriteError, match="2 points were not written"):
        sink.flush()
    assert sink.errors == 1 and sink.points_lost == 2 and sink.points_written == 0
    assert any(getattr(r, "event", None) == "influx_write_failed" for r in caplog.records)
    sink.flush()  # a loss is reported once; nothing new was lost
    sink.write("lost", {"device": "d1"}, {"v": 3.0}, T0)
    with pytest.raises(InfluxWriteError, match="1 points"):
        sink.close()


def test_malformed_points_are_refused_before_anything_is_queued(victoria: VictoriaMetrics) -> None:
    m = unique("bad")
    with InfluxSink(victoria.influx_settings("bad")) as sink:
        with pytest.raises(ValueError, match="NaN"):
            sink.write_points([InfluxPoint(m, {}, {"v": 1.0}, T0), InfluxPoint(m, {}, {"v": float("nan")}, T0 + 1)])
        with pytest.raises(ValueError, match="no fields"):
            sink.write(m, {"a": "b"}, {}, T0)
        with pytest.raises(MalformedPointError, match="tag keys are non-empty strings"):
            sink.write(m, {"": "b"}, {"v": 1}, T0)
        with pytest.raises(ValueError, match="time_ms"):
            sink.write(m, {}, {"v": 1}, 1.7e12)  # type: ignore[arg-type]
        assert sink.points_queued == 0
    assert victoria.export(f'{{__name__=~"{m}_.*"}}') == []


def test_a_time_in_microseconds_is_refused_not_counted_written_and_dropped_by_the_server(
    victoria: VictoriaMetrics,
) -> None:
    """A device's clock in microseconds: VictoriaMetrics answered 204 and dropped the point ('too big timestamp')
    while the sink counted it written; InfluxDB refuses the whole batch for it. The flow leaves that point out."""
    m = unique("micros")
    with InfluxSink(victoria.influx_settings("micros")) as sink:
        with pytest.raises(MalformedPointError, match="microseconds") as raised:
            sink.write_points([(m, {"d": "1"}, {"v": 1.0}, T0), (m, {"d": "2"}, {"v": 2.0}, T0 * 1000)])
        assert raised.value.reason == "time" and sink.points_queued == 0
        alerts = [{"source": "test", "status": "OPENED", "severity": "ERROR", "entity": m, "value": 1.0,
                   "event_time": t} for t in (T0, T0 * 1000)]
        flow_sink = MetricsSink(sink)  # a flow's sink leaves the bad point out of its batch, counted
        flow_sink.write([Emit("alerts", "d", ALERT, a) for a in alerts])
        sink.flush()
        assert (flow_sink.points_refused, sink.points_written) == ({"time": 1}, 1)
    series = victoria.export(f'{{__name__=~"alerts_.*", entity="{m}"}}')
    assert {s["metric"]["__name__"]: s["timestamps"] for s in series} == {"alerts_value": [T0], "alerts_count": [T0]}


def test_tags_the_client_would_mangle_are_stored_as_cleaned(victoria: VictoriaMetrics) -> None:
    """influxdb-client escapes no backslash (a trailing one swallowed the separator, "mid\\ x" vanished while
    counted as written) and sends a newline as "\\n"; each tag is stored as ``clean_tag`` made it."""
    m = unique("tags")
    entities = ["plain", "with space", "a,b=c", 'quo"te', "uni-\u00e9\u4e2d", "tail\\", "mid\\ x", "new\nline", ""]
    with InfluxSink(victoria.influx_settings("tags")) as sink:
        sink.write_points([(m, {"entity": e}, {"value": float(i)}, T0 + i) for i, e in enumerate(entities)])
        sink.flush()
        assert sink.points_written == len(entities) and sink.points_lost == 0
        assert sink.tags_normalised == {"backslash": 2, "control": 1, "empty": 1}
    stored = {s["metric"]["entity"]: s["values"] for s in victoria.export(f'{{__name__="{m}_value"}}')}
    assert stored == {clean_tag(e): [float(i)] for i, e in enumerate(entities)}
    assert {"tail/", "mid/ x", "new line", "none"} <= stored.keys()


def wait_for(check: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    """Poll until ``check()`` holds; the limit only ends a hung test, nothing is asserted about time."""
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


def outage_settings(url: str) -> dict:
    """A retry budget of about half a second, so a stopped server outlasts it at once."""
    return {"url": url, "max_retries": 1, "retry_interval_ms": 50, "max_retry_delay_ms": 200,
            "max_retry_time_ms": 500, "timeout_ms": 500}


class OwnVictoria:
    """A VictoriaMetrics of the test's own, which it may stop and start again on the same address and storage."""

    def __init__(self, binary: Path, storage: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.binary, self.storage, self.monkeypatch = binary, storage, monkeypatch
        self.server = VictoriaMetrics(binary, storage)

    def start_again(self) -> VictoriaMetrics:
        self.monkeypatch.setattr(timeseries, "free_port", lambda port=self.server.port: port)
        self.server = VictoriaMetrics(self.binary, self.storage)
        return self.server


@pytest.fixture
def own_victoria(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnVictoria]:
    binary = victoria_binary()
    if binary is None:
        pytest.skip("VictoriaMetrics is not built: run `make test`")
    own = OwnVictoria(binary, tmp_path / "data", monkeypatch)
    try:
        yield own
    finally:
        own.server.stop()


def test_points_written_in_an_outage_longer_than_the_retry_budget_arrive_once_the_server_is_back(
    own_victoria: OwnVictoria, tmp_path: Path
) -> None:
    """They were counted as lost and never written: a permanent gap on the dashboards after every long outage."""
    server = own_victoria.server
    m = unique("outage")
    sink = InfluxSink(server.influx_settings("outage", **outage_settings(server.url)), spool=tmp_path / "spool")
    sink.write_points([(m, {"d": "x"}, {"v": float(i)}, T0 + i) for i in range(10)])
    sink.flush()
    server.stop()
    sink.write_points([(m, {"d": "x"}, {"v": float(i)}, T0 + i) for i in range(10, 20)])
    wait_for(lambda: sink.points_spooled == 10, "the batch to outlast its retries")
    sink.flush()  # spooled, not lost: nothing to raise
    server = own_victoria.start_again()  # back on the same address
    sink.write_points([(m, {"d": "x"}, {"v": float(i)}, T0 + i) for i in range(20, 30)])
    # spooled too unless a replay already succeeded: new points go to the spool until the server takes writes
    wait_for(lambda: sink.points_written + sink.points_replayed == 30, "the spool to be replayed")
    sink.close()
    assert (sink.points_lost, sink.points_spool_dropped, sink.points_pending) == (0, 0, 0)
    assert sink.points_written >= 10 and sink.points_spooled in (10, 20)
    assert sink.points_replayed == sink.points_spooled
    [series] = server.export(f'{{__name__="{m}_v"}}')
    assert series["values"] == [float(i) for i in range(30)]
    assert list((tmp_path / "spool").glob("*.lp")) == []


def test_a_sink_replays_what_an_earlier_run_spooled(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    m = unique("restart")
    down = victoria.influx_settings("restart", **outage_settings(f"http://127.0.0.1:{free_port()}"))
    with InfluxSink(down, spool=tmp_path / "spool") as earlier:
        earlier.write_points([(m, {"d": "x"}, {"v": float(i)}, T0 + i) for i in range(5)])
        earlier.flush()
        assert (earlier.points_spooled, earlier.points_lost, earlier.points_replayed) == (5, 0, 0)
    with InfluxSink(victoria.influx_settings("restart"), spool=tmp_path / "spool") as later:
        wait_for(lambda: later.points_replayed == 5, "the earlier run's spool to be replayed")
    [series] = victoria.export(f'{{__name__="{m}_v"}}')
    assert series["values"] == [float(i) for i in range(5)]
    assert list((tmp_path / "spool").glob("*.lp")) == []


def test_points_written_after_the_outage_is_noticed_are_kept_when_close_stops_waiting(
    own_victoria: OwnVictoria, tmp_path: Path
) -> None:
    """The batching writer's queued batches were lost at close (up to max_pending_points on a restart mid-outage);
    once a write has failed, new points go straight to the spool, and arrive once the server is back."""
    server = own_victoria.server
    m = unique("restart_mid_outage")
    settings = server.influx_settings("outage", **outage_settings(server.url) | {"batch_size": 1})
    server.stop()
    with InfluxSink(settings, spool=tmp_path / "spool") as earlier:
        earlier.write(m, {"d": "x"}, {"v": 0.0}, T0)
        wait_for(lambda: earlier.points_spooled == 1, "the outage to be noticed")
        earlier.write_points([(m, {"d": "x"}, {"v": float(i)}, T0 + i) for i in range(1, 40)])
    assert (earlier.points_spooled, earlier.points_lost) == (40, 0)
    server = own_victoria.start_again()
    with InfluxSink(settings, spool=tmp_path / "spool") as later:
        wait_for(lambda: later.points_replayed == 40, "the spool to be replayed")
    [series] = server.export(f'{{__name__="{m}_v"}}')
    assert series["values"] == [float(i) for i in range(40)]
