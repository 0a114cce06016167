"""Sensor sources read what the device exposes, and say what to fix when they cannot."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_agent.settings import (
    CommandSource,
    CsvSource,
    HwmonSource,
    PluginSource,
    ProcSource,
    SimulatedSource,
    ThermalSource,
)
from edge_agent.sources import Chunk, SourceError, build_source
from edge_agent.sources.command import parse_output
from edge_agent.sources.replay import parse_timestamp
from edge_agent.sources.simulated import Simulated, simulated_value


def test_simulated_is_reproducible_and_keeps_pace() -> None:
    start = time.time_ns() // 1_000_000 - 1_000  # a second ago
    src = Simulated(SimulatedSource(kind="simulated", name="sim", sensors=2, rate=200), start_ms=start)
    chunks = src.read()
    assert [c.sensor for c in chunks] == ["sim.s0", "sim.s1"]
    n = len(chunks[0].values)
    assert 100 <= n <= 110  # a second's worth at 100 readings per second per sensor
    assert chunks[0].timestamps[:3] == [start, start + 10, start + 20]
    assert chunks[1].values[5] == simulated_value(0, 1, 5)
    again = src.read()
    assert not again or again[0].timestamps[0] == chunks[0].timestamps[-1] + 10  # continues, never repeats


def test_simulated_follows_the_wall_clock_when_ntp_steps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000_000]  # ms: a device without a real-time clock, booted near 1970
    monkeypatch.setattr("edge_agent.sources.simulated.time", SimpleNamespace(time_ns=lambda: clock[0] * 1_000_000))
    src = Simulated(SimulatedSource(kind="simulated", name="sim", sensors=1, rate=10, interval_s=1.0))
    clock[0] += 1_000
    assert len(src.read()[0].values) == 11
    clock[0] -= 3_600_000  # stepped back an hour
    clock[0] += 1_000
    back = src.read()
    assert back and back[0].timestamps[0] == clock[0]  # not an hour of silence
    clock[0] += 30 * 86_400_000  # then forward a month
    ahead = src.read()[0]
    assert len(ahead.values) == 1 and ahead.timestamps == [clock[0]]  # not a month of readings in one read
    clock[0] += 1_000
    assert src.read()[0].timestamps == [clock[0] - 900 + 100 * i for i in range(10)]  # then at pace again


def _thermal_tree(root: Path) -> None:
    for i, (kind, milli) in enumerate([("cpu-thermal", "48312"), ("gpu-thermal", "45000")]):
        zone = root / f"thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")


def test_thermal_zones_in_celsius(tmp_path: Path) -> None:
    _thermal_tree(tmp_path)
    chunks = build_source(ThermalSource(kind="thermal", name="thermal", root=tmp_path)).read()
    assert {c.sensor: c.values[0] for c in chunks} == {
        "thermal.thermal_zone0.cpu-thermal": 48.312,
        "thermal.thermal_zone1.gpu-thermal": 45.0,
    }
    assert all(c.unit == "celsius" for c in chunks)


def test_hwmon_scales_units_and_uses_labels(tmp_path: Path) -> None:
    chip = tmp_path / "hwmon0"
    chip.mkdir()
    (chip / "name").write_text("ina3221\n")
    (chip / "in1_input").write_text("5080\n")
    (chip / "in1_label").write_text("VDD_IN\n")
    (chip / "power1_input").write_text("2500000\n")
    (chip / "fan1_input").write_text("1200\n")
    chunks = {c.sensor: c for c in build_source(HwmonSource(kind="hwmon", name="hw", root=tmp_path)).read()}
    assert chunks["hw.hwmon0.ina3221.VDD_IN"].values == [5.08]
    assert chunks["hw.hwmon0.ina3221.VDD_IN"].unit == "volt"
    assert chunks["hw.hwmon0.ina3221.power1"].values == [2.5]
    assert chunks["hw.hwmon0.ina3221.fan1"].unit == "rpm"


def test_an_hwmon_input_whose_driver_hangs_holds_up_neither_the_agent_nor_the_other_inputs(tmp_path: Path) -> None:
    chip = tmp_path / "hwmon0"
    chip.mkdir()
    (chip / "name").write_text("ina3221\n")
    (chip / "in1_input").write_text("5080\n")
    hung = chip / "curr1_input"
    os.mkfifo(hung)  # its read blocks, as a driver's waiting on a dead I2C bus does
    src = build_source(HwmonSource(kind="hwmon", name="hw", root=tmp_path, timeout_s=0.2))
    reads: list[list[str]] = []
    agent = threading.Thread(target=lambda: reads.extend([c.sensor for c in src.read()] for _ in range(3)), daemon=True)
    try:
        agent.start()
        agent.join(60)
        assert not agent.is_alive(), "the agent's thread is stuck in the hung read"
        assert reads[1:] == [["hw.hwmon0.ina3221.in1"]] * 2  # the hung input left out, the other read
        assert src.errors == 1  # counted once, not every round while it hangs
    finally:
        with contextlib.suppress(OSError):  # a writer that comes and goes: the hung read returns
            os.close(os.open(hung, os.O_WRONLY | os.O_NONBLOCK))


def test_sysfs_sources_say_what_to_do_when_absent(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="remove this source or set root="):
        build_source(ThermalSource(kind="thermal", name="t", root=tmp_path))
    with pytest.raises(SourceError, match="no hwmon inputs"):
        build_source(HwmonSource(kind="hwmon", name="h", root=tmp_path))


def test_proc_reads_this_machine() -> None:
    src = build_source(ProcSource(kind="proc", name="proc"))
    time.sleep(0.05)
    chunks = {c.sensor: c.values[0] for c in src.read()}
    assert chunks["proc.mem.used"] > 0 and chunks["proc.mem.available"] > 0
    assert "proc.load1" in chunks
    assert 0.0 <= chunks.get("proc.cpu.busy", 0.0) <= 100.0


def test_csv_replay_reports_bad_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "timestamp,sensor,value,unit\n"
        "1700000000000,temp,21.5,celsius\n"
        "2023-11-14T22:13:20.001Z,temp,21.6,celsius\n"
        "1700000000002,temp,oops,celsius\n"
        "1700000000003,hum,40,percent\n"
    )
    src = build_source(CsvSource(kind="csv", name="replay", path=path, rows_per_read=10))
    chunks = {c.sensor: c for c in src.read()}
    assert chunks["temp"].timestamps == [1700000000000, 1700000000001]
    assert chunks["temp"].values == [21.5, 21.6]
    assert chunks["hum"].unit == "percent"
    assert src.errors == 1 and "line 4 rejected" in caplog.text
    assert src.read() == []


def test_csv_replay_needs_its_columns(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("time,name,v\n1,a,2\n")
    with pytest.raises(SourceError, match="lacks column"):
        build_source(CsvSource(kind="csv", name="r", path=tmp_path / "bad.csv"))
    assert parse_timestamp("1970-01-01T00:00:01") == 1000


def test_command_output_becomes_readings() -> None:
    script = "print('# header'); print('temp 21.5 celsius'); print('rpm=1200'); print('garbage line here too')"
    src = build_source(CommandSource(kind="command", name="cmd", command=[sys.executable, "-c", script]))
    chunks = {c.sensor: c for c in src.read()}
    assert chunks["cmd.temp"].values == [21.5] and chunks["cmd.temp"].unit == "celsius"
    assert chunks["cmd.rpm"].values == [1200.0]
    assert src.errors == 1
    assert parse_output("x nan")[1] == ["x nan"]


def test_command_failure_is_an_error_with_a_hint() -> None:
    src = build_source(CommandSource(kind="command", name="c", command=["/nonexistent/tool"]))
    with pytest.raises(RuntimeError, match="not found; fix command="):
        src.read()
    fails = build_source(CommandSource(kind="command", name="c", command=[sys.executable, "-c", "raise SystemExit(3)"]))
    with pytest.raises(RuntimeError, match="exited 3"):
        fails.read()


def _gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for init to reap it counts as ended)."""
    for _ in range(100):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in "ZX":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def test_a_hung_command_is_killed_with_everything_it_started(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
              f"open({str(child)!r}, 'w').write(str(p.pid)); time.sleep(300)")
    src = build_source(CommandSource(kind="command", name="c", command=[sys.executable, "-c", script], timeout_s=3))
    with pytest.raises(RuntimeError, match="ran past 3.0s"):
        src.read()
    assert _gone(int(child.read_text()))  # else one more hung tool every interval, for months


