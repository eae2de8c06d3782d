"""The broker's topics as the cluster has them: created (or checked) once, then followed.

Owns the table the publish path and the fan-out consumer route against: per topic its
*real* partition count and its epoch (from the topic id). A channel's partition is
``partition_for(key) % real count``, as every Kafka client computes it, so channelcast,
Kafka's Java producer and any other client agree even when a topic was created with
another count than the config declares (the disagreement is logged as a WARNING when the
topic is first seen). :meth:`TopicEnsurer.refresh` re-reads the metadata (the broker calls
it every ``kafka.metadata_refresh_s``) and reports what changed: a topic that grew
(channels move to new partitions), was recreated (a new epoch: old offsets mean nothing)
or was deleted (publishing to it fails at once, naming it, instead of timing out).

It also decides what to do about a topic the strategy names but the cluster lacks:
create it (``create=True``, friendly for development and needed by the legacy
one-topic-per-channel strategy) or fail with a PublishError saying how to create it. A
topic that existed and vanished is never recreated behind anyone's back.

It never deletes, grows or reconfigures a topic (``channelcast topics apply`` does), and
never imports the broker, its subscriptions or its workers: they are handed this object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.errors import PublishError
from channelcast.strategies import TopicSpec, TopicStrategy, murmur2_partition
from channelcast.strategies.base import partitions_text
from channelcast.types import ChannelName, TopicName

if TYPE_CHECKING:
    from channelcast.config import KafkaSettings

__all__ = ["TopicChanges", "TopicEnsurer"]

log = logging.getLogger("channelcast.kafka")


@dataclass(slots=True)
class TopicChanges:
    """What :meth:`TopicEnsurer.refresh` found: ``grown`` topic -> (old, new) partition
    counts, ``recreated`` topic -> (old, new) epochs, ``deleted`` topics, and when the
    previous look still showed the old state (Unix ms; a channel that moved has no record
    in its new partition from before then)."""

    grown: dict[str, tuple[int, int]] = field(default_factory=dict)
    recreated: dict[str, tuple[str, str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    previous_look_ms: int = 0

    def __bool__(self) -> bool:
        return bool(self.grown or self.recreated or self.deleted)


class TopicEnsurer:
    """Makes sure the topics a broker uses exist, and routes by their real layout.

    ``partitions`` (real counts) and ``epochs`` are read on the publish path and by the
    fan-out consumer thread without a lock; only this object writes them, on the event
    loop, one whole value at a time. ``ensure*`` raise ConfigError (replication factor
    beyond the broker count, a topic config the cluster refuses), BrokerUnavailable, or
    PublishError for a missing topic when ``create`` is False or the topic was deleted
    while the broker ran.
    """

    def __init__(self, settings: KafkaSettings, strategy: TopicStrategy, *,
                 create: bool, clock_ms: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.strategy = strategy
        self.create = create
        self.partitions: dict[str, int] = {}
        self.epochs: dict[str, str] = {}
        self.deleted: set[str] = set()
        self._assumed: dict[str, int] = {}  # the count the strategy routes with
        self._mismatched: set[str] = set()  # real count != assumed: recompute partitions
        self._partition_for: Callable[[bytes, int], int] = getattr(
            strategy, "partition_for", murmur2_partition)
        self._lock = asyncio.Lock()
        self._clock_ms = clock_ms or _now_ms
        self.last_look_ms = 0

    # --- routing ---------------------------------------------------------------------
    def route(self, channel: ChannelName) -> tuple[str, int, bytes]:
        """``(topic, partition, key)`` of a channel by its topic's real partition count
        (the strategy's own route until the topic was seen)."""
        r = self.strategy.route(channel)
        if r.topic in self._mismatched:
            return r.topic, self._partition_for(r.key, self.partitions[r.topic]), r.key
        return r.topic, r.partition, r.key

    def gone(self, topic: str) -> PublishError:
        """The error for using a topic that was deleted while the broker ran."""
        return PublishError(
            f"topic {topic!r} was deleted while channelcast was running: recreate it "
            "(`channelcast topics apply`; publishing, subscribing and reading history "
            "resume once it exists again, no restart needed), or fix the topic mapping")

    # --- creating --------------------------------------------------------------------
    async def ensure(self, specs: Iterable[TopicSpec]) -> None:
        """Create (or check) the topics of ``specs`` not seen yet."""
        wanted = [s for s in specs if s.name not in self.partitions]
        if not wanted:
            return
        for spec in wanted:
            if spec.name in self.deleted:
                raise self.gone(spec.name)
        async with self._lock:
            layouts = await asyncio.to_thread(self._ensure_blocking, wanted)
            for spec in wanted:
                self._assumed.setdefault(spec.name, spec.partitions)
            self._learn(layouts)

    def _ensure_blocking(self, specs: list[TopicSpec]) -> dict[str, tuple[int, str]]:
        # A short-lived admin client: a long-lived one that is never polled would queue
        # its log lines for the broker's whole life.
        admin = KafkaAdmin(self.settings.brokers, timeout_s=self.settings.timeout_s)
        names = [s.name for s in specs]
        have = admin.layouts(names)
        missing = [s for s in specs if s.name not in have]
        if missing and not self.create:
            raise PublishError(
                f"topic {missing[0].name!r} does not exist (create it first, e.g. with "
                "`channelcast topics apply`, or use ensure_topics=True)")
        if missing:
            admin.create_topics(missing,
                                default_replication_factor=self.settings.replication_factor)
            have = admin.layouts(names)
        return have

    def _learn(self, layouts: dict[str, tuple[int, str]]) -> None:
        for topic, (count, epoch) in layouts.items():
            assumed = self._assumed.get(topic, count)
            if count != assumed and topic not in self._mismatched:
                log.warning(
                    "topic %r has %s but the config routes its channels over %d:"
                    " channelcast routes by the topic's real count (partition = hash(key) %% "
                    "%d), as Kafka's own clients do; fix kafka.topic_mapping or the topic "
                    "(`channelcast config check --bootstrap` lists every disagreement)",
                    topic, partitions_text(count), assumed, count)
            if count != assumed:
                self._mismatched.add(topic)
            else:
                self._mismatched.discard(topic)
            self.partitions[topic] = count
            self.epochs[topic] = epoch
        self.last_look_ms = self._clock_ms()

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

    # --- following -------------------------------------------------------------------
    async def refresh(self) -> TopicChanges:
        """Re-read every known topic's layout; update the table; report what changed."""
        names = sorted(self.partitions)
        changes = TopicChanges(previous_look_ms=self.last_look_ms)
        if not names and not self.deleted:
            return changes
        async with self._lock:
            layouts = await asyncio.to_thread(self._layouts_blocking,
                                              names + sorted(self.deleted))
            for topic in sorted(self.deleted):
                if topic in layouts:  # someone created it again: follow it
                    self.deleted.discard(topic)
                    log.warning("topic %r exists again (epoch %s)", topic, layouts[topic][1])
            for topic in names:
                if topic not in layouts:
                    changes.deleted.add(topic)
                    continue
                count, epoch = layouts[topic]
                old_count, old_epoch = self.partitions[topic], self.epochs.get(topic)
                if old_epoch is not None and epoch != old_epoch:
                    changes.recreated[topic] = (old_epoch, epoch)
                elif count != old_count:
                    changes.grown[topic] = (old_count, count)
            for topic in changes.deleted:
                log.warning("topic %r was deleted while channelcast was running: "
                            "publishing to it fails and its subscriptions end", topic)
                self.partitions.pop(topic, None)
                self.epochs.pop(topic, None)
                self._mismatched.discard(topic)
                self.deleted.add(topic)
            for topic, (old, new) in changes.grown.items():
                log.warning("topic %r now has %d partitions (was %d): channels are routed "
                            "by the new count; subscriptions follow their channels to the "
                            "new partitions (docs/operations.md)", topic, new, old)
            for topic, (old_e, new_e) in changes.recreated.items():
                log.warning("topic %r was deleted and recreated (epoch %s -> %s): offsets "
                            "of the old one mean nothing now; its subscriptions end and "
                            "recovery from old positions fails", topic, old_e, new_e)
            self._learn(layouts)
        return changes

    def _layouts_blocking(self, names: list[str]) -> dict[str, tuple[int, str]]:
        admin = KafkaAdmin(self.settings.brokers, timeout_s=self.settings.timeout_s)
        return admin.layouts(names)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
