"""The fleet processor without a broker: silence on the fleet's clock, backlog, errors, skew, snapshots."""

from __future__ import annotations

import json

from streams.flows.fleet import FleetProcessor, flow, shard_of
from streams.processor import Event, run_local


def beat(device: str, t: int, *, broker: int | None = None, **kw: object) -> Event:
    """A valid ``device_health`` event at ``t``, its broker timestamp ``broker`` (default: ``t``)."""
    rec = {"event_id": f"{device}-{t}", "event_time": t, "producer": f"test@{device}", "device_id": device,
           "seq": t // 1000, "device_class": "rpi4", "agent_version": "1.0", "interval_s": 1.0,
           "model_version": None, "model_state": "none", "model_message": None, "buffer_depth": 0,
           "buffer_readings": 0, "buffer_oldest_age_s": 0.0, "send_rate": 0.0, "sampled_readings": 0,
           "acked_readings": 0, "errors": 0, "dropped_readings": 0, "cpu_percent": 0.0, "rss_mb": 38.0,
           "inference_latency_ms": None, "clock_offset_ms": None, "dead_letters": 0, "rollouts_refused": 0, **kw}
    return Event("device.health", device, rec, broker_ms=t if broker is None else broker)


def alerts(emits: list) -> list[tuple[str, str, str]]:
    return [(e.record["status"], e.record["entity"], e.record["details"]["kind"]) for e in emits if e.topic == "alerts"]


def fleet_run(proc: FleetProcessor, events: list[Event]) -> list:
    return [e for ev in events for e in proc.process([ev])]


def test_silence_opens_on_the_fleet_clock_and_resolves_with_the_same_key() -> None:
    proc = FleetProcessor("fleet", silent_after_s=5)
    evs = [beat(d, 0) for d in "abc"] + [beat(d, t) for t in range(1000, 12_000, 1000) for d in "bc"]
    out = fleet_run(proc, evs)
    assert alerts(out) == [("OPENED", "a", "silent")]
    opened = next(e for e in out if e.topic == "alerts")
    back = proc.process([beat("a", 12_000)])
    assert alerts(back) == [("RESOLVED", "a", "silent")]
    assert back[0].record["alert_key"] == opened.record["alert_key"]


def test_a_slow_heartbeat_gets_its_own_intervals_before_it_is_silent() -> None:
    proc = FleetProcessor("fleet", silent_after_s=5, silent_beats=3)
    out = fleet_run(proc, [beat("slow", 0, interval_s=10.0), beat("b", 0), beat("c", 0)]
                    + [beat(d, t) for t in range(1000, 25_000, 1000) for d in "bc"])
    assert alerts(out) == []
    out = fleet_run(proc, [beat(d, t) for t in range(25_000, 32_000, 1000) for d in "bc"])
    assert alerts(out) == [("OPENED", "slow", "silent")]


def test_a_device_with_a_clock_far_ahead_does_not_make_the_others_silent() -> None:
    proc = FleetProcessor("fleet", silent_after_s=5)
    out = fleet_run(proc, [beat(d, t) for t in range(0, 10_000, 1000) for d in "abcdefghij"]
                    + [beat("ahead", 3_600_000)] + [beat(d, 10_000) for d in "abcdefghij"])
    assert alerts(out) == []


def test_the_clock_keeps_moving_when_most_of_the_fleet_stops() -> None:
    proc = FleetProcessor("fleet", silent_after_s=5)
    fleet_run(proc, [beat(d, 0) for d in "abcdefghij"])
    out = fleet_run(proc, [beat("j", t) for t in range(1000, 8000, 1000)])
    assert sorted(e for _, e, _ in alerts(out)) == list("abcdefghi")


def test_two_devices_one_stops() -> None:
    proc = FleetProcessor("fleet", silent_after_s=5)
    out = fleet_run(proc, [beat(d, 0) for d in "ab"] + [beat("b", t) for t in range(1000, 8000, 1000)])
    assert alerts(out) == [("OPENED", "a", "silent")]


def test_the_whole_fleet_silent_moves_no_clock_and_opens_nothing() -> None:
    """The documented limit: silence is judged on the clock the live devices move."""
    proc = FleetProcessor("fleet", silent_after_s=5)
    assert alerts(fleet_run(proc, [beat(d, t) for t in range(0, 3000, 1000) for d in "ab"])) == []
    assert proc.clock == 2000


