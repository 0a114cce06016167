"""bench clicks: every row names its inputs and learner, and all models are scored on the same events."""

from __future__ import annotations

import json
from pathlib import Path


def test_clicks_bench_reports_each_model_with_what_it_measures(tmp_path: Path) -> None:
    from benchmarks import clicks

    out = clicks.run(tmp_path / "c.json", limit=1500, hit_every=5, negatives=20)
    assert json.loads((tmp_path / "c.json").read_text()) == out
    assert set(out["models"]) == {"online", "river", "river_fm", "river_ffm", "river_on_ours", "popularity"}
    # same raw inputs, different learners; same features, different learners
    assert out["models"]["river"]["inputs"] == out["models"]["river_fm"]["inputs"] == out["models"]["river_ffm"]["inputs"]
    assert out["models"]["online"]["inputs"] == out["models"]["river_on_ours"]["inputs"]
    assert out["events"] == 1500 and out["hit10_trials"] > 0
    for name in out["models"]:
        assert 0.0 < out[f"{name}_auc"] < 1.0 and 0.0 <= out[f"{name}_hit10"] <= 1.0
    assert out["river_on_ours_auc"] > 0.6  # our features carry signal for river's learner too


def test_the_field_aware_machine_sees_user_item_and_genre_as_three_fields() -> None:
    from river import facto

    from benchmarks.clicks import _river_x

    x = _river_x("u_1", "i_2", ("Comedy", "Film-Noir"))
    assert {facto.FFMClassifier()._field(k) for k in x} == {"u", "i", "g"}