def test_a_command_printing_without_end_is_cut_off() -> None:
    script = "import sys; sys.stdout.write('t 1\\n' * 1_000_000)"
    src = build_source(CommandSource(kind="command", name="c", command=[sys.executable, "-c", script]))
    with pytest.raises(RuntimeError, match="printed more than 65536 bytes"):
        src.read()  # not a million readings held in memory at once


class FakeI2C:
    """Stands in for an I2C driver a user would write: the plug-in contract only."""

    def __init__(self, name: str, interval_s: float, address: int) -> None:
        self.name, self.interval_s, self.address = name, interval_s, address

    def read(self) -> list[Chunk]:
        return [Chunk(f"{self.name}.addr{self.address}", "celsius", [1], [20.0])]

    def close(self) -> None:
        pass


def test_plugin_by_dotted_path() -> None:
    cfg = PluginSource(kind="plugin", name="bme", target=f"{__name__}:FakeI2C", options={"address": 118})
    src = build_source(cfg)
    assert src.read()[0].sensor == "bme.addr118"


def test_plugin_errors_name_the_fix() -> None:
    with pytest.raises(SourceError, match="no plug-in 'bme280' in entry point group"):
        build_source(PluginSource(kind="plugin", name="p", target="bme280"))
    with pytest.raises(SourceError, match="cannot import"):
        build_source(PluginSource(kind="plugin", name="p", target="no_such_pkg.mod:X"))
    with pytest.raises(SourceError, match="rejected its options"):
        build_source(PluginSource(kind="plugin", name="p", target=f"{__name__}:FakeI2C", options={"bus": 1}))


