"""Raw confluent-kafka loops: the baselines channelcast's benchmark compares itself against.

Owns three deliberately plain loops, written the way the confluent-kafka documentation
recommends and with nothing of channelcast in them (no envelope, no strategy, no asyncio):

* :func:`produce_loop`: ``produce()`` every message, ``poll(0)`` to serve callbacks,
  ``flush()``; the throughput a Python program gets from librdkafka at best.
* :func:`produce_built`: the same loop producing records it builds from each message in
  the timed loop (the floor of publishing an envelope from Python).
* :func:`consume_loop`: one consumer, assigned (no group rebalance), reading a known
  number of messages from the start of the partitions.
* :func:`spread_round_trip`: produce at a fixed rate over given partitions and consume in a
  second thread; latency is taken from the *intended* send time written into the message
  (coordinated omission). :func:`round_trip` is it on one partition.
* :func:`produce_scheduled`: produce records a caller makes at a fixed rate (the peers
  comparison's Kafka-to-browser source; someone else consumes them).
* :func:`produce_stamped` and :func:`consume_stamped`: :func:`spread_round_trip`'s two
  halves, each for a process of its own (a deployment's publisher and subscriber).
* :func:`produce_generated`: produce records a caller makes, as fast as librdkafka takes
  them (pre-filling a partition that readers are then timed on).
* :func:`read_range`: read a known range of one partition, counting every record or
  filtering by the ``channel`` header (the fan-out read baselines).

:func:`warm_up` runs the first and third for a while, untimed, on a broker just started.

It also provisions and removes the benchmark's topics through the Kafka adapter's
:class:`~channelcast.brokers.kafka.admin.KafkaAdmin`. Everything here is blocking; async
callers use ``asyncio.to_thread``. It never touches topics it was not given. Kafka errors
leave it only as channelcast errors, translated by the adapter's
:func:`~channelcast.brokers.kafka.errors.translate` (this module has no error map of its
own and must never grow one), and it never copies an adapter helper: it calls it.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.brokers.kafka.errors import translate
from channelcast.brokers.kafka.producer import producer_defaults
from channelcast.errors import BrokerError
from channelcast.strategies.base import TopicSpec

__all__ = [
    "RawMessage",
    "RawRead",
    "RawRoundTrip",
    "RawThroughput",
    "baseline_producer_config",
    "consume_loop",
    "consume_stamped",
    "create_topics",
    "delete_topics",
    "end_offsets",
    "ping",
    "produce_built",
    "produce_generated",
    "produce_loop",
    "produce_scheduled",
    "produce_stamped",
    "read_range",
    "round_trip",
    "spread_round_trip",
    "wait_writable",
    "warm_up",
]

_STAMP = struct.Struct(">q")

RawHeaders = list[tuple[str, str | bytes | None]]
"""Kafka headers as confluent-kafka takes them: (name, value) pairs, in order."""
HeaderMap = dict[str, str | bytes | None]
"""Kafka headers as a dict (confluent-kafka writes them in its order), as channelcast's
publisher passes them."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message for the raw producer: where it goes and what it carries (bytes, or an
    object that ``produce_loop(encode_value=...)`` serialises in the timed loop)."""

    topic: str
    partition: int
    key: bytes
    value: Any
    headers: dict[str, str | bytes | None] | None = None
    """Kafka headers to send with it (the same ones channelcast writes, for a like-for-like
    record), or none."""


@dataclass(frozen=True, slots=True)
class RawThroughput:
    messages: int
    seconds: float
    cpu_seconds: float = 0.0
    """CPU time of the whole process (every thread, librdkafka's too) over the run."""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RawRead:
    """A timed read of a range of one partition (:func:`read_range`)."""

    records: int
    """Records read after the first (the clock runs from the first to the last)."""
    seconds: float
    cpu_seconds: float
    """CPU time of the whole process (every thread, librdkafka's too) over that time."""
    matched: int
    """Records whose ``channel`` header was the one asked for (all, when counting)."""

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RawRoundTrip:
    sent: int
    received: int
    seconds: float


def baseline_producer_config(bootstrap: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The same librdkafka settings channelcast's publisher uses (acks=all, idempotent,
    lz4, linger 5 ms, ...), so a comparison measures the Python layer, not the settings."""
    return producer_defaults(bootstrap, timeout_s)


def _producer_config(bootstrap: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    conf = baseline_producer_config(bootstrap)
    conf.update(config or {})
    return conf


def _consumer_config(bootstrap: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap,
                            "group.id": f"channelcast-bench-raw-{time.time_ns()}",
                            "enable.auto.commit": False,
                            "enable.partition.eof": False}
    conf.update(config or {})
    return conf


def _producer(bootstrap: str, config: Mapping[str, Any] | None) -> Producer:
    return Producer(_producer_config(bootstrap, config))


def _consumer(bootstrap: str, config: Mapping[str, Any] | None) -> Consumer:
    return Consumer(_consumer_config(bootstrap, config))


# --- topics --------------------------------------------------------------------------


def create_topics(bootstrap: str, specs: Sequence[TopicSpec], *, timeout_s: float = 120.0,
                  ) -> None:
    """Create the topics (existing ones are left alone) and wait until they have leaders."""
    admin = KafkaAdmin(bootstrap, timeout_s=timeout_s)
    # Thousands of topics in one CreateTopics request time out on small machines: chunk.
    for chunk in _chunks(list(specs), 200):
        admin.create_topics(chunk)


def delete_topics(bootstrap: str, names: Sequence[str], *, timeout_s: float = 120.0) -> None:
    """Delete the named topics (missing ones are fine)."""
    admin = KafkaAdmin(bootstrap, timeout_s=timeout_s)
    for chunk in _chunks(list(names), 200):
        admin.delete_topics(chunk)


def ping(bootstrap: str, timeout_s: float = 10.0) -> None:
    """Raise BrokerUnavailable unless Kafka at ``bootstrap`` answers within ``timeout_s``."""
    KafkaAdmin(bootstrap, timeout_s=timeout_s).broker_count()


def end_offsets(bootstrap: str, partitions: Sequence[tuple[str, int]],
                timeout_s: float = 30.0) -> dict[tuple[str, int], int]:
    """The high watermark of each partition."""
    consumer = _consumer(bootstrap, None)
    try:
        out = {}
        for topic, part in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, part),
                                                        timeout=timeout_s)
            out[(topic, part)] = int(high)
        return out
    except KafkaException as exc:
        raise translate(exc, "raw consumer: reading watermarks") from exc
    finally:
        consumer.close()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --- the loops -----------------------------------------------------------------------


def produce_loop(bootstrap: str, messages: Sequence[RawMessage], *,
                 config: Mapping[str, Any] | None = None,
                 encode_value: Callable[[Any], bytes] | None = None,
                 warm_up: bool = True,
                 timeout_s: float = 120.0) -> RawThroughput:
    """Produce every message as fast as librdkafka takes them; time until all are acked.

    With ``encode_value``, each value is serialised inside the timed loop (what an
    application using confluent-kafka directly would also have to do)."""
    producer = _producer(bootstrap, config)
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    # Warm up untimed: connections, metadata, the idempotent producer id and one message
    # to every partition used, so the measurement is the steady state only.
    try:
        producer.list_topics(timeout=timeout_s)
        first = {(m.topic, m.partition): m for m in messages} if warm_up else {}
        for m in first.values():
            value = m.value if encode_value is None else encode_value(m.value)
            producer.produce(m.topic, value, m.key, partition=m.partition,
                             headers=m.headers, on_delivery=on_delivery)
        if producer.flush(timeout_s):
            raise BrokerError(f"raw producer: warm-up not acknowledged in {timeout_s}s")
    except KafkaException as exc:
        raise translate(exc, f"raw producer: warming up on {bootstrap}") from exc
    start = time.perf_counter()
    cpu_start = time.process_time()
    produce = producer.produce
    poll = producer.poll
    for m in messages:
        value = m.value if encode_value is None else encode_value(m.value)
        while True:
            try:
                if m.headers is None:  # the bare loop: not even a headers=None argument
                    produce(m.topic, value, m.key, partition=m.partition,
                            on_delivery=on_delivery)
                else:
                    produce(m.topic, value, m.key, partition=m.partition,
                            headers=m.headers, on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.005)  # the local queue is full: let librdkafka send
            except KafkaException as exc:
                raise translate(exc, "raw producer: producing") from exc
        poll(0)
    left = producer.flush(timeout_s)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if left:
        raise BrokerError(f"raw producer: {left} message(s) not acknowledged in {timeout_s}s")
    if failures:
        raise translate(failures[0], f"raw producer: delivering {len(failures)} message(s) "
                                     "(the first failure shown)")
    return RawThroughput(len(messages), seconds, cpu)


def produce_built(bootstrap: str, messages: Sequence[RawMessage],
                  build: Callable[[RawMessage], tuple[bytes, HeaderMap]], *,
                  config: Mapping[str, Any] | None = None,
                  timeout_s: float = 120.0) -> RawThroughput:
    """:func:`produce_loop` for records ``build(message)`` -> (value, headers) makes in
    the timed loop, each acknowledged to a callback that keeps its offset (what any
    publisher that reports where its messages went must do)."""
    producer = _producer(bootstrap, config)
    failures: list[KafkaError] = []
    offsets: list[int | None] = []
    keep = offsets.append

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            keep(msg.offset())
        else:
            failures.append(err)

    try:  # warm up untimed, as produce_loop does
        producer.list_topics(timeout=timeout_s)
        for m in {(m.topic, m.partition): m for m in messages}.values():
            value, headers = build(m)
            producer.produce(m.topic, value, m.key, partition=m.partition, headers=headers)
        if producer.flush(timeout_s):
            raise BrokerError(f"raw producer: warm-up not acknowledged in {timeout_s}s")
    except KafkaException as exc:
        raise translate(exc, f"raw producer: warming up on {bootstrap}") from exc
    start = time.perf_counter()
    cpu_start = time.process_time()
    produce = producer.produce
    poll = producer.poll
    for m in messages:
        value, headers = build(m)
        while True:
            try:
                produce(m.topic, value, m.key, partition=m.partition, headers=headers,
                        on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.005)  # the local queue is full: let librdkafka send
            except KafkaException as exc:
                raise translate(exc, "raw producer: producing") from exc
        poll(0)
    left = producer.flush(timeout_s)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if left:
        raise BrokerError(f"raw producer: {left} message(s) not acknowledged in {timeout_s}s")
    if failures:
        raise translate(failures[0], f"raw producer: delivering {len(failures)} message(s) "
                                     "(the first failure shown)")
    return RawThroughput(len(messages), seconds, cpu)


def consume_loop(bootstrap: str, partitions: Sequence[tuple[str, int]], count: int, *,
                 start: Mapping[tuple[str, int], int] | None = None,
                 ready: threading.Event | None = None,
                 config: Mapping[str, Any] | None = None,
                 decode_value: Callable[[bytes], Any] | None = None,
                 timeout_s: float = 120.0) -> RawThroughput:
    """Read ``count`` messages of ``partitions`` from the ``start`` offsets (default: the
    current end, live; ``ready`` is set once assigned).

    The clock runs from the first message to the ``count``-th. With ``decode_value`` each
    value is deserialised in the loop. Raises BrokerError if they do not all arrive within
    ``timeout_s``.
    """
    consumer = _consumer(bootstrap, config)
    try:
        start_at = []
        for topic, part in partitions:
            if start is not None:
                offset = start[(topic, part)]
            else:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, part),
                                                            timeout=30)
                offset = int(high)
            start_at.append(TopicPartition(topic, part, offset))
        consumer.assign(start_at)
        if ready is not None:
            ready.set()
        seen = 0
        began = 0.0
        deadline = time.monotonic() + timeout_s
        while seen < count:
            if time.monotonic() > deadline:
                raise BrokerError(f"raw consumer: {seen}/{count} messages in {timeout_s}s")
            for msg in consumer.consume(1000, 0.1):
                err = msg.error()
                if err is not None:
                    raise translate(err, "raw consumer: consuming")
                value = msg.value()
                if decode_value is not None and value is not None:
                    decode_value(value)
                if not seen:
                    began = time.perf_counter()
                seen += 1
        return RawThroughput(seen - 1, time.perf_counter() - began)
    except KafkaException as exc:
        raise translate(exc, "raw consumer: consuming") from exc
    finally:
        if ready is not None:
            ready.set()
        consumer.close()


def wait_writable(bootstrap: str, partitions: Sequence[tuple[str, int]],
                  timeout_s: float = 60.0) -> None:
    """Block until every partition answers a watermark query (a new topic's leader is
    known to metadata a moment before it serves requests)."""
    consumer = _consumer(bootstrap, None)
    deadline = time.monotonic() + timeout_s
    try:
        for topic, part in partitions:
            while True:
                try:
                    consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=5)
                    break
                except KafkaException as exc:
                    if time.monotonic() > deadline:
                        raise translate(exc, f"raw consumer: waiting for {topic}:{part}"
                                        ) from exc
                    time.sleep(0.2)
    finally:
        consumer.close()


def round_trip(bootstrap: str, topic: str, partition: int, *, rate: float, seconds: float,
               size: int, on_latency: Callable[[int], None],
               producer_config: Mapping[str, Any] | None = None,
               consumer_config: Mapping[str, Any] | None = None,
               drain_s: float = 10.0) -> RawRoundTrip:
    """:func:`spread_round_trip` on one partition, unkeyed, with channelcast's producer
    defaults (``producer_config`` merged over them)."""
    return spread_round_trip(_producer_config(bootstrap, producer_config),
                             _consumer_config(bootstrap, consumer_config),
                             [(topic, partition, None)], rate=rate,
                             seconds=seconds, size=size, on_latency=on_latency,
                             drain_s=drain_s)


def spread_round_trip(producer_config: Mapping[str, Any], consumer_config: Mapping[str, Any],
                      routes: Sequence[tuple[str, int, bytes | None]], *, rate: float,
                      seconds: float, size: int, on_latency: Callable[[int], None],
                      drain_s: float = 10.0) -> RawRoundTrip:
    """Produce ``rate`` msg/s for ``seconds`` round-robin over ``routes`` (topic,
    partition, key) and consume them in a second thread that has every routed partition
    assigned: a bare confluent-kafka loop, nothing of channelcast in it.

    ``on_latency(ns)`` gets receive time minus *intended* send time (``time.monotonic_ns``;
    a stalled producer shows up as latency). The consumer starts at the end of each
    partition and the timed part begins once a probe was seen on every one of them.
    Blocking.
    """
    if not routes:
        raise BrokerError("raw round trip: no partitions to send to")
    total = max(1, int(rate * seconds))
    interval = 1e9 / rate
    parts = sorted({(topic, partition) for topic, partition, _key in routes})
    pad = b"x" * max(0, size - _STAMP.size)
    producer = Producer(dict(producer_config))
    consumer = Consumer(dict(consumer_config))
    stop = threading.Event()
    seen: set[tuple[str, int]] = set()
    all_seen = threading.Event()
    failure: list[BaseException] = []
    received = 0

    def consume() -> None:
        nonlocal received
        try:
            consumer.assign([TopicPartition(t, p, OFFSET_END) for t, p in parts])
            while not stop.is_set():
                msg = consumer.poll(0.05)  # returns each message as soon as it is there
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    raise translate(err, "raw round trip: consuming")
                now = time.monotonic_ns()
                value = msg.value()
                if value is None or len(value) < _STAMP.size:
                    continue
                stamp = _STAMP.unpack_from(value)[0]
                if stamp < 0:  # a probe: this partition is live
                    seen.add((str(msg.topic()), int(msg.partition() or 0)))
                    if len(seen) == len(parts):
                        all_seen.set()
                    continue
                on_latency(now - stamp)
                received += 1
        except BaseException as exc:  # handed to the caller
            failure.append(exc)
            all_seen.set()

    thread = threading.Thread(target=consume, name="bench-raw-spread-consumer", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60.0
        while not all_seen.wait(0.3):
            if time.monotonic() > deadline:
                raise BrokerError(f"raw round trip: {len(parts) - len(seen)} partition(s) "
                                  "saw no probe within 60s")
            for topic, partition in parts:
                if (topic, partition) not in seen:
                    producer.produce(topic, _STAMP.pack(-1) + pad, partition=partition)
            producer.poll(0)
        if failure:
            raise failure[0]
        produce = producer.produce
        start = time.monotonic_ns()
        sent = 0
        count = len(routes)
        while sent < total:
            due = min(total, int((time.monotonic_ns() - start) / interval) + 1)
            while sent < due:
                topic, partition, key = routes[sent % count]
                try:
                    produce(topic, _STAMP.pack(start + int(sent * interval)) + pad, key,
                            partition=partition)
                    sent += 1
                except BufferError:
                    producer.poll(0.001)
            producer.poll(0)
            pause = (start + int(sent * interval) - time.monotonic_ns()) / 1e9
            if pause > 0:
                time.sleep(pause)
        producer.flush(30.0)
        elapsed = (time.monotonic_ns() - start) / 1e9
        deadline = time.monotonic() + drain_s
        while received < total and time.monotonic() < deadline and not failure:
            time.sleep(0.02)
        if failure:
            raise failure[0]
        return RawRoundTrip(sent, received, elapsed)
    except KafkaException as exc:
        raise translate(exc, "raw round trip") from exc
    finally:
        stop.set()
        thread.join(10.0)
        consumer.close()


def produce_scheduled(bootstrap: str, topic: str, partition: int, count: int, rate: float,
                      make: Callable[[int, int], tuple[bytes, bytes | None, RawHeaders]], *,
                      config: Mapping[str, Any] | None = None,
                      stop: threading.Event | None = None,
                      timeout_s: float = 60.0) -> RawRoundTrip:
    """Produce ``count`` records at ``rate`` per second to one partition; record ``i`` is
    ``make(i, intended_ns)`` -> (value, key, headers), ``intended_ns`` its scheduled send
    time (``time.monotonic_ns``), kept even when the producer falls behind. ``stop``
    ends it early once set. Returns (sent, 0, seconds until all were acknowledged).
    Blocking."""
    producer = _producer(bootstrap, config)
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    interval = 1e9 / rate
    try:
        producer.list_topics(topic, timeout=timeout_s)
        start = time.monotonic_ns()
        sent = 0
        while sent < count and not (stop is not None and stop.is_set()):
            due = min(count, int((time.monotonic_ns() - start) / interval) + 1)
            while sent < due:
                value, key, headers = make(sent, start + int(sent * interval))
                try:
                    producer.produce(topic, value, key, partition=partition, headers=headers,
                                     on_delivery=on_delivery)
                    sent += 1
                except BufferError:
                    producer.poll(0.001)
            producer.poll(0)
            pause = (start + int(sent * interval) - time.monotonic_ns()) / 1e9
            if pause > 0 and sent < count:
                time.sleep(pause)
        left = producer.flush(timeout_s)
        elapsed = (time.monotonic_ns() - start) / 1e9
    except KafkaException as exc:
        raise translate(exc, "raw scheduled producer") from exc
    if left:
        raise BrokerError(f"raw producer: {left} message(s) not acknowledged in {timeout_s}s")
    if failures:
        raise translate(failures[0], f"raw producer: delivering {len(failures)} message(s) "
                                     "(the first failure shown)")
    return RawRoundTrip(sent, 0, elapsed)


Route = tuple[str, int, bytes | None]
"""(topic, partition, key) of a raw record."""


def _stamped_headers(key: bytes | None, index: int) -> HeaderMap:
    """Headers of the shape channelcast writes: channel, event and a 26-character id."""
    return {"channel": key, "event": "bench", "id": f"{index:026d}"}


def produce_stamped(producer_config: Mapping[str, Any], routes: Sequence[Route], *,
                    rate: float, seconds: float, size: int, headers: bool = True,
                    ready: Callable[[], None] | None = None) -> RawRoundTrip:
    """The producing half of :func:`spread_round_trip`: ``rate`` values per second for
    ``seconds``, round-robin over ``routes``, each value the *intended* send time
    (``time.monotonic_ns``, 8 bytes) padded to ``size``; with ``headers``, the three
    headers channelcast writes (channel, event, id), so the records are the same size.

    First one probe (a negative stamp) to every partition, flushed (connections,
    metadata, the idempotent producer id); then ``ready()`` is called, which may block
    until the timed part is to start. Returns (sent, 0, seconds until the last was
    acknowledged). Blocking.
    """
    if not routes:
        raise BrokerError("raw producer: no partitions to send to")
    total = max(1, int(rate * seconds))
    interval = 1e9 / rate
    pad = b"x" * max(0, size - _STAMP.size)
    producer = Producer(dict(producer_config))
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    try:
        for topic, partition, key in {(t, p): (t, p, k) for t, p, k in routes}.values():
            producer.produce(topic, _STAMP.pack(-1) + pad, key, partition=partition,
                             on_delivery=on_delivery)
        if producer.flush(60.0):
            raise BrokerError("raw producer: probes not acknowledged in 60s")
        if ready is not None:
            ready()
        produce = producer.produce
        start = time.monotonic_ns()
        sent = 0
        count = len(routes)
        while sent < total:
            due = min(total, int((time.monotonic_ns() - start) / interval) + 1)
            while sent < due:
                topic, partition, key = routes[sent % count]
                try:
                    produce(topic, _STAMP.pack(start + int(sent * interval)) + pad, key,
                            partition=partition, on_delivery=on_delivery,
                            headers=_stamped_headers(key, sent) if headers else None)
                    sent += 1
                except BufferError:
                    producer.poll(0.001)
            producer.poll(0)
            pause = (start + int(sent * interval) - time.monotonic_ns()) / 1e9
            if pause > 0:
                time.sleep(pause)
        left = producer.flush(60.0)
        elapsed = (time.monotonic_ns() - start) / 1e9
    except KafkaException as exc:
        raise translate(exc, "raw producer") from exc
    if left:
        raise BrokerError(f"raw producer: {left} message(s) not acknowledged in 60s")
    if failures:
        raise translate(failures[0], f"raw producer: delivering {len(failures)} message(s) "
                                     "(the first failure shown)")
    return RawRoundTrip(sent, 0, elapsed)


def consume_stamped(consumer_config: Mapping[str, Any], partitions: Sequence[tuple[str, int]],
                    *, expected: int, on_latency: Callable[[int], None],
                    ready: Callable[[], None] | None = None, wait_s: float = 120.0,
                    drain_s: float = 10.0, timeout_s: float = 30.0) -> RawRoundTrip:
    """The consuming half of :func:`spread_round_trip`: a consumer assigned to every
    partition at its current end (explicit offsets: everything written afterwards is
    read), ``poll()`` in a loop; ``on_latency(ns)`` gets receive time minus the stamp of
    every value with one (probes, negative stamps, are skipped). ``ready()`` is called once
    assigned. Ends after ``expected`` values, or ``drain_s`` seconds without one once the
    first came (``wait_s`` for the first). Returns (0, received, seconds from the first to
    the last). Reading the ends waits ``timeout_s`` at most. Blocking."""
    consumer = Consumer(dict(consumer_config))
    received = 0
    first = last = 0
    try:
        start = []
        for topic, partition in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                        timeout=timeout_s, cached=False)
            start.append(TopicPartition(topic, partition, int(high)))
        consumer.assign(start)
        if ready is not None:
            ready()
        quiet_until = time.monotonic() + wait_s
        while received < expected and time.monotonic() < quiet_until:
            msg = consumer.poll(0.05)  # returns each message as soon as it is there
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                raise translate(err, "raw consumer: consuming")
            now = time.monotonic_ns()
            value = msg.value()
            if value is None or len(value) < _STAMP.size:
                continue
            stamp = _STAMP.unpack_from(value)[0]
            if stamp < 0:
                continue
            on_latency(now - stamp)
            received += 1
            if not first:
                first = now
            last = now
            quiet_until = time.monotonic() + drain_s
    except KafkaException as exc:
        raise translate(exc, "raw consumer: consuming") from exc
    finally:
        consumer.close()
    return RawRoundTrip(0, received, (last - first) / 1e9)


def produce_generated(bootstrap: str, topic: str, partition: int, count: int,
                      make: Callable[[int], tuple[bytes, bytes | None, HeaderMap]], *,
                      config: Mapping[str, Any] | None = None,
                      timeout_s: float = 120.0) -> RawThroughput:
    """Produce ``count`` records to one partition as fast as librdkafka takes them; record
    ``i`` is ``make(i)`` -> (value, key, headers), built in the loop (so a million records
    never sit in memory at once). Returns once every one is acknowledged. Blocking."""
    producer = _producer(bootstrap, config)
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err)

    try:
        producer.list_topics(topic, timeout=timeout_s)
        start = time.perf_counter()
        cpu_start = time.process_time()
        produce = producer.produce
        poll = producer.poll
        for i in range(count):
            value, key, headers = make(i)
            while True:
                try:
                    produce(topic, value, key, partition=partition, headers=headers,
                            on_delivery=on_delivery)
                    break
                except BufferError:
                    poll(0.005)  # the local queue is full: let librdkafka send
            poll(0)
        left = producer.flush(timeout_s)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
    except KafkaException as exc:
        raise translate(exc, "raw producer: producing") from exc
    if left:
        raise BrokerError(f"raw producer: {left} message(s) not acknowledged in {timeout_s}s")
    if failures:
        raise translate(failures[0], f"raw producer: delivering {len(failures)} message(s) "
                                     "(the first failure shown)")
    return RawThroughput(count, seconds, cpu)


def read_range(bootstrap: str, topic: str, partition: int, start: int, count: int, *,
               channel: bytes | None = None, config: Mapping[str, Any] | None = None,
               timeout_s: float = 300.0) -> RawRead:
    """Read ``count`` records of one partition from offset ``start`` with a bare consumer
    (``assign()`` + ``consume(1000)``).

    With ``channel``, each record's headers are searched for the first ``channel`` header
    and the record's value is taken when it equals ``channel`` (what a consumer that
    wants one channel of a shared partition does); without it every record is only
    counted. The clock runs from the first record to the last, and ``cpu_seconds`` is
    the process's over the same span. Raises BrokerError if they do not all arrive within
    ``timeout_s``. Blocking.
    """
    consumer = _consumer(bootstrap, config)
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        seen = matched = 0
        began = cpu_began = 0.0
        deadline = time.monotonic() + timeout_s
        consume = consumer.consume
        while seen < count:
            if time.monotonic() > deadline:
                raise BrokerError(f"raw reader: {seen}/{count} records in {timeout_s}s")
            batch = consume(min(1000, count - seen), 0.1)
            if not batch:
                continue
            if not seen:
                began, cpu_began = time.perf_counter(), time.process_time()
            for msg in batch:
                err = msg.error()
                if err is not None:
                    raise translate(err, "raw reader: consuming")
                if channel is not None:
                    headers: Any = msg.headers()  # (name, value) pairs when consumed
                    for name, value in headers or ():
                        if name == "channel":
                            if value == channel:
                                msg.value()
                                matched += 1
                            break
            seen += len(batch)
        seconds = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
    except KafkaException as exc:
        raise translate(exc, "raw reader: consuming") from exc
    finally:
        consumer.close()
    return RawRead(seen - 1, seconds, cpu, matched if channel is not None else seen)


def warm_up(bootstrap: str, topic: str, partitions: int, *, seconds: float, size: int,
            producer_config: Mapping[str, Any] | None = None,
            consumer_config: Mapping[str, Any] | None = None) -> int:
    """Load the broker for about ``seconds``: produce loops as fast as it takes them for
    half the time, then a fixed-rate round trip over every partition of ``topic``, so a
    JVM started a moment ago has compiled its produce and fetch paths before anything is
    measured. Returns the messages sent. Blocking."""
    value = b"x" * max(1, size)
    messages = [RawMessage(topic, i % partitions, b"", value) for i in range(20_000)]
    start = time.monotonic()
    sent = 0
    while sent == 0 or time.monotonic() - start < seconds / 2:
        sent += produce_loop(bootstrap, messages, config=producer_config, warm_up=False).messages
    left = max(1.0, seconds - (time.monotonic() - start))
    trip = spread_round_trip(_producer_config(bootstrap, producer_config),
                             _consumer_config(bootstrap, consumer_config),
                             [(topic, p, None) for p in range(partitions)], rate=5_000.0,
                             seconds=left, size=size, on_latency=_ignore)
    return sent + trip.sent


def _ignore(_latency_ns: int) -> None:
    return None


def client_versions() -> str:
    """confluent-kafka and librdkafka versions, for the benchmark's machine description."""
    import confluent_kafka

    return (f"confluent-kafka {confluent_kafka.version()[0]}, "
            f"librdkafka {confluent_kafka.libversion()[0]}")
