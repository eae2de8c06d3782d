"""Workers on Kafka: a consumer-group member with ordered, per-partition processing.

The consumer lives in its own thread (poll, commit, pause and close never overlap); each
assigned partition gets one asyncio task on the event loop that runs the handler for its
messages in offset order, so work is ordered within a partition and parallel across them.

``manual_commit=True``: the committed offset of a partition is one past the last message
whose handler succeeded (or which went to the dead-letter topic); since a partition is
processed in order, that is also past every earlier message. A failing handler is retried
with exponential backoff; after ``retry.max_attempts`` the message is produced to the
dead-letter topic (and acknowledged) *before* its offset may be committed. Revoked
partitions finish the message in hand, then commit, then let go.

``manual_commit=False`` keeps librdkafka's auto-commit (offsets stored when a message is
fetched, committed every few seconds): the original's default, which can lose or repeat
messages when a worker dies.

Overflow: at most ``MAX_PENDING`` fetched-but-unprocessed messages per partition; above
that the partition is paused until the handler catches up.

A worker is handed what it needs (:class:`WorkerTopics`, a :data:`DeadLetterSend`, the
broker's registry of running workers, a timeout); this module never imports the broker
and never reaches into it, and never drops a message: it is processed, dead-lettered, or
left uncommitted for the next owner.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableSet, Sequence
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from channelcast.brokers.base import (
    HEADER_CHANNEL,
    HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_ERROR,
    HEADER_DLQ_OFFSET,
    HEADER_DLQ_PARTITION,
    HEADER_DLQ_TOPIC,
    HEADER_EVENT,
    HEADER_ID,
    ChannelRouter,
    RetryAbandoned,
    RetryPolicy,
    WorkerStats,
    handle_with_retries,
)
from channelcast.brokers.kafka.client import (
    TP,
    SkipLog,
    coords,
    header,
    header_pairs,
    take_available,
)
from channelcast.brokers.kafka.errors import has_code, translate
from channelcast.brokers.kafka.producer import Outgoing
from channelcast.errors import BrokerClosed, BrokerError, MalformedMessage
from channelcast.ingest import Skipped, channel_of, to_record
from channelcast.strategies import TopicStrategy
from channelcast.types import Position

log = logging.getLogger("channelcast.kafka")

MAX_PENDING = 5000
RESUME_BELOW = 1000
COMMIT_INTERVAL_S = 0.05

DeadLetterSend = Callable[[Sequence[Outgoing]], Awaitable[list[Position]]]
"""Produces messages and waits for their acknowledgement (raising BrokerClosed once the
broker is closed): how a worker writes to its dead-letter topic."""


class WorkerTopics(Protocol):
    """Makes sure a worker's topics exist (the broker's TopicEnsurer)."""

    async def ensure_for_worker(self, topics: Sequence[str], dead_letter: str) -> None: ...


class _Partition:
    def __init__(self) -> None:
        self.queue: deque[Message] = deque()
        self.wakeup = asyncio.Event()
        self.revoked = False
        self.given_up = asyncio.Event()
        """Set with ``revoked``: ends a retry backoff at once."""
        self.task: asyncio.Task[None] | None = None


class KafkaWorker:
    """One consumer-group member. ``await run()`` until ``stop()``."""

    def __init__(self, group: str, router: ChannelRouter, manual_commit: bool,
                 retry: RetryPolicy, dead_letter_topic: str, config: dict[str, Any], *,
                 strategy: TopicStrategy, topics: WorkerTopics, send: DeadLetterSend,
                 running: MutableSet[KafkaWorker], timeout_s: float,
                 epochs: Mapping[str, str] | None = None) -> None:
        """``topics`` creates the worker's topics before it joins; ``send`` writes to the
        dead-letter topic; ``running`` holds this worker while ``run()`` runs (the broker
        stops them on close); ``timeout_s`` bounds finishing a revoked partition."""
        self.group = group
        self._strategy = strategy
        self._epochs: Mapping[str, str] = epochs if epochs is not None else {}
        self._topics = topics
        self._send = send
        self._running = running
        self._timeout = timeout_s
        self._router = router
        self._manual = manual_commit
        self._retry = retry
        self._dlq = dead_letter_topic
        self._skip_log = SkipLog(log)
        self._config = dict(config)
        self._config.update({"group.id": group, "enable.auto.commit": not manual_commit})
        self._config.setdefault("auto.offset.reset", "earliest")
        self._config.setdefault("on_commit", self._on_commit)
        # Regex subscriptions (legacy topic-per-channel) notice new topics on a metadata
        # refresh; librdkafka's default of 5 minutes is too slow for that.
        self._config.setdefault("topic.metadata.refresh.interval.ms", 5000)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[TP, int] = {}   # fetched, not yet processed (thread + loop)
        self._done: dict[TP, int] = {}      # next offset to commit (manual mode)
        self._committed: dict[TP, int] = {}
        self._parts: dict[TP, _Partition] = {}
        self._paused: set[TP] = set()  # consumer thread only
        self._processed = self._failed = self._dead = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exited = asyncio.Event()
        self._thread: threading.Thread | None = None

    @property
    def stats(self) -> WorkerStats:
        with self._lock:
            committed = dict(self._committed)
        return WorkerStats(self._processed, self._failed, self._dead, committed)

    # --- lifecycle (event loop) ---------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        subs = self._strategy.subscription_topics(self._router.patterns)
        topics = sorted(set(subs) | set(self._router.topics))
        await self._topics.ensure_for_worker(
            [t for t in topics if not t.startswith("^")], self._dlq)
        finished: asyncio.Future[BaseException | None] = loop.create_future()

        def body() -> None:
            error: BaseException | None = None
            try:
                self._consume(topics)
            except BaseException as exc:
                error = exc
            loop.call_soon_threadsafe(_settle, finished, error)

        self._thread = threading.Thread(target=body, name=f"channelcast-worker-{self.group}",
                                        daemon=True)
        self._running.add(self)
        self._thread.start()
        try:
            error = await asyncio.shield(finished)
        except asyncio.CancelledError:
            self._stop.set()
            await finished
            raise
        finally:
            self._running.discard(self)
            await self._revoke(list(self._parts))
            self._exited.set()
        if error is not None:
            if isinstance(error, KafkaException):
                raise translate(error, f"worker {self.group!r}",
                                settings="kafka.consumer") from error
            raise error

    async def stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        """After stop(): wait until run() has left the group (committed, closed)."""
        await self._exited.wait()

    # --- consumer thread -------------------------------------------------------------
    def _consume(self, topics: list[str]) -> None:
        consumer = Consumer(self._config)
        self._consumer = consumer
        paused = self._paused
        consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        last_commit = 0.0
        try:
            while not self._stop.is_set():
                messages = take_available(consumer, 0.05, 500)
                batches: dict[TP, list[Message]] = {}
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise KafkaException(err)
                        if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                            # A pattern with no topic yet, or a topic deleted: normal.
                            log.info("worker %s: %s (read once it exists)", self.group,
                                     err.str())
                        else:
                            log.warning("worker %s: consumer error %s: %s", self.group,
                                        err.name(), err.str())
                        continue
                    topic, partition, _offset = coords(msg)
                    batches.setdefault((topic, partition), []).append(msg)
                if batches:
                    with self._lock:
                        for tp, msgs in batches.items():
                            self._pending[tp] = self._pending.get(tp, 0) + len(msgs)
                    self._call(self._accept, batches)
                self._flow_control(consumer, paused)
                now = time.monotonic()
                if self._manual and now - last_commit >= COMMIT_INTERVAL_S:
                    last_commit = now
                    self._commit(consumer, None, asynchronous=True)
        finally:
            consumer.close()  # runs on_revoke: the last commit happens there

    def _call(self, func: Any, *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(func, *args)

    def _flow_control(self, consumer: Consumer, paused: set[TP]) -> None:
        with self._lock:
            pending = dict(self._pending)
        to_pause = [tp for tp, n in pending.items() if n > MAX_PENDING and tp not in paused]
        to_resume = [tp for tp in paused if pending.get(tp, 0) < RESUME_BELOW]
        try:
            if to_pause:
                consumer.pause([TopicPartition(t, p) for t, p in to_pause])
                paused.update(to_pause)
            if to_resume:
                consumer.resume([TopicPartition(t, p) for t, p in to_resume])
                paused.difference_update(to_resume)
        except KafkaException as exc:  # e.g. the partition was revoked meanwhile
            log.warning("worker %s: pause/resume failed: %s", self.group, exc)

    def _commit(self, consumer: Consumer, only: set[TP] | None, asynchronous: bool) -> None:
        with self._lock:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._done.items()
                       if self._committed.get((t, p)) != o and (only is None or (t, p) in only)]
        if not offsets:
            return
        try:
            if asynchronous:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if not has_code(exc, KafkaError._NO_OFFSET):
                log.warning("worker %s: commit failed: %s", self.group, exc)
            return
        if not asynchronous:
            with self._lock:
                for tp in offsets:
                    self._committed[(tp.topic, tp.partition)] = tp.offset

    def _on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("worker %s: commit failed: %s", self.group, err)
            return
        with self._lock:
            for tp in partitions:
                if tp.error is None and tp.offset >= 0:
                    self._committed[(tp.topic, tp.partition)] = tp.offset

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._call(self._assign, [(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        self._finish_on_loop(tps)
        if self._manual:
            self._commit(consumer, set(tps), asynchronous=False)
        self._forget(tps)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(tp.topic, tp.partition) for tp in partitions]
        self._finish_on_loop(tps)  # someone else owns them now: do not commit
        self._forget(tps)

    def _finish_on_loop(self, tps: list[TP]) -> None:
        assert self._loop is not None
        if self._loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._revoke(tps), self._loop)
        try:
            future.result(timeout=self._timeout + 5)
        except Exception as exc:
            log.warning("worker %s: finishing revoked partitions: %r", self.group, exc)

    def _forget(self, tps: list[TP]) -> None:
        with self._lock:
            for tp in tps:
                self._pending.pop(tp, None)
                self._done.pop(tp, None)
        self._paused.difference_update(tps)  # a new assignment starts unpaused

    # --- event loop: per-partition processing -------------------------------------------
    def _assign(self, tps: list[TP]) -> None:
        for tp in tps:
            if tp not in self._parts:
                part = _Partition()
                part.task = asyncio.ensure_future(self._work(tp, part))
                self._parts[tp] = part

    def _accept(self, batches: dict[TP, list[Message]]) -> None:
        for tp, msgs in batches.items():
            part = self._parts.get(tp)
            if part is None or part.revoked:
                continue  # not ours any more: the next owner gets them (uncommitted)
            part.queue.extend(msgs)
            part.wakeup.set()

    async def _revoke(self, tps: list[TP]) -> None:
        parts = [(tp, self._parts.pop(tp)) for tp in tps if tp in self._parts]
        for _tp, part in parts:
            part.revoked = True
            part.given_up.set()
            part.wakeup.set()
        tasks = [part.task for _tp, part in parts if part.task is not None]
        if tasks:
            _done, running = await asyncio.wait(tasks, timeout=self._timeout)
            for tp, part in parts:
                if part.task in running:
                    # Never silent. With manual commit the message in hand is not
                    # committed, so the group's next owner of the partition gets it
                    # again; with auto-commit its offset was stored when it was fetched,
                    # so it is lost: said as such.
                    log.warning("worker %s: the handler on %s:%d did not finish within %ss "
                                "of the partition being given up; cancelled (%s)", self.group,
                                tp[0], tp[1], self._timeout, self._revoked_fate())
            for task in running:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _revoked_fate(self) -> str:
        """What becomes of a message whose handler was cancelled, by commit mode."""
        if self._manual:
            return "its message is not committed and will be handled again"
        return ("manual_commit is off: its offset was stored when it was fetched, so the "
                "message will not be handled again")

    def _owns(self, topic: str, msg: Message) -> bool:
        """Whether a record that carries no message is this worker's to dead-letter: its
        topic is one of the worker's ``topics``, or the channel its header or key names
        matches one of the worker's patterns."""
        if topic in self._router.topics:
            return True
        channel = channel_of(msg.key(), header_pairs(msg))
        return channel is not None and self._router.matches(channel)

    async def _work(self, tp: TP, part: _Partition) -> None:
        while not part.revoked:
            if not part.queue:
                part.wakeup.clear()
                await part.wakeup.wait()
                continue
            msg = part.queue.popleft()
            try:
                await self._process(msg, part.given_up)
            except RetryAbandoned as gave_up:
                # INFO when the next owner handles it again; WARNING when it is lost
                # (auto-commit stored its offset when it was fetched).
                log.log(logging.INFO if self._manual else logging.WARNING,
                        "worker %s: stopped retrying %s:%d:%d after attempt %d (the "
                        "partition was given up; %s)", self.group, *coords(msg),
                        gave_up.attempt, self._revoked_fate())
                return
            with self._lock:
                self._pending[tp] = self._pending.get(tp, 1) - 1
                if self._manual:
                    self._done[tp] = coords(msg)[2] + 1

    async def _process(self, msg: Message, stop: asyncio.Event | None = None) -> None:
        topic, partition, offset = coords(msg)
        found = to_record(msg.value(), msg.key(), header_pairs(msg), topic, partition, offset,
                          msg.timestamp()[1], self._epochs.get(topic), keep_headers=True)
        if isinstance(found, Skipped):
            if msg.value() is None:  # a tombstone (log compaction's delete marker)
                log.debug("worker %s: tombstone at %s:%d:%d skipped", self.group, topic,
                          partition, offset)
                return
            if self._owns(topic, msg):
                await self._dead_letter(msg, MalformedMessage(found.reason), 0)
            else:  # every group reading the topic sees it; dead-lettering is its owner's
                self._skip_log(topic, partition, offset,
                               f"{found.reason} (worker {self.group}: not one of its "
                               "channels, so not its to dead-letter)")
            return
        record = found
        if record.internal:
            return  # channelcast's own bookkeeping (presence): never a worker's business
        position = record.position
        handler = self._router.handler_for(record)
        if handler is None:
            return
        def failed(attempt: int, error: Exception) -> None:
            self._failed += 1
            log.info("worker %s: handler failed on %s (attempt %d): %r",
                     self.group, position, attempt, error)

        error = await handle_with_retries(handler, record, self._retry, failed, stop=stop)
        if error is None:
            self._processed += 1
        else:
            await self._dead_letter(msg, error, self._retry.max_attempts)

    async def _dead_letter(self, msg: Message, exc: BaseException, attempts: int) -> None:
        """Produce to the dead-letter topic; only an acknowledged DLQ copy lets us move on."""
        position = Position(*coords(msg))
        headers: list[tuple[str, str | bytes | None]] = []
        for name in (HEADER_CHANNEL, HEADER_EVENT, HEADER_ID):
            value = header(msg, name)
            if value is not None:
                headers.append((name, value.encode()))
        headers += [
            (HEADER_DLQ_ERROR, f"{type(exc).__name__}: {exc}"[:1000].encode()),
            (HEADER_DLQ_ATTEMPTS, str(attempts).encode()),
            (HEADER_DLQ_TOPIC, position.topic.encode()),
            (HEADER_DLQ_PARTITION, str(position.partition).encode()),
            (HEADER_DLQ_OFFSET, str(position.offset).encode()),
        ]
        outgoing = (self._dlq, -1, msg.key() or b"", msg.value() or b"", headers)
        delay = self._retry.initial_backoff_s or 0.1
        while True:
            try:
                await self._send([outgoing])
                break
            except BrokerClosed:
                raise
            except BrokerError as err:
                log.error("worker %s: dead-lettering %s failed, retrying: %s",
                          self.group, position, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry.max_backoff_s or 5.0)
        self._dead += 1
        log.warning("worker %s: dead-lettered %s after %d attempt%s: %r", self.group,
                    position, attempts, "" if attempts == 1 else "s", exc)


def _settle(future: asyncio.Future[BaseException | None], error: BaseException | None) -> None:
    if not future.done():
        future.set_result(error)

