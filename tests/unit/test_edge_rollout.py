"""Signed models, canary choice, the device's updater and the rollout controller, without a broker."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("cryptography")
np = pytest.importorskip("numpy")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edge_agent.inference.local import LocalInference  # noqa: E402
from edge_agent.inference.model import build_model  # noqa: E402
from edge_agent.inference.updates import ModelUpdates, UpdateFeed  # noqa: E402
from edge_agent.sources import Chunk  # noqa: E402
from schemas.canary import choose_canaries  # noqa: E402
from schemas.signing import SignatureError, Verifier, generate_keypair, sign_model, sign_rollout  # noqa: E402
from streams.flows.rollout import RolloutController, RolloutPolicy, previous_version  # noqa: E402

CFG = SimpleNamespace(model_path=None, threshold=4.0, send="raw", scarce_backlog=10, providers=[])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, bytes]:
    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "k.pem", d / "k.pub.pem")
    generate_keypair(d / "other.pem", d / "other.pub.pem")
    return (d / "k.pem").read_bytes(), (d / "k.pub.pem").read_bytes(), (d / "other.pem").read_bytes()


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_model(tmp_path_factory.mktemp("m") / "m.onnx", window=12).read_bytes()


def record(version: str, data: bytes, private: bytes, device_class: str = "rpi4") -> dict:
    base = {"event_id": version, "event_time": int(time.time() * 1000), "producer": "test", "name": "anomaly",
            "version": version, "device_class": device_class, "format": "onnx", "model": data}
    return sign_model(base, private)


_SEQUENCE = itertools.count(1)


def rollout(private: bytes, version: str, state: str, canaries: list[str], previous: str | None = None,
            sequence: int | None = None) -> dict:
    """A signed rollout record, newer than every one made before unless ``sequence`` says otherwise."""
    return sign_rollout({
        "event_id": f"{version}-{state}", "event_time": 0, "producer": "t", "rollout_id": f"r-{version}",
        "device_class": "rpi4", "version": version, "previous_version": previous, "state": state,
        "canary_percent": 10.0, "canary_devices": canaries, "started_ms": 0, "reason": "because",
        "sequence": next(_SEQUENCE) if sequence is None else sequence,
    }, private)


def test_signature_covers_bytes_and_metadata(keys, model_bytes: bytes) -> None:
    private, public, other = keys
    v = Verifier(public)
    good = record("1", model_bytes, private)
    v.verify(good)
    with pytest.raises(SignatureError, match="do not match their sha256"):
        v.verify({**good, "model": model_bytes + b"\0"})
    with pytest.raises(SignatureError, match="bad signature"):
        v.verify({**good, "device_class": "jetson"})  # relabelled for another class
    with pytest.raises(SignatureError, match="bad signature"):
        v.verify({**good, "signature": bytes(64)})
    with pytest.raises(SignatureError, match="signed with key"):
        v.verify(record("1", model_bytes, other))


def test_keys_are_never_overwritten(tmp_path: Path) -> None:
    generate_keypair(tmp_path / "a.pem", tmp_path / "a.pub.pem")
    assert (tmp_path / "a.pem").stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path / "a.pem", tmp_path / "b.pub.pem")


def test_a_key_is_never_written_through_a_link_and_a_failed_pair_leaves_nothing(tmp_path: Path) -> None:
    """A dangling link at the private key's path (another user's, in a shared folder) would carry the key to where
    the link points; and a pair cut short would leave a private key whose public half is missing, refused ever after
    as existing."""
    elsewhere = tmp_path / "elsewhere.pem"
    (tmp_path / "a.pem").symlink_to(elsewhere)
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path / "a.pem", tmp_path / "a.pub.pem")
    assert not elsewhere.exists() and not (tmp_path / "a.pub.pem").exists()
    with pytest.raises(FileNotFoundError):  # the public key's folder is not there
        generate_keypair(tmp_path / "b.pem", tmp_path / "missing" / "b.pub.pem")
    assert not (tmp_path / "b.pem").exists()
    generate_keypair(tmp_path / "b.pem", tmp_path / "b.pub.pem")
    assert (tmp_path / "b.pem").stat().st_mode & 0o777 == 0o600


def test_canaries_are_a_deterministic_share_that_changes_per_rollout() -> None:
    fleet = [f"pi-{i}" for i in range(200)]
    a = choose_canaries("r1", fleet, 10)
    assert len(a) == 20 and a == choose_canaries("r1", list(reversed(fleet)), 10)
    assert set(a) != set(choose_canaries("r2", fleet, 10))
    assert set(choose_canaries("r1", fleet, 5)) <= set(a)
    assert len(choose_canaries("r1", fleet[:3], 10)) == 1
    with pytest.raises(ValueError, match="--canary"):
        choose_canaries("r1", fleet, 0)


def updater(device: str, public: bytes) -> ModelUpdates:
    return ModelUpdates(device, "rpi4", CFG, Verifier(public), LocalInference(CFG))


def settle(u: ModelUpdates, timeout: float = 10.0) -> LocalInference | None:
    """Step until the background load finishes (or nothing is loading)."""
    deadline = time.monotonic() + timeout
    new = u.step()
    while new is None and u._loading is not None and time.monotonic() < deadline:
        time.sleep(0.01)
        new = u.step()
    return new


def test_canary_swaps_keeps_history_and_rolls_back_instantly(keys, model_bytes: bytes) -> None:
    private, public, _ = keys
    canary, other = updater("pi-1", public), updater("pi-2", public)
    base = canary.current
    series = [Chunk("t", "c", list(range(100)), list(np.sin(np.arange(100) / 5)))]
    base.score(series)
    for u in (canary, other):
        u.on_model(record("2", model_bytes, private))
        u.on_rollout(rollout(private, "2", "canary", ["pi-1"]))
    new = settle(canary)
    assert new is not None and new.version == "2" and canary.info()["model_state"] == "running"
    assert settle(other) is None and other.current.version == base.version
    assert new.score([Chunk("t", "c", [100], [0.5])])[0][0] != 0  # scored at once: the window came along
    canary.on_rollout(rollout(private, "2", "rolled_back", ["pi-1"]))
    back = canary.step()  # no load: the previous model is still there
    assert back is base and canary.info() == {"model_version": base.version, "model_state": "rolled_back",
                                              "model_message": "because"}


def _unscorable_model() -> bytes:
    """Loads, with the input shape the agent checks, but its input is not named ``x``: every score would fail."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceMax", ["input"], ["score"], keepdims=1)], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 12])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


