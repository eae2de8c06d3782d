"""The embedded in-memory broker: Kafka's semantics inside one process.

Topics have partitions and offsets (from the same strategy as Kafka), each partition keeps
a bounded history (oldest dropped: its low watermark moves up), consumer groups share
partitions among members and commit offsets, and a member that goes away without
committing gets its messages redelivered to the others. It must never do network I/O.

Overflow: a fan-out subscription's queue is bounded; when it is full, ``publish`` waits
(backpressure) rather than dropping.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
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
    ChannelRouter,
    Handler,
    RetryPolicy,
    WorkerStats,
    handle_with_retries,
)
from channelcast.channels import validate_channel
from channelcast.errors import BrokerClosed, HistoryUnavailable
from channelcast.message import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Envelope,
    Record,
    decode,
    encode,
    validate_message_id,
)
from channelcast.strategies import GroupedTopics, TopicSpec, TopicStrategy, create_strategy
from channelcast.types import ChannelName, JSONValue, Position, TopicName

if TYPE_CHECKING:
    from channelcast.config import Settings

DEFAULT_HISTORY = 10_000


@dataclass(slots=True)
class _Stored:
    record: Record
    headers: dict[str, str]


@dataclass
class _Partition:
    topic: str
    index: int
    history: int
    log: deque[_Stored] = field(default_factory=deque)
    next_offset: int = 0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def low(self) -> int:
        return self.log[0].record.position.offset if self.log else self.next_offset

    def append(self, envelope: Envelope, headers: dict[str, str]) -> Record:
        record = Record(envelope, Position(self.topic, self.index, self.next_offset))
        self.log.append(_Stored(record, headers))
        self.next_offset += 1
        if len(self.log) > self.history:
            self.log.popleft()
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        return record

    def read(self, offset: int, limit: int = 500) -> list[_Stored]:
        start = max(offset, self.low) - self.low
        return [self.log[i] for i in range(start, min(len(self.log), start + limit))]

    async def wait(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fut, seconds)


class MemorySubscription:
    def __init__(self, broker: MemoryBroker, channels: frozenset[ChannelName],
                 backlog: list[Record], max_queue: int, error: Exception | None) -> None:
        self.channels = channels
        self._broker = broker
        self._backlog = deque(backlog)
        self._queue: asyncio.Queue[Record | None] = asyncio.Queue(max_queue)
        self._error = error
        self._closed = False

    async def ready(self) -> None:
        """Always ready: registration is synchronous in memory."""

    async def put(self, record: Record) -> None:
        if not self._closed:
            await self._queue.put(record)

    def __aiter__(self) -> AsyncIterator[Record]:
        return self

    async def __anext__(self) -> Record:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._backlog:
            return self._backlog.popleft()
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        record = await self._queue.get()
        if record is None:
            raise StopAsyncIteration
        return record

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._broker._unsubscribe(self)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

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
    """In-process broker. ``history_size`` bounds every partition's log."""

    def __init__(self, strategy: TopicStrategy | None = None, *,
                 history_size: int = DEFAULT_HISTORY,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 manual_commit: bool = False,
                 retry: RetryPolicy | None = None,
                 dead_letter_topic: str = "realtime.dlq") -> None:
        self.strategy: TopicStrategy = strategy or GroupedTopics(
            [], TopicSpec(TopicName("realtime"), 10))
        self.history_size = history_size
        self.max_message_bytes = max_message_bytes
        self.manual_commit = manual_commit
        self.retry = retry or RetryPolicy()
        self.dead_letter_topic = dead_letter_topic
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
            parts = [_Partition(topic, i, self.history_size) for i in range(count)]
            self._topics[topic] = parts
        return parts

    def topic_names(self) -> list[str]:
        return sorted(self._topics)

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        part = self.partitions(topic)[partition]
        return part.low, part.next_offset

    def _append(self, topic: str, partition: int, envelope: Envelope,
                headers: dict[str, str]) -> Record:
        return self.partitions(topic)[partition].append(envelope, headers)

    # --- publish -----------------------------------------------------------------
    async def publish(self, channel: str, event: str, data: JSONValue, *,
                      id: str | None = None) -> Position:
        envelope = Envelope(channel=validate_channel(channel), event=event, data=data, id=id)
        return (await self.publish_many([envelope]))[0]

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[Position]:
        self._check_open()
        # Validate and encode all first, so a bad message fails the batch before any is stored.
        stored = []
        for env in envelopes:
            validate_channel(env.channel)
            validate_message_id(env.id)
            stored.append(decode(encode(env, self.max_message_bytes)))
        positions = []
        for env in stored:
            route = self.strategy.route(env.channel)
            record = self._append(route.topic, route.partition, env,
                                  {HEADER_CHANNEL: env.channel, HEADER_EVENT: env.event,
                                   HEADER_ID: env.id})
            positions.append(record.position)
            for sub in list(self._subs.get(env.channel, ())):
                await sub.put(record)
        return positions

    # --- fan-out -----------------------------------------------------------------
    def subscribe(self, channels: Iterable[str], *,
                  since: Mapping[str, Position] | Mapping[ChannelName, Position] | None = None,
                  max_queue: int = DEFAULT_SUBSCRIPTION_QUEUE) -> MemorySubscription:
        self._check_open()
        names = frozenset(validate_channel(c) for c in channels)
        backlog: list[Record] = []
        error: Exception | None = None
        for channel, position in (since or {}).items():
            try:
                backlog.extend(self._history(validate_channel(channel), position))
            except HistoryUnavailable as exc:
                error = exc
        backlog.sort(key=lambda r: (r.position.topic, r.position.partition, r.position.offset))
        sub = MemorySubscription(self, names, backlog, max_queue, error)
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

    def _history(self, channel: ChannelName, since: Position) -> list[Record]:
        route = self.strategy.route(channel)
        part = self.partitions(route.topic)[route.partition]
        if (since.topic, since.partition) != (route.topic, route.partition):
            raise HistoryUnavailable(
                f"position {since} is not in channel {channel!r}'s partition "
                f"{route.topic}:{route.partition} (was the topic mapping changed?)")
        if since.offset + 1 < part.low:
            raise HistoryUnavailable(
                f"history of {channel!r} after {since} is gone: the oldest kept offset "
                f"is {part.low}")
        return [s.record for s in part.read(since.offset + 1, limit=part.history)
                if s.record.channel == channel]

    async def history(self, channel: str, since: Position) -> list[Record]:
        self._check_open()
        return self._history(validate_channel(channel), since)

    async def end_position(self, channel: str) -> Position:
        route = self.strategy.route(validate_channel(channel))
        part = self.partitions(route.topic)[route.partition]
        return Position(route.topic, route.partition, part.next_offset - 1)

    # --- workers -----------------------------------------------------------------
    def worker(self, group: str, *, channels: Mapping[str, Handler] | None = None,
               topics: Mapping[str, Handler] | None = None,
               manual_commit: bool | None = None,
               retry: RetryPolicy | None = None,
               dead_letter_topic: str | None = None) -> MemoryWorker:
        self._check_open()
        return MemoryWorker(
            self, group, ChannelRouter(channels or {}, topics or {}),
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
            for stored in batch:
                record = stored.record
                if not self._manual:
                    group.committed[tp] = record.position.offset + 1
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

    def _dead_letter(self, record: Record, exc: Exception, attempts: int) -> None:
        self._dead += 1
        env = record.envelope
        self._broker._append(self._dlq, 0, env, {
            HEADER_CHANNEL: env.channel, HEADER_EVENT: env.event, HEADER_ID: env.id,
            HEADER_DLQ_ERROR: f"{type(exc).__name__}: {exc}"[:1000],
            HEADER_DLQ_ATTEMPTS: str(attempts),
            HEADER_DLQ_TOPIC: record.position.topic,
            HEADER_DLQ_PARTITION: str(record.position.partition),
            HEADER_DLQ_OFFSET: str(record.position.offset),
        })


def from_settings(settings: Settings) -> MemoryBroker:
    k = settings.kafka
    return MemoryBroker(
        create_strategy(k),
        history_size=settings.gateway.history_size,
        max_message_bytes=k.max_message_bytes,
        manual_commit=k.manual_commit,
        retry=RetryPolicy(k.max_attempts, k.retry_backoff_ms / 1000, k.retry_backoff_max_ms / 1000),
        dead_letter_topic=k.dead_letter_topic,
    )
