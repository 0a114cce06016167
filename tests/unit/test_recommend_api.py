"""The recommendations API on loopback, answering from a live click processor."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from connectors.broker import free_port
from connectors.movielens import click_events, load
from streams.flows import clicks
from streams.processor import Event, run_local
from streams.apps.recommend import RecommendServer


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
        assert {i["item_id"] for i in body["items"]} <= set(proc.model.items.n)
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


def test_items_the_user_has_seen_are_left_out_unless_asked_for(live) -> None:
    proc = live[clicks.MODEL_NAME]
    user = max(proc.shown, key=lambda u: len(proc.shown[u]))  # the user who rated most
    seen = set(proc.shown[user])
    with RecommendServer(live=live) as server:
        status, body = _get(f"{server.url}/recommendations/{user}?k=50")
        assert status == 200 and len(body["items"]) == 50
        assert not {i["item_id"] for i in body["items"]} & seen
        status, body = _get(f"{server.url}/recommendations/{user}?k=50&include_seen=true")
        assert status == 200 and {i["item_id"] for i in body["items"]} & seen  # popular items they rated
        assert _get(f"{server.url}/recommendations/{user}?include_seen=maybe")[0] == 400


def test_seen_items_survive_a_checkpoint_and_are_bounded_per_user() -> None:
    import pickle

    proc = clicks.ClickProcessor()
    base = {"producer": "t", "position": None, "rating": 5.0, "context": {}, "action": "IMPRESSION",
            "impression_id": None, "user_id": "u"}
    n = clicks.SEEN_PER_USER + 3
    proc.process([Event("clicks", "u", {**base, "event_id": f"e{i}", "event_time": i, "item_id": f"i{i}"})
                  for i in range(n)])
    again = pickle.loads(pickle.dumps(proc))
    assert list(again.shown["u"]) == [f"i{i}" for i in range(3, n)]  # the oldest three forgotten
    assert "i5" not in {i for i, _ in again.top_k("u", 10)} and "i0" in {i for i, _ in again.top_k("u", n)}


def test_the_api_is_served_once_per_process_on_the_configured_port(monkeypatch) -> None:
    import socket

    from streams.apps import recommend as recommend_api

    assert recommend_api.serve_from_settings(recommend_api.RecommendSettings()) is None  # no port: not served
    port = free_port()
    monkeypatch.setenv("EDDYLINE_RECOMMEND_PORT", str(port))
    server = recommend_api.serve_from_settings()
    try:
        assert server is not None and server.url == f"http://127.0.0.1:{port}"
        assert recommend_api.serve_from_settings() is server
        assert _get(f"{server.url}/health")[0] == 200
        with pytest.raises(ValueError, match="cannot listen"), socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            recommend_api.serve_from_settings(recommend_api.RecommendSettings(port=taken.getsockname()[1]))
    finally:
        recommend_api._serving.pop(("127.0.0.1", port)).stop()


def test_the_click_flow_serves_from_engine_start_up_and_building_it_starts_nothing(monkeypatch, tmp_path) -> None:
    import socket

    from streams.apps import recommend as recommend_api
    from streams.engines.bytewax import _SideSink
    from streams.flows import retraining

    port = free_port()
    monkeypatch.setenv("EDDYLINE_RECOMMEND_PORT", str(port))
    try:
        spec = retraining.flow(registry_dir=tmp_path / "registry")  # as the live page's lag chart builds every flow
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # still free for the process that runs the flow
        recommend_api.LIVE.pop(clicks.MODEL_NAME, None)
        for factory in spec.sinks:  # what the engine does as it starts the dataflow, before any event
            _SideSink(factory).build("side-sink", 0, 1)
        assert _get(f"http://127.0.0.1:{port}/health")[0] == 200  # up before the first event made a processor
        status, body = _get(f"http://127.0.0.1:{port}/models")
        assert status == 200 and clicks.MODEL_NAME not in {m["model_name"] for m in body["models"]}
    finally:
        server = recommend_api._serving.pop(("127.0.0.1", port), None)
        if server is not None:
            server.stop()


def test_the_users_whose_shown_items_are_kept_are_bounded_and_the_least_lately_active_go(monkeypatch) -> None:
    monkeypatch.setattr(clicks, "SEEN_USERS", 3)
    proc = clicks.ClickProcessor()
    base = {"producer": "t", "position": None, "rating": 5.0, "context": {}, "action": "IMPRESSION",
            "impression_id": None, "item_id": "i"}
    for i, user in enumerate(["a", "b", "c", "a", "d"]):  # a is active again before d arrives: b goes
        proc.process([Event("clicks", user, {**base, "event_id": f"e{i}", "event_time": i, "user_id": user})])
    assert list(proc.shown) == ["c", "a", "d"]
    again = clicks.ClickProcessor()
    again.restore(proc.snapshot())
    assert list(again.shown) == ["c", "a", "d"]


def test_the_click_model_keeps_statistics_of_the_users_the_flow_keeps(monkeypatch) -> None:
    monkeypatch.setattr(clicks, "SEEN_USERS", 3)
    proc = clicks.ClickProcessor()
    base = {"producer": "t", "position": None, "rating": 5.0, "context": {"genres": "Drama"}, "action": "IMPRESSION",
            "impression_id": None, "item_id": "i"}
    for i, user in enumerate(["a", "b", "c", "a", "d"]):
        proc.process([Event("clicks", user, {**base, "event_id": f"e{i}", "event_time": i, "user_id": user})])
    assert list(proc.model.users.n) == list(proc.shown) == ["c", "a", "d"]
    assert sorted(proc.model.user_genres.n) == ["a|Drama", "c|Drama", "d|Drama"]


def test_a_method_the_api_does_not_take_is_a_405_in_json_and_head_answers_like_get() -> None:
    """http.server answered a POST (a client that guessed the API) with a 501 server error in HTML."""
    import http.client

    with RecommendServer(live={}) as server:
        host, port = server.server_address[:2]
        for method in ("POST", "PUT", "DELETE"):
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request(method, "/recommendations/1", body=b"{}")
            response = conn.getresponse()
            assert (response.status, response.getheader("Allow")) == (405, "GET, HEAD"), method
            assert "GET /recommendations/<user>" in json.loads(response.read())["error"]
            conn.close()
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("HEAD", "/health")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        conn.close()
