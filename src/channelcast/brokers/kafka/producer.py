"""The publishing half of the Kafka adapter: one confluent Producer and its poll thread.

Owns the producer, our producer defaults (:func:`producer_defaults`) and the delivery
bookkeeping. Delivery reports are served by a dedicated thread (``poll()`` in a loop) and
resolved on the event loop with ``loop.call_soon_threadsafe``: one call per *batch*, not
per message, so ``publish_many`` costs one future however many messages it carries.

It must never block the event loop on librdkafka (a full local queue, BufferError, is
waited out with ``asyncio.sleep``), never drop a delivery error (each becomes the
translated error of its message), and never know about envelopes, channels or the
broker: it sends :data:`Outgoing` tuples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from operator import itemgetter
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from channelcast.brokers.kafka.client import finish, librdkafka_log
from channelcast.brokers.kafka.errors import Translated, kafka_errors, translate
from channelcast.errors import BrokerClosed, BrokerError, PublishOutcomeUnknown
from channelcast.message import new_position
from channelcast.types import Position

log = logging.getLogger("channelcast.kafka")

Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]]
"""What produce() takes; a dict of str/bytes is not even tracked by the garbage collector
(a list of tuples is four tracked objects per message); written in its order."""
Outgoing = tuple[str, int, bytes, bytes, Headers]
"""(topic, partition, key, value, headers): one encoded message ready for produce()."""


def producer_defaults(brokers: str, timeout_s: float) -> dict[str, Any]:
    """Our producer defaults; ``settings.kafka.producer`` is merged over them."""
    return {
        "bootstrap.servers": brokers,
        "logger": librdkafka_log,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "batch.size": 1_000_000,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
        "queue.buffering.max.kbytes": 512 * 1024,
        # A publish is acknowledged or fails within the configured timeout: never hangs.
        "message.timeout.ms": max(1000, int(timeout_s * 1000)),
        "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
        # Back on its feet soon after a broker restart (librdkafka's default backs off to
        # 10 s, longer than a publish may wait).
        "reconnect.backoff.max.ms": 1000,
    }


class _Batch:
    """Delivery state of one publish call.

    Delivery reports are served by whoever holds the publisher's poll lock (one at a
    time), which alone writes ``delivered``, ``reports`` and ``slots``; the event loop
    alone writes ``expected`` (lowered if produce() failed midway). Each side re-checks
    completion after its own write. Once complete, :meth:`resolve` (event loop) tells
    each message's position or failure.

    Two ways to tell which message a report is for. When librdkafka guarantees reports in
    produce order per partition (idempotent producer, explicit partitions), one callback
    for the whole batch appends each report's offset (or error) to its partition's list
    in ``reports``, and :meth:`resolve` hands them out to the messages of that partition
    in order: nothing per message while producing, and no object per report but the
    offset. Otherwise a per-message callback carrying the index fills ``slots``.
    """

    __slots__ = ("delivered", "errors", "expected", "failed", "future", "limit", "refused",
                 "reports", "sink", "slots", "topics")

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int,
                 sink: list[asyncio.Future[None]]) -> None:
        self.sink = sink  # completed futures, resolved by the poller in one go
        self.future: asyncio.Future[None] = loop.create_future()
        # Ordered reports: partition (or (topic, partition) when the batch spans several
        # topics, ``topics``) -> offsets, or the KafkaError of a failed report, in order.
        self.reports: dict[Any, list[int | KafkaError]] = {}
        self.topics = False
        # Unordered reports: per message index its offset, or its KafkaError.
        self.slots: list[int | KafkaError | None] | None = None
        self.expected = size
        self.limit = size  # messages produced (fewer if produce() failed midway)
        self.delivered = 0
        self.errors = 0  # failed reports
        # index -> why: a KafkaError from a delivery report (the message was accepted by
        # produce() and may have been sent), a KafkaException from produce() (never sent).
        # produce() refusals are written at once, report errors by resolve().
        self.failed: dict[int, KafkaError | KafkaException] = {}
        # The produce() refusal that stopped a batch midway (only without ``each``).
        self.refused: KafkaException | None = None

    def _reported(self, err: KafkaError | None) -> None:
        if err is not None:
            self.errors += 1
        self.delivered += 1
        if self.delivered >= self.expected:
            self.sink.append(self.future)

    def on_report(self, err: KafkaError | None, msg: Message) -> None:
        """An ordered report of a batch for one topic."""
        partition = msg.partition()
        got = self.reports.get(partition)
        if got is None:  # a get, not a KeyError: small batches meet new partitions often
            got = self.reports[partition] = []
        if err is None:
            got.append(msg.offset())  # type: ignore[arg-type]  # set in a report
        else:
            got.append(err)
            self.errors += 1
        self.delivered += 1
        if self.delivered >= self.expected:
            self.sink.append(self.future)

    def on_topic_report(self, err: KafkaError | None, msg: Message) -> None:
        """An ordered report of a batch for several topics."""
        tp = (msg.topic(), msg.partition())
        got = self.reports.get(tp)
        if got is None:
            got = self.reports[tp] = []
        got.append(msg.offset() if err is None else err)  # type: ignore[arg-type]
        self._reported(err)

    def on_delivery(self, index: int, err: KafkaError | None, msg: Message) -> None:
        """A report for message ``index`` (unordered)."""
        assert self.slots is not None
        self.slots[index] = msg.offset() if err is None else err
        self._reported(err)

    def not_produced(self, index: int, exc: KafkaException) -> None:
        """produce() refused message ``index``: no report will come for it."""
        self.failed[index] = exc
        self.expected -= 1
        if self.delivered >= self.expected:
            finish(self.future)

    def produced_only(self, count: int) -> None:
        """produce() failed after ``count`` messages: wait for those alone."""
        self.expected = self.limit = count
        if self.delivered >= count:
            finish(self.future)

    def resolve(self, messages: Sequence[Outgoing], epochs: Mapping[str, str]
                ) -> list[Position | None]:
        """Once complete: each produced message's position, None where it failed (the
        reason then in ``failed``)."""
        failed = self.failed
        count = min(self.limit, len(messages))
        if self.slots is not None:
            found: Any = self.slots
        else:
            # The n-th report of a partition is for the n-th message produced to it.
            taken: dict[Any, Callable[[], Any]] = {
                key: iter(offsets).__next__ for key, offsets in self.reports.items()}
            if not failed and not self.errors:
                produced = messages if count == len(messages) else messages[:count]
                if self.topics:
                    return [new_position(m[0], m[1], taken[(m[0], m[1])](), epochs.get(m[0]))
                            for m in produced]
                if not produced:
                    return []  # an empty batch
                topic = messages[0][0]  # one topic: one epoch
                epoch = epochs.get(topic)
                return [new_position(topic, m[1], taken[m[1]](), epoch) for m in produced]
            found = [None if index in failed
                     else taken[(m[0], m[1]) if self.topics else m[1]]()
                     for index, m in enumerate(messages[:count])]
        out: list[Position | None] = []
        for index, (m, got) in enumerate(zip(messages[:count], found, strict=True)):
            if type(got) is int:
                out.append(new_position(m[0], m[1], got, epochs.get(m[0])))
            else:
                if got is not None:
                    failed[index] = got
                out.append(None)
        return out


_topic_of = itemgetter(0)
_partition_of = itemgetter(1)


def _failure(why: KafkaError | KafkaException, topic: str | None = None) -> Translated:
    """The error of one failed message (naming its topic when known): a delivery report's
    KafkaError is for a message that may have reached the broker (``sent``), produce()'s
    KafkaException for one that never left the process."""
    doing = "publishing" if topic is None else f"publishing to topic {topic!r}"
    return translate(why, doing, sent=isinstance(why, KafkaError))


def _batch_error(batch: _Batch, messages: Sequence[Outgoing]) -> Translated:
    """One error for a batch in which some message failed (``send``'s contract).

    The first failure's own error if no message of the batch can be stored (none was
    acknowledged and no failure is "may be stored"); otherwise PublishOutcomeUnknown
    saying how many were acknowledged, retriable if every failure is.
    """
    size = len(messages)
    errors = [_failure(batch.failed[i], messages[i][0]) for i in sorted(batch.failed)]
    if batch.refused is not None:
        errors.append(_failure(batch.refused))
    acknowledged = batch.delivered - len(batch.failed)
    if not acknowledged and not any(isinstance(e, PublishOutcomeUnknown) for e in errors):
        return errors[0]
    if acknowledged == 0 and len(errors) == 1 and size == 1:
        return errors[0]
    retriable = all(isinstance(e, BrokerError) and e.retriable for e in errors)
    return PublishOutcomeUnknown(
        f"publishing failed for {size - acknowledged} of {size} messages (first: "
        f"{errors[0]}); {acknowledged} were acknowledged, and the batch may be partly "
        "stored: retry it with the same message ids", retriable=retriable)


def _finish_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _hand_over(futures: list[asyncio.Future[None]]) -> None:
    """Resolve completed batches on their event loop: one wake-up per poll, not per batch."""
    if not futures:
        return
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for future in futures:
        by_loop.setdefault(future.get_loop(), []).append(future)
    for loop, group in by_loop.items():
        if loop is running:
            _finish_all(group)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_finish_all, group)


class KafkaPublisher:
    """Owns the Producer; ``send`` produces a batch and waits for every acknowledgement."""

    def __init__(self, config: dict[str, Any], flush_timeout: float,
                 epochs: Mapping[str, str] | None = None) -> None:
        """``epochs`` (topic -> epoch, the broker's topic table) stamps positions."""
        self._epochs: Mapping[str, str] = {} if epochs is None else epochs
        self._config = dict(config)
        self._config.setdefault("error_cb", self._on_error)
        self._flush_timeout = flush_timeout
        # librdkafka reports deliveries in produce order per partition when idempotent.
        self._ordered_reports = str(self._config.get("enable.idempotence")).lower() == "true"
        self.producer = Producer(self._config)
        self._stop = threading.Event()
        self._poll_lock = threading.Lock()
        self._completed: list[asyncio.Future[None]] = []  # guarded by _poll_lock
        self._producing = 0  # send() calls in their produce loop (event-loop thread only)
        self._thread = threading.Thread(target=self._poll_loop, name="channelcast-producer",
                                        daemon=True)
        self._fatal: KafkaError | None = None
        self._closed = False
        self._thread.start()

    def _on_error(self, err: KafkaError) -> None:
        # Client-level errors (all brokers down, fatal idempotence errors): never silent.
        if err.fatal():
            self._went_fatal(err)
        else:
            # Through librdkafka's own log channel and its RepeatFilter: while a broker is
            # down this fires for every connection attempt (about 10 a second), forever.
            librdkafka_log.log(logging.INFO if err.code() == KafkaError._TRANSPORT
                               else logging.WARNING, "Kafka producer: %s", err)

    def _went_fatal(self, err: KafkaError) -> None:
        """A fatal error (KIP-360's unrecoverable idempotence states, e.g.
        OUT_OF_ORDER_SEQUENCE_NUMBER after a cluster was wiped under a producer): this
        producer can send nothing more. Said once; every later publish raises it
        (non-retriable PublishError), and the messages still waiting are failed now
        rather than left to their delivery timeout."""
        if self._fatal is not None:
            return
        self._fatal = err
        log.error("Kafka producer fatal error: %s; every later publish fails with it "
                  "(restart the process for a new producer)", err)
        with contextlib.suppress(KafkaException, RuntimeError):
            self.producer.purge(in_queue=True, in_flight=True, blocking=False)

    def _poll_failed(self, exc: Exception) -> None:
        """poll() raised (confluent-kafka raises a fatal error there, or what a callback
        raised): keep serving delivery reports, or every waiting publish would hang."""
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is not None and err.fatal():
            self._went_fatal(err)
        else:
            librdkafka_log.error("Kafka producer: serving delivery reports failed: %r", exc)
        self._stop.wait(0.01)  # never a busy loop if it keeps failing

    def _take_completed(self) -> list[asyncio.Future[None]]:
        # Batches hold this very list, so empty it in place (caller holds _poll_lock).
        done = self._completed[:]
        self._completed.clear()
        return done

    def _poll_loop(self) -> None:
        # Only the holder of _poll_lock serves callbacks, so they never run concurrently.
        # A busy send() serves them inline (no GIL ping-pong with this thread).
        while not self._stop.is_set():
            if self._producing:
                self._stop.wait(0.002)
                continue
            if self._poll_lock.acquire(timeout=0.01):
                try:
                    try:
                        self.producer.poll(0.01)
                    except Exception as exc:  # the thread must live: reports still come
                        self._poll_failed(exc)
                    done = self._take_completed()
                finally:
                    self._poll_lock.release()
                _hand_over(done)
        remaining = self.producer.flush(self._flush_timeout)
        with self._poll_lock:
            done = self._take_completed()
        _hand_over(done)
        if remaining:
            log.error("Kafka producer closed with %d undelivered messages", remaining)

    async def send(self, messages: Sequence[Outgoing]) -> list[Position]:
        """Produce ``messages`` and wait for all. On a failure, raises the first one's
        error when no message of the batch can be stored, else PublishOutcomeUnknown
        (the batch is partly stored, or may be): retry it with the same ids."""
        batch = await self._produce(messages, each=False)
        positions = batch.resolve(messages, self._epochs)
        if batch.failed or batch.refused is not None:
            raise _batch_error(batch, messages) from batch.refused
        return positions  # type: ignore[return-value]  # no None without a failure

    async def send_each(self, messages: Sequence[Outgoing]
                        ) -> list[Position | Translated]:
        """Produce ``messages`` (independent publishes) and wait for all; per message its
        position or the (translated) error that message alone met."""
        batch = await self._produce(messages, each=True)
        positions = batch.resolve(messages, self._epochs)
        failed = batch.failed
        return [position if position is not None else _failure(failed[index], m[0])
                for index, (m, position) in enumerate(zip(messages, positions, strict=True))]

    async def _produce(self, messages: Sequence[Outgoing], each: bool) -> _Batch:
        """Produce every message, then wait until each is acknowledged or failed.

        ``each``: a message produce() refuses fails alone (``batch.failed``); otherwise
        producing stops there (``batch.refused``; the rest is not sent) and the messages
        already produced are waited for.
        """
        if self._closed:
            raise BrokerClosed("the Kafka broker is closed")
        if self._fatal is not None:
            raise translate(self._fatal, "publishing")
        batch = _Batch(asyncio.get_running_loop(), len(messages), self._completed)
        if not messages:
            return batch
        callback: Any = None
        if self._ordered_reports and min(map(_partition_of, messages)) >= 0:
            batch.topics = len(set(map(_topic_of, messages))) > 1
            callback = batch.on_topic_report if batch.topics else batch.on_report
        else:
            batch.slots = [None] * len(messages)
        produce = self.producer.produce
        poll = self.producer.poll
        poll_lock = self._poll_lock
        produced = 0
        self._producing += 1
        try:
            for index, (topic, partition, key, value, headers) in enumerate(messages):
                while True:
                    try:
                        produce(topic, value, key, partition=partition, headers=headers,
                                on_delivery=callback if callback is not None
                                else partial(batch.on_delivery, index))
                        break
                    except BufferError:
                        # Local queue full: serve delivery reports, let librdkafka send.
                        self._producing -= 1
                        try:
                            await asyncio.sleep(0.002)
                        finally:
                            self._producing += 1
                    except KafkaException as exc:
                        if not each:
                            raise
                        batch.not_produced(index, exc)
                        produced -= 1
                        break
                produced += 1
                if not produced & 63 and poll_lock.acquire(blocking=False):
                    try:
                        poll(0)
                        done = self._take_completed()
                    finally:
                        poll_lock.release()
                    _hand_over(done)
        except KafkaException as exc:
            batch.produced_only(produced)
            batch.refused = exc
            if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].fatal():
                self._went_fatal(exc.args[0])
        except BaseException:
            batch.produced_only(produced)
            raise
        finally:
            self._producing -= 1
        await batch.future
        return batch

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        await asyncio.to_thread(self._thread.join)

    def list_topics_blocking(self, timeout: float) -> None:
        """Raise BrokerUnavailable (or another translated error) if there is no metadata."""
        with kafka_errors("connecting to Kafka"):
            self.producer.list_topics(timeout=timeout)

