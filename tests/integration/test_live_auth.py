"""The live page lets in only its token or a login link's cookie, and its WebSocket only its own origin."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from connectors.kafka import create_topics
from streams.apps.live import LivePage
from streams.apps.live.state import TOPICS

pytestmark = pytest.mark.integration


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def live(kafka_settings):
    create_topics(kafka_settings, list(TOPICS))
    with LivePage(kafka_settings, port=0, token="a-token-of-at-least-16-chars") as page:
        yield page


def test_every_page_needs_the_token_or_a_login_cookie(live) -> None:
    for path in ("", "snapshot.json", "app.js"):
        status, headers, body = get(live.url + path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer") and b"log in" in body
    assert get(live.url, {"Authorization": "Bearer wrong-token-of-some-length"})[0] == 401
    status, _, body = get(live.url + "snapshot.json", {"Authorization": f"Bearer {live.token}"})
    assert status == 200 and "alerts" in json.loads(body)

    link = live.login_url()
    status, headers, _ = get(link)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert get(live.url, {"Cookie": cookie})[0] == 200
    assert get(link)[0] == 401, "a login link works once"
    assert get(live.url, {"Cookie": "eddyline_live=forged"})[0] == 401


def test_the_websocket_needs_credentials_and_refuses_other_origins(live) -> None:
    ws_url = live.url.replace("http", "ws") + "ws"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, open_timeout=10)
    assert refused.value.response.status_code == 401

    bearer = {"Authorization": f"Bearer {live.token}"}
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, origin="http://evil.example", additional_headers=bearer, open_timeout=10)
    assert refused.value.response.status_code == 403

    cookie = get(live.login_url())[1]["Set-Cookie"].split(";")[0]
    own = live.url.rstrip("/")
    with pytest.raises(InvalidStatus) as refused:  # the operator's cookie, sent by a foreign page
        connect(ws_url, origin="http://evil.example", additional_headers={"Cookie": cookie}, open_timeout=10)
    assert refused.value.response.status_code == 403
    with connect(ws_url, origin=own, additional_headers={"Cookie": cookie}, open_timeout=10) as ws:
        assert "alerts" in json.loads(ws.recv(timeout=10))
    with connect(ws_url, additional_headers=bearer, open_timeout=10) as ws:  # a script: no Origin, a token
        assert "alerts" in json.loads(ws.recv(timeout=10))
