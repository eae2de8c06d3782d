"""KafkaBroker: the Broker protocol on Apache Kafka through confluent-kafka.

Publishing goes through :class:`~channelcast.brokers.kafka.producer.KafkaPublisher`
(acks=all, idempotent, lz4, explicit partition from the strategy, flushed on close);
fan-out through one assign()-based consumer thread
(:mod:`~channelcast.brokers.kafka.fanout`); workers through consumer groups
(:mod:`~channelcast.brokers.kafka.worker`). Short blocking calls (metadata, watermarks,
history reads) run in worker threads so the event loop never waits on librdkafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from confluent_kafka import Consumer, KafkaException, TopicPartition

from channelcast.brokers.base import (
    DEFAULT_SUBSCRIPTION_QUEUE,
    HEADER_CHANNEL,
    HEADER_EVENT,
    HEADER_ID,
    ChannelRouter,
    Handler,
    RetryPolicy,
)
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.brokers.kafka.errors import config_error, translate
from channelcast.brokers.kafka.fanout import (
    FanoutConsumer,
    KafkaSubscription,
    read_watermarks,
    take_available,
)
from channelcast.brokers.kafka.producer import (
    KafkaPublisher,
    Outgoing,
    coords,
    librdkafka_log,
    producer_defaults,
)
from channelcast.brokers.kafka.worker import KafkaWorker
from channelcast.channels import validate_channel
from channelcast.config import KafkaSettings
from channelcast.errors import (
    BrokerClosed,
    BrokerError,
    BrokerUnavailable,
    HistoryUnavailable,
    MessageError,
    MessageTooLarge,
    PublishError,
)
from channelcast.message import Envelope, Record, decode, encode
from channelcast.strategies import TopicSpec, TopicStrategy, create_strategy
from channelcast.types import ChannelName, JSONValue, Position, TopicName

if TYPE_CHECKING:
    from channelcast.config import Settings


_Pending = tuple[Outgoing, ChannelName, "asyncio.Future[Position]"]
"""A publish() call waiting to be produced: its message, channel and result."""


class KafkaBroker:
    """The Kafka backend. ``async with KafkaBroker(settings.kafka) as broker: ...``

    ``ensure_topics`` (default True, friendly for development): create the strategy's
    declared topics at start, and a channel's topic on first use (the legacy
    one-topic-per-channel strategy needs this). With False, a missing topic is an error.
    """

    def __init__(self, settings: KafkaSettings | None = None,
                 strategy: TopicStrategy | None = None, *, ensure_topics: bool = True) -> None:
        self.settings = settings or KafkaSettings()
        self.strategy: TopicStrategy = strategy or create_strategy(self.settings)
        self.ensure_topics = ensure_topics
        self._timeout = self.settings.timeout_s
        self._publisher: KafkaPublisher | None = None
        self._meta: Consumer | None = None
        self._meta_lock = threading.Lock()
        self._topics_lock = asyncio.Lock()
        self._partitions: dict[str, int] = {}
        self._fanout: FanoutConsumer | None = None
        self._subscriptions: set[KafkaSubscription] = set()
        self._workers: set[KafkaWorker] = set()
        self._started = False
        self._closed = False
        # publish() calls waiting to go out together (see publish), and the tasks sending.
        self._pending: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()

    # --- configuration -------------------------------------------------------------
    def _common(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.settings.brokers, "logger": librdkafka_log,
                "socket.connection.setup.timeout.ms": max(1000, int(self._timeout * 1000)),
                "reconnect.backoff.max.ms": 1000}

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        """Base consumer config: ours, then ``settings.kafka.consumer``, then overrides."""
        config = self._common()
        config.update({"enable.partition.eof": False, "auto.offset.reset": "earliest"})
        config.update(self.settings.consumer)
        config.update(overrides)
        return config

    def _private_consumer_config(self, purpose: str) -> dict[str, Any]:
        return self.consumer_config(**{
            "group.id": f"channelcast-{purpose}-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False, "enable.auto.offset.store": False})

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise BrokerClosed("the Kafka broker is closed")
        if self._started:
            return
        config = producer_defaults(self.settings.brokers, self._timeout)
        config.update(self.settings.producer)
        try:
            self._publisher = KafkaPublisher(config, flush_timeout=self._timeout)
        except KafkaException as exc:
            raise config_error(exc, "kafka.producer") from exc
        try:
            self._meta = Consumer(self._private_consumer_config("meta"))
        except KafkaException as exc:
            await self._release()
            raise config_error(exc, "kafka.consumer") from exc
        try:
            await asyncio.to_thread(self._publisher.list_topics_blocking, self._timeout)
            # Creates the declared topics, or (ensure_topics=False) checks they exist.
            await self._ensure_specs(self.strategy.topics())
        except BaseException:
            await self._release()
            raise
        self._started = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pending:
            self._flush_pending()
        if self._sending:  # publish() calls already accepted go out before the producer
            await asyncio.gather(*self._sending, return_exceptions=True)
        workers = list(self._workers)
        for worker in workers:
            await worker.stop()
        for worker in workers:  # they commit on revoke, which needs the producer alive
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.wait_stopped(), self._timeout)
        for sub in list(self._subscriptions):
            await sub.close()
        await self._release()

    async def _release(self) -> None:
        if self._fanout is not None:
            await self._fanout.close()
            self._fanout = None
        if self._publisher is not None:
            await self._publisher.close()
        if self._meta is not None:
            meta, self._meta = self._meta, None
            await asyncio.to_thread(meta.close)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def _publisher_or_fail(self) -> KafkaPublisher:
        if self._closed:
            raise BrokerClosed("the Kafka broker is closed")
        if self._publisher is None:
            raise BrokerClosed("the Kafka broker is not started (use `async with` or start())")
        return self._publisher

    async def ping(self) -> None:
        publisher = self._publisher_or_fail()
        await asyncio.to_thread(publisher.list_topics_blocking, self._timeout)

    # --- topics ---------------------------------------------------------------------
    async def _ensure_specs(self, specs: Iterable[TopicSpec]) -> None:
        wanted = [s for s in specs if s.name not in self._partitions]
        if not wanted:
            return
        async with self._topics_lock:
            counts = await asyncio.to_thread(self._ensure_blocking, wanted)
            self._partitions.update(counts)

    def _ensure_blocking(self, specs: list[TopicSpec]) -> dict[str, int]:
        # A short-lived admin client: a long-lived one that is never polled would queue
        # its log lines for the broker's whole life.
        admin = KafkaAdmin(self.settings.brokers, timeout_s=self._timeout)
        names = [s.name for s in specs]
        have = admin.partitions(names)
        missing = [s for s in specs if s.name not in have]
        if missing and not self.ensure_topics:
            raise PublishError(
                f"topic {missing[0].name!r} does not exist (create it first, e.g. with "
                "`channelcast topics apply`, or use ensure_topics=True)")
        if missing:
            admin.create_topics(missing,
                                default_replication_factor=self.settings.replication_factor)
            have = admin.partitions(names)
        return have

    async def _ensure_topics_for(self, channels: Iterable[ChannelName]) -> None:
        channels = list(channels)
        missing = self.strategy.topics_for(channels) - self._partitions.keys()
        if not missing:
            return
        specs: dict[str, TopicSpec] = {s.name: s for s in self.strategy.topics(channels)}
        default = self.settings.default_partitions
        await self._ensure_specs(
            specs.get(name) or TopicSpec(TopicName(name), default) for name in missing)

    async def _ensure_worker_topics(self, topics: Sequence[str], dead_letter: str) -> None:
        declared: dict[str, TopicSpec] = {s.name: s for s in self.strategy.topics()}
        specs = [declared.get(t) or TopicSpec(TopicName(t), 1) for t in topics
                 if t in declared]
        specs.append(TopicSpec(TopicName(dead_letter), 1, self.settings.replication_factor))
        await self._ensure_specs(specs)

    # --- publish ----------------------------------------------------------------------
    async def publish(self, channel: str, event: str, data: JSONValue) -> Position:
        """One message. Concurrent calls are produced together (one produce burst and one
        wait for acknowledgements per event-loop turn), each still getting its own
        position or its own error; bad input raises here and queues nothing."""
        self._publisher_or_fail()
        # encode() validates the channel (InvalidChannel) along with the other fields.
        outgoing = self._outgoing(Envelope(channel=ChannelName(channel), event=event,
                                           data=data))
        future: asyncio.Future[Position] = asyncio.get_running_loop().create_future()
        pending = self._pending
        pending.append((outgoing, ChannelName(channel), future))
        if len(pending) == 1:
            future.get_loop().call_soon(self._flush_pending)
        return await future

    def _flush_pending(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._send_pending(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_pending(self, batch: list[_Pending]) -> None:
        results: list[Position | BrokerError | MessageTooLarge] = []
        try:
            if self._publisher is None:
                raise BrokerClosed("the Kafka broker is closed")
            unknown = [channel for o, channel, _ in batch if o[0] not in self._partitions]
            if unknown:
                await self._ensure_topics_for(unknown)
                mismatched = [item for item in batch
                              if item[0][1] >= self._partitions[item[0][0]]]
                for (topic, partition, *_), _channel, future in mismatched:
                    if not future.done():
                        future.set_exception(self._partition_mismatch(topic, partition))
                if mismatched:
                    gone = {id(item) for item in mismatched}
                    batch = [item for item in batch if id(item) not in gone]
            results = await self._publisher.send_each([item[0] for item in batch])
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # the caller was cancelled
            if isinstance(result, Position):
                future.set_result(result)
            else:
                future.set_exception(result)

    def _outgoing(self, env: Envelope) -> Outgoing:
        """Encode (which validates) and route. Headers as a dict of str/bytes: one object
        the garbage collector does not even track (a list of pairs is four it does)."""
        value = encode(env, self.settings.max_message_bytes)
        route = self.strategy.route(env.channel)
        count = self._partitions.get(route.topic)
        if count is not None and route.partition >= count:
            raise self._partition_mismatch(route.topic, route.partition)
        return (route.topic, route.partition, route.key, value,
                {HEADER_CHANNEL: route.key, HEADER_EVENT: env.event, HEADER_ID: env.id})

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[Position]:
        publisher = self._publisher_or_fail()
        make = self._outgoing
        known = self._partitions
        outgoing: list[Outgoing] = []
        unknown: list[ChannelName] = []
        # Encode (which validates) everything first, in one pass: a bad message fails the
        # batch unsent.
        for env in envelopes:
            message = make(env)
            if message[0] not in known:
                unknown.append(env.channel)
            outgoing.append(message)
        if unknown:
            await self._ensure_topics_for(unknown)
            for topic, partition, *_ in outgoing:
                if partition >= self._partitions[topic]:
                    raise self._partition_mismatch(topic, partition)
        return await publisher.send(outgoing)

    def _partition_mismatch(self, topic: str, partition: int) -> PublishError:
        return PublishError(
            f"topic {topic!r} has {self._partitions[topic]} partitions but the strategy "
            f"routes to partition {partition}: fix the topic mapping or the topic")

    # --- fan-out ---------------------------------------------------------------------
    def subscribe(self, channels: Iterable[str], *,
                  since: Mapping[str, Position] | Mapping[ChannelName, Position] | None = None,
                  max_queue: int = DEFAULT_SUBSCRIPTION_QUEUE) -> KafkaSubscription:
        self._publisher_or_fail()
        names = frozenset(validate_channel(c) for c in channels)
        positions = {validate_channel(c): p for c, p in (since or {}).items()}
        sub = KafkaSubscription(self, names, positions, max_queue)
        self._subscriptions.add(sub)
        return sub

    def _forget_subscription(self, sub: KafkaSubscription) -> None:
        self._subscriptions.discard(sub)

    def _fanout_consumer(self) -> FanoutConsumer:
        self._publisher_or_fail()
        if self._fanout is not None and not self._fanout.alive:
            # It failed for good (its subscriptions were told); new ones get a new one.
            self._fanout = None
        if self._fanout is None:
            self._fanout = FanoutConsumer(self._private_consumer_config("fanout"),
                                          self.strategy, self._timeout,
                                          asyncio.get_running_loop())
        return self._fanout

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
        """(low, high): the oldest kept offset and one past the newest."""
        self._publisher_or_fail()
        return await asyncio.to_thread(self._watermarks_blocking, topic, partition)

    async def _read_history(self, channel: ChannelName, since: Position,
                            until: int) -> list[Record]:
        route = self.strategy.route(channel)
        if (since.topic, since.partition) != (route.topic, route.partition):
            raise HistoryUnavailable(
                f"position {since} is not in channel {channel!r}'s partition "
                f"{route.topic}:{route.partition} (was the topic mapping changed?)")
        start = since.offset + 1
        if start >= until:
            return []
        low, _high = await self.watermarks(route.topic, route.partition)
        if start < low:
            raise HistoryUnavailable(
                f"history of {channel!r} after {since} is gone: the oldest kept offset "
                f"is {low}")
        return await asyncio.to_thread(self._read_range_blocking, channel, route.topic,
                                       route.partition, start, until)

    def _read_range_blocking(self, channel: str, topic: str, partition: int, start: int,
                             until: int) -> list[Record]:
        consumer = Consumer(self._private_consumer_config("history"))
        out: list[Record] = []
        try:
            consumer.assign([TopicPartition(topic, partition, start)])
            next_offset = start
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
                            raise translate(err, f"reading history of {topic}:{partition}")
                        continue
                    offset = coords(msg)[2]
                    if offset >= until:
                        next_offset = until
                        break
                    next_offset = offset + 1
                    try:
                        envelope = decode(msg.value())
                    except MessageError:
                        continue  # not a channelcast message: not part of any channel
                    if envelope.channel == channel:
                        out.append(Record(envelope, Position(topic, partition, offset)))
        finally:
            consumer.close()
        return out

    async def history(self, channel: str, since: Position) -> list[Record]:
        name = validate_channel(channel)
        await self._ensure_topics_for([name])
        route = self.strategy.route(name)
        _low, high = await self.watermarks(route.topic, route.partition)
        return await self._read_history(name, since, high)

    async def end_position(self, channel: str) -> Position:
        name = validate_channel(channel)
        await self._ensure_topics_for([name])
        route = self.strategy.route(name)
        _low, high = await self.watermarks(route.topic, route.partition)
        return Position(route.topic, route.partition, high - 1)

    # --- workers ---------------------------------------------------------------------
    def worker(self, group: str, *, channels: Mapping[str, Handler] | None = None,
               topics: Mapping[str, Handler] | None = None,
               manual_commit: bool | None = None,
               retry: RetryPolicy | None = None,
               dead_letter_topic: str | None = None) -> KafkaWorker:
        self._publisher_or_fail()
        s = self.settings
        return KafkaWorker(
            self, group, ChannelRouter(channels or {}, topics or {}),
            s.manual_commit if manual_commit is None else manual_commit,
            retry or RetryPolicy(s.max_attempts, s.retry_backoff_ms / 1000,
                                 s.retry_backoff_max_ms / 1000),
            dead_letter_topic or s.dead_letter_topic,
            self.consumer_config())


def from_settings(settings: Settings) -> KafkaBroker:
    return KafkaBroker(settings.kafka, create_strategy(settings.kafka))
