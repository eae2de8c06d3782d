"""Server-Sent Events: the ``/sse`` endpoint, its transport and its resume cursor.

A stream serves public channels only. Each message event's id is a cursor of every
channel's last position (:func:`format_cursor`); a client that reconnects sends it back as
``Last-Event-ID`` and resumes each channel after it (:func:`parse_cursor`). Refusals are
raised as channelcast errors; :mod:`.app` turns them into HTTP responses.

The response (:class:`EventStream`) owns its session's lifetime; the event generator never
cleans up (Starlette cancels it when the client disconnects, half-way through whatever it
awaits), it only turns frames into events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from channelcast.channels import needs_auth, validate_client_channel
from channelcast.errors import InvalidChannel, InvalidPosition, RequestRefused
from channelcast.gateway.node import gateway_of
from channelcast.gateway.protocol import (
    AUTH_REQUIRED,
    TOO_MANY_SUBSCRIPTIONS,
    Subscribe,
    parse_position,
)
from channelcast.gateway.session import Outgoing
from channelcast.types import ChannelName, Position

log = logging.getLogger("channelcast.gateway")

SSE_KEEPALIVE_S = 15.0
"""A comment line this often keeps idle proxies from closing the stream."""
SHUTTING_DOWN = "shutting_down"

_CLOSE = Outgoing("")


class SSETransport:
    """Hands the session's frames to the streaming response, one at a time (backpressure)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Outgoing] = asyncio.Queue(1)

    async def send(self, item: Outgoing) -> None:
        await self.queue.put(item)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_CLOSE)

    async def abort(self) -> None:
        """After a write timeout: the stream ends with the frame it is writing now (the
        HTTP server offers no way to cut the socket; the session is released anyway)."""
        with contextlib.suppress(asyncio.QueueEmpty):
            self.queue.get_nowait()
        self.queue.put_nowait(_CLOSE)


class EventStream(StreamingResponse):
    """The ``/sse`` response: registers its session when it starts, and releases it however
    the stream ends: finished, failed, or cancelled (Starlette cancels the streaming task
    when the client disconnects). The event generator is closed here too, not left to the
    garbage collector."""

    def __init__(self, events: AsyncGenerator[bytes, None], session_start: Callable[[], None],
                 session_end: Callable[[], Awaitable[None]]) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events
        self._session_start = session_start
        self._session_end = session_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._session_start()
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._events.aclose()
            finally:
                await self._session_end()


def parse_cursor(text: str, channels: list[ChannelName]) -> dict[ChannelName, Position]:
    """An SSE event id -> positions per channel. A bare ``topic:partition:offset`` is the
    position of a single-channel stream; otherwise ``channel:topic:partition:offset`` entries
    separated by spaces. Raises InvalidPosition or InvalidChannel."""
    text = text.strip()
    if not text:
        return {}
    parts = text.split()
    if len(parts) == 1 and parts[0].count(":") == 2:
        if len(channels) != 1:
            raise InvalidPosition("a bare position resumes only a single-channel stream")
        return {channels[0]: parse_position(parts[0])}
    out: dict[ChannelName, Position] = {}
    for part in parts:
        name, sep, pos = part.partition(":")
        if not sep:
            raise InvalidPosition(f"not a channel:position entry: {part!r}")
        out[validate_client_channel(name)] = parse_position(pos)
    return out


def format_cursor(positions: dict[ChannelName, Position]) -> str:
    """Positions per channel -> an SSE event id that :func:`parse_cursor` reads back."""
    if len(positions) == 1:
        return str(next(iter(positions.values())))
    return " ".join(f"{c}:{p}" for c, p in sorted(positions.items()))


async def sse_endpoint(request: Request) -> Response:
    """``GET /sse?channels=a,b``; raises InvalidChannel, InvalidPosition (a bad
    ``Last-Event-ID``) or RequestRefused (draining, a private channel, too many channels)."""
    gw = gateway_of(request)
    if not gw.accepting:
        raise RequestRefused(503, SHUTTING_DOWN, "server shutting down")
    raw = request.query_params.get("channels", "")
    names = [c for c in raw.split(",") if c]
    if not names:
        raise InvalidChannel("give channels: /sse?channels=a,b")
    channels = list(dict.fromkeys(validate_client_channel(c) for c in names))
    private = [c for c in channels if needs_auth(c)]
    if private:
        raise RequestRefused(403, AUTH_REQUIRED, f"SSE serves public channels only; "
                             f"{private[0]!r} needs the WebSocket protocol with a signature")
    limit = gw.settings.gateway.max_subscriptions
    if len(channels) > limit:
        raise RequestRefused(400, TOO_MANY_SUBSCRIPTIONS,
                             f"at most {limit} channels per stream")
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        since = parse_cursor(last, channels) if last else {}
    except (InvalidPosition, InvalidChannel) as exc:
        raise InvalidPosition(f"bad Last-Event-ID: {exc}") from exc

    transport = SSETransport()
    session = gw.new_session(transport)
    positions: dict[ChannelName, Position] = {}

    def start() -> None:
        gw.register(session, "sse")
        session.start(greet=False)

    async def stream() -> AsyncGenerator[bytes, None]:
        # No cleanup in here: EventStream releases the session, whatever ends the stream.
        yield (f"retry: 1000\nevent: connected\n"
               f"data: {json.dumps(session.connection_id)}\n\n").encode()
        for channel in channels:
            session.protocol.channels.add(channel)
            await session.subscribe(Subscribe(channel, since.get(channel), None))
        while True:
            try:
                item = await asyncio.wait_for(transport.queue.get(), SSE_KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if item is _CLOSE:
                return
            try:
                yield _sse_event(item, positions).encode()
            except UnicodeEncodeError as exc:  # a bug upstream: never a silent dead stream
                log.warning("SSE stream of %s: a frame cannot be encoded (%s); ending the "
                            "stream", session.connection_id, exc)
                return
            if item.frame is not None and item.frame.get("type") == "closing":
                return

    return EventStream(stream(), start, lambda: gw.end_session(session))


def _sse_event(item: Outgoing, positions: dict[ChannelName, Position]) -> str:
    event_id = ""
    if item.record is not None:
        kind = "message"
        positions[item.record.channel] = item.record.position
        event_id = format_cursor(positions)
    else:
        assert item.frame is not None
        kind = str(item.frame.get("type"))
        if kind == "subscribed":
            pos = item.frame["data"].get("position")
            if pos:
                positions[ChannelName(item.frame["channel"])] = parse_position(pos)
                event_id = format_cursor(positions)
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {item.text}\n\n"