@pytest.mark.parametrize("case", ["foreign key", "wrong class", "does not load", "cannot score"])
def test_refused_models_leave_the_running_one(keys, model_bytes: bytes, case: str) -> None:
    private, public, other_key = keys
    u = updater("pi-1", public)
    running = u.current.version
    if case == "foreign key":
        u.on_model(record("3", model_bytes, other_key))
    elif case == "wrong class":
        u.on_model(record("3", model_bytes, private, device_class="jetson"))
    elif case == "cannot score":
        u.on_model(record("3", _unscorable_model(), private))
    else:
        u.on_model(record("3", b"not an onnx model", private))
    u.on_rollout(rollout(private, "3", "promoted", []))
    assert settle(u) is None
    info = u.info()
    assert info["model_version"] == running and info["model_state"] == "refused"
    expected = {"foreign key": "signed with key", "wrong class": "built for jetson", "does not load": "failed to load",
                "cannot score": "cannot score a window"}
    assert expected[case] in info["model_message"] and "model 3" in info["model_message"]
    assert settle(u) is None and u.refused == 1  # not retried on every loop turn


def test_a_version_refused_then_republished_signed_right_is_loaded(keys, model_bytes: bytes) -> None:
    private, public, other_key = keys
    u = updater("pi-1", public)
    u.on_model(record("3", model_bytes, other_key))  # signed with the wrong key by mistake
    u.on_rollout(rollout(private, "3", "promoted", []))
    assert settle(u) is None and u.info()["model_state"] == "refused"
    u.on_model(record("3", model_bytes, private))  # the operator signs the same build again, with the right key
    new = settle(u)
    assert new is not None and new.version == "3" and u.info()["model_state"] == "running" and u.refused == 1



