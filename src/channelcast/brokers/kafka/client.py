"""What every confluent-kafka client of the adapter shares: configuration and message helpers.

Owns the base client configuration (ours, then ``settings.kafka.consumer``, then
overrides), the librdkafka log channel, and the small blocking helpers the fan-out
consumer, the workers, the history reader and the broker all use on consumed messages
(:func:`header`, :func:`coords`, :func:`take_available`, :func:`read_watermarks`).

Everything else in the adapter may import it; it imports nothing of the adapter except
:mod:`~channelcast.brokers.kafka.errors`, holds no state and starts no thread. Its
functions block (they are called on client threads or through ``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from channelcast import logs
from channelcast.brokers.kafka.errors import has_code, translate
from channelcast.errors import BrokerError
from channelcast.logs import REPEAT_WINDOW_S

if TYPE_CHECKING:
    from channelcast.config import KafkaSettings

__all__ = [
    "TP",
    "SkipLog",
    "consumer_config",
    "coords",
    "finish",
    "header",
    "header_pairs",
    "librdkafka_log",
    "private_consumer_config",
    "read_watermarks",
    "refresh_metadata",
    "take_available",
]

TP = tuple[str, int]
"""(topic, partition)."""

librdkafka_log = logging.getLogger("channelcast.kafka.librdkafka")
"""librdkafka's own log lines (connection failures while a broker restarts, ...), through
:class:`RepeatFilter`."""

class RepeatFilter(logs.RepeatFilter):
    """librdkafka's log lines, readable during an outage.

    While a broker is down every client retries every second and librdkafka logs each
    failed attempt (``FAIL``, at its ERR level), forever: hundreds of ERROR lines a minute
    saying the same thing. This filter (1) logs a failed connection attempt as a WARNING:
    an outage is reported where it matters (a publish's BrokerUnavailable, ``/readyz``,
    a subscription's error), and a line per retry is not an error of its own; (2) lets a
    line through once per :data:`~channelcast.logs.REPEAT_WINDOW_S` seconds per distinct
    text (client name and counters left out), adding how many repeats it held back.
    """

    _NAMES = re.compile(r"rdkafka#\w+-\d+|\(after \d+ms[^)]*\)|, \d+ identical error\(s\) "
                        r"suppressed")

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__(window_s, self._NAMES)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.getMessage().startswith("FAIL "):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return super().filter(record)


librdkafka_log.addFilter(RepeatFilter())


class SkipLog:
    """The WARNING for records skipped because they carry no message, readable when a
    producer writes thousands of them.

    One line per record would be thousands of lines: the first record of each kind of
    problem in a topic is logged with its ``topic:partition:offset``; more of that kind
    within :data:`REPEAT_WINDOW_S` seconds are only counted, and the next line after the
    window says how many were held back. A kind is the reason's text with quoted names
    and numbers left out ("not UTF-8 JSON: byte 0x89 at position 0" and "... byte 0xff at
    position 3" are one kind). The exact count is the broker's ``skipped_records``
    (``channelcast_skipped_records_total``). Thread-safe (consumer threads call it)."""

    _DETAILS = re.compile(r"'[^']*'|\"[^\"]*\"|0x[0-9a-f]+|\d+")

    def __init__(self, logger: logging.Logger, window_s: float = REPEAT_WINDOW_S) -> None:
        self._log = logger
        self._repeats = logs.Repeats(window_s)

    def __call__(self, topic: str, partition: int, offset: int, why: str) -> None:
        held = self._repeats.due((topic, self._DETAILS.sub("", why)))
        if held is None:
            return
        more = (f" ({held} more like this in {topic} since it was last logged, not "
                "logged one by one)") if held else ""
        self._log.warning("skipping the record at %s:%d:%d: %s%s", topic, partition,
                          offset, why, more)


def consumer_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Base consumer config: ours, then ``settings.consumer``, then ``overrides``."""
    timeout_ms = max(1000, int(settings.timeout_s * 1000))
    config: dict[str, Any] = {
        "bootstrap.servers": settings.brokers, "logger": librdkafka_log,
        "socket.connection.setup.timeout.ms": timeout_ms,
        "reconnect.backoff.max.ms": 1000,
        # Follow a topic's growth as soon as the broker's own topic table does.
        "topic.metadata.refresh.interval.ms": max(1000, int(settings.metadata_refresh_s
                                                            * 1000)),
        "enable.partition.eof": False, "auto.offset.reset": "earliest"}
    config.update(settings.consumer)
    config.update(overrides)
    return config


def private_consumer_config(settings: KafkaSettings, purpose: str) -> dict[str, Any]:
    """A consumer that never joins a group's rebalance and never commits (assign() only);
    its throw-away group id names the ``purpose`` for anyone listing groups."""
    return consumer_config(settings, **{
        "group.id": f"channelcast-{purpose}-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False, "enable.auto.offset.store": False})


def finish(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` unless it is already done (cancelled meanwhile)."""
    if not future.done():
        future.set_result(None)


def header(msg: Message, name: str) -> str | None:
    """A header's value as text (consumed messages carry headers as a list of pairs)."""
    headers = msg.headers()
    pairs = headers.items() if isinstance(headers, dict) else (headers or ())
    for key, value in pairs:
        if key == name and value is not None:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def header_pairs(msg: Message) -> list[tuple[str, bytes | str | None]] | None:
    """A consumed message's headers: (name, value) pairs in order, or None."""
    headers = msg.headers()
    if headers is None:
        return None
    if isinstance(headers, dict):
        return list(headers.items())
    return headers


def coords(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a delivered or consumed (non-error) message."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None
    assert partition is not None
    assert offset is not None
    return topic, partition, offset


def take_available(consumer: Consumer, wait: float, limit: int) -> list[Message]:
    """Up to ``limit`` messages: wait at most ``wait`` seconds for the first, not for the
    rest.

    ``consume(n, timeout)`` waits until it has n messages or the timeout passed, which at
    low rates delays every delivery by the whole timeout.
    """
    first = consumer.poll(wait)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, timeout=0)]


def read_watermarks(consumer: Consumer, topic: str, partition: int,
                    timeout: float) -> tuple[int, int]:
    """(low, high) offsets of one partition, asked of the leader (blocking).

    Errors the map calls retriable (a topic created a moment ago has no known leader yet,
    a broker is restarting) are retried until ``timeout`` seconds passed; then, or for any
    other error, the translated error is raised.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.5, deadline - time.monotonic())
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=left, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            if has_code(exc, KafkaError._UNKNOWN_PARTITION) and time.monotonic() < deadline:
                # The topic grew and this client's metadata does not know the new
                # partition yet (librdkafka refreshes it every few minutes): ask now.
                refresh_metadata(consumer, topic, left)
                continue
            error = translate(exc, f"reading offsets of {topic}:{partition}")
            if (not isinstance(error, BrokerError) or not error.retriable
                    or time.monotonic() >= deadline):
                raise error from exc
        time.sleep(0.1)


def refresh_metadata(client: Any, topic: str, timeout: float) -> None:
    """Make a client (Consumer or Producer) re-read one topic's metadata now: a Metadata
    response updates librdkafka's cache, so partitions added a moment ago become usable.
    A failure here is left to the caller's next attempt."""
    try:
        client.list_topics(topic, timeout=max(0.5, timeout))
    except KafkaException as exc:
        librdkafka_log.debug("refreshing the metadata of %s failed: %s", topic, exc)
    time.sleep(0.05)