def test_growing_backlog_error_rate_and_clock_skew_open_and_resolve() -> None:
    proc = FleetProcessor("fleet", backlog_batches=10, backlog_rising=3, error_rate_per_min=6, clock_skew_ms=1000,
                          resolve_after=2)
    evs = [beat("a", t * 1000, buffer_depth=5 * t) for t in range(6)]
    assert ("OPENED", "a", "backlog") in alerts(fleet_run(proc, evs))
    assert alerts(proc.process([beat("a", 6000, buffer_depth=3)])) == [("RESOLVED", "a", "backlog")]
    # 1 error a second is 60 a minute
    out = fleet_run(proc, [beat("a", 7000 + i * 1000, errors=i + 1) for i in range(3)])
    assert alerts(out) == [("OPENED", "a", "errors")]
    out = fleet_run(proc, [beat("a", 10_000 + i * 1000, errors=3) for i in range(2)])
    assert alerts(out) == [("RESOLVED", "a", "errors")]
    assert alerts(proc.process([beat("a", 12_000, errors=3, clock_offset_ms=-2500.0)])) == [
        ("OPENED", "a", "clock_skew")]
    assert alerts(proc.process([beat("a", 13_000, errors=3, clock_offset_ms=100.0)])) == [
        ("RESOLVED", "a", "clock_skew")]


def test_an_agent_restart_resets_its_error_count_without_an_alert() -> None:
    proc = FleetProcessor("fleet", error_rate_per_min=6)
    out = fleet_run(proc, [beat("a", 0, errors=50), beat("a", 60_000, errors=50), beat("a", 120_000, errors=0)])
    assert alerts(out) == []


def test_rising_dead_letters_open_a_warning_per_device_and_resolve_after_quiet_heartbeats() -> None:
    proc = FleetProcessor("fleet", resolve_after=3)
    out = fleet_run(proc, [beat("a", 0), beat("b", 0), beat("a", 1000, dead_letters=2), beat("b", 1000)])
    assert alerts(out) == [("OPENED", "a", "dead_letters")]
    opened = next(e.record for e in out if e.topic == "alerts")
    assert opened["severity"] == "WARNING" and opened["details"]["device_id"] == "a" and opened["value"] == 2.0
    assert [e.record["state"] for e in out if e.topic == "sink.fleet"][-2:] == ["dead_letters", "ok"]
    out = fleet_run(proc, [beat("a", 2000, dead_letters=3)] + [beat("a", t, dead_letters=3) for t in (3000, 4000)])
    assert alerts(out) == []  # a rise keeps it open: quiet starts over
    back = proc.process([beat("a", 5000, dead_letters=3)])
    assert alerts(back) == [("RESOLVED", "a", "dead_letters")] and back[0].record["alert_key"] == opened["alert_key"]
    # a lower count is a restart of the agent: nothing new until it rises from there
    assert alerts(fleet_run(proc, [beat("a", 6000, dead_letters=0), beat("a", 7000, dead_letters=0)])) == []
    assert alerts(proc.process([beat("a", 8000, dead_letters=1)])) == [("OPENED", "a", "dead_letters")]


def test_refused_rollouts_page_once_per_device_class_naming_how_many_devices_refused() -> None:
    proc = FleetProcessor("fleet", resolve_after=2)
    rpi = ["a", "b", "c"]
    fleet_run(proc, [beat(d, 0) for d in rpi] + [beat("j", 0, device_class="jetson")])
    out = fleet_run(proc, [beat(d, 500, rollouts_refused=1) for d in rpi] + [beat("j", 500, device_class="jetson")])
    assert alerts(out) == [("OPENED", "rpi4", "rollouts_refused")]  # one page for the class, not one per device
    opened = next(e.record for e in out if e.topic == "alerts")
    assert opened["severity"] == "ERROR" and opened["details"]["device_class"] == "rpi4"
    out = fleet_run(proc, [beat(d, 1500, rollouts_refused=1) for d in rpi])
    updated = [e.record for e in out if e.topic == "alerts"]
    assert [(u["status"], u["alert_key"], u["details"]["devices"]) for u in updated] == [
        ("UPDATED", opened["alert_key"], "3")]
    assert ": 3;" in updated[0]["summary"]
    out = fleet_run(proc, [beat(d, 2500, rollouts_refused=1) for d in rpi] + [beat("j", 2500, device_class="jetson")])
    assert alerts(out) == [("RESOLVED", "rpi4", "rollouts_refused")]  # each has beaten twice with no new refusal
    assert [e.record["alert_key"] for e in out if e.topic == "alerts"] == [opened["alert_key"]]
    assert not any("rollouts_refused" in d["incidents"] for d in proc.devices.values())


