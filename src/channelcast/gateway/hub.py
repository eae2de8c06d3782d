"""Local fan-out: one broker subscription per channel per node, shared by every local client.

A channel's *feed* starts with its first local listener and stops with its last. The feed's
pump reads the broker subscription, encodes each message once and hands it to every
listener through a synchronous, non-blocking ``deliver`` (each listener owns a bounded send
buffer), so one slow client never delays the others or the pump.

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
import contextlib
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from channelcast.brokers.base import Broker, Subscription
from channelcast.channels import ChannelType, channel_type
from channelcast.errors import BrokerError, HistoryUnavailable
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
from channelcast.gateway.protocol import dumps
from channelcast.message import INTERNAL, Envelope, Record
from channelcast.types import ChannelName, Position

log = logging.getLogger("channelcast.gateway")

PUMP_YIELD_EVERY = 32
FEED_QUEUE = 10_000
"""The broker subscription queue of a feed; the pump never blocks on clients, so it drains."""


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
    """A listener on a feed: buffering (recovering) or live; skips offsets <= floor."""

    buffer: list[tuple[Record, str]] | None = None
    floor: int = -2


@dataclass(eq=False)
class _Feed:
    channel: ChannelName
    subscription: Subscription
    position: Position
    listeners: dict[Listener, _Attachment] = field(default_factory=dict)
    presence: PresenceState | None = None
    task: asyncio.Task[None] | None = None


def is_internal(record: Record) -> bool:
    """A presence operation (by event: nodes before the ``internal`` type sent them as
    ordinary messages, and no other publisher may use the reserved prefix)."""
    return record.envelope.event == PRESENCE_EVENT


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
        """Make ``listener`` receive ``channel``; raises BrokerError if the broker fails."""
        feed = await self._feed(channel)
        result = AttachResult(position=feed.position)
        attachment = _Attachment()
        if since is not None:
            attachment.buffer = []
            feed.listeners[listener] = attachment
            try:
                history = await self.broker.history(channel, since)
                end = await self.broker.end_position(channel)
                if since.offset > end.offset:
                    raise HistoryUnavailable(
                        f"position {since} is ahead of the newest message of {channel!r} "
                        f"({end}); was the topic recreated?")
            except HistoryUnavailable as exc:
                result.recovered, result.recovery_error = False, str(exc)
                self.metrics.recoveries.labels("failed").inc()
                history = None
            except BaseException:
                feed.listeners.pop(listener, None)
                await self._maybe_stop(channel)
                raise
            buffered = attachment.buffer
            last = -2  # nothing replayed yet: every buffered record is new to this listener
            if history is not None:
                last = since.offset
                for record in history:
                    last = max(last, record.position.offset)
                    if not is_internal(record):
                        result.replay.append((record, dumps(record.to_dict())))
                result.recovered = True
                self.metrics.recoveries.labels("ok").inc()
            for item in buffered:
                if item[0].position.offset > last:
                    result.replay.append(item)
                    last = item[0].position.offset
            # The pump may still hold records older than what was replayed: skip those.
            attachment.floor = last
            if history is not None and last > feed.position.offset:
                result.position = Position(feed.position.topic, feed.position.partition, last)
        if member is not None and feed.presence is not None:
            diff = feed.presence.join(self.node_id, listener.connection_id, member,
                                      time.monotonic())
            self._notify_presence(feed, diff, exclude=listener)
            self._spawn(self._publish_presence(channel, join_op(
                self.node_id, listener.connection_id, member)))
        if feed.presence is not None:
            result.members = feed.presence.members()
        # Hand over the catch-up and go live in one synchronous step: no gap, no duplicate.
        if result.position.offset < feed.position.offset:
            result.position = feed.position
        listener.attached(channel, result)
        attachment.buffer = None
        feed.listeners[listener] = attachment
        self.metrics.subscriptions.inc()

    async def detach(self, channel: ChannelName, listener: Listener) -> None:
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
        await self._maybe_stop(channel)

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
            sub = self.broker.subscribe([channel], since={channel: end}, max_queue=FEED_QUEUE)
            feed = _Feed(channel, sub, end)
            if channel_type(channel) is ChannelType.PRESENCE:
                feed.presence = PresenceState(self.node_id, self.presence_ttl_s)
                self._spawn(self._publish_presence(channel, sync_op(self.node_id)))
            feed.task = asyncio.create_task(self._pump(feed))
            self._feeds[channel] = feed
            self.metrics.broker_subscriptions.set(len(self._feeds))
            return feed
        finally:
            del self._opening[channel]
            done.set_result(None)

    async def _maybe_stop(self, channel: ChannelName) -> None:
        feed = self._feeds.get(channel)
        if feed is not None and not feed.listeners:
            await self._stop_feed(channel)

    async def _stop_feed(self, channel: ChannelName) -> None:
        feed = self._feeds.pop(channel, None)  # from here on, a new attach opens a new feed
        self.metrics.broker_subscriptions.set(len(self._feeds))
        if feed is None:
            return
        if feed.task is not None:
            feed.task.cancel()
            await asyncio.gather(feed.task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await feed.subscription.close()

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
        for listener in list(feed.listeners):
            self.metrics.subscriptions.dec()
            listener.subscription_lost(feed.channel, reason)
        with contextlib.suppress(Exception):
            await feed.subscription.close()

    def _dispatch(self, feed: _Feed, record: Record) -> None:
        pos = record.position
        if (pos.topic, pos.partition) == (feed.position.topic, feed.position.partition) \
                and pos.offset <= feed.position.offset:
            return  # already seen (a redelivery)
        feed.position = pos
        if is_internal(record):
            if feed.presence is not None:
                self._apply_presence(feed, record)
            return
        text = dumps(record.to_dict())
        for listener, att in list(feed.listeners.items()):
            if att.buffer is not None:
                att.buffer.append((record, text))
            elif pos.offset > att.floor:
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
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
