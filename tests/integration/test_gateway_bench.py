"""`eddyline bench gateway` on a tiny load: the JSON has the promised keys and every accepted event landed."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.gateway import run


def test_bench_gateway_writes_its_json_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "gateway.json"
    result = run(out, requests=64, connections=4, readings=10, duration=20)
    assert json.loads(out.read_text()) == result
    assert {"requests_per_s", "p99_ms", "errors"} <= result.keys()
    assert result["errors"] == 0 and result["ws_errors"] == 0
    assert result["accepted"] == 128 and result["landed_on_topic"] == 128
    assert result["requests_per_s"] > 0 and result["p99_ms"] > 0
