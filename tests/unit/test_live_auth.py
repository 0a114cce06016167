"""Login codes of the live page: once, within their TTL, and never more than a bounded number held."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.apps.live.auth import LiveAuth, LiveSettings


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_login_code_works_once_and_only_within_its_ttl() -> None:
    clock = _Clock()
    auth = LiveAuth(code_ttl_s=60, clock=clock)
    used, old = auth.login_code(), auth.login_code()
    assert auth.redeem(used) and not auth.redeem(used)
    clock.now += 61
    assert not auth.redeem(old)  # never used, but too old
    fresh = auth.login_code()
    clock.now += 59
    assert auth.redeem(fresh) and not auth.redeem("made-up")


def test_the_code_store_is_bounded_and_forgets_expired_codes() -> None:
    clock = _Clock()
    auth = LiveAuth(code_ttl_s=60, max_codes=5, clock=clock)
    codes = [auth.login_code() for _ in range(8)]
    assert auth.codes() == 5 and not auth.redeem(codes[0]) and auth.redeem(codes[-1])
    clock.now += 61
    auth.login_code()
    assert auth.codes() == 1


def test_the_ttl_is_a_live_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDYLINE_LIVE_LOGIN_CODE_TTL_S", "120")
    assert LiveSettings().login_code_ttl_s == 120
    monkeypatch.setenv("EDDYLINE_LIVE_LOGIN_CODE_TTL_S", "0")
    with pytest.raises(ValidationError):
        LiveSettings()
