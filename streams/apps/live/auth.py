"""Who may see the live page: a bearer token, or a cookie set by a one-time login link; same-origin WebSockets only.

The page shows transcripts of customer calls and alert summaries, so nothing but ``/login`` and the favicon
is served without credentials. A browser cannot send a bearer header, so ``login_url()`` hands out a link
whose code works once and sets an HttpOnly, SameSite=Strict session cookie. The WebSocket handshake is
also refused when it carries an ``Origin`` other than the page's own: a browser attaches cookies to
cross-site WebSocket handshakes, so without that check any web page the operator visits could read the view.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from connectors.config import Section

COOKIE = "eddyline_live"
MIN_TOKEN_CHARS = 16
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
WILDCARD = ("0.0.0.0", "::", "")


class LiveSettings(Section):
    """``[live]`` / ``EDDYLINE_LIVE_*``: the page's access token and the origins its WebSocket accepts.

    Parameters
    ----------
    token
        Bearer token for scripts (``Authorization: Bearer …``); a random one per start when unset, in
        which case only the printed login link (or this process) can get in.
    origins
        Further origins (``https://live.example.com``) whose pages may open the WebSocket, for a page
        served behind a proxy; the page's own address (and loopback names for a loopback or wildcard
        bind) are always accepted.
    login_code_ttl_s
        How long a login link works (it works once in any case); an unused link then expires.
    """

    toml_table = "live"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_LIVE_", extra="forbid")

    token: SecretStr | None = None
    origins: list[str] = Field(default_factory=list)
    login_code_ttl_s: float = Field(default=600.0, gt=0)

    @field_validator("token")
    @classmethod
    def _strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"the live page token is shorter than {MIN_TOKEN_CHARS} characters; use a random one, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value


class LiveAuth:
    """Checks requests to the live page; ``login_code()`` mints one-time codes for login links.

    Parameters
    ----------
    token
        The bearer token; a random one when None.
    origins
        Origins accepted on the WebSocket besides the page's own (see ``allowed_origins``).
    code_ttl_s
        Seconds a login code stays valid if unused.
    max_codes
        Unused codes kept at most; minting one more forgets the oldest.
    clock
        Monotonic seconds (a fake one in tests).
    """

    def __init__(self, token: str | None = None, origins: Iterable[str] = (), *, code_ttl_s: float = 600.0,
                 max_codes: int = 64, clock: Callable[[], float] = time.monotonic) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self.session = secrets.token_urlsafe(32)
        self.extra_origins = {o.rstrip("/") for o in origins}
        self.code_ttl_s, self.max_codes, self._clock = code_ttl_s, max_codes, clock
        self._codes: dict[str, float] = {}  # code -> when it expires, oldest first
        self._lock = threading.Lock()

    def login_code(self) -> str:
        code = secrets.token_urlsafe(24)
        with self._lock:
            now = self._clock()
            for old in [c for c, expires in self._codes.items() if expires <= now]:
                del self._codes[old]
            while len(self._codes) >= self.max_codes:
                del self._codes[next(iter(self._codes))]
            self._codes[code] = now + self.code_ttl_s
        return code

    def redeem(self, code: str) -> bool:
        """True once per code and only within its TTL: a login link that leaked into a log or history is of no
        use afterwards."""
        with self._lock:
            expires = self._codes.pop(code, None)
            return expires is not None and self._clock() < expires

    def codes(self) -> int:
        """Codes held (unused, possibly expired until the next mint)."""
        return len(self._codes)

    def allows(self, headers: Mapping[str, str]) -> bool:
        """A matching bearer token or session cookie, compared in constant time."""
        scheme, _, presented = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer" and _same(presented.strip(), self.token):
            return True
        return _same(cookie(headers.get("Cookie") or "", COOKIE), self.session)

    def set_cookie(self) -> str:
        return f"{COOKIE}={self.session}; HttpOnly; SameSite=Strict; Path=/"

    def allowed_origins(self, host: str, port: int) -> set[str]:
        """The page's own origins (loopback names too when bound to loopback or every address) and the extra ones."""
        names = {host if ":" not in host or host.startswith("[") else f"[{host}]"}
        if host in LOOPBACK or host in WILDCARD or host == "::1":
            names |= set(LOOPBACK)
        names -= set(WILDCARD) | {"[::]", "[]"}
        return {f"{s}://{n}:{port}" for s in ("http", "https") for n in names} | self.extra_origins

    def origin_ok(self, origin: str | None, host: str, port: int) -> bool:
        """No Origin (a script, not a browser) is fine: it still needs the token."""
        return origin is None or origin.rstrip("/") in self.allowed_origins(host, port)


def cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def _same(presented: str, expected: str) -> bool:
    return bool(presented) and hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode())