def test_a_device_that_refused_and_fell_silent_does_not_hold_its_class_alert_open() -> None:
    proc = FleetProcessor("fleet", silent_after_s=5, resolve_after=2)
    fleet_run(proc, [beat(d, 0) for d in "abc"])
    fleet_run(proc, [beat("a", 1000, rollouts_refused=1), beat("b", 1000, rollouts_refused=1)])
    out = fleet_run(proc, [beat(d, t, rollouts_refused=1 if d == "b" else 0) for t in range(2000, 9000, 1000)
                           for d in "bc"])
    assert alerts(out) == [("UPDATED", "rpi4", "rollouts_refused"), ("OPENED", "a", "silent"),
                           ("RESOLVED", "rpi4", "rollouts_refused")]  # b quiet twice, a silent: none left waiting


def test_both_counts_go_to_the_time_series_state_and_old_heartbeats_read_as_zero() -> None:
    old = beat("a", 0)
    for field in ("dead_letters", "rollouts_refused"):
        del old.record[field]  # a v1 heartbeat decoded without the reader schema's defaults
    out = FleetProcessor("fleet").process([old, beat("b", 0, dead_letters=4, rollouts_refused=2)])
    states = {e.record["device_id"]: e.record for e in out if e.topic == "sink.fleet"}
    assert (states["b"]["dead_letters"], states["b"]["rollouts_refused"]) == (4, 2)
    assert states["a"]["state"] == "ok" and [a for a in alerts(out) if a[1] == "a"] == []


def test_an_old_checkpoint_restores_with_its_error_alert_still_counting_quiet_heartbeats() -> None:
    proc = FleetProcessor("fleet", resolve_after=2)
    assert alerts(fleet_run(proc, [beat("a", 1000), beat("a", 2000, errors=10)])) == [("OPENED", "a", "errors")]
    state = json.loads(json.dumps(proc.snapshot()))
    del state["classes"]
    state["devices"]["a"] = {k: v for k, v in state["devices"]["a"].items() if k not in ("dead_letters", "refused")}
    state["devices"]["a"]["quiet"] = 1
    assert "quiet" not in state["devices"]["a"]["incidents"]["errors"]  # the old layout kept it on the device
    old = FleetProcessor("fleet", resolve_after=2)
    old.restore(state)
    assert alerts(old.process([beat("a", 3000, errors=10)])) == [("RESOLVED", "a", "errors")]


def test_snapshot_is_plain_and_a_restored_processor_gives_the_same_emits() -> None:
    first = [beat(d, t) for t in range(0, 5000, 1000) for d in "abc"]
    rest = [beat(d, t) for t in range(5000, 15_000, 1000) for d in "bc"] + [beat("a", 15_000)]
    whole = FleetProcessor("fleet", silent_after_s=5)
    fleet_run(whole, first)
    expected = fleet_run(whole, rest)
    resumed = FleetProcessor("fleet", silent_after_s=5)
    fleet_run(resumed, first)
    copy = FleetProcessor("fleet", silent_after_s=5)
    copy.restore(json.loads(json.dumps(resumed.snapshot())))  # plain data: survives JSON
    assert fleet_run(copy, rest) == expected
    assert [k for _, _, k in alerts(expected)] == ["silent", "silent"]



def test_a_device_silent_past_forget_after_is_forgotten_and_its_alert_resolved() -> None:
    proc = FleetProcessor("fleet", silent_after_s=5, forget_after_s=60)
    live = [beat(d, t) for t in range(1000, 70_000, 1000) for d in "bc"]
    out = fleet_run(proc, [beat("a", 0, buffer_depth=500, clock_offset_ms=9000.0), beat("b", 0), beat("c", 0)] + live)
    assert alerts(out) == [("OPENED", "a", "clock_skew"), ("OPENED", "a", "silent"), ("RESOLVED", "a", "silent"),
                           ("RESOLVED", "a", "clock_skew")]
    resolved = [e.record["summary"] for e in out if e.topic == "alerts"][-2:]
    assert sorted(proc.devices) == ["b", "c"] and all("forgotten after" in s for s in resolved)
    assert alerts(proc.process([beat("a", 70_000)])) == [] and proc.devices["a"]["incidents"] == {}


