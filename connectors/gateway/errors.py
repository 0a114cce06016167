"""The one shape of every rejection: a status, a stable code, what is wrong and where, and what to do.

A message says what is wrong, then ``; `` and what to do, so that the advice can be kept whole where the message
must be short (a WebSocket close reason) and swapped for a client that cannot follow it (a call cannot retry an
event under its id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.responses import JSONResponse

CLOSE_REASON_BYTES = 123  # RFC 6455: a close frame carries 125 bytes at most, two of them the code


@dataclass
class Problem:
    """A field-level problem: ``path`` like ``series[0].values[3]``, ``message`` says what to fix."""

    path: str
    message: str


@dataclass
class GatewayError(Exception):
    status: int
    code: str
    message: str
    problems: list[Problem] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # more fields of the body, e.g. the ids a 503 assigned

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.problems:
            out["problems"] = [{"path": p.path, "message": p.message} for p in self.problems]
        return {**out, **self.details}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers or None)

    def close_reason(self) -> str:
        """``code: message`` as a WebSocket close reason, which has no room for a long message: what is wrong is
        shortened (``…``) so that what to do, the last ``; `` clause, arrives whole."""
        reason = f"{self.code}: {self.message}"
        if len(reason.encode()) <= CLOSE_REASON_BYTES:
            return reason
        wrong, _, advice = reason.rpartition("; ")
        tail = f"…; {advice}" if wrong else "…"
        room = max(0, CLOSE_REASON_BYTES - len(tail.encode()))
        head = (wrong or reason).encode()[:room].decode(errors="ignore")
        return (head + tail).encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")

    def advise(self, advice: str) -> GatewayError:
        """The same refusal with other advice, for a client that cannot follow the one it had.

        Parameters
        ----------
        advice
            What this client can do; it replaces the message's last ``; `` clause.
        """
        wrong = self.message.rpartition("; ")[0] or self.message
        return replace(self, message=f"{wrong}; {advice}")


def parse_json(data: bytes | str) -> Any:
    """Strict JSON: no NaN or Infinity, which Avro doubles would carry but JSON does not have; a body or frame
    nested too deeply for the parser is a 400 too, not a crash."""
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise GatewayError(400, "bad_json", "the JSON is nested too deeply; send events shaped as /openapi.json "
                                            "describes") from None
    except ValueError as exc:
        raise GatewayError(400, "bad_json", f"the body is not valid UTF-8 JSON ({exc}); send UTF-8 JSON with "
                                            "finite numbers, shaped as /openapi.json describes") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
