"""What keeps one client or a slow broker from hurting the gateway: body size limits and backpressure."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from connectors.gateway.errors import GatewayError


def too_large(limit: int, what: str = "request body") -> GatewayError:
    return GatewayError(
        413,
        "too_large",
        f"the {what} is larger than {limit} bytes; split it (a sensor batch per device per second, "
        "audio in chunks of a few seconds) or send an array of fewer events",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to pass ``limit`` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise GatewayError(400, "bad_content_length", f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise too_large(limit)
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class Backpressure:
    """Refuses new events while ``max_queue`` or more of them wait for the broker's acknowledgement.

    The wait grows when the broker acknowledges slower than clients post (or is down): answering 429 with
    ``Retry-After`` then slows the clients down instead of growing memory until the process dies.
    ``waiting`` counts our messages only: ``len(producer)`` also counts librdkafka's own requests (the
    idempotent producer's id request sits there while the broker is unreachable).
    """

    def __init__(self, waiting: Callable[[], int], max_queue: int, retry_after_s: int) -> None:
        self.waiting = waiting
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.refused = 0

    def full(self) -> bool:
        return self.waiting() >= self.max_queue

    def check(self) -> None:
        waiting = self.waiting()
        if waiting >= self.max_queue:
            self.refused += 1
            raise GatewayError(
                429,
                "backpressure",
                f"the broker is behind ({waiting} events waiting for it, limit {self.max_queue}); "
                f"retry after {self.retry_after_s} s with the same event_id",
                headers={"Retry-After": str(self.retry_after_s)},
            )
