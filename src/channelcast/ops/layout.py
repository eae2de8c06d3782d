"""The cluster's topics against the config: real partition counts and the routes they give.

Kafka clients route a key by the topic's *real* partition count (``hash(key) % count``),
and so does channelcast's broker. When a topic was created with another count than the
config declares, the config's routes are wrong for it: :func:`layout_disagreements` lists
those topics, and :func:`layout_report` also the declared topics that do not exist yet
(``channelcast config check --bootstrap``), and :func:`real_routes` gives the
partition each channel really uses (``channelcast route --bootstrap``).

Library functions for the CLI and tests; they take a
:class:`~channelcast.brokers.kafka.admin.KafkaAdmin` (blocking) and never change anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from channelcast.channels import validate_channel
from channelcast.strategies import TopicStrategy, create_strategy, murmur2_partition
from channelcast.strategies.base import partitions_text

if TYPE_CHECKING:
    from channelcast.brokers.kafka.admin import KafkaAdmin
    from channelcast.config import KafkaSettings


@dataclass(frozen=True, slots=True)
class RealRoute:
    """Where a channel's messages go on this cluster. ``configured_partition`` is what the
    config alone says, in a topic of ``configured_partitions`` partitions; ``partitions``
    is the topic's real count (None: no such topic)."""

    channel: str
    topic: str
    partition: int
    key: str
    configured_partition: int
    partitions: int | None
    configured_partitions: int

    @property
    def note(self) -> str:
        """What differs from the config, in words ("" when nothing does)."""
        if self.partitions is None:
            return "no such topic"
        if self.partitions == self.configured_partitions:
            return ""
        if self.partition != self.configured_partition:
            return (f"config says partition {self.configured_partition} (of "
                    f"{self.configured_partitions}); the topic has "
                    f"{partitions_text(self.partitions)}")
        return (f"the topic has {partitions_text(self.partitions)}, the config "
                f"{self.configured_partitions} (the same partition either way)")


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A declared topic whose real partition count differs from the config's."""

    topic: str
    declared: int
    actual: int
    where: str

    def __str__(self) -> str:
        return (f"topic {self.topic!r} has {partitions_text(self.actual)} but {self.where} says "
                f"{self.declared}: channels are routed by the real count (hash(key) % "
                f"{self.actual}); fix the mapping or the topic")


def partition_for(strategy: TopicStrategy, key: bytes, partitions: int) -> int:
    """The partition ``strategy`` sends ``key`` to in a topic of ``partitions`` partitions
    (its partitioner; murmur2 for a strategy without one), as Kafka clients compute it."""
    func = getattr(strategy, "partition_for", None)
    return int(func(key, partitions)) if func is not None else murmur2_partition(key,
                                                                                 partitions)


def real_routes(settings: KafkaSettings, channels: Iterable[str],
                admin: KafkaAdmin) -> list[RealRoute]:
    """The route of each channel by its topic's real partition count (InvalidChannel for a
    bad name; BrokerUnavailable when the cluster cannot be asked)."""
    strategy = create_strategy(settings)
    routes = [(c, strategy.route(validate_channel(c))) for c in channels]
    counts = {t: n for t, (n, _epoch) in admin.layouts({r.topic for _c, r in routes}).items()}
    declared = {spec.name: spec.partitions for spec in strategy.topics([c for c, _r in routes])}
    out = []
    for channel, r in routes:
        count = counts.get(r.topic)
        partition = r.partition
        if count is not None:
            partition = partition_for(strategy, r.key, count)
        out.append(RealRoute(channel, r.topic, partition, r.key.decode(), r.partition, count,
                             declared.get(r.topic, count or 0)))
    return out


@dataclass(frozen=True, slots=True)
class MissingTopic:
    """A declared topic the cluster does not have (yet): not an error, since channelcast
    creates its declared topics when it starts, but a fact worth showing."""

    topic: str
    declared: int
    where: str

    def __str__(self) -> str:
        return (f"topic {self.topic!r} does not exist; channelcast creates it with "
                f"{partitions_text(self.declared)} on first use, or run `channelcast topics "
                "apply`")


@dataclass(frozen=True, slots=True)
class LayoutReport:
    """The declared topics against one cluster: ``matching`` (names with the configured
    count), ``disagreements`` (a wrong count: routes differ) and ``missing`` topics."""

    matching: tuple[str, ...]
    disagreements: tuple[Disagreement, ...]
    missing: tuple[MissingTopic, ...]


def _declared(settings: KafkaSettings) -> dict[str, tuple[int, str]]:
    declared: dict[str, tuple[int, str]] = {
        settings.default_topic: (settings.default_partitions, "kafka.default_partitions")}
    for m in settings.topic_mapping:
        declared.setdefault(m.topic, (m.partitions,
                                      f'kafka.topic_mapping."{m.pattern}".partitions'))
    return declared


def layout_report(settings: KafkaSettings, admin: KafkaAdmin) -> LayoutReport:
    """Every declared topic (topic mapping, default topic), in declaration order, as
    matching, disagreeing or missing on the cluster (BrokerUnavailable if it cannot be
    asked)."""
    declared = _declared(settings)
    layouts = admin.layouts(declared)
    matching, wrong, missing = [], [], []
    for topic, (count, where) in declared.items():
        if topic not in layouts:
            missing.append(MissingTopic(topic, count, where))
        elif layouts[topic][0] != count:
            wrong.append(Disagreement(topic, count, layouts[topic][0], where))
        else:
            matching.append(topic)
    return LayoutReport(tuple(matching), tuple(wrong), tuple(missing))


def layout_disagreements(settings: KafkaSettings, admin: KafkaAdmin) -> list[Disagreement]:
    """Declared topics (topic mapping, default topic) that exist with another partition
    count than the config says."""
    return list(layout_report(settings, admin).disagreements)
