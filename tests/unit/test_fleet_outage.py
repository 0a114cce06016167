"""The fleet after an outage of the broker or of the platform: a gap in which nobody was heard is nobody's silence."""

from __future__ import annotations

import pytest

from streams.flows.fleet import FleetProcessor
from tests.unit.test_fleet_flow import alerts, beat, fleet_run

HOUR = 3_600_000


@pytest.mark.parametrize("devices", [5, 40])  # under ten devices the clock is the latest; above, a quantile
def test_a_fleet_back_from_an_hour_long_outage_pages_only_for_the_devices_that_did_not_come_back(devices: int) -> None:
    fleet = [f"d{i:02}" for i in range(devices)]
    stopped, lost = fleet[0], fleet[1]  # one stopped 200 s before the outage, one never came back after it
    proc = FleetProcessor("fleet", silent_after_s=300)
    before = [beat(d, t, interval_s=10.0) for t in range(0, 600_000, 10_000) for d in fleet
              if d != stopped or t < 400_000]
    assert alerts(fleet_run(proc, before)) == []
    back = 600_000 + HOUR
    returning = [d for d in reversed(fleet) if d not in (stopped, lost)]
    after = [beat(d, back + 500 * i, interval_s=10.0) for i, d in enumerate(returning)]  # reconnecting over 20 s
    after += [beat(d, t, interval_s=10.0) for t in range(back + 30_000, back + 600_000, 10_000) for d in returning]
    assert sorted(alerts(fleet_run(proc, after))) == [("OPENED", d, "silent") for d in sorted((stopped, lost))]


def test_a_device_clock_put_a_day_ahead_in_a_small_fleet_pages_only_for_the_device_that_stops() -> None:
    """On a broker that keeps create times the broker's timestamp is the device's clock: the fleet clock leaps."""
    proc = FleetProcessor("fleet", silent_after_s=300)
    fleet = "abcde"
    assert alerts(fleet_run(proc, [beat(d, t, interval_s=10.0) for t in range(0, 600_000, 10_000)
                                   for d in fleet])) == []
    ahead = [beat(d, t + (24 * HOUR if d == "a" else 0), interval_s=10.0) for t in range(600_000, 2_400_000, 10_000)
             for d in fleet if d != "e" or t < 1_200_000]
    assert alerts(fleet_run(proc, ahead)) == [("OPENED", "e", "silent")]


def test_a_device_beating_while_the_clock_stands_on_a_stopped_one_is_not_paged_when_a_slow_beat_moves_it() -> None:
    """Twelve devices, two beating every 10 s, ten every hour (six minutes apart). One fast device stops: the clock,
    which ignores the top device, stands on its last stamp. The other fast one, heard at that standing clock, was
    paged silent at each hourly beat that moved the clock six minutes, and resolved ten seconds later."""
    proc = FleetProcessor("fleet", silent_after_s=300)
    evs = [beat(d, t, interval_s=10.0) for d in ("f1", "f2") for t in range(0, 2 * HOUR, 10_000)]
    evs += [beat(f"h{i}", t + 360_000 * i, interval_s=3600.0) for i in range(10) for t in range(0, 3 * HOUR, HOUR)]
    evs += [beat("f2", t, interval_s=10.0) for t in range(2 * HOUR, 3 * HOUR, 10_000)]  # f1 stopped at 2 h
    evs.sort(key=lambda e: (e.broker_ms, e.key))
    assert alerts(fleet_run(proc, evs)) == [("OPENED", "f1", "silent")]


def test_a_site_offline_while_devices_elsewhere_keep_beating_is_paged_when_it_is_back() -> None:
    """37 devices of a factory lose their link for an hour; three elsewhere (under the share the clock ignores) beat
    on. The platform heard them all along: the factory's hour is real silence, which was taken for an outage and
    paged nobody. The clock stood, so the pages come when the factory is back (the honest limit)."""
    factory, elsewhere = [f"x{i:02}" for i in range(37)], ["e0", "e1", "e2"]
    proc = FleetProcessor("fleet", silent_after_s=300)
    evs = [beat(d, t, interval_s=10.0) for t in range(0, HOUR, 10_000) for d in factory + elsewhere]
    evs += [beat(d, t, interval_s=10.0) for t in range(HOUR, 2 * HOUR, 10_000) for d in elsewhere]
    evs += [beat(d, t, interval_s=10.0) for t in range(2 * HOUR, 2 * HOUR + 600_000, 10_000)
            for d in factory + elsewhere]
    opened = [a for a in alerts(fleet_run(proc, evs)) if a[0] == "OPENED"]
    assert opened == [("OPENED", d, "silent") for d in factory[1:]]  # all but the first back, which moved the clock
