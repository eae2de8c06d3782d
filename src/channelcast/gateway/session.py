"""One client connection: runs its protocol's actions, owns its send buffer and writer task.

The actions run against the hub; transports (WebSocket, SSE) only move text.

Send buffer: at most ``send_queue`` frames wait for a client. When it is full:

* ``drop-oldest``: the oldest queued *message* is dropped (control frames such as
  ``subscribed`` are never dropped) and, before the next frame, the client gets
  ``{"type": "dropped", "data": {"count": n, "channels": [...]}}``. It can resubscribe
  with its last positions to recover what was dropped.
* ``disconnect``: the connection is closed with code 4008 ("slow client").

Deliveries never wait: a slow client only ever slows down its own writer task.

Control frames (everything but messages: replies such as ``pong`` and ``error``,
``subscribed``, presence events) are never dropped, so they are bounded by size instead:
while more than :data:`CONTROL_PAUSE_BYTES` of them wait unread, :meth:`Session.handle`
does not return, so the transport reads no further client frame (the client meets TCP
backpressure: a client that sends and never reads cannot make the server queue replies
without end); should they pass :data:`CONTROL_LIMIT_BYTES` anyway (frames the server sends
of its own accord, such as presence events), the connection is closed with 4008.

Writing: the writer task takes what is queued when it wakes up. With a transport that can
write synchronously (:class:`DirectTransport`), it hands over as many queued frames as fit
below the transport's high-water mark in one call, so a burst costs one wake-up and one
socket write per session rather than one per frame; frames that do not fit stay in the
outbox, where the policy above still applies to them.

A writer stops quietly when its client went away (the transport raises an OSError, such as
ConnectionError). Any other failure is logged at WARNING with the connection id and the
connection is closed with 1011 ("internal error"): never a client left connected that
nothing writes to. A transport must raise as soon as its connection is closing or lost,
not only once the server noticed (the WebSocket one asks the connection): a send that need
not wait never yields to the event loop, so a writer with a backlog (a recovery replay)
would otherwise write all of it into a dead socket, each write logged by asyncio.

How the connection ended (:meth:`Session.end_summary`: the close code and why, the
server's reason first) is what the node logs in its one INFO line per connection end.

Write timeout: when the transport cannot take the next frame for ``write_timeout_s``
seconds (its buffer stayed above the high-water mark: the client does not read, or reads
too little to drain it), the connection is cut (:meth:`AbortableTransport.abort`, no close
frame: it could not get out) and its subscriptions are released. A client that is slow but
drains its socket within that time is never cut by it.

Release: :meth:`Session.aclose` (or :meth:`Session.release`) leaves every channel and stops
the writer in a task of its own, started once. A caller that is cancelled (Starlette
cancels an SSE stream when its client disconnects, and anyio cancels again at every await)
stops waiting for it; the release itself runs to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from channelcast.errors import ChannelcastError, SerializationError
from channelcast.gateway.hub import AttachResult, Hub
from channelcast.gateway.metrics import GatewayMetrics
from channelcast.gateway.presence import PresenceDiff
from channelcast.gateway.protocol import (
    BAD_FRAME,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_SLOW_CLIENT,
    RECOVERY_FAILED,
    SUBSCRIBE_FAILED,
    SUBSCRIPTION_LOST,
    Send,
    Subscribe,
    Unsubscribe,
    WireProtocol,
    dropped_frame,
    dumps,
)
from channelcast.message import Record
from channelcast.types import ChannelName

log = logging.getLogger("channelcast.gateway")

DROP_OLDEST = "drop-oldest"
DISCONNECT = "disconnect"
CLOSE_RESERVE = 1.0
"""Seconds of a graceful shutdown kept for the close frame after the flush (at most half
of the shutdown's bound)."""
CONTROL_PAUSE_BYTES = 256 * 1024
"""Bytes (UTF-8) of unread control frames above which no further client frame is read."""
CONTROL_LIMIT_BYTES = 4 * 1024 * 1024
"""Bytes (UTF-8) of unread control frames above which the connection is closed (4008)."""


def text_bytes(text: str) -> int:
    """The UTF-8 size of ``text``: O(1) for ASCII text (CPython knows it is ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@dataclass(slots=True)
class Outgoing:
    """One frame for the client. ``record`` is set for messages (droppable, with a position)."""

    text: str
    record: Record | None = None
    frame: dict[str, Any] | None = None
    replay: bool = False
    """A recovery replay: bounded by the broker's history, so not counted or dropped."""

    @property
    def droppable(self) -> bool:
        return self.record is not None and not self.replay


class Transport(Protocol):
    async def send(self, item: Outgoing) -> None:
        """Write one frame, waiting while the client is not reading; raises an OSError
        (e.g. ConnectionError) once the client is gone or the connection is closing."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close with this code; must give up (and cut the connection) within seconds."""
        ...


@runtime_checkable
class DirectTransport(Transport, Protocol):
    """A transport that can also write at once, without awaiting."""

    def room(self) -> int:
        """How much text may be written now without going over the high-water mark;
        0 when the transport is paused or cannot write directly (then ``send`` is used)."""
        ...

    def send_now(self, items: list[Outgoing]) -> None:
        """Write these frames at once, in order; raises an OSError if the client is gone."""
        ...


@dataclass(frozen=True, slots=True)
class WireClose:
    """How a WebSocket's closing handshake went (RFC 6455 7.1.5): ``by`` sent the first
    close frame (``"server"`` or ``"client"``), with ``code`` and ``reason``; ``by`` None
    and code 1006 when the connection ended without a close frame either way."""

    code: int
    reason: str
    by: Literal["server", "client"] | None


@runtime_checkable
class ClosingTransport(Transport, Protocol):
    """A transport that knows how its connection was closed on the wire."""

    def how_closed(self) -> WireClose | None:
        """The close as it went on the wire, or None when it does not know (yet)."""
        ...


@runtime_checkable
class AbortableTransport(Transport, Protocol):
    """A transport that can also cut its connection at once."""

    async def abort(self) -> None:
        """Cut the connection now, without a close frame (one that cannot get out: the
        client stopped reading); falls back to ``close`` where it cannot."""
        ...


def _default_dropped(count: int, channels: list[str]) -> Outgoing:
    frame = dropped_frame(count, channels)
    return Outgoing(dumps(frame), frame=frame)


class Outbox:
    """The bounded per-connection send buffer (see the module docstring for the policy)."""

    def __init__(self, limit: int, policy: str,
                 render_dropped: Callable[[int, list[str]], Outgoing] | None = None, *,
                 control_pause: int = CONTROL_PAUSE_BYTES,
                 control_limit: int = CONTROL_LIMIT_BYTES,
                 on_control_overflow: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.policy = policy
        self._render_dropped = render_dropped or _default_dropped
        self._items: deque[Outgoing] = deque()
        self._live = 0  # queued droppable messages: the bounded part
        self._ready = asyncio.Event()
        self._finished = False
        self.dropped = 0
        self.dropped_channels: set[str] = set()
        self.control_bytes = 0
        """UTF-8 bytes of the queued control frames (not messages): bounded by size."""
        self.control_pause = control_pause
        self.control_limit = control_limit
        self._on_control_overflow = on_control_overflow
        self._readable = asyncio.Event()
        self._readable.set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Outgoing) -> bool:
        """Queue ``item``; False means the buffer overflowed: a message under the
        disconnect policy, or a control frame over ``control_limit`` bytes of unread ones
        (then ``on_control_overflow`` is called, and the frame is not queued)."""
        if self._finished:
            return True
        if item.record is not None:
            if not item.replay:  # droppable, inlined: hot path
                if self._live >= self.limit:
                    if self.policy == DISCONNECT:
                        return False
                    self._drop_oldest()
                self._live += 1
        else:
            if self.control_bytes > self.control_limit:
                if self._on_control_overflow is not None:
                    self._on_control_overflow()
                return False
            self.control_bytes += text_bytes(item.text)
            if self.control_bytes > self.control_pause:
                self._readable.clear()
        self._items.append(item)
        self._ready.set()
        return True

    def _took_control(self, size: int) -> None:
        self.control_bytes -= size
        if self.control_bytes <= self.control_pause:
            self._readable.set()

    @property
    def over_pause(self) -> bool:
        """More than ``control_pause`` bytes of control frames wait unread."""
        return self.control_bytes > self.control_pause and not self._finished

    async def wait_readable(self) -> None:
        """Until at most ``control_pause`` bytes of control frames wait unread (or the
        outbox is finished): what the transport waits for before reading a client frame."""
        while self.over_pause:
            await self._readable.wait()

    def _drop_oldest(self) -> None:
        victim = next(i for i, q in enumerate(self._items) if q.droppable)
        dropped = self._items[victim]
        del self._items[victim]
        self._live -= 1
        assert dropped.record is not None
        self.dropped += 1
        self.dropped_channels.add(dropped.record.channel)

    def finish(self) -> None:
        """No more frames: ``get`` returns None once the queue is drained."""
        self._finished = True
        self._ready.set()
        self._readable.set()

    async def wait(self) -> bool:
        """Until something is queued (True) or the outbox is finished and drained (False)."""
        while not self._items:
            if self._finished:
                return False
            self._ready.clear()
            await self._ready.wait()
        return True

    async def get(self) -> Outgoing | None:
        if not await self.wait():
            return None
        return self.get_nowait()

    def _take_dropped(self) -> Outgoing:
        notice = self._render_dropped(self.dropped, sorted(self.dropped_channels))
        self.dropped = 0
        self.dropped_channels.clear()
        return notice

    def get_nowait(self) -> Outgoing | None:
        """The next frame (a pending ``dropped`` notice first), or None when empty."""
        if not self._items:
            return None
        if self.dropped:
            return self._take_dropped()
        item = self._items.popleft()
        if item.record is None:
            self._took_control(text_bytes(item.text))
        elif not item.replay:
            self._live -= 1
        return item

    def take(self, room: int) -> list[Outgoing]:
        """Frames from the front (a pending ``dropped`` notice first) while their text adds
        up to less than ``room`` characters: at least one if any is queued and ``room`` > 0.
        What is not taken stays queued, under the policy."""
        batch: list[Outgoing] = []
        if not self._items:
            return batch
        size = 0
        if self.dropped:
            notice = self._take_dropped()
            batch.append(notice)
            size = len(notice.text)
        items = self._items
        taken_live = 0
        taken_control = 0
        while items and size < room:
            item = items.popleft()
            batch.append(item)
            size += len(item.text)
            if item.record is None:
                taken_control += text_bytes(item.text)
            elif not item.replay:
                taken_live += 1
        self._live -= taken_live
        if taken_control:
            self._took_control(taken_control)
        return batch


_ids = itertools.count(1)


class _LastMessage:
    item: Outgoing | None = None


def _shared_message(record: Record, text: str) -> Outgoing:
    """The hub hands one record and one text to every listener in turn: they can all queue
    the same (never mutated) Outgoing instead of one each."""
    item = _LastMessage.item
    if item is None or item.record is not record or item.text is not text:
        item = _LastMessage.item = Outgoing(text, record=record)
    return item


class Session:
    """A connected client: a protocol state machine, a hub listener and a writer task."""

    def __init__(self, hub: Hub, protocol: WireProtocol, transport: Transport, *,
                 send_queue: int = 256, slow_client_policy: str = DROP_OLDEST,
                 write_timeout_s: float | None = None,
                 metrics: GatewayMetrics | None = None) -> None:
        self.hub = hub
        self.protocol = protocol
        self.transport = transport
        self.connection_id = protocol.connection_id
        self.metrics = metrics or hub.metrics
        self.outbox = Outbox(send_queue, slow_client_policy, self._render_dropped,
                             on_control_overflow=self._control_overflow)
        self.attached_channels: set[ChannelName] = set()
        self.closed = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.write_timeout_s = write_timeout_s
        """Seconds the transport may take to accept the next frame; None waits forever."""
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._release: asyncio.Task[None] | None = None
        self.end_code: int | None = None
        """The close code the server ended the connection with (None: it did not)."""
        self.end_reason = ""
        """Why the server ended the connection ("" if it did not)."""
        self.client_close: tuple[int, str] | None = None
        """The client's close code and reason, when the transport reported them."""

    @property
    def outbox_closed(self) -> bool:
        """True once the session is closing: further client frames are ignored."""
        return self._closing

    @staticmethod
    def new_connection_id(node_id: str) -> str:
        return f"{node_id}.{next(_ids)}"

    # --- how it ended -----------------------------------------------------------------
    def server_ended(self, code: int, reason: str) -> None:
        """Record that the server ends the connection with ``code`` (the first call wins)."""
        if self.end_code is None and not self.end_reason:
            self.end_code, self.end_reason = code, reason

    def client_closed(self, code: int, reason: str = "") -> None:
        """Record the close code and reason the transport reported for the client."""
        if self.client_close is None:
            self.client_close = (code, reason)

    def end_summary(self) -> str:
        """How the connection ended, for the log: the close code, who closed and why.

        When the transport knows the close frames (:class:`ClosingTransport`), they say
        who closed and with what code (the code on the wire: a Pusher connection's 4200,
        not the 1001 it maps from); the server's own reason is shown when it has one.
        Without a close frame either way it is 1006 (RFC 6455 7.1.5), unless the server
        cut the connection itself (a write timeout). Otherwise: the server's code and
        reason if it ended the connection, else the client's code, else "the client
        went away"."""
        wire = self.transport.how_closed() if isinstance(self.transport,
                                                         ClosingTransport) else None
        server_said = self.end_code is not None or bool(self.end_reason)
        if wire is not None:
            if wire.by == "server":
                return f"code {wire.code} by the server: {self.end_reason or wire.reason}"
            if wire.by == "client":
                return self._client_summary(wire.code, wire.reason)
            if not server_said:
                return f"the client went away without a close frame ({wire.code})"
            # The server cut it (a write timeout, or its close frame never got out).
            return (f"cut by the server without a close frame reaching the client "
                    f"({wire.code}): {self.end_reason}")
        codes = getattr(self.transport, "close_codes", True)
        if server_said:
            shown = f"code {self.end_code} " if codes and self.end_code is not None else ""
            return f"{shown}by the server: {self.end_reason}"
        if self.client_close is not None and codes:
            code, reason = self.client_close
            if code == 1005:  # what the server reports when no close code came
                return "the client went away without a close code (1005)"
            return self._client_summary(code, reason)
        return "the client went away"

    @staticmethod
    def _client_summary(code: int, reason: str) -> str:
        if code == 1005:  # RFC 6455 7.1.5: a close frame without a status code
            return "code 1005 by the client (a close frame without a code)"
        return f"code {code} by the client" + (f": {reason[:80]!r}" if reason else "")

    # --- lifecycle ------------------------------------------------------------------
    def start(self, *, greet: bool = True) -> None:
        if greet:
            self._send(self.protocol.render_connected())
        self._writer = asyncio.create_task(self._write_loop())

    async def _write_loop(self) -> None:
        transport = self.transport
        direct = transport if isinstance(transport, DirectTransport) else None
        outbox = self.outbox
        limit = self.write_timeout_s
        deadline: asyncio.Timeout | None = None
        try:
            while await outbox.wait():
                room = 0 if direct is None else direct.room()
                if room > 0:  # everything that fits below the high-water mark, in one write
                    assert direct is not None
                    direct.send_now(outbox.take(room))
                    continue
                item = outbox.get_nowait()  # paused (or no direct path): the waiting way
                assert item is not None
                if limit is None:
                    await transport.send(item)
                    continue
                async with asyncio.timeout(limit) as deadline:
                    await transport.send(item)
                deadline = None
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            if deadline is None or not deadline.expired():
                log.debug("writer of %s stopped: the client went away (%s)",
                          self.connection_id, exc)
            else:
                await self._close_stalled(limit)
        except OSError as exc:  # the client went away mid-send
            log.debug("writer of %s stopped: the client went away (%s)", self.connection_id, exc)
        except Exception as exc:
            log.warning("writer of %s failed (%s: %s); closing the connection with %d",
                        self.connection_id, type(exc).__name__, exc, CLOSE_INTERNAL_ERROR,
                        exc_info=exc)
            await self._close_failed(f"internal error: the writer failed ({type(exc).__name__})")
        finally:
            # Nothing is written from here on: take no more frames, and let a transport
            # waiting in handle() for the control frames to drain read on (and end).
            outbox.finish()
            self.closed.set()

    async def _close_stalled(self, limit: float | None) -> None:
        """After a write timeout: cut the connection and release its subscriptions."""
        self.server_ended(1006, f"write timeout: the client took nothing for {limit} s")
        self._closing = True
        self.outbox.finish()
        self.metrics.slow_disconnects.inc()
        with contextlib.suppress(Exception):
            if isinstance(self.transport, AbortableTransport):
                await self.transport.abort()
            else:
                await self.transport.close(CLOSE_SLOW_CLIENT, "write timeout")
        self.release()  # not awaited: the release stops this writer, which returns now

    async def _close_failed(self, reason: str) -> None:
        """After a writer failure: take no more frames, close with 1011."""
        self.server_ended(CLOSE_INTERNAL_ERROR, reason)
        self._closing = True
        self.outbox.finish()
        with contextlib.suppress(Exception):
            await self.transport.close(CLOSE_INTERNAL_ERROR, "internal error")

    async def __aenter__(self) -> Session:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """The connection ended: leave every channel and stop the writer. Safe to call
        again, and from a task that is being cancelled: the work runs in :meth:`release`'s
        task, which a cancelled caller stops waiting for but does not stop."""
        await asyncio.shield(self.release())

    def release(self) -> asyncio.Task[None]:
        """Start releasing the connection (once) and return the task that does it: take no
        more frames, leave every channel, stop the writer and helper tasks."""
        if self._release is None:
            self._closing = True
            self.outbox.finish()
            self._release = asyncio.create_task(self._release_all(),
                                                name=f"release {self.connection_id}")
        return self._release

    async def _release_all(self) -> None:
        try:
            for channel in list(self.attached_channels):
                await self._detach(channel)
        finally:
            if self._writer is not None and not self._writer.done():
                self._writer.cancel()
                await asyncio.gather(self._writer, return_exceptions=True)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.closed.set()

    async def shutdown(self, reason: str, flush_s: float = 5.0) -> None:
        """Graceful: tell the client, flush what is queued, then close with 1001, all within
        ``flush_s`` seconds: the flush may take all but the last :data:`CLOSE_RESERVE`
        of them, the close frame the rest; a connection still open then is cut (a client
        that stopped reading never takes the close frame either)."""
        if self._closing:
            return
        self.server_ended(CLOSE_GOING_AWAY, reason)
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flush_s
        self._send(self.protocol.render_closing(reason))
        self.outbox.finish()
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer),
                                       flush_s - min(CLOSE_RESERVE, flush_s / 2))
            if not self._writer.done():  # the client does not read: give up flushing
                self._writer.cancel()
                await asyncio.gather(self._writer, return_exceptions=True)
        try:
            await asyncio.wait_for(self.transport.close(CLOSE_GOING_AWAY, reason),
                                   max(0.0, deadline - loop.time()))
        except Exception:
            if isinstance(self.transport, AbortableTransport):
                with contextlib.suppress(Exception):
                    await self.transport.abort()

    # --- frames from the client -------------------------------------------------------
    async def handle(self, frame: str | bytes) -> None:
        """Run one client frame's actions. Returns once the control frames waiting unread
        are at most ``CONTROL_PAUSE_BYTES`` (see the module docstring): the transport reads
        the next frame only then."""
        for action in self.protocol.receive(frame):
            if isinstance(action, Send):
                if action.error_code is not None:
                    self.metrics.errors.labels(action.error_code).inc()
                try:
                    text = self.protocol.encode(action.frame)
                except SerializationError as exc:  # e.g. a ping whose data nests too deep
                    self._error(BAD_FRAME, f"cannot answer this frame: {exc}")
                    continue
                self.outbox.put(Outgoing(text, frame=action.frame))
            elif isinstance(action, Subscribe):
                await self.subscribe(action)
            elif isinstance(action, Unsubscribe):
                await self._detach(action.channel)
        if self.outbox.over_pause:  # read no further frame until the client reads
            await self.outbox.wait_readable()

    async def subscribe(self, action: Subscribe) -> None:
        try:
            await self.hub.attach(action.channel, self, since=action.since,
                                  member=action.member)
        except ChannelcastError as exc:
            self.protocol.subscription_failed(action.channel)
            self._error(SUBSCRIBE_FAILED, f"could not subscribe: {exc}", action.channel)
            return
        if self._closing:  # the connection ended while we were attaching
            await self._detach(action.channel)

    async def _detach(self, channel: ChannelName) -> None:
        if channel in self.attached_channels:
            self.attached_channels.discard(channel)
            await self.hub.detach(channel, self)

    # --- hub listener -----------------------------------------------------------------
    def attached(self, channel: ChannelName, result: AttachResult) -> None:
        self.attached_channels.add(channel)
        self._send(self.protocol.render_subscribed(
            channel, result.position, recovered=result.recovered, members=result.members))
        if result.recovered is False:
            self._error(RECOVERY_FAILED, "recovery failed, messages were missed: "
                        f"{result.recovery_error}", channel)
        for record, text in result.replay:
            self.outbox.put(Outgoing(self.protocol.render_message(record, text), record=record,
                                     replay=True))
        self.metrics.delivered += len(result.replay)

    def deliver(self, channel: ChannelName, record: Record, text: str) -> None:
        if self._closing:
            return
        outbox = self.outbox
        before = outbox.dropped
        if not outbox.put(_shared_message(record, self.protocol.render_message(record, text))):
            self._slow_disconnect()
            return
        # A plain int, not a Counter.inc() (a lock) per delivery: see GatewayMetrics.
        self.metrics.delivered += 1
        if outbox.dropped > before:
            self.metrics.drops.inc(outbox.dropped - before)

    def presence_changed(self, channel: ChannelName, diff: PresenceDiff) -> None:
        for member in diff.added:
            self._send(self.protocol.render_member("member_added", channel, member))
        for member in diff.removed:
            self._send(self.protocol.render_member("member_removed", channel, member))

    def subscription_lost(self, channel: ChannelName, reason: str) -> None:
        self.attached_channels.discard(channel)
        self.protocol.subscription_failed(channel)
        advice = "" if "resubscribe" in reason else \
            "; resubscribe with your last position to recover"
        self._error(SUBSCRIPTION_LOST, f"{reason}{advice}", channel)

    # --- send buffer ------------------------------------------------------------------
    def _send(self, frame: dict[str, Any]) -> None:
        """Queue a frame of the server's own. Never raises into the hub: a frame that
        cannot be encoded as strict JSON (a bug: inputs are checked where they enter)
        closes the connection with 1011 and a WARNING."""
        try:
            text = self.protocol.encode(frame)
        except SerializationError as exc:
            self._unsendable(frame, exc)
            return
        self.outbox.put(Outgoing(text, frame=frame))

    def _unsendable(self, frame: dict[str, Any], exc: SerializationError) -> None:
        log.warning("connection %s: a %r frame cannot be sent as strict JSON (%s); closing "
                    "the connection with %d", self.connection_id, frame.get("type"), exc,
                    CLOSE_INTERNAL_ERROR)
        if self._closing:
            return
        self._closing = True
        self.outbox.finish()
        task = asyncio.create_task(self._close_failed(
            f"internal error: a {str(frame.get('type'))[:40]!r} frame could not be encoded"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def report_error(self, code: str, message: str, channel: str | None = None) -> None:
        """Send the client an ``error`` frame (counted in the protocol error metric)."""
        self._error(code, message, channel)

    def _error(self, code: str, message: str, channel: str | None = None) -> None:
        self.metrics.errors.labels(code).inc()
        self._send(self.protocol.render_error(code, message, channel))

    def _render_dropped(self, count: int, channels: list[str]) -> Outgoing:
        frame = self.protocol.render_dropped(count, channels)
        return Outgoing(self.protocol.encode(frame), frame=frame)

    def _control_overflow(self) -> None:
        if not self._closing:
            self._slow_disconnect(f"slow client: over {self.outbox.control_limit} bytes of "
                                  "control frames unread")

    def _slow_disconnect(self, reason: str = "slow client: send buffer full "
                         "(slow_client_policy = disconnect)") -> None:
        self.server_ended(CLOSE_SLOW_CLIENT, reason)
        self._closing = True
        self.outbox.finish()
        self.metrics.slow_disconnects.inc()
        task = asyncio.create_task(self._close_slow())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close_slow(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.transport.close(CLOSE_SLOW_CLIENT, "slow client")
        self.closed.set()
