"""The one shape of every rejection: a status, a stable code, what is wrong and where, and what to do."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse


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


def parse_json(data: bytes | str) -> Any:
    """Strict JSON: no NaN or Infinity, which Avro doubles would carry but JSON does not have; a body or frame
    nested too deeply for the parser is a 400 too, not a crash."""
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise GatewayError(400, "bad_json", "the JSON is nested too deeply") from None
    except ValueError as exc:
        raise GatewayError(400, "bad_json", f"the body is not valid UTF-8 JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; send finite numbers only")