def test_the_rollouts_model_is_kept_when_models_are_read_before_rollouts(keys, model_bytes: bytes) -> None:
    private, public, _ = keys
    u = updater("pi-1", public)
    for i, v in enumerate(["5", "6", "7", "8", "9", "10"]):  # 5 promoted; 6 to 10 published, none rolled out yet
        u.on_model({**record(v, model_bytes, private), "event_time": 1000 + i})
    u.on_rollout(rollout(private, "5", "promoted", [], previous="4"))
    new = settle(u)
    assert new is not None and new.version == "5"
    assert sorted(v for _, v in u.models) == ["10", "5", "7", "8", "9"]  # pruned once the rollout is known

def test_a_rollout_signature_covers_its_fields_and_a_models_does_not_pass_for_one(keys, model_bytes: bytes) -> None:
    private, public, other = keys
    v = Verifier(public)
    good = rollout(private, "2", "promoted", [], previous="1")
    v.verify_rollout(good)
    changes = [{"version": "1"}, {"previous_version": "0"}, {"state": "rolled_back"}, {"canary_devices": ["pi-9"]},
               {"sequence": good["sequence"] + 1}, {"signature": record("2", model_bytes, private)["signature"]}]
    for change in changes:
        with pytest.raises(SignatureError, match="bad signature"):
            v.verify_rollout({**good, **change})
    with pytest.raises(SignatureError, match="signed with key"):
        v.verify_rollout(rollout(other, "2", "promoted", []))
    with pytest.raises(SignatureError, match="not signed"):
        v.verify_rollout({**good, "key_id": None, "signature": None})  # as written before rollouts were signed


