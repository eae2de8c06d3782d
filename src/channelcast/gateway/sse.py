"""Server-Sent Events: the ``/sse`` endpoint, its transport and its resume cursor.

A stream serves public channels only. Each ``subscribed`` and ``message`` event's id is a
cursor of what the client has seen of every channel (:class:`Cursor`, :func:`format_cursor`):
the bare position for a one-channel stream, ``channel:position`` entries for several, from
the first event on; it never goes backwards. A client that reconnects sends it back as
``Last-Event-ID`` and resumes each channel after it (:func:`read_cursor`). An id the gateway
cannot use (malformed, a bare position for several channels) never refuses the stream: a
browser's EventSource would stop for good on an error status. The stream starts live and
reports ``recovery_failed`` for each channel instead. Refusals of the request itself are
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
from channelcast.gateway.node import gateway_of, peer_of
from channelcast.gateway.protocol import (
    AUTH_REQUIRED,
    RECOVERY_FAILED,
    TOO_MANY_SUBSCRIPTIONS,
    Subscribe,
    parse_position,
)
from channelcast.gateway.session import Outgoing
from channelcast.gateway.websocket import ABORT_EXTENSION
from channelcast.types import ChannelName, Position

log = logging.getLogger("channelcast.gateway")

SSE_KEEPALIVE_S = 15.0
CUT_AFTER_S = 0.5
"""Seconds a closed stream may still be writing before its connection is cut."""
"""A comment line this often keeps idle proxies from closing the stream."""
SHUTTING_DOWN = "shutting_down"

_CLOSE = Outgoing("")


class SSETransport:
    """Hands the session's frames to the streaming response, one at a time (backpressure)."""

    close_codes = False
    """An event stream has no close codes (the session's log line leaves them out)."""

    def __init__(self, cut: Callable[[], None] | None = None) -> None:
        """``cut``: closes the TCP connection at once (the server's ABORT_EXTENSION for
        HTTP requests), or None where the server offers none."""
        self.queue: asyncio.Queue[Outgoing] = asyncio.Queue(1)
        self._cut = cut
        self.finished = False
        """Set when the response ended (written in full, failed or cancelled)."""

    async def send(self, item: Outgoing) -> None:
        await self.queue.put(item)

    async def close(self, code: int, reason: str) -> None:
        """End the stream after what it is writing now; if that write is still stuck
        :data:`CUT_AFTER_S` later (a client that stopped reading), cut the connection, so
        that a shutdown never waits on it."""
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_CLOSE)
        if self._cut is not None:
            asyncio.get_running_loop().call_later(CUT_AFTER_S, self._cut_if_stuck)

    async def abort(self) -> None:
        """After a write timeout: end the stream and cut the connection (without a cut,
        the stream ends with the frame it is writing now; the session is released
        anyway)."""
        with contextlib.suppress(asyncio.QueueEmpty):
            self.queue.get_nowait()
        self.queue.put_nowait(_CLOSE)
        self._cut_if_stuck()

    def _cut_if_stuck(self) -> None:
        if not self.finished and self._cut is not None:
            self._cut()


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
            raise InvalidPosition(f"not a channel:position entry: {part[:80]!r}")
        out[validate_client_channel(name)] = parse_position(pos)
    return out


def read_cursor(text: str, channels: list[ChannelName]
                ) -> tuple[dict[ChannelName, Position], str | None]:
    """A ``Last-Event-ID`` -> (the positions to resume the stream's channels from, why the
    id cannot be used or None). Entries for channels not in the stream are left out (the
    client changed its channels); an id that :func:`parse_cursor` refuses resumes nothing."""
    try:
        parsed = parse_cursor(text, channels)
    except (InvalidPosition, InvalidChannel) as exc:
        return {}, str(exc)
    wanted = set(channels)
    return {c: p for c, p in parsed.items() if c in wanted}, None


def format_cursor(positions: dict[ChannelName, Position], *,
                  combined: bool | None = None) -> str:
    """Positions per channel -> an SSE event id that :func:`parse_cursor` reads back: the
    bare position when ``combined`` is false, ``channel:position`` entries when it is true;
    by default bare only for a single position."""
    if combined is None:
        combined = len(positions) != 1
    if not combined:
        return str(next(iter(positions.values())))
    return " ".join(f"{c}:{p}" for c, p in sorted(positions.items()))


