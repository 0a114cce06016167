"""The chaos suite, bounded for ``make test``: the same harness as ``eddyline bench chaos``, shorter.

Under load from simulated devices (to Kafka and through the gateway) with malformed messages mixed in, the
anomaly flow is SIGKILLed and restarted at least ten times and the PagerDuty/Slack stand-in answers 503 for
a while. Nothing may be lost or doubled. The broker runs in memory here and is not restarted: on S3
(s3rver) Tansu reuses offsets after a restart and loses acknowledged records (``test_broker_restart.py``),
and under this load its fetches stalled for minutes; ``eddyline bench chaos`` runs on S3 with a broker
restart and reports what that cost.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.chaos import ChaosPlan, run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

# The flow's resident memory must stay bounded across restarts: about what one flow process needs.
RSS_BOUND_MB = 600


@pytest.mark.timeout(600)
def test_faults_under_load_lose_nothing_and_double_nothing(tmp_path: Path) -> None:
    plan = ChaosPlan(duration_s=120, kills=10, broker_restarts=0, outage_s=20, settle_s=180, durable=False)
    result = run_chaos(plan, tmp_path / "chaos")
    (tmp_path / "chaos" / "result.json").write_text(json.dumps(result, indent=2))
    context = f"{result}\nlogs in {tmp_path / 'chaos'}"
    assert result["kills"] >= 10 and result["receiver_outage_s"] >= 19, context
    assert result["broker_overlapping_batches"] == 0, context
    assert result["messages"] > 0 and result["readings"] > 0 and result["alerts"] > 0, context
    assert result["lost"] == 0 and result["accepted_not_in_topic"] == 0, context
    assert result["duplicate_scores"] == 0, context
    assert result["duplicate_incidents"] == 0, context
    assert result["duplicate_slack_messages"] == 0, context
    assert result["undelivered_alerts"] == 0, context
    assert result["dlq"] == result["malformed"] > 0, context
    assert 0 < result["max_rss_mb"] < RSS_BOUND_MB, context