def test_a_decommissioned_device_is_forgotten_after_a_restore_too_and_never_with_zero() -> None:
    start = [beat(d, 0, interval_s=100.0 if d == "a" else 1.0) for d in "abc"]
    start += [beat("a", 1000, interval_s=1.0)] + [beat(d, t) for t in range(1000, 10_000, 1000) for d in "bc"]
    proc = FleetProcessor("fleet", silent_after_s=5, forget_after_s=60)
    fleet_run(proc, start)
    assert "silent" in proc.devices["a"]["incidents"]
    copy = FleetProcessor("fleet", silent_after_s=5, forget_after_s=60)
    copy.restore(json.loads(json.dumps(proc.snapshot())))
    rest = [beat(d, t) for t in range(10_000, 400_000, 1000) for d in "bc"]  # passes a's stale 300 s due time
    assert alerts(fleet_run(copy, rest)) == [("RESOLVED", "a", "silent")] and sorted(copy.devices) == ["b", "c"]
    keep = FleetProcessor("fleet", silent_after_s=5, forget_after_s=0)
    fleet_run(keep, start + rest)
    assert sorted(keep.devices) == ["a", "b", "c"]

def test_fleet_state_records_carry_no_label_per_device_for_prometheus() -> None:
    out = run_local(flow(silent_after_s=5), [beat(d, t) for t in range(0, 12_000, 1000) for d in "ab"])
    summaries = [e.record for e in out if e.topic == "sink.fleet_summary"]
    assert summaries and summaries[-1]["counts"] == [
        {"state": "ok", "device_class": "rpi4", "agent_version": "1.0", "model_version": "none", "devices": 2}]
    states = [e.record for e in out if e.topic == "sink.fleet"]
    assert {s["device_id"] for s in states} == {"a", "b"} and all(s["state"] == "ok" for s in states)


def test_shards_split_the_fleet_by_a_stable_hash() -> None:
    assert shard_of("pi-7", 1) == "fleet"
    assert {shard_of(f"pi-{i}", 4) for i in range(50)} == {f"fleet-{i}" for i in range(4)}


def test_the_sink_writes_points_per_device_and_counts_without_a_device_label() -> None:
    from prometheus_client import REGISTRY

    from streams.sinks.fleet import FleetMetricsSink

    class Points:
        def __init__(self) -> None:
            self.points: list = []

        def write_points(self, points: list) -> None:
            self.points.extend(points)

        def close(self) -> None:
            pass

    influx = Points()
    sink = FleetMetricsSink(influx)
    proc = FleetProcessor("fleet-9", silent_after_s=5)
    sink.write(fleet_run(proc, [beat(d, t) for t in range(0, 11_000, 1000) for d in "ab"]))
    assert {p[1]["device_id"] for p in influx.points if p[0] == "device_health"} == {"a", "b"}
    assert all({"dead_letters", "rollouts_refused"} <= p[2].keys() for p in influx.points if p[0] == "device_health")
    sample = {"shard": "fleet-9", "state": "ok", "device_class": "rpi4", "agent_version": "1.0",
              "model_version": "none"}
    assert REGISTRY.get_sample_value("eddyline_fleet_devices", sample) == 2
    labels = {s.labels.get("device") for m in REGISTRY.collect() if m.name == "eddyline_fleet_devices"
              for s in m.samples}
    assert labels == {None}  # no device label
    sink.write(fleet_run(proc, [beat("b", t) for t in range(11_000, 22_000, 1000)]))  # a falls silent
    assert REGISTRY.get_sample_value("eddyline_fleet_devices", sample) == 1
    assert REGISTRY.get_sample_value("eddyline_fleet_devices", {**sample, "state": "silent"}) == 1


def test_a_bar_in_a_device_class_or_a_version_is_counted_under_its_own_label_and_does_not_stop_the_sink() -> None:
    from prometheus_client import REGISTRY

    from streams.sinks.fleet import FleetMetricsSink

    proc = FleetProcessor("fleet-bar", silent_after_s=5)
    kinds = {"a": {"device_class": "rpi4|usb-hat"}, "b": {}, "c": {"model_version": "2|canary"}}
    emits = fleet_run(proc, [beat(d, t, **kw) for t in range(0, 11_000, 1000) for d, kw in kinds.items()])
    FleetMetricsSink().write(emits)  # raised "Incorrect label count" at every summary, or mislabelled a version
    sample = {"shard": "fleet-bar", "state": "ok", "agent_version": "1.0", "model_version": "none"}
    assert REGISTRY.get_sample_value("eddyline_fleet_devices", {**sample, "device_class": "rpi4|usb-hat"}) == 1
    assert REGISTRY.get_sample_value("eddyline_fleet_devices", {**sample, "device_class": "rpi4"}) == 1
    canary = {**sample, "device_class": "rpi4", "model_version": "2|canary"}
    assert REGISTRY.get_sample_value("eddyline_fleet_devices", canary) == 1