class Cursor:
    """What the client of one stream has seen of each channel: the event ids.

    Starts from the positions it resumes from (the client saw those). A channel's
    ``subscribed`` event sets its position to where the subscription stands, unless it
    recovered from a position the client gave (then the client has seen that one, and the
    replayed messages follow); each message moves it forward, never back."""

    def __init__(self, channels: list[ChannelName], since: dict[ChannelName, Position]) -> None:
        self.combined = len(channels) > 1
        self.since = since
        self.positions = dict(since)

    def subscribed(self, channel: ChannelName, data: dict[str, object]) -> None:
        if channel in self.since and data.get("recovered") is True:
            return  # the client has seen ``since``; the replay moves it on
        text = data.get("position")
        if isinstance(text, str) and text:
            self.positions[channel] = parse_position(text)

    def message(self, channel: ChannelName, position: Position) -> None:
        seen = self.positions.get(channel)
        if (seen is None or (seen.topic, seen.partition, seen.epoch) != (
                position.topic, position.partition, position.epoch)
                or position.offset > seen.offset):
            self.positions[channel] = position

    def event_id(self) -> str:
        return format_cursor(self.positions, combined=self.combined) if self.positions else ""


async def sse_endpoint(request: Request) -> Response:
    """``GET /sse?channels=a,b`` (or ``?channel=a&channel=b``); raises InvalidChannel or
    RequestRefused (draining, a private channel, too many channels). A ``Last-Event-ID``
    that cannot be used is not refused: the stream starts live and reports
    ``recovery_failed`` per channel."""
    gw = gateway_of(request)
    if not gw.accepting:
        raise RequestRefused(503, SHUTTING_DOWN, "server shutting down")
    # channels= is comma-separated (and may repeat); channel= (repeatable) takes a name
    # whole, for names that hold a comma (the channel grammar allows one).
    names = [c for raw in request.query_params.getlist("channels")
             for c in raw.split(",") if c] + request.query_params.getlist("channel")
    if not names:
        raise InvalidChannel("give channels: /sse?channels=a,b (or /sse?channel=a&channel=b)")
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
    since: dict[ChannelName, Position]
    unusable: str | None
    if last and not last.isascii():
        # Header bytes beyond ASCII arrive as Latin-1 text: never echo them as such (no
        # event id the gateway writes is anything but ASCII).
        since, unusable = {}, "it is not ASCII text"
    else:
        since, unusable = read_cursor(last, channels) if last else ({}, None)

    transport = SSETransport(request.scope.get("extensions", {}).get(
        ABORT_EXTENSION, {}).get("abort"))
    session = gw.new_session(transport)
    cursor = Cursor(channels, since)

    def start() -> None:
        gw.register(session, "sse", peer=peer_of(request))
        session.start(greet=False)

    async def stream() -> AsyncGenerator[bytes, None]:
        # No cleanup in here: EventStream releases the session, whatever ends the stream.
        yield (f"retry: 1000\nevent: connected\n"
               f"data: {json.dumps(session.connection_id)}\n\n").encode()
        for channel in channels:
            session.protocol.channels.add(channel)
            await session.subscribe(Subscribe(channel, since.get(channel), None))
            if unusable is not None and channel in session.attached_channels:
                session.report_error(RECOVERY_FAILED, f"Last-Event-ID cannot be used "
                                     f"({unusable}): subscribed live from now, messages may "
                                     "have been missed", channel)
        while True:
            try:
                item = await asyncio.wait_for(transport.queue.get(), SSE_KEEPALIVE_S)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if item is _CLOSE:
                return
            try:
                yield _sse_event(item, cursor).encode()
            except UnicodeEncodeError as exc:  # a bug upstream: never a silent dead stream
                log.warning("SSE stream of %s: a frame cannot be encoded (%s); ending the "
                            "stream", session.connection_id, exc)
                return
            if item.frame is not None and item.frame.get("type") == "closing":
                return

    async def end() -> None:
        transport.finished = True
        await gw.end_session(session)

    return EventStream(stream(), start, end)


def _sse_event(item: Outgoing, cursor: Cursor) -> str:
    event_id = ""
    if item.record is not None:
        kind = "message"
        cursor.message(ChannelName(item.record.channel), item.record.position)
        event_id = cursor.event_id()
    else:
        assert item.frame is not None
        kind = str(item.frame.get("type"))
        if kind == "subscribed":
            cursor.subscribed(ChannelName(item.frame["channel"]), item.frame["data"])
            event_id = cursor.event_id()
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {item.text}\n\n"