def test_bad_lines_are_counted_each_read_and_logged_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A command printing a header every second would write 86,400 warnings a day to the journal."""
    script = "print('Sensor Value'); print('temp 21.5')"
    cmd = build_source(CommandSource(kind="command", name="cmd", command=[sys.executable, "-c", script]))
    path = tmp_path / "r.csv"
    path.write_text("timestamp,sensor,value\n1700000000000,temp,oops\n1700000000001,temp,21.5\n")
    csv = build_source(CsvSource(kind="csv", name="replay", path=path, rows_per_read=2, loop=True))
    with caplog.at_level("WARNING"):
        for _ in range(3):
            assert [c.values for c in cmd.read()] == [[21.5]] and [c.values for c in csv.read()] == [[21.5]]
    assert cmd.errors == 3 and csv.errors == 3
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["source cmd", "source replay"]


def test_a_bad_line_behind_a_header_is_logged_too(caplog: pytest.LogCaptureFixture) -> None:
    """Each warning quoted the read's first bad line: the header a command prints first, never the line after it
    that said what was wrong."""
    script = "print('Sensor Value Unit'); print('temp 21.5 C'); print('probe-2 disconnected')"
    cmd = build_source(CommandSource(kind="command", name="cmd", command=[sys.executable, "-c", script]))
    cmd._bad_log.every_s = 0.0  # a warning due at each read
    with caplog.at_level("WARNING"):
        for _ in range(2):
            assert [c.values for c in cmd.read()] == [[21.5]]
    assert [r.getMessage().count("'probe-2 disconnected'") for r in caplog.records] == [1, 1] and cmd.errors == 4


def test_a_simulated_sensor_slower_than_a_reading_a_minute_keeps_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its next reading is due minutes ahead: that is no clock step to follow with a reading at every read."""
    clock = [1_800_000_000_000]
    monkeypatch.setattr("edge_agent.sources.simulated.time", SimpleNamespace(time_ns=lambda: clock[0] * 1_000_000))
    src = Simulated(SimulatedSource(kind="simulated", name="slow", sensors=1, rate=0.01, interval_s=1.0))
    stamps = []
    for _ in range(1000):  # 1000 s, read every second
        clock[0] += 1000
        stamps += [t for c in src.read() for t in c.timestamps]
    assert stamps == [1_800_000_000_000 + 100_000 * k for k in range(11)]  # one every 100 s, on time
