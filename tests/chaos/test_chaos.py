"""The chaos suite, bounded for ``make test``: the same harness as ``eddyline bench chaos``, shorter.

Under load from simulated devices (to Kafka and through the gateway) with malformed messages mixed in,
the anomaly flow is SIGKILLed and restarted at least ten times, the durable broker is killed and restarted
on its data, and the PagerDuty/Slack stand-in answers 503 for a while. Nothing may be lost or doubled.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import ChaosPlan, run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

# The flow's resident memory must stay bounded across restarts: about what one flow process needs.
RSS_BOUND_MB = 600


@pytest.mark.timeout(900)
def test_faults_under_load_lose_nothing_and_double_nothing(tmp_path: Path) -> None:
    plan = ChaosPlan(duration_s=120, kills=10, broker_restarts=1, outage_s=20, settle_s=300)
    result = run_chaos(plan, tmp_path / "chaos")
    context = f"{result}\nlogs in {tmp_path / 'chaos'}"
    assert result["kills"] >= 10 and result["broker_restarts"] == 1 and result["receiver_outage_s"] >= 19, context
    assert result["messages"] > 0 and result["readings"] > 0 and result["alerts"] > 0, context
    assert result["lost"] == 0, context
    assert result["duplicate_scores"] == 0, context
    assert result["duplicate_incidents"] == 0, context
    assert result["undelivered_alerts"] == 0, context
    assert result["dlq"] == result["malformed"] > 0, context
    assert 0 < result["max_rss_mb"] < RSS_BOUND_MB, context
