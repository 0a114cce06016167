"""The headers of a scheduled retry on ``<topic>.retry``: which destination, which attempt, when it is due.

The value is the event's bytes as they came, so the retry topic carries the same schema as its source; what
the retrying consumer needs to know travels in headers, like a dead letter's reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["ATTEMPT", "DESTINATION", "DUE", "ERROR", "RetryInfo", "retry_headers", "retry_info"]

PREFIX = "eddyline.retry."
DESTINATION, ATTEMPT, DUE, ERROR = (PREFIX + k for k in ("destination", "attempt", "due", "error"))
_MAX_ERROR = 2000


@dataclass(frozen=True, slots=True)
class RetryInfo:
    """A retry's headers, parsed.

    Parameters
    ----------
    destination
        The channel to try again (``pagerduty``, ``slack``); empty for every configured one (a redriven letter
        that names none).
    attempt
        The attempt this delivery will be, counted from 1.
    due_ms
        Not before this time, ms since the Unix epoch, UTC.
    error
        Why the previous attempt failed, for people.
    """

    destination: str
    attempt: int
    due_ms: int
    error: str = ""


def retry_headers(destination: str, attempt: int, due_ms: int, error: str = "") -> dict[str, bytes]:
    """Headers for a retry message; ``attempt`` is the attempt the retry will be."""
    return {
        DESTINATION: destination.encode(),
        ATTEMPT: str(attempt).encode(),
        DUE: str(due_ms).encode(),
        ERROR: error[:_MAX_ERROR].encode(errors="replace"),
    }


def retry_info(headers: Mapping[str, bytes | None] | Iterable[tuple[str, bytes | None]] | None) -> RetryInfo:
    """Parse a retry message's headers (as ``Message.headers()`` gives them); raises ValueError naming what is wrong."""
    items = headers.items() if isinstance(headers, Mapping) else (headers or [])
    found = {k: (v or b"").decode(errors="replace") for k, v in items if k.startswith(PREFIX)}
    try:
        attempt, due = int(found[ATTEMPT]), int(found[DUE])
    except KeyError as e:
        raise ValueError(f"retry message lacks header {e.args[0]}") from None
    except ValueError:
        raise ValueError(f"retry headers {ATTEMPT}/{DUE} are not integers: {found}") from None
    if attempt < 1:
        raise ValueError(f"retry header {ATTEMPT} must be at least 1, not {attempt}")
    return RetryInfo(found.get(DESTINATION, ""), attempt, due, found.get(ERROR, ""))
