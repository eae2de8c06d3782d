"""Raw log access for operations: read partitions from given offsets, write with acks.

Used by migration (copy legacy topics) and monitoring (sample recent keys). Unlike the
broker's subscriptions this reads *any* topic byte-for-byte, with no consumer group and no
commits: positions are the caller's business (migration keeps them in its checkpoint).
Blocking; one :class:`LogReader` per thread.

It never decodes envelopes and never joins a group; Kafka errors leave it only as
channelcast errors, through :mod:`channelcast.brokers.kafka.errors`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from channelcast.brokers.kafka.client import coords
from channelcast.brokers.kafka.errors import has_code, kafka_errors, translate
from channelcast.errors import BrokerError, PublishError

__all__ = ["LogReader", "LogWriter", "RawMessage", "read_ranges"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())
log.propagate = False


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, bytes] = field(default_factory=dict)
    timestamp_ms: int = 0

    def header(self, name: str) -> str | None:
        raw = self.headers.get(name)
        return None if raw is None else raw.decode("utf-8", "replace")


def _raw(msg: Message) -> RawMessage:
    headers: dict[str, bytes] = {}
    found = msg.headers() or []
    for name, raw in (found.items() if isinstance(found, dict) else found):
        headers[name] = raw.encode() if isinstance(raw, str) else (raw or b"")
    _, ts = msg.timestamp()
    return RawMessage(*coords(msg), msg.key(), msg.value(), headers, int(ts))


def _reading_errors(doing: str) -> AbstractContextManager[None]:
    """Kafka failures of a raw read as channelcast errors (a refusal is a BrokerError:
    nothing is being published)."""
    return kafka_errors(doing, refused=BrokerError)


class LogReader:
    """Reads assigned partitions from explicit offsets. No group membership, no commits."""

    def __init__(self, bootstrap: str, *, timeout_s: float = 10.0,
                 config: Mapping[str, Any] | None = None) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": "channelcast-ops-reader",  # required by librdkafka; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "logger": log,
        }
        conf.update(config or {})
        self.timeout_s = timeout_s
        with _reading_errors("creating the log reader"):
            self._consumer = Consumer(conf)
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def assign(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Read these partitions, each from the given offset (replaces earlier assignment)."""
        with _reading_errors("assigning partitions"):
            self._consumer.assign([TopicPartition(t, p, o) for (t, p), o in offsets.items()])

    def add(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Also read these partitions (keeps the current ones and their positions)."""
        if not offsets:
            return
        with _reading_errors("assigning partitions"):
            self._consumer.incremental_assign(
                [TopicPartition(t, p, o) for (t, p), o in offsets.items()])

    def positions(self) -> dict[tuple[str, int], int]:
        """The next offset to read of every assigned partition (-1001 if none read yet)."""
        with _reading_errors("reading positions"):
            parts = self._consumer.position(self._consumer.assignment())
        return {(tp.topic, tp.partition): int(tp.offset) for tp in parts}

    def poll(self, max_messages: int = 500, timeout_s: float = 0.5) -> list[RawMessage]:
        """Up to ``max_messages`` in log order per partition; [] when nothing came in time."""
        with _reading_errors("reading"):
            batch = self._consumer.consume(max_messages, timeout=timeout_s)
        out: list[RawMessage] = []
        for msg in batch:
            err = msg.error()
            if err is not None:
                if has_code(err, KafkaError._PARTITION_EOF):
                    continue
                raise translate(err, f"reading {msg.topic()}[{msg.partition()}]",
                                refused=BrokerError)
            out.append(_raw(msg))
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()


def read_ranges(bootstrap: str, ranges: Mapping[tuple[str, int], tuple[int, int]], *,
                timeout_s: float = 10.0, batch: int = 1000) -> Iterator[RawMessage]:
    """Every message with ``start <= offset < end`` of each partition, per-partition order.

    Ends when every partition reached its end offset. Raises BrokerError if no message
    arrives for ``timeout_s`` while some are still missing (e.g. removed by retention
    meanwhile: then the end offset is never reached).
    """
    pending = {tp: (s, e) for tp, (s, e) in ranges.items() if e > s}
    if not pending:
        return
    with LogReader(bootstrap, timeout_s=timeout_s) as reader:
        reader.assign({tp: s for tp, (s, _) in pending.items()})
        idle = 0.0
        while pending:
            msgs = reader.poll(batch, 0.2)
            if not msgs:
                idle += 0.2
                if idle > timeout_s:
                    raise BrokerError(
                        f"reading stalled with {len(pending)} partition(s) short of their end "
                        f"offsets (first: {sorted(pending)[0]})", retriable=True)
                continue
            idle = 0.0
            for m in msgs:
                span = pending.get((m.topic, m.partition))
                if span is None or m.offset >= span[1]:
                    continue
                yield m
                if m.offset + 1 >= span[1]:
                    del pending[(m.topic, m.partition)]


@dataclass(slots=True)
class Delivered:
    topic: str
    partition: int
    offset: int


class LogWriter:
    """An idempotent producer that writes to explicit partitions and waits for acks.

    :meth:`write` queues; :meth:`flush` waits and returns the stored offsets in write
    order, or raises the translated error if any write failed (BrokerUnavailable when
    writes were not acknowledged in time, else PublishError, MessageTooLarge, ...):
    nothing is silently dropped.
    Idempotence keeps the per-partition order of writes even across internal retries.
    """

    def __init__(self, bootstrap: str, *, timeout_s: float = 10.0,
                 config: Mapping[str, Any] | None = None) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": max(1000, int(timeout_s * 1000)),
            "logger": log,
        }
        conf.update(config or {})
        self.timeout_s = timeout_s
        with kafka_errors("creating the log writer", refused=BrokerError):
            self._producer = Producer(conf)
        self._results: list[Delivered | None] = []
        self._errors: list[KafkaError] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._producer.flush(self.timeout_s)

    def write(self, topic: str, partition: int, key: bytes, value: bytes,
              headers: Sequence[tuple[str, bytes]], timestamp_ms: int = 0) -> None:
        """Queue one write; ``timestamp_ms`` > 0 keeps a given create time (migration)."""
        index = len(self._results)
        self._results.append(None)

        def acked(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self._errors.append(err)
                return
            self._results[index] = Delivered(str(msg.topic()), int(msg.partition() or 0),
                                             int(msg.offset() or 0))

        while True:
            try:
                with kafka_errors(f"writing to {topic}[{partition}]"):
                    self._producer.produce(topic, value=value, key=key, partition=partition,
                                           headers=list(headers), on_delivery=acked,
                                           timestamp=max(0, timestamp_ms))
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain

    def flush(self) -> list[Delivered]:
        remaining = self._producer.flush(self.timeout_s)
        results, errors = self._results, self._errors
        self._results, self._errors = [], []
        if errors:
            # The first failure says why; the count says how many writes it cost.
            raise translate(errors[0], f"writing to the target ({len(errors)} of "
                                       f"{len(results)} write(s) not acknowledged)")
        if remaining or any(r is None for r in results):
            raise PublishError(f"{remaining} write(s) not acknowledged within "
                               f"{self.timeout_s}s", retriable=True)
        return [r for r in results if r is not None]
