"""The embedded in-memory broker: Kafka's semantics inside one process.

Topics have partitions and offsets (from the same strategy as Kafka), each partition keeps
a bounded history (``history_size`` messages and ``history_bytes`` encoded bytes; the
oldest go first and the low watermark moves up), consumer groups share partitions among
members and commit offsets, and a member that goes away without committing gets its
messages redelivered to the others. Positions carry the broker's *epoch*, a random id per
instance: a position from an earlier run (a restarted gateway) is recognised as such. It
must never do network I/O.

Stored messages stay encoded (the bytes :func:`~channelcast.message.encode` made); a
subscriber decodes one only if it reads its envelope.

Overflow: a fan-out subscription's queue is bounded. Publishing never waits for it: when
it is full the subscription falls behind (stops receiving live records) and, once its
reader emptied the queue, catches up from the partition's history, or raises
HistoryUnavailable if the history no longer reaches back that far.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Self

from channelcast.brokers.base import (
    DEFAULT_SUBSCRIPTION_QUEUE,
    HEADER_CHANNEL,
    HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_ERROR,
    HEADER_DLQ_OFFSET,
    HEADER_DLQ_PARTITION,
    HEADER_DLQ_TOPIC,
    HEADER_EVENT,
    HEADER_ID,
    HEADER_INTERNAL,
    ChannelRouter,
    Handler,
    RetryPolicy,
    WorkerStats,
    check_since,
    handle_with_retries,
    subscribed_channels,
)
from channelcast.channels import validate_channel
from channelcast.errors import BrokerClosed, HistoryUnavailable
from channelcast.message import (
    DEFAULT_MAX_MESSAGE_BYTES,
    INTERNAL,
    Envelope,
    Record,
    encode,
    new_position,
    validate_message_id,
)
from channelcast.strategies import GroupedTopics, TopicSpec, TopicStrategy, create_strategy
from channelcast.types import ChannelName, JSONValue, Position, TopicName

if TYPE_CHECKING:
    from channelcast.config import Settings

log = logging.getLogger("channelcast.memory")

DEFAULT_HISTORY = 10_000
DEFAULT_HISTORY_BYTES = 32 * 1024 * 1024
TP = tuple[str, int]


def new_epoch() -> str:
    """A random epoch: 11 characters of URL-safe base64 (66 bits)."""
    return base64.urlsafe_b64encode(os.urandom(9)).decode()[:11]


@dataclass
class _Partition:
    topic: str
    index: int
    history: int
    history_bytes: int
    epoch: str
    log: deque[Record] = field(default_factory=deque)
    size: int = 0  # encoded bytes in ``log``
    next_offset: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def low(self) -> int:
        return self.log[0].position.offset if self.log else self.next_offset

    def append(self, value: bytes, channel: str, event: str, mid: str, internal: bool,
               headers: Mapping[str, str]) -> Record:
        record = Record.from_value(
            value, channel, new_position(self.topic, self.index, self.next_offset, self.epoch),
            event, mid, internal=internal, headers=headers)
        self.log.append(record)
        self.size += len(value)
        self.next_offset += 1
        log = self.log
        while len(log) > self.history or (self.size > self.history_bytes and len(log) > 1):
            self.size -= len(log.popleft().value)
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        return record

    def read(self, offset: int, limit: int = 500) -> list[Record]:
        start = max(offset, self.low) - self.low
        log = self.log
        return [log[i] for i in range(start, min(len(log), start + limit))]

    async def wait(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, seconds)


class MemorySubscription:
    """Records of some channels: the backlog (``since``) first, then live ones.

    Live records are put into a bounded queue by ``publish``; when it is full the
    subscription records where it fell behind per partition (``_behind``) and takes no more
    live records of that partition until its reader has emptied the queue; then it reads
    the missed ones from the partition's history (see the module docstring).
    """

    def __init__(self, broker: MemoryBroker, channels: frozenset[ChannelName],
                 backlog: list[Record], max_queue: int, error: Exception | None,
                 include_internal: bool) -> None:
        self.channels = channels
        self.include_internal = include_internal
        self._broker = broker
        self._backlog = deque(backlog)
        self._max_queue = max(1, max_queue)
        self._queue: deque[Record] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._behind: dict[TP, int] = {}  # partition -> first offset not delivered
        self._error = error
        self._closed = False

    async def ready(self) -> None:
        """Always ready: registration is synchronous in memory."""

    @property
    def lagging(self) -> bool:
        """Whether it fell behind and has not caught up yet."""
        return bool(self._behind)

    def offer(self, record: Record) -> None:
        """Publish side: queue one live record, or fall behind; never waits."""
        if self._closed:
            return
        position = record.position
        tp = (position.topic, position.partition)
        behind = self._behind
        if behind and tp in behind:
            return  # it will read this one from the history
        if len(self._queue) >= self._max_queue:
            behind[tp] = position.offset
            return
        self._queue.append(record)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _catch_up(self) -> None:
        """Refill the queue from the history of the partitions it fell behind on."""
        for tp, offset in list(self._behind.items()):
            part = self._broker.partitions(tp[0])[tp[1]]
            if offset < part.low:
                del self._behind[tp]
                raise HistoryUnavailable(
                    f"subscription to {sorted(self.channels)[:3]} fell behind at "
                    f"{tp[0]}:{tp[1]}:{offset} and the memory history no longer reaches "
                    f"back that far (oldest kept offset: {part.low}); resubscribe from your "
                    "last position")
            room = self._max_queue - len(self._queue)
            while room > 0 and offset < part.next_offset:
                chunk = part.read(offset, limit=min(room, 500))
                for record in chunk:
                    offset = record.position.offset + 1
                    if record.channel in self.channels and (
                            self.include_internal or not record.internal):
                        self._queue.append(record)
                        room -= 1
            if offset >= part.next_offset:
                del self._behind[tp]
            else:
                self._behind[tp] = offset

    def __aiter__(self) -> AsyncIterator[Record]:
        return self

    async def __anext__(self) -> Record:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._backlog:
            return self._backlog.popleft()
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise StopAsyncIteration
            if self._behind:
                self._catch_up()
                continue
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._broker._unsubscribe(self)
        self._queue.clear()
        self._behind.clear()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class _Group:
    def __init__(self) -> None:
        self.members: list[MemoryWorker] = []
        self.committed: dict[tuple[str, int], int] = {}
        self.generation = 0


class MemoryBroker:
    """In-process broker. ``history_size`` and ``history_bytes`` bound every partition's
    log (messages, encoded bytes)."""

    def __init__(self, strategy: TopicStrategy | None = None, *,
                 history_size: int = DEFAULT_HISTORY,
                 history_bytes: int = DEFAULT_HISTORY_BYTES,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 manual_commit: bool = False,
                 retry: RetryPolicy | None = None,
                 dead_letter_topic: str = "realtime.dlq") -> None:
        self.strategy: TopicStrategy = strategy or GroupedTopics(
            [], TopicSpec(TopicName("realtime"), 10))
        self.history_size = history_size
        self.history_bytes = history_bytes
        self.max_message_bytes = max_message_bytes
        self.manual_commit = manual_commit
        self.retry = retry or RetryPolicy()
        self.dead_letter_topic = dead_letter_topic
        self.epoch = new_epoch()
        """This instance's epoch: every position it hands out carries it."""
        self.skipped_records = 0
        """Always 0: only what ``publish`` encoded is ever stored here (the Kafka broker
        counts records other producers wrote that carry no message)."""
        self._topics: dict[str, list[_Partition]] = {}
        self._specs: dict[str, int] = {
            spec.name: spec.partitions for spec in self.strategy.topics()}
        self._subs: dict[ChannelName, set[MemorySubscription]] = {}
        self._groups: dict[str, _Group] = {}
        self._workers: set[MemoryWorker] = set()
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        self._check_open()

    async def close(self) -> None:
        if self._closed:
            return
        for worker in list(self._workers):
            await worker.stop()
        for subs in list(self._subs.values()):
            for sub in list(subs):
                await sub.close()
        self._closed = True

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def ping(self) -> None:
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosed("the memory broker is closed")

    # --- storage -----------------------------------------------------------------
    def partitions(self, topic: str) -> list[_Partition]:
        parts = self._topics.get(topic)
        if parts is None:
            count = self._specs.get(topic, 1)
            parts = [_Partition(topic, i, self.history_size, self.history_bytes, self.epoch)
                     for i in range(count)]
            self._topics[topic] = parts
        return parts

    def topic_names(self) -> list[str]:
        return sorted(self._topics)

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        part = self.partitions(topic)[partition]
        return part.low, part.next_offset

    def subscription_count(self) -> int:
        """Live fan-out subscriptions (each counted once), for leak checks and metrics."""
        return len({id(sub) for subs in self._subs.values() for sub in subs})

    def _append(self, topic: str, partition: int, value: bytes, env: Envelope,
                headers: Mapping[str, str]) -> Record:
        return self.partitions(topic)[partition].append(
            value, env.channel, env.event, env.id, env.type == INTERNAL, headers)

    # --- publish -----------------------------------------------------------------
    async def publish(self, channel: str, event: str, data: JSONValue, *,
                      id: str | None = None) -> Position:
        envelope = Envelope(channel=validate_channel(channel), event=event, data=data, id=id)
        return (await self.publish_many([envelope]))[0]

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[Position]:
        self._check_open()
        # Check the ids and encode (which validates the rest) all first, so a bad message
        # fails the batch before any is stored.
        encoded = []
        for env in envelopes:
            validate_message_id(env.id)
            encoded.append((env, encode(env, self.max_message_bytes)))
        positions = []
        for env, value in encoded:
            route = self.strategy.route(env.channel)
            headers: dict[str, str] = {HEADER_CHANNEL: env.channel, HEADER_EVENT: env.event,
                                       HEADER_ID: env.id}
            if env.type == INTERNAL:
                headers[HEADER_INTERNAL] = "1"
            record = self._append(route.topic, route.partition, value, env,
                                  MappingProxyType(headers))
            positions.append(record.position)
            subs = self._subs.get(env.channel)
            if subs:
                for sub in list(subs):
                    if sub.include_internal or not record.internal:
                        sub.offer(record)
        return positions

    # --- fan-out -----------------------------------------------------------------
    def subscribe(self, channels: Iterable[str], *,
                  since: Mapping[str, Position] | Mapping[ChannelName, Position] | None = None,
                  max_queue: int = DEFAULT_SUBSCRIPTION_QUEUE,
                  include_internal: bool = False) -> MemorySubscription:
        self._check_open()
        names = subscribed_channels(channels)
        backlog: list[Record] = []
        error: Exception | None = None
        for channel, position in check_since(names, since).items():
            try:
                backlog.extend(self._history(channel, position, include_internal))
            except HistoryUnavailable as exc:
                error = exc
        backlog.sort(key=lambda r: (r.position.topic, r.position.partition, r.position.offset))
        sub = MemorySubscription(self, names, backlog, max_queue, error, include_internal)
        for name in names:
            self._subs.setdefault(name, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: MemorySubscription) -> None:
        for name in sub.channels:
            subs = self._subs.get(name)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[name]

    def _history(self, channel: ChannelName, since: Position,
                 include_internal: bool = False) -> list[Record]:
        route = self.strategy.route(channel)
        part = self.partitions(route.topic)[route.partition]
        if since.epoch is not None and since.epoch != self.epoch:
            raise HistoryUnavailable(
                f"position {since} is from another run of the memory broker (epoch "
                f"{since.epoch}; this one is {self.epoch}): its history is gone")
        if (since.topic, since.partition) != (route.topic, route.partition):
            raise HistoryUnavailable(
                f"position {since} is not in channel {channel!r}'s partition "
                f"{route.topic}:{route.partition} (was the topic mapping changed?)")
        if since.offset > part.next_offset - 1:
            raise HistoryUnavailable(
                f"position {since} is ahead of the newest message of {channel!r} "
                f"(offset {part.next_offset - 1}): it is not from this log")
        if since.offset + 1 < part.low:
            raise HistoryUnavailable(
                f"history of {channel!r} after {since} is gone: the oldest kept offset "
                f"is {part.low}")
        return [r for r in part.read(since.offset + 1, limit=len(part.log))
                if r.channel == channel and (include_internal or not r.internal)]

    async def history(self, channel: str, since: Position, *,
                      include_internal: bool = False) -> list[Record]:
        self._check_open()
        return self._history(validate_channel(channel), since, include_internal)

    async def end_position(self, channel: str) -> Position:
        route = self.strategy.route(validate_channel(channel))
        part = self.partitions(route.topic)[route.partition]
        return Position(route.topic, route.partition, part.next_offset - 1, self.epoch)

    # --- workers -----------------------------------------------------------------
    def worker(self, group: str, *, channels: Mapping[str, Handler] | None = None,
               topics: Mapping[str, Handler] | None = None,
               manual_commit: bool | None = None,
               retry: RetryPolicy | None = None,
               dead_letter_topic: str | None = None) -> MemoryWorker:
        self._check_open()
        return MemoryWorker(
            self, group, ChannelRouter(channels or {}, topics or {}, group),
            self.manual_commit if manual_commit is None else manual_commit,
            retry or self.retry, dead_letter_topic or self.dead_letter_topic)

    def _group(self, name: str) -> _Group:
        return self._groups.setdefault(name, _Group())

    def _rebalance(self, group: _Group) -> None:
        group.generation += 1
        members = group.members
        for m in members:
            m.assignment = []
        if not members:
            return
        wanted: set[tuple[str, int]] = set()
        for m in members:
            wanted.update(m.topic_partitions())
        for i, tp in enumerate(sorted(wanted)):
            candidates = [m for m in members if tp in m.topic_partitions()]
            candidates[i % len(candidates)].assignment.append(tp)
        for m in members:
            m.wake()

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        return dict(self._group(group).committed)


