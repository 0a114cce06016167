"""The live page's chart series: what they hold, that they stay bounded, and the columns the page draws."""

from __future__ import annotations

from streams.apps.live.charts import ChartLimits, Charts
from streams.apps.live.state import LiveLimits, LiveState


def readings(device: str, sensor: str, ts: list[int], values: list[float]) -> dict:
    return {"device_id": device, "series": [{"sensor": sensor, "timestamps": ts, "values": values}]}


def scores(device: str, sensor: str, ts: list[int], values: list[float]) -> dict:
    return {"device_id": device, "series": [{"sensor": sensor, "timestamps": ts, "scores": values}]}


def alert(device: str | None, sensor: str, t: int, status: str = "OPENED") -> dict:
    details = {"device_id": device, "sensor": sensor} if device else {}
    return {"event_time": t, "status": status, "severity": "ERROR", "summary": "s", "entity": "x", "details": details}


def test_a_device_chart_aligns_readings_scores_and_its_sensor_alerts() -> None:
    c = Charts()
    c.readings(readings("d1", "temp", [1000, 2000, 3000], [1.0, 2.0, 3.0]))
    c.scores(scores("d1", "temp", [2000, 3000], [0.1, 0.9]))
    c.alert(alert("d1", "temp", 3000))
    c.alert(alert("d1", "humidity", 3000))  # another sensor: not on this chart
    c.alert(alert(None, "", 3000))  # about a model: no device chart at all
    view = c.device_view("d1", "temp")
    assert view["data"] == [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [None, 0.1, 0.9]]
    assert [(m["time"], m["sensor"]) for m in view["alerts"]] == [(3.0, "temp")]
    assert c.overview(10)["devices"] == ["d1"]


def test_defaults_are_the_latest_device_and_its_first_sensor() -> None:
    c = Charts()
    c.readings(readings("d1", "temp", [1], [1.0]))
    c.readings(readings("d2", "rpm", [1], [5.0]))
    assert (c.device_view(None, None)["device"], c.device_view("gone", "x")["sensor"]) == ("d2", "rpm")
    assert Charts().device_view(None, None) is None


def test_devices_sensors_and_points_are_bounded() -> None:
    c = Charts(ChartLimits(devices=2, sensors=1, points=3))
    for d in ("d1", "d2", "d3"):
        c.readings(readings(d, "temp", [1, 2, 3, 4, 5], [1.0, 2.0, 3.0, 4.0, 5.0]))
        c.readings(readings(d, "rpm", [1], [1.0]))
    assert c.overview(0)["devices"] == ["d2", "d3"]  # the least recently active went first
    view = c.device_view("d3", "rpm")
    assert view["sensors"] == ["temp"] and view["data"][1] == [3.0, 4.0, 5.0]


def test_calls_keep_score_and_rolling_and_the_latest_call_first() -> None:
    c = Charts(ChartLimits(calls=2))
    for call, t in (("a", 1000), ("b", 2000), ("a", 3000), ("c", 4000)):
        c.sentiment({"conversation_id": call, "event_time": t, "score": 0.5, "rolling_score": None})
    assert c.overview(0)["calls"] == ["c", "a"]
    assert c.call_view("a")["data"] == [[1.0, 3.0], [0.5, 0.5], [None, None]]


def test_throughput_counts_per_second_and_shows_quiet_seconds_as_zero() -> None:
    c = Charts(ChartLimits(seconds=5))
    for topic, second in (("alerts", 100), ("alerts", 100), ("drift", 102)):
        c.output(topic, second, 103.5)
    assert c.overview(103)["throughput"] == {
        "series": ["alerts", "drift"],
        "data": [[100, 101, 102, 103], [2, 0, 0, 0], [0, 0, 1, 0]],
    }
    c.output("drift", 110, 111.0)  # older seconds fall out of the window
    assert c.overview(111)["throughput"] == {"series": ["drift"], "data": [[110, 111], [1, 0]]}


def test_throughput_counts_output_when_the_broker_took_it_not_when_the_page_read_it() -> None:
    """A restarted page reads the backlog at once: an hour of output was drawn as one burst at the restart."""
    state = LiveState(LiveLimits(charts=ChartLimits(seconds=5)), clock=lambda: 10_000.5)
    for i, at_ms in enumerate((6_400_000, 9_997_000, 9_997_900, 20_000_000)):  # an hour ago, 3 s ago (2), ahead
        state.apply("drift", {"event_id": f"d{i}", "event_time": 0, "producer": "p", "model_name": "m",
                              "feature": None, "kind": "CONCEPT", "detector": "adwin", "statistic": 1.0,
                              "threshold": 0.5, "window_start": 0, "window_end": 1, "reference_size": 1,
                              "window_size": 1}, broker_ms=at_ms)
    assert state.snapshot()["charts"]["throughput"] == {
        "series": ["drift"], "data": [[9997, 9998, 9999, 10_000], [2, 0, 0, 1]]}
    assert state.snapshot()["events"]["drift"] == 4


def test_lag_samples_per_flow_with_gaps_where_a_flow_was_not_read() -> None:
    state = LiveState(clock=iter([1.0, 2.0, 3.0]).__next__)
    state.lag({"anomaly · faust": 40})
    state.lag({"anomaly · faust": 10, "drift · bytewax": 5})
    assert state.snapshot()["charts"]["lag"] == {
        "series": ["anomaly · faust", "drift · bytewax"],
        "data": [[1.0, 2.0], [40, 10], [None, 5]],
    }
