"""``bench broker``: the embedded broker alone under a steady load, span by span."""

from __future__ import annotations

import json

from benchmarks.broker import _Requests, variant


def test_requests_of_one_kind_are_summed_over_the_brokers_a_client_knows():
    seen = _Requests("Produce")
    seen(json.dumps({"brokers": {"a:1/1": {"req": {"Produce": 7, "Fetch": 3}}, "b:2/2": {"req": {"Produce": 5}},
                                 "bootstrap": {}}}))
    assert seen.count == 12
    seen(json.dumps({"brokers": {}}))
    assert seen.count == 0


def test_a_short_load_is_received_whole_and_reported_per_span():
    result = variant(rate=200, seconds=3, linger_ms=10, fetch_wait_ms=10, span_s=1, devices=50)
    assert result["sent"] == 600 and result["received"] == 600  # every message offered came back
    spans = result["spans"]
    assert len(spans) >= 3
    stored = [s["produce_requests_stored"] for s in spans]
    assert stored == sorted(stored) and stored[-1] > 0
    assert all(s["fetch_requests"] > 0 and s["broker_cpu_per_s"] >= 0 for s in spans)
    assert all(s["p50_ms"] <= s["p99_ms"] for s in spans if s["messages"])
