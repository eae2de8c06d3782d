"""Local fan-out: one broker subscription per channel per node, shared by every local client.

A channel's *feed* starts with its first local listener and stops with its last. The feed's
pump reads the broker subscription, builds each message's client frame once (the stored
bytes with the position spliced in: :meth:`~channelcast.message.Record.frame`, never a
decode and re-encode) and hands it to every listener through a synchronous, non-blocking
``deliver`` (each listener owns a bounded send buffer), so one slow client never delays
the others or the pump. A message whose id the feed delivered moments ago (a publish
retried with the same id, see docs/brokers.md) is not delivered twice.

Stopping a feed cannot be skipped: ``detach`` does its bookkeeping synchronously and
closes the broker subscription in a task the hub owns (awaited by ``close``), so a
cancelled caller (a client that hung up mid-cleanup) never leaves a broker subscription
registered.

Recovery without gaps or duplicates: a listener with a position is first attached in
*buffering* mode, then the missed records are read with ``broker.history``; the replay plus
the buffered live records newer than the last replayed offset are handed over in one
synchronous step, and only then does the listener go live.

Presence: see :mod:`channelcast.gateway.presence`. The hub applies its own node's joins and
leaves at once and publishes them (as ``internal`` envelopes: the only way through the
reserved event prefix); it ignores its own echoes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from channelcast.brokers.base import Broker, Subscription
from channelcast.channels import ChannelType, channel_type
from channelcast.errors import BrokerError, HistoryUnavailable, MessageError
from channelcast.gateway.metrics import GatewayMetrics
from channelcast.gateway.presence import (
    PRESENCE_EVENT,
    Member,
    PresenceDiff,
    PresenceState,
    heartbeat_ops,
    join_op,
    leave_op,
    sync_op,
)
from channelcast.message import INTERNAL, Envelope, Record
from channelcast.types import ChannelName, Position

log = logging.getLogger("channelcast.gateway")

PUMP_YIELD_EVERY = 32
FEED_QUEUE = 10_000
"""The broker subscription queue of a feed; the pump never blocks on clients, so it drains."""
RECENT_IDS = 1024
"""Message ids a feed remembers to drop duplicates (a publish retried with the same id)."""


class Listener(Protocol):
    """A local client (WebSocket or SSE session) as the hub sees it."""

    connection_id: str

    def attached(self, channel: ChannelName, result: AttachResult) -> None:
        """Called once, synchronously, before any live message of the channel."""
        ...

    def deliver(self, channel: ChannelName, record: Record, text: str) -> None:
        """Queue one message; must not block."""
        ...

    def presence_changed(self, channel: ChannelName, diff: PresenceDiff) -> None: ...

    def subscription_lost(self, channel: ChannelName, reason: str) -> None: ...


@dataclass(slots=True)
class AttachResult:
    position: Position
    """The newest position of the channel this listener is now caught up with."""
    replay: list[tuple[Record, str]] = field(default_factory=list)
    recovered: bool | None = None
    """None: no position given; True: every missed message is in ``replay``; False: not."""
    recovery_error: str | None = None
    members: list[Member] | None = None


@dataclass(slots=True)
class _Attachment:
    """A listener on a feed: buffering (recovering) or live; skips records of the floor's
    partition at or below its offset (the replay already had them)."""

    buffer: list[tuple[Record, str]] | None = None
    floor: Position | None = None


@dataclass(eq=False)
class _Feed:
    channel: ChannelName
    subscription: Subscription
    position: Position
    listeners: dict[Listener, _Attachment] = field(default_factory=dict)
    presence: PresenceState | None = None
    task: asyncio.Task[None] | None = None
    recent_ids: dict[str, None] = field(default_factory=dict)


def is_internal(record: Record) -> bool:
    """A presence operation: marked internal by the broker, or (nodes from before the
    ``internal`` type sent them as ordinary messages, and no other publisher may use the
    reserved prefix) by its event."""
    return record.internal or record.event == PRESENCE_EVENT


class Hub:
    def __init__(self, broker: Broker, *, node_id: str | None = None,
                 presence_ttl_s: float = 15.0, metrics: GatewayMetrics | None = None) -> None:
        self.broker = broker
        self.node_id = node_id or uuid.uuid4().hex[:12]
        self.presence_ttl_s = presence_ttl_s
        self.metrics = metrics or GatewayMetrics()
        self._feeds: dict[ChannelName, _Feed] = {}
        self._opening: dict[ChannelName, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._presence_task: asyncio.Task[None] | None = None
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._presence_task = asyncio.create_task(self._presence_loop())

    async def close(self) -> None:
        self._closed = True
        if self._presence_task is not None:
            self._presence_task.cancel()
            await asyncio.gather(self._presence_task, return_exceptions=True)
        for channel in list(self._feeds):
            await self._stop_feed(channel)
        if self._tasks:  # pending presence publishes: let them finish, briefly
            await asyncio.wait(self._tasks, timeout=5)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def feed_count(self) -> int:
        return len(self._feeds)

    def members(self, channel: str) -> list[Member]:
        feed = self._feeds.get(ChannelName(channel))
        return [] if feed is None or feed.presence is None else feed.presence.members()

    # --- attach / detach --------------------------------------------------------------
    async def attach(self, channel: ChannelName, listener: Listener, *,
                     since: Position | None = None, member: Member | None = None) -> None:
        """Make ``listener`` receive ``channel``; raises BrokerError if the broker fails.

        If the feed ends while the listener is catching up (its broker subscription
        failed: the topic was recreated, say), the attach starts over on a new feed; the
        listener only ever sees the outcome."""
        for attempt in range(3):
            if await self._attach(channel, listener, since, member):
                return
            log.info("feed %s ended while %s was attaching; attaching again (attempt %d)",
                     channel, listener.connection_id, attempt + 2)
        raise BrokerError(f"could not attach to {channel!r}: its broker subscription kept "
                          "ending while catching up")

    async def _attach(self, channel: ChannelName, listener: Listener,
                      since: Position | None, member: Member | None) -> bool:
        feed = await self._feed(channel)
        result = AttachResult(position=feed.position)
        attachment = _Attachment()
        if since is not None:
            attachment.buffer = []
            feed.listeners[listener] = attachment
            try:
                # Raises HistoryUnavailable for a position of another epoch, partition or
                # ahead of the end (a recreated topic), as well as for one retention removed.
                history = await self.broker.history(channel, since)
            except HistoryUnavailable as exc:
                result.recovered, result.recovery_error = False, str(exc)
                self.metrics.recoveries.labels("failed").inc()
                history = None
            except BaseException:
                feed.listeners.pop(listener, None)
                self._maybe_stop(channel)
                raise
            if self._feeds.get(channel) is not feed:  # the feed ended meanwhile
                feed.listeners.pop(listener, None)
                return False
            buffered = attachment.buffer
            last: Position | None = None  # nothing replayed: every buffered record is new
            if history is not None:
                last = since
                for record in history:
                    if record.position.offset > last.offset:
                        last = record.position
                    if not is_internal(record):
                        frame = _frame(record)
                        if frame is not None:
                            result.replay.append((record, frame))
                result.recovered = True
                self.metrics.recoveries.labels("ok").inc()
            for item in buffered:
                if _newer(item[0].position, last):
                    result.replay.append(item)
                    last = item[0].position
            # The pump may still hold records older than what was replayed: skip those.
            attachment.floor = last
            if (history is not None and last is not None and _same_partition(
                    last, feed.position) and last.offset > feed.position.offset):
                result.position = last
        if member is not None and feed.presence is not None:
            diff = feed.presence.join(self.node_id, listener.connection_id, member,
                                      time.monotonic())
            self._notify_presence(feed, diff, exclude=listener)
            self._spawn(self._publish_presence(channel, join_op(
                self.node_id, listener.connection_id, member)))
        if feed.presence is not None:
            result.members = feed.presence.members()
        # Hand over the catch-up and go live in one synchronous step: no gap, no duplicate.
        if not _same_partition(result.position, feed.position) or \
                result.position.offset < feed.position.offset:
            result.position = feed.position
        if result.replay:
            # The replay comes after the `subscribed` reply: its position must be where the
            # listener stands *before* the replay, or a client that drops mid-replay and
            # resubscribes from it would skip what it never got.
            first = result.replay[0][0].position
            result.position = Position(first.topic, first.partition, first.offset - 1,
                                       first.epoch)
        listener.attached(channel, result)
        attachment.buffer = None
        feed.listeners[listener] = attachment
        self.metrics.subscriptions.inc()
        return True

    async def detach(self, channel: ChannelName, listener: Listener) -> None:
        """Stop delivering ``channel`` to ``listener``. Everything it must do happens before
        its first await point, so cancelling the caller cannot leave anything behind."""
        self.detach_now(channel, listener)

    def detach_now(self, channel: ChannelName, listener: Listener) -> None:
        """:meth:`detach`, synchronously: the broker subscription of a feed that lost its
        last listener is closed by a task the hub owns."""
        feed = self._feeds.get(channel)
        if feed is None or listener not in feed.listeners:
            return
        del feed.listeners[listener]
        self.metrics.subscriptions.dec()
        if feed.presence is not None and \
                listener.connection_id in feed.presence.local_connections():
            diff = feed.presence.leave(self.node_id, listener.connection_id, time.monotonic())
            self._notify_presence(feed, diff)
            self._spawn(self._publish_presence(channel, leave_op(
                self.node_id, listener.connection_id)))
        self._maybe_stop(channel)

    # --- feeds ------------------------------------------------------------------------
    async def _feed(self, channel: ChannelName) -> _Feed:
        """The channel's feed, opened if needed; concurrent callers share one opening.
        (No per-channel lock objects: nothing is kept for channels without a feed.)"""
        while True:
            feed = self._feeds.get(channel)
            if feed is not None:
                return feed
            opening = self._opening.get(channel)
            if opening is None:
                break
            await asyncio.shield(opening)  # then look again: it may have failed or stopped
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._opening[channel] = done
        try:
            # Start from the current end by position, so nothing published after this
            # point is missed while the broker subscription warms up.
            end = await self.broker.end_position(channel)
            presence = channel_type(channel) is ChannelType.PRESENCE
            sub = self.broker.subscribe([channel], since={channel: end}, max_queue=FEED_QUEUE,
                                        include_internal=presence)
            feed = _Feed(channel, sub, end)
            if presence:
                feed.presence = PresenceState(self.node_id, self.presence_ttl_s)
                self._spawn(self._publish_presence(channel, sync_op(self.node_id)))
            feed.task = asyncio.create_task(self._pump(feed))
            self._feeds[channel] = feed
            self.metrics.broker_subscriptions.set(len(self._feeds))
            return feed
        finally:
            del self._opening[channel]
            done.set_result(None)

    def _maybe_stop(self, channel: ChannelName) -> None:
        feed = self._feeds.get(channel)
        if feed is not None and not feed.listeners:
            self._spawn(self._retire(feed))

    def _remove_feed(self, feed: _Feed) -> None:
        """Forget the feed (from here on, a new attach opens a new one) and stop its pump."""
        if self._feeds.get(feed.channel) is feed:
            del self._feeds[feed.channel]
        self.metrics.broker_subscriptions.set(len(self._feeds))
        if feed.task is not None:
            feed.task.cancel()

    def _retire(self, feed: _Feed) -> Coroutine[Any, Any, None]:
        """Remove the feed now; the returned coroutine closes its broker subscription."""
        self._remove_feed(feed)
        return self._close_feed(feed)

    async def _close_feed(self, feed: _Feed) -> None:
        if feed.task is not None:
            await asyncio.gather(feed.task, return_exceptions=True)
        try:
            await feed.subscription.close()
        except Exception as exc:  # never silent: a subscription that would not close leaks
            log.warning("closing the broker subscription of %s failed: %r", feed.channel, exc)

    async def _stop_feed(self, channel: ChannelName) -> None:
        feed = self._feeds.get(channel)
        if feed is not None:
            await self._retire(feed)

    async def _pump(self, feed: _Feed) -> None:
        reason = "the broker subscription ended"
        count = 0
        try:
            async for record in feed.subscription:
                if record.channel == feed.channel:
                    self._dispatch(feed, record)
                count += 1
                if count % PUMP_YIELD_EVERY == 0:
                    # Let the writers flush into their sockets, so a burst larger than a
                    # send buffer only drops for clients that really are not reading.
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except BrokerError as exc:
            reason = f"broker error: {exc}"
            log.warning("feed %s failed: %s", feed.channel, exc)
        except Exception as exc:  # a bug must not leave clients silently stuck
            reason = f"internal error: {type(exc).__name__}"
            log.exception("feed %s crashed", feed.channel)
        if self._closed or self._feeds.get(feed.channel) is not feed:
            return
        # Tell every listener plainly; they may resubscribe with their positions.
        del self._feeds[feed.channel]
        self.metrics.broker_subscriptions.set(len(self._feeds))
        for listener, att in list(feed.listeners.items()):
            if att.buffer is not None:
                continue  # still attaching: its attach starts over and tells it the outcome
            self.metrics.subscriptions.dec()
            listener.subscription_lost(feed.channel, reason)
        feed.listeners.clear()
        feed.task = None  # this task: nothing to wait for
        self._spawn(self._close_feed(feed))

    def _dispatch(self, feed: _Feed, record: Record) -> None:
        # The broker subscription delivers each record once, in order: the position needs
        # no check here (the attachments' floors handle a recovery's overlap).
        pos = feed.position = record.position
        if is_internal(record):
            if feed.presence is not None:
                self._apply_presence(feed, record)
            return
        recent = feed.recent_ids
        if record.id in recent:
            log.info("feed %s: message id %s delivered already (a retried publish); "
                     "dropping the copy at %s", feed.channel, record.id, pos)
            return
        recent[record.id] = None
        if len(recent) > RECENT_IDS:
            del recent[next(iter(recent))]
        text = _frame(record)
        if text is None:
            return
        for listener, att in list(feed.listeners.items()):
            if att.buffer is not None:
                att.buffer.append((record, text))
            elif att.floor is None or _newer(pos, att.floor):
                listener.deliver(feed.channel, record, text)

    # --- presence ---------------------------------------------------------------------
    def _apply_presence(self, feed: _Feed, record: Record) -> None:
        assert feed.presence is not None
        op = record.envelope.data
        if not isinstance(op, dict) or op.get("node") == self.node_id:
            return  # our own echo: local state is already authoritative
        diff, wants_sync = feed.presence.apply(op, time.monotonic())
        self._notify_presence(feed, diff)
        if wants_sync:
            local = feed.presence.local_connections()
            if local:
                self._spawn(self._publish_presence(feed.channel,
                                                   *heartbeat_ops(self.node_id, local)))

    def _notify_presence(self, feed: _Feed, diff: PresenceDiff,
                         exclude: Listener | None = None) -> None:
        if not diff:
            return
        for listener, att in list(feed.listeners.items()):
            if listener is not exclude and att.buffer is None:
                listener.presence_changed(feed.channel, diff)

    async def _publish_presence(self, channel: ChannelName, *ops: dict[str, Any]) -> None:
        """Publish presence operations in order (the parts of one heartbeat, say)."""
        for op in ops:
            try:
                await self.broker.publish_many(
                    [Envelope(channel, PRESENCE_EVENT, op, type=INTERNAL)])
            except Exception as exc:
                log.warning("could not publish presence %s on %s: %s", op.get("op"), channel,
                            exc)
                return

    async def _presence_loop(self) -> None:
        """Heartbeat every ttl/3; expire silent nodes every ttl/10."""
        tick = max(0.05, self.presence_ttl_s / 10)
        last_beat = 0.0
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            beat = now - last_beat >= self.presence_ttl_s / 3
            if beat:
                last_beat = now
            for feed in list(self._feeds.values()):
                if feed.presence is None:
                    continue
                self._notify_presence(feed, feed.presence.expire(now))
                local = feed.presence.local_connections()
                if beat and local:
                    self._spawn(self._publish_presence(feed.channel,
                                                       *heartbeat_ops(self.node_id, local)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task the hub owns (awaited, briefly, by ``close``)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _same_partition(a: Position, b: Position) -> bool:
    return a.topic == b.topic and a.partition == b.partition


def _newer(position: Position, floor: Position | None) -> bool:
    """Whether ``position`` comes after ``floor`` (a record of another partition, after a
    channel moved to a new partition, always does)."""
    return floor is None or not _same_partition(position, floor) or \
        position.offset > floor.offset


def _frame(record: Record) -> str | None:
    """The record's client frame, or None (logged) for bytes that are not a JSON object."""
    try:
        return record.frame()
    except MessageError as exc:
        log.warning("skipping the message at %s: %s", record.position, exc)
        return None
