"""The registry outbox: a read of the registry counts as settled only once every change it was told of is applied."""

from __future__ import annotations

import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from models.registry import ModelRegistry, RegistryError, RegistryOutbox


class _HeldRegistry(ModelRegistry):
    """A local registry whose second read waits until the test lets it go (a slow registry server)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads = 0
        self.go = threading.Event()

    def view(self, model: str) -> dict[str, Any]:
        self.reads += 1
        if self.reads == 2:
            self.go.wait(10)
        return super().view(model)


def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert check()


def test_a_read_taken_before_a_change_was_applied_is_not_settled(tmp_path: Path) -> None:
    reg = _HeldRegistry(tmp_path)
    reg.register("m", {"w": [1]}, reason="initial", champion=True)
    reg.register("m", {"w": [2]}, reason="challenger", parent="1")
    outbox = RegistryOutbox(reg, "m", background=True, poll_s=60, retry_s=60)
    first_refresh = outbox._refresh

    def flow_submits_meanwhile() -> None:  # the flow queues a promotion between the drain and this read
        if reg.reads == 0:
            outbox.submit("promote", version="2", reason="better", action_id="p2")
        first_refresh()

    outbox._refresh = flow_submits_meanwhile  # type: ignore[method-assign]
    outbox.step()
    try:
        _until(lambda: reg.reads == 2 and outbox.pending == 0)  # promoted; the read after it is still on its way
        assert reg.champion("m").version == "2"
        assert outbox.settled() is None  # the only read there is shows the champion before the promotion
        reg.go.set()
        _until(lambda: outbox.settled() is not None)
        assert outbox.settled()["champion"].version == "2"
    finally:
        reg.go.set()
        outbox.close()


def test_an_outbox_is_never_pickled_its_queue_is_checkpointed_as_plain_data(tmp_path: Path) -> None:
    box = RegistryOutbox(ModelRegistry(tmp_path), "m")
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(box)
    box.submit("register", artifact={"w": [1.0]}, reason="first", champion=True, action_id="a1")
    again = RegistryOutbox(ModelRegistry(tmp_path), "m")
    again.load(box.state())
    assert again.pending == 1
    again.step()
    assert again.pending == 0 and again.result("a1") is not None


def test_a_change_the_registry_refuses_is_logged_and_dropped_and_the_next_ones_are_applied(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The folder was restored from a backup that lacks version 2: retrying its rejection would fail at every step
    (every batch of the flow) and hold up every later change, at every restart."""
    reg = ModelRegistry(tmp_path)
    reg.register("m", {"w": [1]}, reason="initial", champion=True)
    outbox = RegistryOutbox(reg, "m")
    outbox.submit("reject", version="2", reason="worse", action_id="r2")
    outbox.submit("register", artifact={"w": [3]}, reason="trial", parent="7", action_id="a3")
    outbox.submit("register", artifact={"w": [2]}, reason="trial", parent="1", action_id="a2")
    outbox.step()
    assert outbox.pending == 0 and [v.version for v in reg.versions("m")] == ["1", "2"]
    assert "registry change reject of m refused, dropped: model 'm' has no version '2'" in caplog.text
    with pytest.raises(RegistryError, match="parent version '7'"):  # the flow stops waiting for its version
        outbox.result("a3")
    assert outbox.result("a2").version == "2" and outbox.result("a3") is None
