"""The recommendations API on loopback, answering from a live click processor."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from benchmarks.movielens import click_events, load
from streams import clicks
from streams.processor import Event, run_local
from streams.recommend_api import RecommendServer


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def live() -> dict:
    procs: dict = {}
    run_local(clicks.flow(), [Event("clicks", e["user_id"], e) for e in click_events(load(limit=1500))], procs)
    return {clicks.MODEL_NAME: procs[clicks.MODEL_NAME]}


def test_top_k_for_a_user_comes_from_the_live_model(live) -> None:
    proc = live[clicks.MODEL_NAME]
    with RecommendServer(live=live) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, body = _get(f"{server.url}/recommendations/15?k=5")
        assert status == 200 and body["model_name"] == clicks.MODEL_NAME and body["model_version"] == proc.version
        assert [i["item_id"] for i in body["items"]] == [i for i, _ in proc.top_k("15", 5)]
        scores = [i["score"] for i in body["items"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)
        assert set(i["item_id"] for i in body["items"]) <= set(proc.model.items.n)
        status, body = _get(f"{server.url}/recommendations/a-new-user?k=3")  # cold start still answers
        assert status == 200 and len(body["items"]) == 3
        assert _get(f"{server.url}/models")[1] == {"models": [{"model_name": clicks.MODEL_NAME,
                                                               "model_version": proc.version}]}


def test_bad_requests_are_clear_errors(live) -> None:
    with RecommendServer(live=live) as server:
        assert _get(f"{server.url}/recommendations/1?k=zero")[0] == 400
        assert _get(f"{server.url}/recommendations/1?k=0")[0] == 400
        status, body = _get(f"{server.url}/recommendations/1?model=nope")
        assert status == 404 and body["models"] == [clicks.MODEL_NAME]
        assert _get(f"{server.url}/elsewhere")[0] == 404
    with RecommendServer(live={}) as empty:
        assert _get(f"{empty.url}/recommendations/1")[0] == 503
        assert _get(f"{empty.url}/health")[1] == {"status": "ok", "models": 0}
