"""Devices whose local inference slows down are flagged for re-optimisation, against peers or their own baseline."""

from __future__ import annotations

from streams.flows.edge_reoptimise import ReoptimiseWatch


def hb(device: str, latency: float | None, version: str = "2", device_class: str = "rpi4") -> dict:
    return {"device_id": device, "device_class": device_class, "model_version": version,
            "inference_latency_ms": latency}


def test_a_device_slower_than_its_peers_is_flagged_and_unflagged() -> None:
    w = ReoptimiseWatch(factor=2.0, consecutive=3, baseline_heartbeats=2)
    peers = ["pi-1", "pi-2", "pi-3"]
    for _ in range(2):
        assert w.process([hb(d, 1.0) for d in [*peers, "pi-slow"]]) == []
    flags = []
    for _ in range(3):
        flags += w.process([*(hb(d, 1.0) for d in peers), hb("pi-slow", 3.0)])
    assert [(f["device_id"], f["degraded"], f["basis"]) for f in flags] == [("pi-slow", True, "peers' median")]
    assert w.flagged() == ["pi-slow"]
    back = w.process([hb("pi-slow", 1.1)])
    assert back[0]["degraded"] is False and w.flagged() == []


def test_one_slow_heartbeat_is_not_a_trend_and_a_new_version_resets_the_baseline() -> None:
    w = ReoptimiseWatch(factor=2.0, consecutive=2, baseline_heartbeats=2)
    w.process([hb("pi", 1.0), hb("pi", 1.0)])
    assert w.process([hb("pi", 5.0), hb("pi", 1.0), hb("pi", 5.0)]) == []
    assert w.process([hb("pi", 5.0, version="3"), hb("pi", 5.0, version="3"), hb("pi", 6.0, version="3")]) == []
    assert [f["basis"] for f in w.process([hb("pi", 11.0, version="3"), hb("pi", 11.0, version="3")])] == [
        "device's own baseline"
    ]
    assert w.process([hb("pi", None)]) == []  # a model-less heartbeat says nothing about latency


def test_a_zero_baseline_or_a_non_finite_latency_does_not_break_the_watch() -> None:
    w = ReoptimiseWatch(factor=2.0, consecutive=2, baseline_heartbeats=2)
    w.process([hb("pi", 0.0), hb("pi", 0.0)])  # below the clock's resolution
    flags = w.process([hb("pi", float("nan")), hb("pi", -1.0), hb("pi", 0.5), hb("pi", 0.5)])
    assert [f["degraded"] for f in flags] == [True] and "x the device's own baseline" in flags[0]["reason"]
    assert w.invalid == 2


def _flags_judged_one_by_one(events: list[dict], factor: float, consecutive: int, baseline: int,
                             min_peers: int) -> list[tuple]:
    """The rule as the module states it, over the whole fleet at every heartbeat (the reference)."""
    import statistics

    devices: dict[str, dict] = {}
    out = []
    for h in events:
        d = devices.get(h["device_id"])
        if d is None or (d["class"], d["version"]) != (h["device_class"], h["model_version"]):
            d = devices[h["device_id"]] = {"class": h["device_class"], "version": h["model_version"], "baseline": [],
                                          "latency": None, "over": 0, "flagged": False}
        latency = h["inference_latency_ms"]
        if latency is None:
            continue
        d["latency"] = latency
        if len(d["baseline"]) < baseline:
            d["baseline"].append(latency)
            continue
        peers = [p["latency"] for k, p in devices.items() if k != h["device_id"] and p["latency"] is not None
                 and (p["class"], p["version"]) == (d["class"], d["version"])]
        ref = statistics.median(peers) if len(peers) >= min_peers else statistics.median(d["baseline"])
        d["over"] = d["over"] + 1 if latency > factor * ref else 0
        if (d["over"] >= consecutive) != d["flagged"]:
            d["flagged"] = not d["flagged"]
            out.append((h["device_id"], d["flagged"], round(ref, 9)))
    return out


def test_the_peer_reference_is_the_fleet_median_at_every_heartbeat() -> None:
    import random

    rng = random.Random(5)
    events = []
    for _ in range(4000):
        device = f"pi-{rng.randrange(40)}"
        slow = 4.0 if device in ("pi-3", "pi-7") and rng.random() < 0.7 else 1.0
        events.append(hb(device, rng.choice([None, round(rng.uniform(0.5, 1.5) * slow, 3)]),
                         version=rng.choice(["2", "2", "2", "3"]), device_class=rng.choice(["rpi4", "rpi4", "jetson"])))
    w = ReoptimiseWatch(factor=2.0, consecutive=2, baseline_heartbeats=3, min_peers=3)
    flags = [(f["device_id"], f["degraded"], round(f["reference_ms"], 9)) for f in w.process(events)]
    assert flags and flags == _flags_judged_one_by_one(events, 2.0, 2, 3, 3)
