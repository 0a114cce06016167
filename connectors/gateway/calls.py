"""Call audio over WebSocket: binary PCM16 frames, and Twilio-style JSON media messages, into ``audio.chunks``.

- ``/v1/audio/stream?conversation_id=ID&sample_rate=8000&chunk_ms=200``: binary frames of PCM16 little-endian
  mono at the declared rate (16 kHz by default; others are resampled). Each chunk produced is acknowledged
  with a JSON text frame ``{"status": 202, "seq": N, "event_id": ...}``; a text frame ``{"event": "stop"}``
  (acknowledged) or closing the socket with a code ends the call, whose last chunk is marked ``final``.
- ``/v1/audio/twilio``: Twilio Media Streams (``connected``, ``start``, ``media``, ``stop``; base64 mu-law at
  8 kHz). The call id (``callSid``) is the conversation id, the inbound track's; the outbound track's is
  ``<callSid>/outbound``. Twilio sends no other track, and another is refused: each track is a call held in memory
  with a final chunk at the end, so new names without end were calls without end. The token comes in the
  ``Authorization`` header, or as the stream's custom parameter ``token`` (``<Parameter name="token"
  value="..."/>`` in TwiML), because Twilio cannot set headers.
  Either way the token's ``[gateway] scopes`` must allow ``audio_chunk`` (and its ``key_scopes``, if any, the
  ``callSid``); a stream without the header that has sent no ``start`` with the token within
  ``[gateway] head_timeout_s`` is closed (1008).
  Nothing is sent back: Twilio would take it for audio to play.

A client that reconnects with the same conversation id goes on where its call's numbering stopped: chunk ids
derive from the conversation and ``seq``, and the flow drops a number it has seen as a repeat, so numbering from
0 again would lose the audio. The client sends again the audio it got no acknowledgement for (refused, or cut off
after the gateway produced it) from the start of chunk ``N``, its last ``seq`` acknowledged plus one, and says so
with ``&seq=N``: that audio gets its numbers back, and the flow drops what it already has as repeats. Only the
client knows which acknowledgements reached it, so the gateway goes back to ``N`` as far as the start of the
call's last connection (the client had the acknowledgements before it), at the same ``chunk_ms`` (other
boundaries would number other audio); a lower ``N``, or none, goes on after the last chunk produced. A gateway
process remembers the numbering of its last ``REMEMBERED_CALLS`` calls; on another process ``&seq=N`` is where
the numbering goes on. A call streams on one connection at a time (409, close 1008, while another is open).
Closing the socket with a code (1000) ends the call too; a connection that drops (no close code) leaves it open
and produces nothing more: a final chunk cut from the audio received would take the number of audio the client
sends again.

A refusal closes the socket with a code and a reason that says what to do (1008 policy, 1003 bad data,
1011 the broker or the gateway failed, 1013 try again later); a reason has 123 bytes at most, and what is wrong
is shortened to keep what to do whole. The advice is one each client can follow: a call client reconnects with
``&seq`` and sends the audio again; Twilio can do neither, so its refusals tell whoever runs the gateway.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar
from weakref import WeakKeyDictionary

from starlette.websockets import WebSocket, WebSocketDisconnect

from connectors.gateway.audio import CallAudio
from connectors.gateway.errors import GatewayError, parse_json
from connectors.gateway.limits import message_bytes, too_large
from connectors.gateway.records import ENDPOINTS
from schemas import AUDIO_CHUNK

log = logging.getLogger("eddyline.gateway")

T = TypeVar("T")
RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
BACKPRESSURE_WAIT_S = 5.0
REMEMBERED_CALLS = 10_000  # calls per gateway process whose numbering a reconnect goes on from
PCM_FRAMES = "reconnect with &seq (last seq acknowledged + 1) and send shorter frames"
TWILIO_FRAMES = "Twilio sizes its frames: raise [gateway] max_body_bytes"
_CLOSE = {400: 1003, 401: 1008, 403: 1008, 409: 1008, 413: 1009, 415: 1003, 422: 1003, 429: 1013, 503: 1011}
DROPPED = (1005, 1006)  # ended without a close code: uvicorn says 1005 for a connection lost, RFC 6455 1006
TWILIO_TRACKS = ("inbound", "outbound")


class Numbering(NamedTuple):
    """Where a call's chunk numbering stands: ``after`` its last chunk produced; its last connection started at
    ``since``, cutting chunks of ``chunk_bytes``."""

    after: int
    since: int
    chunk_bytes: int


class CallNumbers:
    """Where each recent call's chunk numbering stands in this gateway process, and which calls are streaming.

    Parameters
    ----------
    size
        Calls remembered; the least recently ended is forgotten first.
    """

    def __init__(self, size: int = REMEMBERED_CALLS) -> None:
        self.size = size
        self.live: dict[str, Numbering] = {}  # the conversations streaming now
        self.ended: OrderedDict[str, Numbering] = OrderedDict()

    def open(self, call: CallAudio, first: int | None = None) -> None:
        """Number ``call`` on from where its conversation stopped, or from ``first`` (the client's ``&seq``) if
        later, or if it goes back over audio the client sends again; 409 while the call streams on another
        connection, whose numbers this one would repeat.

        Parameters
        ----------
        call
            The new connection's call, not numbered yet.
        first
            The number of the chunk the client's audio starts with; None to go on.
        """
        conversation = call.conversation_id
        if conversation in self.live:
            raise GatewayError(409, "call_in_progress", f"conversation {conversation} is streaming on another "
                                                        "connection; close it first, or wait until it is noticed gone")
        known = self.ended.get(conversation, Numbering(0, 0, call.chunk_bytes))
        if first is not None and known.since <= first <= known.after and call.chunk_bytes == known.chunk_bytes:
            seq = first  # audio sent again: the chunks the flow has are repeats
        else:  # under numbers taken before, new audio would be dropped as repeats
            seq = max(first or 0, known.after)
        call.resume(seq)
        self.live[conversation] = Numbering(max(seq, known.after), seq, call.chunk_bytes)

    def produced(self, records: list[dict[str, Any]]) -> None:
        """The broker took these chunks; a reconnect without ``&seq`` goes on after them. Chunks it refused were
        numbered too, but the client sends their audio again: numbered on after them, that audio would reach the
        flow after a gap, as if lost. A chunk taken before a refusal part of the way is sent again under its own
        number, a repeat the flow drops.

        Parameters
        ----------
        records
            ``audio_chunk`` records, all produced, in order.
        """
        for r in records:
            conversation, after = r["conversation_id"], r["seq"] + 1
            if conversation in self.live:
                numbering = self.live[conversation]
                self.live[conversation] = numbering._replace(after=max(numbering.after, after))
            elif conversation in self.ended and self.ended[conversation].after < after:
                # a Twilio call's end, produced after the next call's start closed its tracks
                self.ended[conversation] = self.ended[conversation]._replace(after=after)

    def close(self, call: CallAudio) -> None:
        """The connection of ``call`` has ended: remember where its numbering stands.

        Parameters
        ----------
        call
            The call ``open`` numbered.
        """
        conversation = call.conversation_id
        self.ended[conversation] = self.live.pop(conversation, Numbering(call.seq, call.seq, call.chunk_bytes))
        self.ended.move_to_end(conversation)
        while len(self.ended) > self.size:
            self.ended.popitem(last=False)


_NUMBERS: WeakKeyDictionary[Any, CallNumbers] = WeakKeyDictionary()


def call_numbers(gateway: Any) -> CallNumbers:
    """The gateway's ``CallNumbers``; a stand-in for a gateway (a test's) gets one of its own per call."""
    try:
        numbers = _NUMBERS.get(gateway)
        if numbers is None:
            numbers = _NUMBERS[gateway] = CallNumbers()
    except TypeError:  # None, or nothing a weak reference can hold
        return CallNumbers()
    return numbers


async def _close(ws: WebSocket, exc: GatewayError) -> None:
    code = _CLOSE.get(exc.status, 1011)
    try:
        await ws.close(code=code, reason=exc.close_reason())
    except RuntimeError:  # already closed by the client
        pass


async def _failed(ws: WebSocket, what: str, call: str | None) -> None:
    """A failure no refusal foresaw: logged here with its traceback, and the client gets a close with a reason
    (1011) rather than the server's bare one."""
    log.exception("%s %s failed", what, call)
    try:
        await _close(ws, GatewayError(500, "internal_error", "the gateway failed on this stream (see its log)"))
    except Exception:  # the socket is gone too: the failure is logged, nothing more to tell
        pass