class MemoryWorker:
    def __init__(self, broker: MemoryBroker, group: str, router: ChannelRouter,
                 manual_commit: bool, retry: RetryPolicy, dead_letter_topic: str) -> None:
        self.group = group
        self._broker = broker
        self._router = router
        self._manual = manual_commit
        self._retry = retry
        self._dlq = dead_letter_topic
        self.assignment: list[tuple[str, int]] = []
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._processed = self._failed = self._dead = 0
        subs = broker.strategy.subscription_topics(router.patterns)
        self._topic_names = {t for t in subs if not t.startswith("^")} | set(router.topics)
        self._topic_regexes = [re.compile(t) for t in subs if t.startswith("^")]

    def topic_partitions(self) -> set[tuple[str, int]]:
        names = set(self._topic_names)
        names.update(t for t in self._broker.topic_names()
                     if any(r.match(t) for r in self._topic_regexes))
        return {(t, p.index) for t in names for p in self._broker.partitions(t)}

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def stats(self) -> WorkerStats:
        return WorkerStats(self._processed, self._failed, self._dead,
                           self._broker.committed(self.group))

    async def run(self) -> None:
        group = self._broker._group(self.group)
        group.members.append(self)
        self._broker._workers.add(self)
        self._broker._rebalance(group)
        tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        try:
            while not self._stop.is_set():
                if self._topic_regexes and self.topic_partitions() - {
                        tp for m in group.members for tp in m.assignment}:
                    self._broker._rebalance(group)  # a new matching legacy topic appeared
                wanted = set(self.assignment)
                for tp in list(tasks):
                    if tp not in wanted:
                        tasks.pop(tp).cancel()
                for tp in wanted - set(tasks):
                    tasks[tp] = asyncio.create_task(self._consume(group, tp))
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), 0.2)
                for task in list(tasks.values()):
                    if task.done() and not task.cancelled() and task.exception():
                        raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            if self in group.members:
                group.members.remove(self)
                self._broker._rebalance(group)
            self._broker._workers.discard(self)

    async def stop(self) -> None:
        self._stop.set()
        self._wakeup.set()

    async def _consume(self, group: _Group, tp: tuple[str, int]) -> None:
        part = self._broker.partitions(tp[0])[tp[1]]
        offset = max(group.committed.get(tp, 0), part.low)
        while True:
            batch = part.read(offset)
            if not batch:
                await part.wait(0.5)
                offset = max(offset, part.low)
                continue
            for record in batch:
                if not self._manual:
                    group.committed[tp] = record.position.offset + 1
                if not record.internal:
                    await self._handle(record)
                offset = record.position.offset + 1
                if self._manual:
                    group.committed[tp] = offset

    async def _handle(self, record: Record) -> None:
        handler = self._router.handler_for(record)
        if handler is None:
            return
        error = await handle_with_retries(handler, record, self._retry, self._count_failure)
        if error is None:
            self._processed += 1
        else:
            self._dead_letter(record, error, self._retry.max_attempts)

    def _count_failure(self, attempt: int, error: Exception) -> None:
        self._failed += 1
        log.info("worker %s: handler failed (attempt %d of %d): %r", self.group, attempt,
                 self._retry.max_attempts, error)

    def _dead_letter(self, record: Record, exc: Exception, attempts: int) -> None:
        self._dead += 1
        position = record.position
        headers = MappingProxyType({
            HEADER_CHANNEL: record.channel, HEADER_EVENT: record.event, HEADER_ID: record.id,
            HEADER_DLQ_ERROR: f"{type(exc).__name__}: {exc}"[:1000],
            HEADER_DLQ_ATTEMPTS: str(attempts),
            HEADER_DLQ_TOPIC: position.topic,
            HEADER_DLQ_PARTITION: str(position.partition),
            HEADER_DLQ_OFFSET: str(position.offset),
        })
        self._broker.partitions(self._dlq)[0].append(
            record.value, record.channel, record.event, record.id, False, headers)
        log.warning("worker %s: dead-lettered %s to %s after %d attempt%s: %r", self.group,
                    position, self._dlq, attempts, "" if attempts == 1 else "s", exc)


def from_settings(settings: Settings) -> MemoryBroker:
    k = settings.kafka
    return MemoryBroker(
        create_strategy(k),
        history_size=settings.gateway.history_size,
        history_bytes=settings.gateway.history_bytes,
        max_message_bytes=k.max_message_bytes,
        manual_commit=k.manual_commit,
        retry=RetryPolicy(k.max_attempts, k.retry_backoff_ms / 1000, k.retry_backoff_max_ms / 1000),
        dead_letter_topic=k.dead_letter_topic,
    )
