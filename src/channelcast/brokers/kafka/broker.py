"""KafkaBroker: the Broker protocol on Apache Kafka, wired from the adapter's parts.

Owns the broker's lifecycle (start, close, what runs while closing) and the publish path:
encode, route by the strategy, batch concurrent ``publish()`` calls into one produce
burst, hand them to :class:`~channelcast.brokers.kafka.producer.KafkaPublisher`
(acks=all, idempotent, lz4, explicit partition, flushed on close). It creates and hands
out the collaborators the other parts need: the
:class:`~channelcast.brokers.kafka.topics.TopicEnsurer`, the
:class:`~channelcast.brokers.kafka.history.HistoryReader`, one shared
:class:`~channelcast.brokers.kafka.fanout.FanoutConsumer`, and a dead-letter sender and
registry for each :class:`~channelcast.brokers.kafka.worker.KafkaWorker`.

It must never block the event loop on librdkafka (blocking calls run in threads), never
classify a Kafka error itself (:mod:`~channelcast.brokers.kafka.errors` does), and nothing
it wires may import it back: subscriptions and workers get objects and callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from channelcast.brokers.base import (
    DEFAULT_SUBSCRIPTION_QUEUE,
    HEADER_CHANNEL,
    HEADER_EVENT,
    HEADER_ID,
    HEADER_INTERNAL,
    ChannelRouter,
    Handler,
    RetryPolicy,
    check_since,
    subscribed_channels,
)
from channelcast.brokers.kafka.client import (
    SkipLog,
    consumer_config,
    private_consumer_config,
    refresh_metadata,
)
from channelcast.brokers.kafka.errors import Translated, kafka_errors
from channelcast.brokers.kafka.fanout import FanoutConsumer, KafkaSubscription
from channelcast.brokers.kafka.history import HistoryReader
from channelcast.brokers.kafka.producer import KafkaPublisher, Outgoing, producer_defaults
from channelcast.brokers.kafka.topics import TopicEnsurer
from channelcast.brokers.kafka.worker import KafkaWorker
from channelcast.channels import validate_channel
from channelcast.config import KafkaSettings
from channelcast.errors import BrokerClosed, PublishOutcomeUnknown
from channelcast.message import INTERNAL, Envelope, Record, encode, validate_message_id
from channelcast.strategies import TopicStrategy, create_strategy
from channelcast.types import ChannelName, JSONValue, Position

if TYPE_CHECKING:
    from channelcast.config import Settings


log = logging.getLogger("channelcast.kafka")

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
        self._timeout = self.settings.timeout_s
        self._publisher: KafkaPublisher | None = None
        self._topics = TopicEnsurer(self.settings, self.strategy, create=ensure_topics)
        # The publish path reads partition counts straight from the ensurer's table.
        self._partitions = self._topics.partitions
        self._history = HistoryReader(self.settings, self._topics)
        self._fanout: FanoutConsumer | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._following = asyncio.Lock()
        self.skipped_records = 0
        """Records of subscribed channels that carried no message (not JSON, no channel,
        ...), all counted; logged with their topic:partition:offset by :class:`SkipLog`
        (the first of each kind, then a count every 30 s while more come)."""
        self._skip_lock = threading.Lock()
        self._skip_log = SkipLog(log)
        self._subscriptions: set[KafkaSubscription] = set()
        self._workers: set[KafkaWorker] = set()
        self._started = False
        self._closed = False
        # publish() calls waiting to go out together (see publish), and the tasks sending.
        self._pending: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()

    @property
    def ensure_topics(self) -> bool:
        """Whether missing topics are created (else a missing topic is a PublishError)."""
        return self._topics.create

    @ensure_topics.setter
    def ensure_topics(self, value: bool) -> None:
        self._topics.create = value

    # --- configuration -------------------------------------------------------------
    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        """Base consumer config: ours, then ``settings.kafka.consumer``, then overrides."""
        return consumer_config(self.settings, **overrides)

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise BrokerClosed("the Kafka broker is closed")
        if self._started:
            return
        config = producer_defaults(self.settings.brokers, self._timeout)
        # Follow a topic's growth as soon as the topic table does (librdkafka's default
        # is 5 minutes, during which new partitions would be unknown to the producer).
        config["topic.metadata.refresh.interval.ms"] = max(
            1000, int(self.settings.metadata_refresh_s * 1000))
        config.update(self.settings.producer)
        with kafka_errors("creating the producer", settings="kafka.producer"):
            self._publisher = KafkaPublisher(config, flush_timeout=self._timeout,
                                             epochs=self._topics.epochs)
        try:
            self._history.open()
            await asyncio.to_thread(self._publisher.list_topics_blocking, self._timeout)
            # Creates the declared topics, or (ensure_topics=False) checks they exist.
            await self._topics.ensure(self.strategy.topics())
        except BaseException:
            await self._release()
            raise
        self._started = True
        self._refresher = asyncio.create_task(self._follow_topics())

    async def _follow_topics(self) -> None:
        """Every ``metadata_refresh_s``: re-read the topics' layouts and let the fan-out
        consumer follow what changed (growth, recreation, deletion). Never fails: a
        broker that cannot be asked now is asked again next time."""
        while True:
            await asyncio.sleep(self.settings.metadata_refresh_s)
            try:
                await self._follow_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("re-reading the topics' metadata failed (tried again in %ss): "
                            "%s", self.settings.metadata_refresh_s, exc)

    async def _follow_once(self) -> None:
        """Re-read the topics' layouts now and let the fan-out consumer follow."""
        async with self._following:
            changes = await self._topics.refresh()
            publisher = self._publisher
            if publisher is not None:
                for topic in changes.grown:  # make the new partitions known to it now
                    await asyncio.to_thread(refresh_metadata, publisher.producer, topic,
                                            self._timeout)
            if changes and self._fanout is not None and self._fanout.alive:
                await self._fanout.apply(changes)

    def follow_soon(self) -> None:
        """Look at the topics' layouts now, in the background (after a publish timed out:
        a deleted topic is then reported at once to the next publishes)."""
        if self._closed or self._following.locked():
            return
        task = asyncio.ensure_future(self._follow_once())
        self._sending.add(task)  # awaited by close()
        task.add_done_callback(self._sending.discard)
        task.add_done_callback(_log_failure)

    def _skip(self, topic: str, partition: int, offset: int, why: str) -> None:
        with self._skip_lock:  # consumer threads and the event loop both count
            self.skipped_records += 1
        self._skip_log(topic, partition, offset, why)

    def subscription_count(self) -> int:
        """Open fan-out subscriptions (leak checks and metrics)."""
        return len(self._subscriptions)
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        self._history.stop()
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
        await self._history.close()

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

    # --- publish ----------------------------------------------------------------------
    async def publish(self, channel: str, event: str, data: JSONValue, *,
                      id: str | None = None) -> Position:
        """One message (``id``: the message id, see the Broker protocol). Concurrent calls
        are produced together (one produce burst and one wait for acknowledgements per
        event-loop turn), each still getting its own position or its own error; bad input
        raises here and queues nothing."""
        self._publisher_or_fail()
        # encode() validates the channel (InvalidChannel) along with the other fields.
        outgoing = self._outgoing(Envelope(channel=ChannelName(channel), event=event,
                                           data=data, id=id))
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
        results: list[Position | Translated] = []
        try:
            if self._publisher is None:
                raise BrokerClosed("the Kafka broker is closed")
            unknown = [channel for o, channel, _ in batch if o[0] not in self._partitions]
            if unknown:
                await self._topics.ensure_for_channels(unknown)
                # Routed before the topic was known: by the topic's real count now.
                batch = [(self._rerouted(o, channel), channel, future)
                         for o, channel, future in batch]
            results = await self._publisher.send_each([item[0] for item in batch])
            if any(isinstance(r, PublishOutcomeUnknown) for r in results):
                self.follow_soon()  # a deleted topic? the next publishes will know
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
        """Check the id, encode (which validates the rest) and route by the topic's real
        partition count. Headers as a dict of str/bytes: one object the garbage collector
        does not even track (a list of pairs is four it does); the channel header first
        (the fan-out consumer looks there first), internal records marked."""
        mid = validate_message_id(env.id)
        value = encode(env, self.settings.max_message_bytes)
        topic, partition, key = self._topics.route(env.channel)
        if topic in self._topics.deleted:
            raise self._topics.gone(topic)
        if env.type == INTERNAL:
            return (topic, partition, key, value,
                    {HEADER_CHANNEL: key, HEADER_EVENT: env.event, HEADER_ID: mid,
                     HEADER_INTERNAL: b"1"})
        return (topic, partition, key, value,
                {HEADER_CHANNEL: key, HEADER_EVENT: env.event, HEADER_ID: mid})

    def _rerouted(self, message: Outgoing, channel: ChannelName) -> Outgoing:
        topic, partition, key = self._topics.route(channel)
        if partition == message[1]:
            return message
        return (topic, partition, key, message[3], message[4])

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[Position]:
        publisher = self._publisher_or_fail()
        make = self._outgoing
        # Encode (which validates) everything first, in one pass: a bad message fails the
        # batch unsent.
        outgoing = [make(env) for env in envelopes]
        new = {o[0] for o in outgoing}.difference(self._partitions)
        if new:
            await self._topics.ensure_for_channels(
                [env.channel for o, env in zip(outgoing, envelopes, strict=True)
                 if o[0] in new])
            # Routed before the topic was known: by the topic's real count now.
            outgoing = [self._rerouted(o, env.channel)
                        for o, env in zip(outgoing, envelopes, strict=True)]
        try:
            return await publisher.send(outgoing)
        except PublishOutcomeUnknown:
            self.follow_soon()  # a deleted topic? the next publishes will know
            raise

    # --- fan-out ---------------------------------------------------------------------
    def subscribe(self, channels: Iterable[str], *,
                  since: Mapping[str, Position] | Mapping[ChannelName, Position] | None = None,
                  max_queue: int = DEFAULT_SUBSCRIPTION_QUEUE,
                  include_internal: bool = False) -> KafkaSubscription:
        self._publisher_or_fail()
        names = subscribed_channels(channels)
        positions = check_since(names, since)
        sub = KafkaSubscription(names, positions, max_queue, topics=self._topics,
                                history=self._history, fanout=self._fanout_consumer,
                                on_close=self._subscriptions.discard,
                                include_internal=include_internal)
        self._subscriptions.add(sub)
        return sub

    def _fanout_consumer(self) -> FanoutConsumer:
        self._publisher_or_fail()
        if self._fanout is not None and not self._fanout.alive:
            # It failed for good (its subscriptions were told); new ones get a new one.
            self._fanout = None
        if self._fanout is None:
            self._fanout = FanoutConsumer(private_consumer_config(self.settings, "fanout"),
                                          self._topics, self._timeout,
                                          asyncio.get_running_loop(), skipped=self._skip,
                                          grace_s=3 * self.settings.metadata_refresh_s)
        return self._fanout

    async def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        """(low, high): the oldest kept offset and one past the newest."""
        self._publisher_or_fail()
        return await self._history.watermarks(topic, partition)

    async def history(self, channel: str, since: Position, *,
                      include_internal: bool = False) -> list[Record]:
        name = validate_channel(channel)
        await self._topics.ensure_for_channels([name])
        if since.epoch is not None:
            # A recovery: make sure the topic's epoch is current (was it recreated since
            # the last look?), so a position of the old topic is never read in the new.
            await self._follow_once()
            await self._topics.ensure_for_channels([name])
        topic, partition, _key = self._topics.route(name)
        _low, high = await self.watermarks(topic, partition)
        return await self._history.read(name, since, high, include_internal=include_internal)

    async def end_position(self, channel: str) -> Position:
        name = validate_channel(channel)
        await self._topics.ensure_for_channels([name])
        topic, partition, _key = self._topics.route(name)
        _low, high = await self.watermarks(topic, partition)
        return Position(topic, partition, high - 1, self._topics.epochs.get(topic))

    # --- workers ---------------------------------------------------------------------
    def worker(self, group: str, *, channels: Mapping[str, Handler] | None = None,
               topics: Mapping[str, Handler] | None = None,
               manual_commit: bool | None = None,
               retry: RetryPolicy | None = None,
               dead_letter_topic: str | None = None) -> KafkaWorker:
        self._publisher_or_fail()
        s = self.settings
        return KafkaWorker(
            group, ChannelRouter(channels or {}, topics or {}, group),
            s.manual_commit if manual_commit is None else manual_commit,
            retry or RetryPolicy(s.max_attempts, s.retry_backoff_ms / 1000,
                                 s.retry_backoff_max_ms / 1000),
            dead_letter_topic or s.dead_letter_topic,
            self.consumer_config(),
            strategy=self.strategy, topics=self._topics, send=self._send_dead_letters,
            running=self._workers, timeout_s=self._timeout, epochs=self._topics.epochs)

    async def _send_dead_letters(self, messages: Sequence[Outgoing]) -> list[Position]:
        # Looked up on each call: a worker outliving close() gets BrokerClosed.
        return await self._publisher_or_fail().send(messages)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("re-reading the topics' metadata failed: %s", task.exception())


def from_settings(settings: Settings) -> KafkaBroker:
    return KafkaBroker(settings.kafka, create_strategy(settings.kafka))