async def refuse_before_accept(ws: WebSocket, exc: GatewayError) -> None:
    """An HTTP answer where the server can send one, else a close with the reason."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(exc.response())
    else:
        await _close(ws, exc)


async def open_socket(ws: WebSocket, check: Callable[[], T]) -> T | None:
    """Run ``check`` (authentication, parameters) before accepting; a ``GatewayError`` refuses the socket."""
    try:
        value = check()
    except GatewayError as exc:
        await refuse_before_accept(ws, exc)
        return None
    await ws.accept()
    return value


def _audio_client(gateway: Any, authorization: str | None) -> str:
    """The client an ``Authorization`` value names, if its token may send audio (401 or 403 otherwise)."""
    client = gateway.auth.client(authorization)
    gateway.auth.check_scope(client, AUDIO_CHUNK)
    return client


async def _produce(gateway: Any, records: list[dict[str, Any]], client: str) -> None:
    if not records:
        return
    gateway.rates.take(client, len(records))  # a call's chunks count against its token's rate like any events
    waited = 0.0
    while gateway.backpressure.full():  # a live call cannot retry later: wait a little for the broker
        if waited >= BACKPRESSURE_WAIT_S:
            gateway.backpressure.check()
        await asyncio.sleep(0.05)
        waited += 0.05
    gateway.produce_records(ENDPOINTS[AUDIO_CHUNK], [(r, f"chunk {r['seq']}") for r in records], client)
    call_numbers(gateway).produced(records)


async def _produce_at_close(gateway: Any, records: list[dict[str, Any]], client: str, call: str | None) -> None:
    """The end of a call whose client is gone: a refusal can only be logged."""
    try:
        await _produce(gateway, records, client)
    except GatewayError as exc:
        log.warning("the end of call %s was not produced: %s", call, exc.message)


def _check_size(gateway: Any, message: dict[str, Any], advice: str) -> None:
    """413 (close 1009) for a frame over ``[gateway] max_body_bytes``, as for every other message; ``advice``
    is what this kind of client can do about it."""
    if message_bytes(message) > gateway.settings.max_body_bytes:
        raise too_large(gateway.settings.max_body_bytes, "frame", advice)


def _int_param(ws: WebSocket, name: str, default: int) -> int:
    raw = ws.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise GatewayError(400, "bad_parameter", f"{name}={raw!r} is not an integer; send a whole number") from None


def _call_from_query(gateway: Any, ws: WebSocket, client: str) -> CallAudio:
    conversation = ws.query_params.get("conversation_id", "")
    if not conversation:
        raise GatewayError(400, "bad_parameter", "add ?conversation_id=ID to the URL (the call's id)")
    gateway.auth.check_key(client, "conversation_id", conversation)
    rate = _int_param(ws, "sample_rate", 16000)
    if rate not in RATES:
        raise GatewayError(400, "bad_parameter",
                           f"sample_rate={rate} is not supported; use one of {', '.join(map(str, RATES))}")
    first = _int_param(ws, "seq", 0) if "seq" in ws.query_params else None
    if first is not None and first < 0:
        raise GatewayError(400, "bad_parameter", f"seq={first}: the first chunk's number is 0 or more")
    try:
        call = CallAudio(conversation, rate, _int_param(ws, "chunk_ms", 200), producer=f"gateway/{client}")
    except ValueError as exc:
        raise GatewayError(400, "bad_parameter", str(exc)) from None
    call_numbers(gateway).open(call, first)
    return call


async def pcm_stream(gateway: Any, ws: WebSocket) -> None:
    """``/v1/audio/stream``: binary PCM16 frames of one call."""
    client = ""
    opened: CallAudio | None = None

    def check() -> CallAudio:
        nonlocal client, opened
        client = _audio_client(gateway, ws.headers.get("authorization"))
        opened = _call_from_query(gateway, ws, client)
        return opened

    try:
        call = await open_socket(ws, check)
        if call is not None:
            await _pcm_messages(gateway, ws, call, client)
    finally:
        if opened is not None:  # however the connection ended, the call may stream again
            call_numbers(gateway).close(opened)


async def _pcm_messages(gateway: Any, ws: WebSocket, call: CallAudio, client: str) -> None:
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                await _hung_up(gateway, call, client, message.get("code", 1005))
                return
            _check_size(gateway, message, PCM_FRAMES)
            if message.get("bytes") is not None:
                records = call.feed_pcm16(message["bytes"])
            elif _is_stop(message.get("text")):
                records = call.finish()
            else:
                raise GatewayError(415, "unsupported_media_type",
                                   'send audio as binary PCM16 frames and {"event": "stop"} at the end')
            try:
                await _produce(gateway, records, client)
            except GatewayError as exc:
                log.warning("audio stream %s refused from chunk %s: %s", call.conversation_id, records[0]["seq"],
                            exc.message)
                await _close(ws, _send_again(exc, records[0]["seq"]))
                return
            for r in records:
                await ws.send_json({"status": 202, "seq": r["seq"], "event_id": r["event_id"], "final": r["final"]})
            if call.finished:
                await ws.close(1000)
                return
    except GatewayError as exc:
        log.warning("audio stream %s refused: %s", call.conversation_id, exc.message)
        await _close(ws, exc)
    except WebSocketDisconnect as exc:
        await _hung_up(gateway, call, client, exc.code)
    except Exception:
        await _failed(ws, "audio stream", call.conversation_id)


async def _hung_up(gateway: Any, call: CallAudio, client: str, code: int) -> None:
    """A client that closed the socket ended its call; one whose connection dropped sends the audio not
    acknowledged again when it reconnects, and a final chunk cut now would take the number of that audio."""
    if code in DROPPED:
        log.info("audio stream %s dropped after chunk %d; the client sends the rest again", call.conversation_id,
                 call.seq - 1)
    elif not call.finished:
        await _produce_at_close(gateway, call.finish(), client, call.conversation_id)


def _send_again(exc: GatewayError, seq: int) -> GatewayError:
    """A refused produce, told as a call client can act on it: it cannot retry one event under its id, nor split
    an array, but it can reconnect and send the audio again from the first chunk not acknowledged (in shorter
    frames, if one held more chunks than its token may send at once). Refusals that sending again would meet
    again (too large, invalid) keep their words."""
    again = f"with &seq={seq} and send again the audio from chunk {seq} on"
    if exc.code == "too_many_events":
        return exc.advise(f"reconnect {again}, in shorter frames")
    if exc.status not in (429, 503):
        return exc
    wait = exc.headers.get("Retry-After")
    return exc.advise(f"reconnect{f' in {wait} s' if wait else ''} {again}")


def _lost(exc: GatewayError) -> GatewayError:
    """A refused produce, told to whoever runs the gateway: Twilio neither retries an event under its id nor
    sends a call's audio again, so the rest of the call is lost and only the gateway's settings or its broker
    can help. Refusals of what Twilio sent keep their words."""
    if exc.code in ("rate_limited", "too_many_events"):
        return exc.advise("Twilio cannot send audio again: raise this token's [gateway] rates")
    if exc.status in (429, 503):
        return exc.advise("Twilio cannot send audio again: see the gateway's /health and log")
    return exc


def _is_stop(text: str | None) -> bool:
    try:
        value = parse_json(text) if text is not None else None
    except GatewayError:
        return False
    return type(value) is dict and value.get("event") == "stop"


class _TwilioCall:
    """The state of one Twilio media stream: who sent it and one ``CallAudio`` per track."""

    def __init__(self, gateway: Any, client: str | None) -> None:
        self.gateway = gateway
        self.client = client
        self.call_sid: str | None = None
        self.rate = 8000
        self.tracks: dict[str, CallAudio] = {}
        self.numbers = call_numbers(gateway)

    def start(self, start: Any) -> list[dict[str, Any]]:
        """Take a ``start`` message; a second one for another call ends the tracks of the first (their final
        records are returned) so that the new call's audio gets the new call's conversation ids. A repeated
        ``start`` of the same call keeps its tracks (their numbering goes on) and must keep its rate."""
        if type(start) is not dict or not isinstance(start.get("callSid"), str) or not start["callSid"]:
            raise GatewayError(400, "bad_message", "the 'start' message needs start.callSid")
        fmt = start.get("mediaFormat") or {}
        try:
            channels, rate = int(fmt.get("channels", 1)), int(fmt.get("sampleRate", 8000))
        except (AttributeError, TypeError, ValueError, OverflowError):  # 1e400 is JSON for infinity
            raise GatewayError(400, "bad_message", "start.mediaFormat needs integer sampleRate and channels, "
                                                   'e.g. {"sampleRate": 8000, "channels": 1}') from None
        if fmt.get("encoding", "audio/x-mulaw") != "audio/x-mulaw" or channels != 1:
            raise GatewayError(415, "unsupported_media_type", "Twilio media must be audio/x-mulaw, one channel")
        if rate not in RATES:
            raise GatewayError(415, "unsupported_media_type",
                               f"sampleRate {rate} is not supported; use one of {', '.join(map(str, RATES))}")
        same_call = start["callSid"] == self.call_sid
        if same_call and self.tracks and rate != self.rate:
            raise GatewayError(400, "bad_message", f"call {self.call_sid} started again at sampleRate {rate}, "
                                                   f"not {self.rate}; open a new stream for a new format")
        self.rate = rate
        if self.client is None:
            params = start.get("customParameters")
            token = params.get("token") if isinstance(params, dict) else None
            self.client = _audio_client(self.gateway, f"Bearer {token}" if isinstance(token, str) else None)
        self.gateway.auth.check_key(self.client, "callSid", start["callSid"])  # its tracks' conversation ids
        ended = [] if same_call else self.finish()
        if not same_call:
            self.close()
        self.call_sid = start["callSid"]
        return ended

    def media(self, media: Any) -> list[dict[str, Any]]:
        if self.call_sid is None or self.client is None:
            raise GatewayError(400, "bad_message", "'media' came before 'start'; send 'start' first")
        if type(media) is not dict or not isinstance(media.get("payload"), str):
            raise GatewayError(400, "bad_message", "a 'media' message needs media.payload (base64 mu-law)")
        try:
            audio = base64.b64decode(media["payload"], validate=True)
        except (binascii.Error, ValueError):
            raise GatewayError(400, "bad_message", "media.payload is not valid base64; send base64 mu-law") from None
        track = media.get("track") or "inbound"
        if track not in TWILIO_TRACKS:
            raise GatewayError(400, "bad_message", f"media.track {str(track)[:40]!r} is not one Twilio sends; "
                                                   f"send {' or '.join(TWILIO_TRACKS)}")
        call = self.tracks.get(track)
        if call is None:
            conversation = self.call_sid if track == "inbound" else f"{self.call_sid}/{track}"
            call = CallAudio(conversation, self.rate, producer=f"gateway/{self.client}")
            self.numbers.open(call)
            self.tracks[track] = call
        return call.feed_mulaw(audio)

    def finish(self) -> list[dict[str, Any]]:
        return [r for call in self.tracks.values() if not call.finished for r in call.finish()]

    def close(self) -> None:
        """The tracks are over: another stream of the call may go on numbering them."""
        for call in self.tracks.values():
            self.numbers.close(call)
        self.tracks = {}


async def twilio_stream(gateway: Any, ws: WebSocket) -> None:
    """``/v1/audio/twilio``: a Twilio Media Stream."""
    header = ws.headers.get("authorization")
    authenticated = header is not None or gateway.auth.anonymous
    call = await open_socket(ws, lambda: _TwilioCall(gateway, _audio_client(gateway, header) if authenticated else None))
    if call is None:
        return
    try:
        await _twilio_messages(gateway, ws, call)
    finally:
        call.close()


async def _token_by(ws: WebSocket, deadline: float) -> Any:
    """The next message of a stream not yet authenticated, refused (401) at ``deadline``: a Twilio stream is accepted
    before its token, which comes in its ``start``, and one that never sent it held its connection for ever."""
    try:
        async with asyncio.timeout_at(deadline):
            return await ws.receive()
    except TimeoutError:
        advice = 'give the TwiML <Stream> a <Parameter name="token">'
        raise GatewayError(401, "missing_token", f"no 'start' with a token in time; {advice}") from None


async def _twilio_messages(gateway: Any, ws: WebSocket, call: _TwilioCall) -> None:
    token_due = asyncio.get_running_loop().time() + gateway.settings.head_timeout_s
    try:
        while True:
            message = await (ws.receive() if call.client is not None else _token_by(ws, token_due))
            if message["type"] == "websocket.disconnect":
                break
            _check_size(gateway, message, TWILIO_FRAMES)
            text = message.get("text")
            if text is None:
                raise GatewayError(415, "unsupported_media_type", "a binary frame; send Twilio messages as JSON text")
            value = parse_json(text)
            event = value.get("event") if type(value) is dict else None
            if event == "start":
                await _produce(gateway, call.start(value.get("start")), call.client or "")
            elif event == "media":
                await _produce(gateway, call.media(value.get("media")), call.client or "")
            elif event == "stop":
                break
            elif event not in ("connected", "mark", "dtmf"):
                raise GatewayError(400, "bad_message", f"unknown Twilio event {event!r}; send connected, start, "
                                                       "media, mark, dtmf or stop")
        if call.client is not None:
            await _produce(gateway, call.finish(), call.client)
        await ws.close(1000)
    except GatewayError as exc:
        log.warning("Twilio stream %s refused: %s", call.call_sid, exc.message)
        await _close(ws, _lost(exc))
    except WebSocketDisconnect:
        if call.client is not None:
            await _produce_at_close(gateway, call.finish(), call.client, call.call_sid)
    except Exception:
        await _failed(ws, "Twilio stream", call.call_sid)
