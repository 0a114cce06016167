"""What keeps one client or a slow broker from hurting the gateway: body size limits, per-client rates, backpressure."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from starlette.requests import Request

from connectors.gateway.errors import GatewayError


SPLIT_EVENTS = ("split it (a sensor batch per device per second, audio in chunks of a few seconds) or send an array "
                "of fewer events")


def too_large(limit: int, what: str = "request body", advice: str = SPLIT_EVENTS) -> GatewayError:
    """413 for a body or message over ``limit``; ``advice`` says how this client sends less at once.

    Parameters
    ----------
    limit
        The most bytes allowed.
    what
        What was too large, in the client's terms.
    advice
        What to do, for a client that sends no arrays of events (a call's audio frames).
    """
    return GatewayError(413, "too_large", f"the {what} is larger than {limit} bytes; {advice}")


def message_bytes(message: dict) -> int:
    """The size of a WebSocket message as sent: its bytes, or its text's UTF-8 length."""
    if message.get("bytes") is not None:
        return len(message["bytes"])
    text = message.get("text") or ""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused with 413 as soon as it is known to pass ``limit`` (declared or streamed), and with 408 if it
    has not all come within ``timeout_s``: a client that trickles its body (slowloris) would otherwise hold its
    connection, and what it sent, for ever.

    Parameters
    ----------
    request
        The request whose body is read.
    limit
        The most bytes allowed.
    timeout_s
        How long the whole body may take to arrive.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise GatewayError(400, "bad_content_length", f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise too_large(limit)
    chunks, received = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise GatewayError(408, "body_timeout", f"the request body did not all arrive within {timeout_s:g} s; send "
                           "it at once (or raise [gateway] body_timeout_s for a slow link)",
                           headers={"Connection": "close"}) from None
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


class RateLimits:
    """A token bucket per client: ``rate`` events per second, ``rate * burst_s`` at once; over it, 429.

    Buckets exist only for the configured clients (and the ``'*'`` default per client that uses it), so
    memory follows the number of tokens, not of requests.

    Events are taken as sent, before they are validated, and a refused one (422, 503) is not given back: the
    bucket guards the gateway's own work (mapping, checking and encoding each event) and throttles a client
    that floods it with bad events or retries, while the broker is guarded by ``Backpressure``. A client that
    corrects a refused request may wait one ``Retry-After`` more; it loses nothing.

    Parameters
    ----------
    rates
        Client name -> events per second; ``'*'`` for clients not named.
    burst_s
        How many seconds' worth of events a client may send at once.
    clock
        Seconds, monotonic.
    """

    def __init__(self, rates: dict[str, float], burst_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rates, self.burst_s, self.clock = rates, burst_s, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self.refused = 0

    def take(self, client: str, events: int) -> None:
        rate = self.rates.get(client, self.rates.get("*"))
        if rate is None:
            return
        capacity = max(rate * self.burst_s, 1.0)
        if events > capacity:
            raise GatewayError(
                413,
                "too_many_events",
                f"{client!r} may send {int(capacity)} events at once, not {events}; split the array",
            )
        now = self.clock()
        tokens, at = self._buckets.get(client, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * rate)
        if tokens < events:
            self._buckets[client] = (tokens, now)
            self.refused += 1
            wait = max(1, math.ceil((events - tokens) / rate))
            raise GatewayError(
                429,
                "rate_limited",
                f"{client!r} may send {rate:g} events per second; retry after {wait} s with the same event_id",
                headers={"Retry-After": str(wait)},
            )
        self._buckets[client] = (tokens - events, now)
