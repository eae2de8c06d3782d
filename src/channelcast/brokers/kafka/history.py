"""History on Kafka: some channels' records between two offsets, and partition watermarks.

Owns one long-lived metadata consumer (watermark queries, serialised by a lock) and the
short-lived assign()-only consumers that read a range of a partition and keep the records
of the asked-for channels (through :mod:`channelcast.ingest`, so other producers' records
read the same here as in the fan-out path). It checks a position against the topic's
real layout and epoch (the broker's topic table) before reading. Blocking reads run in
worker threads; the event loop never waits on librdkafka.

It never joins a consumer group, never commits, and never imports the broker, the
fan-out consumer or the workers: subscriptions are handed this object to read their
backlog and to catch up after falling behind.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, TopicPartition

from channelcast.brokers.kafka.client import (
    coords,
    header_pairs,
    private_consumer_config,
    read_watermarks,
    take_available,
)
from channelcast.brokers.kafka.errors import kafka_errors, translate
from channelcast.brokers.kafka.topics import TopicEnsurer
from channelcast.errors import BrokerClosed, BrokerUnavailable, HistoryUnavailable
from channelcast.ingest import Skipped, channel_of, header_text, to_record
from channelcast.message import Record
from channelcast.types import ChannelName, Position

if TYPE_CHECKING:
    from channelcast.config import KafkaSettings

__all__ = ["HistoryReader"]

log = logging.getLogger("channelcast.kafka")


class HistoryReader:
    """Reads partition watermarks and channel history. ``open()`` before use;
    ``stop()`` refuses new reads, ``close()`` also releases the metadata consumer."""

    def __init__(self, settings: KafkaSettings, topics: TopicEnsurer) -> None:
        """Records that carry no message are left out with a DEBUG line: history and
        catch-up reads see records the live fan-out consumer has read (and counted and
        logged) already, so counting them here would count them twice or more."""
        self.settings = settings
        self.topics = topics
        self._timeout = settings.timeout_s
        self._meta: Consumer | None = None
        self._meta_lock = threading.Lock()
        self._stopped = False

    def open(self) -> None:
        """Create the metadata consumer. A setting librdkafka refuses is a ConfigError
        naming ``kafka.consumer``."""
        with kafka_errors("creating the metadata consumer", settings="kafka.consumer"):
            self._meta = Consumer(private_consumer_config(self.settings, "meta"))
        self._stopped = False

    def stop(self) -> None:
        """From now on every read raises BrokerClosed (the broker is closing)."""
        self._stopped = True

    async def close(self) -> None:
        self._stopped = True
        if self._meta is not None:
            meta, self._meta = self._meta, None
            await asyncio.to_thread(meta.close)

    def _watermarks_blocking(self, topic: str, partition: int) -> tuple[int, int]:
        with self._meta_lock:
            if self._meta is None:
                raise BrokerClosed("the Kafka broker is closed")
            try:
                return read_watermarks(self._meta, topic, partition, self._timeout)
            finally:
                # Nothing else polls this consumer: serve its queued log lines.
                self._meta.poll(0)

    async def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """(low, high): the oldest kept offset and one past the newest. Raises
        BrokerClosed once stopped, else what :func:`read_watermarks` raises."""
        if self._stopped:
            raise BrokerClosed("the Kafka broker is closed")
        return await asyncio.to_thread(self._watermarks_blocking, topic, partition)

    async def read(self, channel: ChannelName, since: Position, until: int, *,
                   include_internal: bool = False) -> list[Record]:
        """The records of ``channel`` after ``since`` and before offset ``until`` of its
        partition, in offset order.

        Raises HistoryUnavailable when ``since`` is not in the channel's partition (the
        topic mapping changed, the topic grew), is of another epoch (the topic was
        recreated), is ahead of ``until`` (not from this log), or retention removed part
        of the range; BrokerUnavailable when the read stalls for the configured timeout.
        """
        topic, partition, _key = self.topics.route(channel)
        epoch = self.topics.epochs.get(topic)
        if (since.topic, since.partition) != (topic, partition):
            raise HistoryUnavailable(
                f"position {since} is not in channel {channel!r}'s partition "
                f"{topic}:{partition} (was the topic mapping changed, or did the topic "
                "grow?)")
        if since.epoch is not None and epoch is not None and since.epoch != epoch:
            raise HistoryUnavailable(
                f"position {since} is from another incarnation of topic {topic!r} (epoch "
                f"{since.epoch}; the topic now is {epoch}: it was deleted and recreated): "
                "its history is gone")
        if since.offset + 1 >= until:
            if since.offset + 1 > until:  # past what is asked for: is it past the log?
                _low, high = await self.watermarks(topic, partition)
                if since.offset >= high:
                    raise HistoryUnavailable(
                        f"position {since} is ahead of the newest message of {channel!r} "
                        f"(offset {high - 1}): it is not from this log (was the topic "
                        "recreated?)")
            return []
        return await self.read_range(frozenset({channel}), topic, partition,
                                     since.offset + 1, until,
                                     include_internal=include_internal, what=repr(channel))

    async def read_range(self, channels: frozenset[ChannelName], topic: str, partition: int,
                         start: int, until: int, *, include_internal: bool = False,
                         what: str = "") -> list[Record]:
        """The records of ``channels`` with ``start <= offset < until`` in one partition,
        in offset order (raises HistoryUnavailable if retention removed some)."""
        if start >= until:
            return []
        low, _high = await self.watermarks(topic, partition)
        if start < low:
            raise HistoryUnavailable(
                f"history of {what or sorted(channels)} from {topic}:{partition}:{start} is "
                f"gone: the oldest kept offset is {low}")
        return await asyncio.to_thread(self._read_range_blocking, channels, topic, partition,
                                       start, until, include_internal)

    def _read_range_blocking(self, channels: frozenset[ChannelName], topic: str,
                             partition: int, start: int, until: int,
                             include_internal: bool) -> list[Record]:
        doing = f"reading history of {topic}:{partition}"
        with kafka_errors(doing):
            consumer = Consumer(private_consumer_config(self.settings, "history"))
            try:
                return self._read_range(consumer, doing, channels, topic, partition, start,
                                        until, include_internal)
            finally:
                consumer.close()

    def _read_range(self, consumer: Consumer, doing: str, channels: frozenset[ChannelName],
                    topic: str, partition: int, start: int, until: int,
                    include_internal: bool) -> list[Record]:
        out: list[Record] = []
        consumer.assign([TopicPartition(topic, partition, start)])
        next_offset = start
        epoch = self.topics.epochs.get(topic)
        deadline = time.monotonic() + self._timeout  # moves on with every progress
        while next_offset < until:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"reading history of {topic}:{partition} [{start}, {until}) stalled "
                    f"at offset {next_offset} for {self._timeout}s", retriable=True)
            messages = take_available(consumer, 0.2, 1000)
            if messages:
                deadline = time.monotonic() + self._timeout
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.fatal() or not err.retriable():
                        raise translate(err, doing)
                    continue
                offset = coords(msg)[2]
                if offset >= until:
                    next_offset = until
                    break
                next_offset = offset + 1
                headers = header_pairs(msg)
                key = msg.key()
                named = header_text(headers, "channel")
                if named is not None and named not in channels:
                    continue
                record = to_record(msg.value(), key, headers, topic, partition, offset,
                                   msg.timestamp()[1], epoch, keep_headers=True)
                if isinstance(record, Skipped):
                    if named is not None or channel_of(key, None) in channels:
                        log.debug("history read: skipping %s:%d:%d: %s", topic, partition,
                                  offset, record.reason)
                    continue
                if record.channel not in channels:
                    continue
                if include_internal or not record.internal:
                    out.append(record)
        return out
