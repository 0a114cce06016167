"""Bearer tokens, compared in constant time so that response timing does not leak a token, and their scopes."""

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
        self.scopes = {name: frozenset(types) for name, types in settings.scopes.items()}
        self.key_scopes = {name: tuple(keys) for name, keys in settings.key_scopes.items()}

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
            raise _unauthorized("invalid_token", "the bearer token is not one of the gateway's tokens; check it, or ask "
                                                  "for one in [gateway] tokens")
        return found

    def check_scope(self, client: str, event_type: str) -> None:
        """403 unless ``client``'s scopes (or the ``'*'`` default) include ``event_type``; no scopes: all."""
        allowed = self.scopes.get(client, self.scopes.get("*"))
        if allowed is not None and event_type not in allowed:
            raise GatewayError(
                403,
                "forbidden_event_type",
                f"the token of {client!r} may not send {event_type} events (it may send: "
                f"{', '.join(sorted(allowed)) or 'none'}); ask for a token with that scope in [gateway] scopes",
            )

    def check_key(self, client: str, field: str, key: str) -> None:
        """403 unless ``client``'s key scopes (or the ``'*'`` default) cover ``key``; no key scopes: every key.

        A token of one device or call system must not post another's readings, nor hold its call's id (409 for
        the real call) or move its numbering.

        Parameters
        ----------
        client
            The token's name.
        field
            The key's field, for the message (``device_id``).
        key
            The event's key.
        """
        allowed = self.key_scopes.get(client, self.key_scopes.get("*"))
        if allowed is None or any(key == k or (k.endswith("*") and key.startswith(k[:-1])) for k in allowed):
            return
        raise GatewayError(
            403,
            "forbidden_key",
            f"the token of {client!r} may not send events of {field} {key[:60]!r}; send them with that {field}'s "
            "token, or ask for one whose [gateway] key_scopes cover it",
        )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _unauthorized(code: str, message: str) -> GatewayError:
    return GatewayError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="eddyline"'})
