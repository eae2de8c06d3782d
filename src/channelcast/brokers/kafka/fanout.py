"""Fan-out subscriptions on Kafka: one assign()-based consumer thread per broker.

No consumer group: every process reads every message of the partitions its live
subscriptions need (``incremental_assign`` with explicit offsets), so a sibling process
never takes messages away. Records are routed to subscriptions by the ``channel`` header;
a second channel in an already-assigned partition costs no new consumer.

Threading: the consumer is touched only by its own thread (poll, assign, unassign and
close never overlap); the event loop talks to it through a command queue.

Overflow: each subscription has a bounded inbox. When one is full the consumer thread
waits for room, which pauses delivery to every subscription of this broker (backpressure,
nothing is dropped). Slow *clients* are the gateway's business, not this layer's.

Owns the subscription (backlog, then live records) and the shared consumer thread. A
subscription is handed what it needs to open (:class:`ChannelTopics`,
:class:`ChannelHistory`, a provider of the fan-out consumer, a close callback); this
module never imports the broker and never reaches into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from channelcast.brokers.base import HEADER_CHANNEL
from channelcast.brokers.kafka.client import (
    TP,
    finish,
    header,
    read_watermarks,
    take_available,
)
from channelcast.brokers.kafka.errors import translate
from channelcast.errors import BrokerClosed, BrokerError, BrokerUnavailable, MessageError
from channelcast.message import Record, decode_record
from channelcast.strategies import TopicStrategy
from channelcast.types import ChannelName, Position

log = logging.getLogger("channelcast.kafka")


class ChannelTopics(Protocol):
    """Makes sure the topics of some channels exist (the broker's TopicEnsurer)."""

    async def ensure_for_channels(self, channels: Iterable[ChannelName]) -> None: ...


class ChannelHistory(Protocol):
    """Reads a channel's records after a position (the broker's HistoryReader)."""

    async def read(self, channel: ChannelName, since: Position,
                   until: int) -> list[Record]: ...


class _Inbox:
    """A bounded, thread-safe queue: the consumer thread puts, the event loop gets."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self._loop = loop
        self._maxsize = max(1, maxsize)
        self._items: deque[Record | BaseException] = deque()
        self._cond = threading.Condition()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(finish, waiter)

    def put_many(self, records: list[Record], stopping: threading.Event,
                 while_full: Callable[[], None]) -> None:
        """Consumer thread: append, waiting while full (backpressure).

        ``while_full`` runs between waits, so (un)subscribing elsewhere still works while
        this subscription holds the consumer up.
        """
        i = 0
        while i < len(records):
            with self._cond:
                if len(self._items) >= self._maxsize and not self.closed:
                    self._cond.wait(0.05)
                    full = len(self._items) >= self._maxsize
                else:
                    full = False
                if self.closed or stopping.is_set():
                    return
                if not full:
                    room = self._maxsize - len(self._items)
                    self._items.extend(records[i:i + room])
                    i += room
                    self._wake()
                    continue
            while_full()

    def fail(self, exc: BaseException) -> None:
        """Delivery failed for good: the reader gets what is queued, then ``exc``, then
        the end."""
        with self._cond:
            self._items.append(exc)
            self.end()

    def end(self) -> None:
        """No more records will come; what is queued can still be read."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            self._wake()

    async def get(self) -> Record | BaseException | None:
        while True:
            with self._cond:
                if self._items:
                    if len(self._items) >= self._maxsize:
                        self._cond.notify()  # the consumer thread may wait for room
                    return self._items.popleft()
                if self.closed:
                    return None
                waiter = self._loop.create_future()
                self._waiter = waiter
            await waiter

    async def get_all(self) -> deque[Record | BaseException] | None:
        """Everything queued, in one lock round trip (waiting if nothing is); None at the
        end. The caller holds at most one inbox-full more: twice ``maxsize`` in all."""
        while True:
            with self._cond:
                items = self._items
                if items:
                    if len(items) >= self._maxsize:
                        self._cond.notify()  # the consumer thread may wait for room
                    self._items = deque()
                    return items
                if self.closed:
                    return None
                waiter = self._loop.create_future()
                self._waiter = waiter
            await waiter

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._items.clear()
            self._cond.notify_all()
            self._wake()


class KafkaSubscription:
    """A fan-out subscription: backlog (``since``) first, then live records.

    It becomes live asynchronously; ``await sub.ready()`` (or ``async with``) returns once
    every message published afterwards is guaranteed to reach it.
    """

    def __init__(self, channels: frozenset[ChannelName],
                 since: Mapping[ChannelName, Position], max_queue: int, *,
                 strategy: TopicStrategy, topics: ChannelTopics, history: ChannelHistory,
                 fanout: Callable[[], FanoutConsumer],
                 on_close: Callable[[KafkaSubscription], None]) -> None:
        """``topics`` and ``history`` serve the opening; ``fanout()`` returns the
        consumer to register with (raising BrokerClosed once the broker is closed);
        ``on_close(self)`` is called once, when the subscription closes."""
        self.channels = channels
        self._strategy = strategy
        self._topics = topics
        self._history = history
        self._fanout = fanout
        self._on_close = on_close
        self._since = dict(since)
        self._inbox = _Inbox(asyncio.get_running_loop(), max_queue)
        self._taken: deque[Record | BaseException] = deque()  # from the inbox, not yet read
        self._backlog: deque[Record] = deque()
        self._error: BaseException | None = None
        self._closed = False
        self._registered = False
        self._consumer: FanoutConsumer | None = None
        # Live records at or before a channel's ``since`` were already seen by the caller:
        # the shared consumer may be behind the end when this subscription joins.
        self._floor: dict[str, int] = {}
        for channel, position in since.items():
            route = strategy.route(channel)
            if (route.topic, route.partition) == (position.topic, position.partition):
                self._floor[channel] = position.offset
        self._opening = asyncio.ensure_future(self._open())

    @property
    def inbox(self) -> _Inbox:
        return self._inbox

    async def _open(self) -> None:
        await self._topics.ensure_for_channels(self.channels)
        if self._closed:
            return
        self._consumer = self._fanout()
        live_from = await self._consumer.register(self)
        self._registered = True
        backlog: list[Record] = []
        for channel, position in self._since.items():
            route = self._strategy.route(channel)
            until = live_from[(route.topic, route.partition)]
            try:
                backlog.extend(await self._history.read(channel, position, until))
            except BrokerError as exc:
                self._error = exc
        backlog.sort(key=lambda r: (r.position.topic, r.position.partition, r.position.offset))
        self._backlog.extend(backlog)

    async def ready(self) -> None:
        """Wait until the subscription is live (topics exist, partitions assigned)."""
        await asyncio.shield(self._opening)

    def __aiter__(self) -> AsyncIterator[Record]:
        return self

    async def __anext__(self) -> Record:
        taken = self._taken
        if taken and not self._floor:
            # The common case, live and flowing: taken is only filled after the checks
            # below passed, and what they check does not change afterwards.
            item = taken.popleft()
            if isinstance(item, BaseException):
                raise item
            return item
        if self._closed:
            raise StopAsyncIteration
        if not self._opening.done():
            try:
                await self.ready()
            except BrokerError:
                await self.close()
                raise
        elif self._opening.exception() is not None:
            await self.close()
            raise self._opening.exception()  # type: ignore[misc]
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._backlog:
            return self._backlog.popleft()
        while True:
            if not taken:
                items = await self._inbox.get_all()
                if items is None or self._closed:
                    raise StopAsyncIteration
                self._taken = taken = items
            item = taken.popleft()
            if isinstance(item, BaseException):
                raise item
            if self._floor:
                floor = self._floor.get(item.channel)
                if floor is not None:
                    if item.position.offset <= floor:
                        continue
                    del self._floor[item.channel]
            return item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.close()
        self._taken.clear()
        self._on_close(self)
        if not self._opening.done():
            try:
                await asyncio.shield(self._opening)
            except Exception as exc:  # the open failed: nothing to unregister
                log.debug("subscription closed after a failed open: %s", exc)
        elif self._opening.exception() is not None:
            log.debug("subscription open had failed: %s", self._opening.exception())
        if self._registered and self._consumer is not None:
            await self._consumer.unregister(self)

    async def __aenter__(self) -> Self:
        await self.ready()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class FanoutConsumer:
    """One consumer thread serving every fan-out subscription of one KafkaBroker."""

    def __init__(self, config: dict[str, Any], strategy: TopicStrategy, timeout: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._config = config
        self._strategy = strategy
        self._timeout = timeout
        self._loop = loop
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._position: dict[TP, int] = {}  # next offset to dispatch, per assigned partition
        self._refs: dict[TP, int] = {}
        self._by_channel: dict[str, set[KafkaSubscription]] = {}
        self._subs: dict[KafkaSubscription, frozenset[TP]] = {}
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="channelcast-fanout",
                                        daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    # --- called on the event loop -----------------------------------------------
    async def _call(self, func: Callable[[], Any]) -> Any:
        if self._stop.is_set() or not self._thread.is_alive():
            raise BrokerClosed("the Kafka fan-out consumer is stopped")
        future: asyncio.Future[Any] = self._loop.create_future()

        def run() -> None:
            try:
                result = func()
            except BaseException as exc:
                self._loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                self._loop.call_soon_threadsafe(_settle, future, result, None)

        self._commands.put(run)
        return await future

    async def register(self, sub: KafkaSubscription) -> dict[TP, int]:
        """Assign what ``sub`` needs; returns, per partition, where its live part starts."""
        result: dict[TP, int] = await self._call(lambda: self._register(sub))
        return result

    async def unregister(self, sub: KafkaSubscription) -> None:
        if self._thread.is_alive() and not self._stop.is_set():
            await self._call(lambda: self._unregister(sub))

    async def close(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join)

    # --- the consumer thread -----------------------------------------------------
    def _register(self, sub: KafkaSubscription) -> dict[TP, int]:
        if self._failure is not None:
            raise self._failure
        tps: set[TP] = set()
        for channel in sub.channels:
            route = self._strategy.route(channel)
            tps.add((route.topic, route.partition))
        new: list[TopicPartition] = []
        for tp in sorted(tps - set(self._position)):
            _low, high = read_watermarks(self._consumer, tp[0], tp[1], self._timeout)
            self._position[tp] = high
            new.append(TopicPartition(tp[0], tp[1], high))
        if new:
            self._consumer.incremental_assign(new)
        for tp in tps:
            self._refs[tp] = self._refs.get(tp, 0) + 1
        for channel in sub.channels:
            self._by_channel.setdefault(channel, set()).add(sub)
        self._subs[sub] = frozenset(tps)
        return {tp: self._position[tp] for tp in tps}

    def _unregister(self, sub: KafkaSubscription) -> None:
        tps = self._subs.pop(sub, frozenset())
        for channel in sub.channels:
            subs = self._by_channel.get(channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_channel[channel]
        gone = []
        for tp in tps:
            self._refs[tp] -= 1
            if self._refs[tp] == 0:
                del self._refs[tp]
                del self._position[tp]
                gone.append(TopicPartition(tp[0], tp[1]))
        if gone:
            self._consumer.incremental_unassign(gone)

    def _run(self) -> None:
        try:
            self._consumer = Consumer(self._config)
        except KafkaException as exc:
            self._fail_all(translate(exc, "creating the fan-out consumer"))
            return
        try:
            while not self._stop.is_set():
                self._drain_commands()
                if not self._position:
                    with contextlib.suppress(queue.Empty):
                        self._commands.get(timeout=0.1)()
                    continue
                # Not consume(n, timeout): at low rates that added 25-50 ms to every
                # delivery (found by `channelcast bench`).
                messages = take_available(self._consumer, 0.05, 1000)
                if messages:
                    self._dispatch(messages)
        except KafkaException as exc:
            self._fail_all(translate(exc, "consuming"))
        except BaseException as exc:  # a bug must not leave subscribers hanging
            log.exception("fan-out consumer thread crashed")
            self._fail_all(BrokerUnavailable(f"fan-out consumer crashed: {exc!r}"))
        finally:
            self._stop.set()
            for sub in list(self._subs):
                sub.inbox.end()
            self._drain_commands()
            self._consumer.close()

    def _drain_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _fail_all(self, exc: BaseException) -> None:
        self._failure = exc
        for sub in list(self._subs):
            sub.inbox.fail(exc)

    def _dispatch(self, messages: list[Message]) -> None:
        out: dict[KafkaSubscription, list[Record]] = {}
        position = self._position
        by_channel = self._by_channel
        decode_one = self._decode
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                # Transient (broker restarting, leader moving): librdkafka retries itself.
                log.warning("fan-out consumer: %s", err)
                continue
            # A consumed message without an error has all three.
            topic: str = msg.topic()  # type: ignore[assignment]
            partition: int = msg.partition()  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
            tp = (topic, partition)
            expected = position.get(tp)
            if expected is None or offset < expected:
                continue  # unassigned meanwhile, or already dispatched
            position[tp] = offset + 1
            # Our key is the channel: a subscribed one is decoded at once, and routed by
            # the envelope's own channel (a foreign producer may key otherwise). Anything
            # else is routed by the channel header, as before (confluent-kafka builds a
            # list of pairs per headers() call: not worth it for the common case).
            key = msg.key()
            record = None
            subs = None
            if key is not None and type(key) is bytes:
                keyed = key.decode("utf-8", "replace")
                subs = by_channel.get(keyed)
                if subs:
                    record = decode_one(msg, topic, partition, offset)
                    if record is None:
                        continue
                    if record.envelope.channel != keyed:
                        subs = by_channel.get(record.envelope.channel)
            if record is None:
                headers = msg.headers()
                # Our producer writes the channel header first: check there before searching.
                if (type(headers) is list and headers and headers[0][0] == HEADER_CHANNEL
                        and type(headers[0][1]) is bytes):
                    channel: str | None = headers[0][1].decode()
                else:
                    channel = header(msg, HEADER_CHANNEL)
                if channel is None:
                    record = decode_one(msg, topic, partition, offset)
                    if record is None:
                        continue
                    channel = record.channel
                subs = by_channel.get(channel)
                if subs and record is None:
                    record = decode_one(msg, topic, partition, offset)
            if not subs or record is None:
                continue
            for sub in subs:
                records = out.get(sub)
                if records is None:
                    out[sub] = [record]
                else:
                    records.append(record)
        for sub, records in out.items():
            sub.inbox.put_many(records, self._stop, self._drain_commands)

    @staticmethod
    def _decode(msg: Message, topic: str, partition: int, offset: int) -> Record | None:
        try:
            return decode_record(msg.value(), topic, partition, offset)
        except MessageError as exc:
            # Not ours to fix here, but never silently: say where it is.
            log.warning("skipping malformed message at %s:%s:%s: %s",
                        topic, partition, offset, exc)
            return None


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)

