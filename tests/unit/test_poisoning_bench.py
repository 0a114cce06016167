"""bench poisoning: the attack hurts the click model, the defence catches the bot and learns what honest users send."""

from __future__ import annotations

import json
from pathlib import Path


def test_poisoning_bench_reports_clean_attacked_and_defended(tmp_path: Path) -> None:
    from benchmarks import poisoning

    out = poisoning.run(tmp_path / "p.json", limit=4000)
    assert json.loads((tmp_path / "p.json").read_text()) == out
    bot = out["bot"]
    assert bot["attacked"]["auc"] < out["clean"]["auc"] - 0.05  # the attack does harm
    assert bot["defended"]["auc"] > bot["attacked"]["auc"] + 0.05  # and the defence undoes most of it
    assert bot["defended"]["attacker_quarantined"] and bot["defended"]["rule"] == "label_flip"
    assert bot["defended"]["attack_events_learned"] < bot["attacked"]["attack_events_learned"] / 5
    assert bot["defended"]["false_quarantines"] == 0 and out["clean_defended"]["false_quarantines"] == 0
    assert bot["attacked"]["attack_events"] == bot["defended"]["attack_events"] > 0
