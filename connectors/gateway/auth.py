"""Bearer tokens, compared in constant time so that response timing does not leak a token."""

from __future__ import annotations

import hashlib
import hmac

from connectors.gateway.errors import GatewayError
from connectors.gateway.settings import GatewaySettings

ANONYMOUS = "anonymous"


class TokenAuth:
    """Maps an ``Authorization`` header to the client's name, or raises a 401 ``GatewayError``.

    Tokens are compared as SHA-256 digests (equal length whatever was sent) and every configured token is
    compared on every request, so neither the token's length nor which client it matched shows in timing.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self._digests = [(name, _digest(t.get_secret_value())) for name, t in settings.tokens.items()]
        self.anonymous = settings.allow_anonymous

    def client(self, authorization: str | None) -> str:
        if authorization is None:
            if self.anonymous:
                return ANONYMOUS
            raise _unauthorized("missing_token", "send the header 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("bad_authorization", "the Authorization header must be 'Bearer <token>'")
        presented = _digest(token.strip())
        found = None
        for name, digest in self._digests:
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        if found is None:
            raise _unauthorized("invalid_token", "the bearer token is not one of the gateway's tokens")
        return found


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _unauthorized(code: str, message: str) -> GatewayError:
    return GatewayError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="eddyline"'})
