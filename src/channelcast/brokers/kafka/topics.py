"""The broker's topics: created (or checked) once per process, partition counts remembered.

Owns the ``topic -> partition count`` table the publish path routes against, and the
decision what to do about a topic the strategy names but the cluster lacks: create it
(``create=True``, friendly for development and needed by the legacy one-topic-per-channel
strategy) or fail with a PublishError saying how to create it. Topics are created through
:mod:`~channelcast.brokers.kafka.admin` in a worker thread.

It never deletes, grows or reconfigures a topic (``channelcast topics apply`` does), and
never imports the broker, its subscriptions or its workers: they are handed this object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.errors import PublishError
from channelcast.strategies import TopicSpec, TopicStrategy
from channelcast.types import ChannelName, TopicName

if TYPE_CHECKING:
    from channelcast.config import KafkaSettings

__all__ = ["TopicEnsurer"]


class TopicEnsurer:
    """Makes sure the topics a broker uses exist; ``partitions`` holds their counts.

    ``partitions`` is read on the publish path without a lock (only this object writes
    it, on the event loop). ``ensure*`` raise ConfigError (replication factor beyond the
    broker count, a topic config the cluster refuses), BrokerUnavailable, or PublishError
    for a missing topic when ``create`` is False.
    """

    def __init__(self, settings: KafkaSettings, strategy: TopicStrategy, *,
                 create: bool) -> None:
        self.settings = settings
        self.strategy = strategy
        self.create = create
        self.partitions: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def ensure(self, specs: Iterable[TopicSpec]) -> None:
        """Create (or check) the topics of ``specs`` not seen yet."""
        wanted = [s for s in specs if s.name not in self.partitions]
        if not wanted:
            return
        async with self._lock:
            counts = await asyncio.to_thread(self._ensure_blocking, wanted)
            self.partitions.update(counts)

    def _ensure_blocking(self, specs: list[TopicSpec]) -> dict[str, int]:
        # A short-lived admin client: a long-lived one that is never polled would queue
        # its log lines for the broker's whole life.
        admin = KafkaAdmin(self.settings.brokers, timeout_s=self.settings.timeout_s)
        names = [s.name for s in specs]
        have = admin.partitions(names)
        missing = [s for s in specs if s.name not in have]
        if missing and not self.create:
            raise PublishError(
                f"topic {missing[0].name!r} does not exist (create it first, e.g. with "
                "`channelcast topics apply`, or use ensure_topics=True)")
        if missing:
            admin.create_topics(missing,
                                default_replication_factor=self.settings.replication_factor)
            have = admin.partitions(names)
        return have

    async def ensure_for_channels(self, channels: Iterable[ChannelName]) -> None:
        """The topics these channels route to (undeclared ones get the default count)."""
        channels = list(channels)
        missing = self.strategy.topics_for(channels) - self.partitions.keys()
        if not missing:
            return
        specs: dict[str, TopicSpec] = {s.name: s for s in self.strategy.topics(channels)}
        default = self.settings.default_partitions
        await self.ensure(
            specs.get(name) or TopicSpec(TopicName(name), default) for name in missing)

    async def ensure_for_worker(self, topics: Sequence[str], dead_letter: str) -> None:
        """A worker's dead-letter topic, and those of its ``topics`` the strategy declares
        (others are the application's to create)."""
        declared: dict[str, TopicSpec] = {s.name: s for s in self.strategy.topics()}
        specs = [declared.get(t) or TopicSpec(TopicName(t), 1) for t in topics
                 if t in declared]
        specs.append(TopicSpec(TopicName(dead_letter), 1, self.settings.replication_factor))
        await self.ensure(specs)

    def mismatch(self, topic: str, partition: int) -> PublishError:
        """The error for a route to a partition ``topic`` does not have."""
        return PublishError(
            f"topic {topic!r} has {self.partitions[topic]} partitions but the strategy "
            f"routes to partition {partition}: fix the topic mapping or the topic")