def test_a_forged_or_replayed_rollout_never_downgrades_but_a_newer_rollback_does(
    keys, model_bytes: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Write access to the rollouts topic is not the signing key: an old record replayed, or one forged, leaves the
    device on its model, logged and counted; the operator's rollback (newer, signed) is followed, also after a
    restart, which re-reads the topic's history without counting it as an attack."""
    private, public, other = keys
    cache = tmp_path / "edge-model.avro"
    u = ModelUpdates("pi-1", "rpi4", CFG, Verifier(public), LocalInference(CFG), cache)
    for v in ("1", "2"):
        u.on_model(record(v, model_bytes, private))
    old, new = rollout(private, "1", "promoted", []), rollout(private, "2", "promoted", [], previous="1")
    u.on_rollout(old)
    u.on_rollout(new)
    assert settle(u).version == "2"
    unsigned = {**old, "sequence": new["sequence"] + 1, "key_id": None, "signature": None}
    resequenced = {**old, "sequence": new["sequence"] + 1}
    for attack in (old, unsigned, resequenced, rollout(other, "1", "promoted", [])):
        u.on_rollout(attack)
        assert settle(u) is None and u.current.version == "2", attack
    assert u.rollouts_refused == 4 and u.rollout == new
    assert u.info()["model_state"] == "running"  # nothing the controller would read as this canary's refusal
    assert "an old record replayed" in caplog.text and "not signed" in caplog.text and "bad signature" in caplog.text

    rollback = rollout(private, "1", "promoted", [])
    u.on_rollout(rollback)
    assert settle(u).version == "1"

    again = ModelUpdates("pi-1", "rpi4", CFG, Verifier(public), LocalInference(CFG), cache)
    for r in (old, new, rollback):
        again.on_rollout(r)
    assert again.rollouts_refused == 0 and again.rollout == rollback and again.wanted() == "1"
    again.on_rollout(new)
    assert again.rollouts_refused == 1 and again.wanted() == "1"


def test_a_rotated_key_starts_a_new_mark_but_the_old_key_stays_refused(keys, tmp_path: Path) -> None:
    """The mark is the trusted key's: a controller whose clock once ran far ahead left an old-key mark no new
    record would pass, and the device followed no rollout again after the key was rotated."""
    private, public, other = keys
    cache = tmp_path / "edge-model.avro"
    u = ModelUpdates("pi-1", "rpi4", CFG, Verifier(public), LocalInference(CFG), cache)
    ahead = rollout(private, "1", "promoted", [], sequence=4_102_444_800_000)  # signed at a clock in 2100
    u.on_rollout(ahead)
    assert u.mark == ahead["sequence"]

    rotated = ModelUpdates("pi-1", "rpi4", CFG, Verifier.for_signing_key(other), LocalInference(CFG), cache)
    fresh = rollout(other, "2", "promoted", [], previous="1", sequence=1_800_000_000_000)
    rotated.on_rollout(fresh)
    assert rotated.rollout == fresh and rotated.wanted() == "2" and rotated.rollouts_refused == 0
    rotated.on_rollout(ahead)  # the old key, however high its sequence, is refused by the new key
    assert rotated.rollout == fresh and rotated.rollouts_refused == 1

    again = ModelUpdates("pi-1", "rpi4", CFG, Verifier.for_signing_key(other), LocalInference(CFG), cache)
    again.on_rollout(rollout(other, "1", "promoted", [], sequence=fresh["sequence"] - 1))
    assert again.mark == fresh["sequence"] and again.rollout is None  # the new key's own mark holds


POLICY = RolloutPolicy(observe_s=60, swap_timeout_s=120, max_error_rate_per_min=2, max_latency_ms=20,
                       silence_intervals=3, fleet_window_s=600, min_joined_readings=0)  # health only; agreement: test_rollout_agreement


def health(device: str, version: str, errors: int = 0, latency: float = 1.0, state: str = "running",
           message: str | None = None) -> dict:
    return {"device_id": device, "device_class": "rpi4", "interval_s": 10.0, "model_version": version,
            "model_state": state, "model_message": message, "errors": errors, "inference_latency_ms": latency}


def controller() -> RolloutController:
    start = RolloutController.start(POLICY, "rpi4", "2", "1", [f"pi-{i}" for i in range(20)], 0, "t", 10)
    assert start["state"] == "canary" and len(start["canary_devices"]) == 2
    return RolloutController(POLICY, start, started_at=0.0)


def test_promotes_after_the_canaries_stay_healthy() -> None:
    c = controller()
    for t in range(0, 75, 10):
        c.observe([health(d, "2" if t else "1", errors=5) for d in c.canaries], float(t))
        decided = c.decide(float(t))
        if t < 70:
            assert decided is None, t
    assert decided is not None and decided["state"] == "promoted" and decided["previous_version"] == "1"
    assert previous_version(decided) == "2"


@pytest.mark.parametrize(
    "what,update,reason",
    [
        ("refusal", dict(version="1", state="refused", message="model 2: bad signature; still running 1"), "refused"),
        ("errors", dict(errors=10), "errors/min"),
        ("latency", dict(latency=45.0), "inference 45.0 ms"),
    ],
)
def test_rolls_back_on_a_sick_canary(what: str, update: dict, reason: str) -> None:
    c = controller()
    first, second = sorted(c.canaries)
    c.observe([health(first, "2"), health(second, "2")], 10.0)
    assert c.decide(10.0) is None
    c.observe([health(first, "2"), health(second, **{"version": "2", **update})], 20.0)
    decided = c.decide(20.0)
    assert decided["state"] == "rolled_back" and reason in decided["reason"] and second in decided["reason"]
    assert previous_version(decided) == "1"


def test_a_refusal_of_another_version_is_not_this_rollouts() -> None:
    c = controller()
    first, second = sorted(c.canaries)
    stale = "model 20: bad signature; still running 1"  # mentions 2 only inside other words
    c.observe([health(first, "1", state="refused", message=stale), health(second, "1")], 10.0)
    assert c.decide(10.0) is None


def test_errors_after_an_agent_restart_still_count() -> None:
    """A restart resets the agent's cumulative counter: a count below the one at the switch is new errors, not a
    negative rate that lets a crash-looping canary through."""
    c = controller()
    first, second = sorted(c.canaries)
    c.observe([health(first, "2", errors=500), health(second, "2")], 10.0)
    decided = None
    for t, errors in [(20, 5), (30, 10), (40, 15), (50, 0), (60, 5), (70, 10), (80, 15)]:
        c.observe([health(first, "2", errors=errors), health(second, "2")], float(t))
        decided = c.decide(float(t))
        if decided is not None:
            break
    assert decided is not None and decided["state"] == "rolled_back"
    assert first in decided["reason"] and "errors/min" in decided["reason"]


def test_rolls_back_on_silence_and_on_a_canary_that_never_switches() -> None:
    c = controller()
    first, second = sorted(c.canaries)
    c.observe([health(first, "2"), health(second, "2")], 10.0)
    c.observe([health(first, "2")], 39.0)
    assert c.decide(39.0) is None
    assert "silent" in c.decide(41.0)["reason"]
    c = controller()
    for t in range(0, 130, 10):
        c.observe([health(first, "2"), health(second, "1")], float(t))
    assert "did not switch" in c.decide(121.0)["reason"]


def test_each_record_is_sequenced_above_the_one_before_whatever_the_clock_says() -> None:
    start = RolloutController.start(POLICY, "rpi4", "2", "1", ["pi-1"], 5_000, "t", 100, after=10**9)
    assert start["sequence"] == 10**9 + 1 and start["signature"] is None  # the last record came from a clock ahead
    decided = RolloutController(POLICY, start, started_at=0.0).decide(130.0)
    assert decided["state"] == "rolled_back" and decided["sequence"] == 10**9 + 2 and decided["signature"] is None
    assert RolloutController.start(POLICY, "rpi4", "2", "1", ["pi-1"], 5_000, "t", 100)["sequence"] == 5_000


def test_start_refuses_an_empty_class_and_the_running_version() -> None:
    with pytest.raises(ValueError, match="no device of class"):
        RolloutController.start(POLICY, "rpi4", "2", "1", [], 0, "t")
    with pytest.raises(ValueError, match="already runs"):
        RolloutController.start(POLICY, "rpi4", "2", "2", ["pi-1"], 0, "t")


def test_the_running_model_survives_a_restart_without_the_broker(keys, model_bytes: bytes, tmp_path: Path) -> None:
    private, public, _ = keys
    cache = tmp_path / "edge-model.avro"
    u = ModelUpdates("pi-1", "rpi4", CFG, Verifier(public), LocalInference(CFG), cache)
    u.on_model(record("2", model_bytes, private))
    u.on_rollout(rollout(private, "2", "promoted", []))
    assert settle(u) is not None and cache.exists()
    again = ModelUpdates("pi-1", "rpi4", CFG, Verifier(public), LocalInference(CFG), cache)
    assert again.info()["model_version"] == "2" and again.previous is again.base
    again.on_rollout(rollout(private, "2", "rolled_back", []))
    assert again.step() is again.base and not cache.exists()  # back on the local model: nothing to keep

    u.on_rollout(rollout(private, "2", "promoted", []))  # u still runs 2; write its cache again, then tamper with it
    u._keep(u._records["2"])
    data = bytearray(cache.read_bytes())
    data[-10] ^= 1
    cache.write_bytes(bytes(data))
    tampered = ModelUpdates("pi-1", "rpi4", CFG, Verifier(public), LocalInference(CFG), cache)
    assert tampered.current is tampered.base and not cache.exists()


def test_check_config_names_the_trusted_key_and_explains_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_agent.cli import main

    monkeypatch.setenv("EDDYLINE_CONFIG", "unset.toml")
    kid = generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    base = (f'[kafka]\nnamespace = "unit."\n[edge]\ndevice_id = "pi-1"\ndevice_class = "rpi4"\n'
            f'buffer_path = "{tmp_path / "b.sqlite"}"\n[[edge.sources]]\nkind = "proc"\n')
    cases = {
        "ok": ("[edge.inference]\nenabled = true\n[edge.models]\nenabled = true\n"
               f'public_key = "{tmp_path / "k.pub.pem"}"\n', 0, f"for class rpi4, trusting key {kid}"),
        "no key": ("[edge.inference]\nenabled = true\n[edge.models]\nenabled = true\n", 2, "without a key"),
        "no inference": (f'[edge.models]\nenabled = true\npublic_key = "{tmp_path / "k.pub.pem"}"\n', 2,
                         "needs [edge.inference] enabled = true"),
        "private key given": ("[edge.inference]\nenabled = true\n[edge.models]\nenabled = true\n"
                              f'public_key = "{tmp_path / "k.pem"}"\n', 2, "cannot read the public key"),
    }
    for name, (extra, rc, expected) in cases.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(base + extra)
        assert main(["check-config", "--config", str(path)]) == rc, name
        captured = capsys.readouterr()
        assert expected in (captured.out if rc == 0 else captured.err), (name, captured)


def test_edge_commands_say_what_to_do_before_touching_kafka(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    monkeypatch.delenv("EDDYLINE_CONFIG", raising=False)
    monkeypatch.delenv("EDDYLINE_EDGE_SIGNING_KEY", raising=False)
    runner = CliRunner()
    cases = [
        (["edge", "rollout", "v2", "--device-class", "rpi4"], "no --key given; rollouts are signed"),
        (["edge", "rollout", "v2", "--device-class", "rpi4", "--canary", "150%"], "give e.g. --canary 10%"),
        (["edge", "rollout", "v2", "--device-class", "rpi4", "--canary", "ten"], "is not a share"),
        (["edge", "publish", str(tmp_path / "none.onnx"), "--version", "1", "--device-class", "rpi4", "--key",
          str(tmp_path / "k.pem")], "eddyline-edge build-model --out"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and expected in result.output, (args, result.output)
    assert runner.invoke(app, ["edge", "keygen", "--out", str(tmp_path)]).exit_code == 0
    again = runner.invoke(app, ["edge", "keygen", "--out", str(tmp_path)])
    assert again.exit_code == 2 and "never overwritten" in again.output


class _SlowBroker:
    """A consumer whose metadata request waits until the test lets the broker answer."""

    def __init__(self, topics: list[str]) -> None:
        self.topics, self.answer, self.asked_from, self.assigned = topics, threading.Event(), set(), []

    def list_topics(self, timeout: float) -> SimpleNamespace:
        self.asked_from.add(threading.get_ident())
        if not self.answer.wait(timeout):
            raise RuntimeError("metadata request timed out")
        return SimpleNamespace(topics={t: SimpleNamespace(error=None, partitions={0: None}) for t in self.topics})

    def incremental_assign(self, parts: list) -> None:
        self.assigned += parts

    def consume(self, n: int, timeout: float) -> list:
        assert timeout == 0
        return []

    def close(self) -> None:
        self.answer.set()


def test_sampling_never_waits_on_the_models_topics_metadata() -> None:
    feed = UpdateFeed({"bootstrap.servers": "127.0.0.1:9", "group.id": "unit"}, "models", "rollouts", SimpleNamespace())
    feed.consumer.close()
    feed.consumer = slow = _SlowBroker(["models", "rollouts"])
    for _ in range(100):  # the sampling loop's calls while the topics are missing and the broker is slow
        feed.poll()
    assert threading.get_ident() not in slow.asked_from  # asked (if yet) off the sampling loop
    assert slow.assigned == [] and not slow.answer.is_set()
    slow.answer.set()
    feed._watcher.join(10)
    feed.poll()
    assert sorted(p.topic for p in slow.assigned) == ["models", "rollouts"]
    feed.close()
