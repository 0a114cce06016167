"""The one shape of every rejection: a status, a stable code, what is wrong and where, and what to do."""

from __future__ import annotations

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

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.problems:
            out["problems"] = [{"path": p.path, "message": p.message} for p in self.problems]
        return out

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers or None)
