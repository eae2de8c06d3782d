"""Fan-out subscriptions on Kafka: one assign()-based consumer thread per broker.

No consumer group: every process reads every message of the partitions its live
subscriptions need (``incremental_assign`` with explicit offsets), so a sibling process
never takes messages away. Records are routed to subscriptions by channel (the
``channel`` header, else the key: :mod:`channelcast.ingest`); a second channel in an
already-assigned partition costs no new consumer. channelcast's own records pass through
as bytes; records other producers wrote are normalised once, here.

Threading: the consumer is touched only by its own thread (poll, assign, unassign, close
never overlap); the event loop talks to it through a command queue.

Overflow: each subscription has a bounded inbox, and the consumer thread never waits for
one. When a subscription's inbox is full it *falls behind* on that partition
(``behind[tp]`` = the first offset it did not get): live records of that partition skip
it, and once its reader has emptied the inbox it reads the missed records with the
history reader and then rejoins live delivery at the consumer's position, atomically (the
rejoin runs on the consumer thread). Other subscriptions, on any partition, never wait.
A subscription nobody reads (a leak) costs nothing but its bookkeeping.

Topology: the broker hands :meth:`FanoutConsumer.apply` what its topic table's refresh
found. When a topic grew, a channel that now lives in another partition is followed
there: the new partition is read from the first record at or after the last time the
old layout was seen (earlier records of the channel cannot be there), and the old one
keeps being read for a grace period (publishers that have not noticed yet still write
there). When a topic was deleted or recreated, its subscriptions end with
HistoryUnavailable naming it.

Owns the subscription (backlog, then live records) and the shared consumer thread. A
subscription is handed what it needs (the topic table, the history reader, a provider of
the fan-out consumer, a close callback); this module never imports the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from channelcast.brokers.kafka.client import TP, finish, read_watermarks, take_available
from channelcast.brokers.kafka.errors import translate
from channelcast.brokers.kafka.topics import TopicChanges
from channelcast.errors import BrokerClosed, BrokerError, BrokerUnavailable, HistoryUnavailable
from channelcast.ingest import (
    Skipped,
    channel_of,
    has_our_headers,
    header_text,
    is_channel_name,
    to_record,
)
from channelcast.message import Record
from channelcast.types import ChannelName, Position

log = logging.getLogger("channelcast.kafka")

CATCH_UP_CHUNK = 5000
"""Offsets read per history request while a subscription catches up."""
MOVE_MARGIN_MS = 5000
"""How far before the last look at the old layout a moved channel's new partition is
read from (clock differences between this process and the brokers)."""

_OUT_OF_RANGE = frozenset({KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE})


class ChannelRoutes(Protocol):
    """The broker's topic table (TopicEnsurer): makes topics exist, routes by their real
    layout, knows their epochs."""

    epochs: dict[str, str]

    async def ensure_for_channels(self, channels: Iterable[ChannelName]) -> None: ...

    def route(self, channel: ChannelName) -> tuple[str, int, bytes]: ...


class ChannelHistory(Protocol):
    """Reads records from the log (the broker's HistoryReader)."""

    async def read(self, channel: ChannelName, since: Position, until: int, *,
                   include_internal: bool = False) -> list[Record]: ...

    async def read_range(self, channels: frozenset[ChannelName], topic: str, partition: int,
                         start: int, until: int, *, include_internal: bool = False,
                         what: str = "") -> list[Record]: ...


class _Inbox:
    """A bounded, thread-safe queue: the consumer thread offers (never waiting), the event
    loop takes everything at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self._loop = loop
        self.maxsize = max(1, maxsize)
        self._items: deque[Record | BaseException] = deque()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._poked = False
        self.closed = False

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(finish, waiter)

    def offer(self, records: list[Record]) -> int:
        """Consumer thread: queue as many as fit; returns how many were taken (all of
        them once closed: nobody will read them)."""
        with self._lock:
            if self.closed:
                return len(records)
            room = self.maxsize - len(self._items)
            if room <= 0:
                return 0
            if room < len(records):
                records = records[:room]
            self._items.extend(records)
            self._wake()
            return len(records)

    def fail(self, exc: BaseException) -> None:
        """Delivery failed for good: the reader gets what is queued, then ``exc``, then
        the end."""
        with self._lock:
            if not self.closed:
                self._items.append(exc)
            self.closed = True
            self._wake()

    def end(self) -> None:
        """No more records will come; what is queued can still be read."""
        with self._lock:
            self.closed = True
            self._wake()

    def take_now(self) -> deque[Record | BaseException]:
        """Everything queued (possibly nothing), without waiting."""
        with self._lock:
            items, self._items = self._items, deque()
            return items

    async def get_all(self) -> deque[Record | BaseException] | None:
        """Everything queued, in one lock round trip (waiting if nothing is, until
        :meth:`poke`: then possibly nothing); None at the end. The caller holds at most
        one inbox-full more: twice ``maxsize`` in all."""
        while True:
            with self._lock:
                items = self._items
                if items or self._poked:
                    self._poked = False
                    self._items = deque()
                    return items
                if self.closed:
                    return None
                waiter = self._loop.create_future()
                self._waiter = waiter
            await waiter

    def poke(self) -> None:
        """Consumer thread: wake the reader even with nothing queued (it has something to
        catch up on: a partition it is behind on)."""
        with self._lock:
            self._poked = True
            self._wake()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._items.clear()
            self._wake()


class KafkaSubscription:
    """A fan-out subscription: backlog (``since``) first, then live records.

    It becomes live asynchronously; ``await sub.ready()`` (or ``async with``) returns once
    every message published afterwards is guaranteed to reach it.
    """

    def __init__(self, channels: frozenset[ChannelName],
                 since: Mapping[ChannelName, Position], max_queue: int, *,
                 topics: ChannelRoutes, history: ChannelHistory,
                 fanout: Callable[[], FanoutConsumer],
                 on_close: Callable[[KafkaSubscription], None],
                 include_internal: bool = False) -> None:
        """``topics`` and ``history`` serve the opening and catching up; ``fanout()``
        returns the consumer to register with (raising BrokerClosed once the broker is
        closed); ``on_close(self)`` is called once, when the subscription closes."""
        self.channels = channels
        self.include_internal = include_internal
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
        self.partitions_of: dict[str, set[TP]] = {}
        """Channel -> the partitions its records are taken from (its own, plus an old one
        for a while after the topic grew). Consumer thread only."""
        self.behind: dict[TP, int] = {}
        """Partition -> first offset not delivered live (written by the consumer thread;
        a partition leaves it only through :meth:`FanoutConsumer.rejoin`)."""
        self.replay_only: dict[TP, tuple[int, set[str]]] = {}
        """Partition -> (offset, channels): catching up there, records below the offset
        are taken only for these channels (ones that moved into a partition the
        subscription already read live for its other channels, whose records below the
        offset it has had). Written by the consumer thread with ``behind``."""
        self._cursor: dict[TP, int] = {}  # catch-up progress (event loop only)
        # Live records at or before a channel's ``since`` were already seen by the caller:
        # the shared consumer may be behind the end when this subscription joins.
        self._floor: dict[str, Position] = {}
        self._opening = asyncio.ensure_future(self._open())

    @property
    def inbox(self) -> _Inbox:
        return self._inbox

    @property
    def lagging(self) -> bool:
        """Whether it fell behind and has not caught up yet."""
        return bool(self.behind)

    async def _open(self) -> None:
        await self._topics.ensure_for_channels(self.channels)
        if self._closed:
            return
        for channel, position in self._since.items():
            topic, partition, _key = self._topics.route(channel)
            if (topic, partition) == (position.topic, position.partition):
                self._floor[channel] = position
        self._consumer = self._fanout()
        live_from = await self._consumer.register(self)
        self._registered = True
        backlog: list[Record] = []
        for channel, position in self._since.items():
            topic, partition, _key = self._topics.route(channel)
            until = live_from[(topic, partition)]
            try:
                backlog.extend(await self._history.read(
                    channel, position, until, include_internal=self.include_internal))
            except BrokerError as exc:
                self._error = exc
                # The position is unusable (ahead of the log, another incarnation of the
                # topic, gone): live delivery starts at once, with no floor from it.
                self._floor.pop(channel, None)
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
                if self.behind:
                    taken.extend(self._inbox.take_now())
                    if not taken:
                        await self._catch_up()
                        if self._closed:
                            raise StopAsyncIteration
                        continue
                else:
                    items = await self._inbox.get_all()
                    if items is None or self._closed:
                        raise StopAsyncIteration
                    self._taken = taken = items
                    if not taken:
                        continue  # poked: the subscription fell behind somewhere
            item = taken.popleft()
            if isinstance(item, BaseException):
                raise item
            if self._floor:
                floor = self._floor.get(item.channel)
                if floor is not None:
                    position = item.position
                    if (position.topic, position.partition) == (floor.topic, floor.partition):
                        if position.offset <= floor.offset:
                            continue
                        del self._floor[item.channel]
            return item

    async def _catch_up(self) -> None:
        """Read what was missed on one partition it fell behind on (some of it: the reader
        takes it before more is read), or rejoin live delivery there."""
        consumer = self._consumer
        assert consumer is not None
        for tp, start in list(self.behind.items()):
            cursor = self._cursor.get(tp, start)
            target = await consumer.dispatch_position(tp)
            while target is not None and cursor < target:
                end = min(target, cursor + CATCH_UP_CHUNK)
                try:
                    records = await self._history.read_range(
                        self.channels, tp[0], tp[1], cursor, end,
                        include_internal=self.include_internal)
                except HistoryUnavailable as exc:
                    self._cursor.pop(tp, None)
                    await consumer.rejoin(self, tp, None)
                    raise HistoryUnavailable(
                        f"subscription to {sorted(self.channels)[:3]} fell behind at "
                        f"{tp[0]}:{tp[1]}:{start} and can no longer catch up: {exc}; "
                        "resubscribe from your last position") from exc
                cursor = end
                self._cursor[tp] = cursor
                only = self.replay_only.get(tp)
                if only is not None and records:
                    upto, moved = only
                    records = [r for r in records
                               if r.position.offset >= upto or r.channel in moved]
                if records:
                    self._taken.extend(records)
                    return
            target = await consumer.rejoin(self, tp, cursor)
            if target is None:
                self._cursor.pop(tp, None)
            return

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
    """One consumer thread serving every fan-out subscription of one KafkaBroker.

    ``skipped(topic, partition, offset, why)`` is told of each record of a subscribed
    channel that carries no message (it logs and counts them). ``grace_s``: how long a
    moved channel's old partition is still read.
    """

    def __init__(self, config: dict[str, Any], routes: ChannelRoutes, timeout: float,
                 loop: asyncio.AbstractEventLoop, *,
                 skipped: Callable[[str, int, int, str], None], grace_s: float = 30.0
                 ) -> None:
        # An offset gone from under us (the topic recreated, retention) must be an error
        # we see, not a silent jump: auto.offset.reset = error.
        self._config = {**config, "auto.offset.reset": "error"}
        self._routes = routes
        self._timeout = timeout
        self._loop = loop
        self._skipped = skipped
        self._grace_s = grace_s
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._position: dict[TP, int] = {}  # next offset to dispatch, per assigned partition
        self._refs: dict[TP, int] = {}
        self._by_channel: dict[str, set[KafkaSubscription]] = {}
        self._subs: dict[KafkaSubscription, set[TP]] = {}
        self._grace: list[tuple[float, KafkaSubscription, TP]] = []
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="channelcast-fanout",
                                        daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def subscription_count(self) -> int:
        return len(self._subs)

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

    async def dispatch_position(self, tp: TP) -> int | None:
        """The next offset the consumer will dispatch on ``tp`` (None: not assigned)."""
        result: int | None = await self._call(lambda: self._position.get(tp))
        return result

    async def rejoin(self, sub: KafkaSubscription, tp: TP, cursor: int | None) -> int | None:
        """``sub`` read everything of ``tp`` before ``cursor``: if that is where live
        delivery stands, it is live again there (None); otherwise the new target to read
        up to. ``cursor=None``: give up catching up, live from now."""
        result: int | None = await self._call(lambda: self._rejoin(sub, tp, cursor))
        return result

    async def apply(self, changes: TopicChanges) -> None:
        """Follow a topology change (see the module docstring)."""
        await self._call(lambda: self._apply(changes))

    async def close(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._thread.join)

    # --- the consumer thread -----------------------------------------------------
    def _register(self, sub: KafkaSubscription) -> dict[TP, int]:
        if self._failure is not None:
            raise self._failure
        tps: set[TP] = set()
        for channel in sub.channels:
            topic, partition, _key = self._routes.route(channel)
            tps.add((topic, partition))
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
            sub.partitions_of[channel] = {self._routes.route(channel)[:2]}
        self._subs[sub] = tps
        return {tp: self._position[tp] for tp in tps}

    def _release(self, tps: Iterable[TP]) -> None:
        gone = []
        for tp in tps:
            count = self._refs.get(tp, 0) - 1
            if count > 0:
                self._refs[tp] = count
                continue
            self._refs.pop(tp, None)
            if self._position.pop(tp, None) is not None:
                gone.append(TopicPartition(tp[0], tp[1]))
        if gone:
            self._consumer.incremental_unassign(gone)

    def _unregister(self, sub: KafkaSubscription) -> None:
        tps = self._subs.pop(sub, None)
        if tps is None:
            return
        for channel in sub.channels:
            subs = self._by_channel.get(channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._by_channel[channel]
        self._grace = [g for g in self._grace if g[1] is not sub]
        self._release(tps)

    def _rejoin(self, sub: KafkaSubscription, tp: TP, cursor: int | None) -> int | None:
        position = self._position.get(tp)
        if cursor is None or position is None or cursor >= position:
            sub.behind.pop(tp, None)
            sub.replay_only.pop(tp, None)
            return None
        return position

    def _assign_at(self, tp: TP, offset: int) -> None:
        self._position[tp] = offset
        self._consumer.incremental_assign([TopicPartition(tp[0], tp[1], offset)])

    def _offset_at(self, tp: TP, when_ms: int) -> int:
        """The first offset of ``tp`` with a timestamp at or after ``when_ms`` (the end
        if there is none). A partition the consumer's metadata does not know yet (the
        topic grew a moment ago) is asked again until the timeout."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                self._consumer.list_topics(tp[0], timeout=self._timeout)  # fresh metadata
                found = self._consumer.offsets_for_times(
                    [TopicPartition(tp[0], tp[1], max(0, when_ms))], timeout=self._timeout)
                offset = found[0].offset if found else -1
                if offset is None or offset < 0:
                    offset = read_watermarks(self._consumer, tp[0], tp[1], self._timeout)[1]
                return int(offset)
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _apply(self, changes: TopicChanges) -> None:
        for topic in sorted(changes.deleted | set(changes.recreated)):
            if topic in changes.deleted:
                why = f"topic {topic!r} was deleted"
            else:
                old_epoch, new_epoch = changes.recreated[topic]
                why = (f"topic {topic!r} was deleted and recreated (epoch {old_epoch} -> "
                       f"{new_epoch})")
            self._end_topic(topic, HistoryUnavailable(
                f"{why}: messages may have been lost; resubscribe once the topic exists "
                "(recovery from positions of the old topic fails)"))
        now = time.monotonic()
        for topic, (old, new) in changes.grown.items():
            try:
                self._follow_growth(topic, old, new, changes.previous_look_ms, now)
            except (KafkaException, BrokerError) as exc:
                # Never silent: the subscriptions of the topic end; resubscribing follows
                # the new layout.
                self._end_topic(topic, BrokerUnavailable(
                    f"topic {topic!r} grew from {old} to {new} partitions and its channels "
                    f"could not be followed to their new partitions ({exc}); resubscribe",
                    retriable=True))

    def _follow_growth(self, topic: str, old: int, new: int, previous_look_ms: int,
                       now: float) -> None:
        since_ms = previous_look_ms - MOVE_MARGIN_MS
        for sub, tps in list(self._subs.items()):
            for channel in sub.channels:
                t, p, _key = self._routes.route(channel)
                new_tp = (t, p)
                if t != topic or new_tp in sub.partitions_of.get(channel, ()):
                    continue
                start = self._offset_at(new_tp, since_ms)
                if new_tp not in self._position:
                    self._assign_at(new_tp, start)
                elif start < self._position[new_tp]:
                    if new_tp in tps:
                        # Read live already, for the subscription's other channels: the
                        # catch-up must not give it their records a second time.
                        live_from = sub.behind.get(new_tp, self._position[new_tp])
                        sub.replay_only.setdefault(new_tp, (live_from, set()))[1].add(
                            channel)
                    sub.behind.setdefault(new_tp, start)  # read the part already passed
                    sub.inbox.poke()  # its reader may be waiting on an empty inbox
                if new_tp not in tps:
                    self._refs[new_tp] = self._refs.get(new_tp, 0) + 1
                    tps.add(new_tp)
                sub.partitions_of.setdefault(channel, set()).add(new_tp)
                for old_tp in [tp for tp in tps if tp[0] == topic and tp != new_tp]:
                    self._grace.append((now + self._grace_s, sub, old_tp))
                log.info("channel %s moved to %s:%d (topic %s grew from %d to %d "
                         "partitions); reading it there from offset %d", channel, t, p,
                         topic, old, new, start)

    def _end_grace(self) -> None:
        now = time.monotonic()
        due = [g for g in self._grace if g[0] <= now]
        if not due:
            return
        self._grace = [g for g in self._grace if g[0] > now]
        for _deadline, sub, tp in due:
            tps = self._subs.get(sub)
            if tps is None or tp not in tps:
                continue
            for channel, held in sub.partitions_of.items():
                if tp in held and self._routes.route(ChannelName(channel))[:2] != tp:
                    held.discard(tp)
            needed = {self._routes.route(c)[:2] for c in sub.channels}
            if tp not in needed:
                tps.discard(tp)
                sub.behind.pop(tp, None)
                sub.replay_only.pop(tp, None)
                self._release([tp])
                moved = sorted(c for c in sub.channels if self._routes.route(c)[0] == tp[0])
                log.warning(
                    "stopped reading %s:%d for %s (moved when the topic grew, %.0f s ago): "
                    "a producer still writing there is not seen (Kafka's Java producer "
                    "notices growth after metadata.max.age.ms, 5 minutes by default)",
                    tp[0], tp[1], ", ".join(moved[:3]) + ("..." if len(moved) > 3 else ""),
                    self._grace_s)

    def _end_topic(self, topic: str, error: BrokerError) -> None:
        for sub, tps in list(self._subs.items()):
            if any(tp[0] == topic for tp in tps):
                sub.inbox.fail(error)
                self._unregister(sub)
        stale = [tp for tp in self._position if tp[0] == topic]
        for tp in stale:
            self._refs.pop(tp, None)
            self._position.pop(tp, None)
        if stale:
            self._consumer.incremental_unassign([TopicPartition(t, p) for t, p in stale])

    def _run(self) -> None:
        try:
            self._consumer = Consumer(self._config)
        except KafkaException as exc:
            self._fail_all(translate(exc, "creating the fan-out consumer"))
            return
        try:
            while not self._stop.is_set():
                self._drain_commands()
                if self._grace:
                    self._end_grace()
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

    def _error(self, msg: Message, err: KafkaError) -> None:
        if err.fatal():
            raise KafkaException(err)
        topic, partition = msg.topic(), msg.partition()
        if err.code() in _OUT_OF_RANGE and topic is not None and partition is not None \
                and partition >= 0:
            # Our offset is gone: retention removed it, or the topic was recreated.
            self._end_topic_partition((topic, partition), HistoryUnavailable(
                f"the fan-out position on {topic}:{partition} is no longer in the log "
                f"({err.name()}: was the topic recreated, or did retention remove it?); "
                "resubscribe"))
            return
        # Transient (broker restarting, leader moving): librdkafka retries itself.
        log.warning("fan-out consumer: %s", err)

    def _end_topic_partition(self, tp: TP, error: BrokerError) -> None:
        for sub, tps in list(self._subs.items()):
            if tp in tps:
                sub.inbox.fail(error)
                self._unregister(sub)
        if self._position.pop(tp, None) is not None:
            self._refs.pop(tp, None)
            self._consumer.incremental_unassign([TopicPartition(tp[0], tp[1])])

    def _dispatch(self, messages: list[Message]) -> None:
        out: dict[KafkaSubscription, list[Record]] = {}
        position = self._position
        by_channel = self._by_channel
        epochs = self._routes.epochs
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._error(msg, err)
                continue
            # A consumed message without an error has all three.
            topic: str = msg.topic()  # type: ignore[assignment]
            partition: int = msg.partition()  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
            tp = (topic, partition)
            if tp not in position:
                continue  # unassigned meanwhile
            position[tp] = offset + 1
            headers: Any = msg.headers()  # a list of (name, value) pairs when consumed
            # Our producer writes the channel header first: look there before searching.
            if headers and headers[0][0] == "channel" and type(headers[0][1]) is bytes:
                channel: str | None = headers[0][1].decode("utf-8", "replace")
            else:
                channel = header_text(headers, "channel") if headers else None
            subs: set[KafkaSubscription] | None = None
            if channel is not None:
                subs = by_channel.get(channel)
                if not subs:
                    if has_our_headers(headers) or is_channel_name(channel):
                        continue  # a channel nobody here reads
                    channel = None  # not a channel name: the record is read as below
            if channel is not None:
                record = to_record(msg.value(), msg.key(), headers, topic, partition,
                                   offset, msg.timestamp()[1], epochs.get(topic),
                                   channel,  # type: ignore[arg-type]
                                   keep_headers=False)
            else:
                # Another producer's record without a (usable) channel header: its value
                # (an envelope naming its channel) or its key says which channel.
                key = msg.key()
                record = to_record(msg.value(), key, headers, topic, partition, offset,
                                   msg.timestamp()[1], epochs.get(topic))
                if not isinstance(record, Skipped):
                    subs = by_channel.get(record.channel)
                    if not subs:
                        continue
                elif key is not None and (keyed := channel_of(key, None)) is not None \
                        and keyed not in by_channel:
                    continue  # keyed for a channel nobody here reads: not ours to report
            if isinstance(record, Skipped) or not subs:
                if isinstance(record, Skipped):
                    self._skipped(topic, partition, offset, record.reason)
                continue
            record_channel = record.channel
            if not any(tp in sub.partitions_of.get(record_channel, ()) for sub in subs):
                # Its channel lives in another partition (a producer that partitioned by
                # something else): where subscribers of the channel never read. Said once,
                # the same on every node, rather than delivered by chance.
                self._skipped(topic, partition, offset,
                              f"a record of channel {record.channel!r} in a partition "
                              "where that channel does not live (its producer did not "
                              "partition by channel, or by another partition count: a "
                              "topic that grew is followed within metadata_refresh_s)")
                continue
            internal = record.internal
            for sub in subs:
                if internal and not sub.include_internal:
                    continue
                behind = sub.behind
                if behind and tp in behind:
                    continue  # it reads this one when it catches up
                if tp not in sub.partitions_of.get(record_channel, ()):
                    continue
                records = out.get(sub)
                if records is None:
                    out[sub] = [record]
                else:
                    records.append(record)
        for sub, records in out.items():
            accepted = sub.inbox.offer(records)
            if accepted < len(records):
                behind = sub.behind
                for record in records[accepted:]:
                    p = record.position
                    behind.setdefault((p.topic, p.partition), p.offset)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
