"""The cluster's topics against the config: real partition counts and the routes they give.

Kafka clients route a key by the topic's *real* partition count (``hash(key) % count``),
and so does channelcast's broker. When a topic was created with another count than the
config declares, the config's routes are wrong for it: :func:`layout_disagreements` lists
those topics (``channelcast config check --bootstrap``) and :func:`real_routes` gives the
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

if TYPE_CHECKING:
    from channelcast.brokers.kafka.admin import KafkaAdmin
    from channelcast.config import KafkaSettings


@dataclass(frozen=True, slots=True)
class RealRoute:
    """Where a channel's messages go on this cluster. ``configured_partition`` is what the
    config alone says; ``partitions`` is the topic's real count (None: no such topic)."""

    channel: str
    topic: str
    partition: int
    key: str
    configured_partition: int
    partitions: int | None


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A declared topic whose real partition count differs from the config's."""

    topic: str
    declared: int
    actual: int
    where: str

    def __str__(self) -> str:
        return (f"topic {self.topic!r} has {self.actual} partitions but {self.where} says "
                f"{self.declared}: channels are routed by the real count (hash(key) % "
                f"{self.actual}); fix the mapping or the topic")


def _partition_for(strategy: TopicStrategy, key: bytes, partitions: int) -> int:
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
    out = []
    for channel, r in routes:
        count = counts.get(r.topic)
        partition = r.partition
        if count is not None:
            partition = _partition_for(strategy, r.key, count)
        out.append(RealRoute(channel, r.topic, partition, r.key.decode(), r.partition, count))
    return out


def layout_disagreements(settings: KafkaSettings, admin: KafkaAdmin) -> list[Disagreement]:
    """Declared topics (topic mapping, default topic) that exist with another partition
    count than the config says."""
    declared: dict[str, tuple[int, str]] = {
        settings.default_topic: (settings.default_partitions, "kafka.default_partitions")}
    for m in settings.topic_mapping:
        declared.setdefault(m.topic, (m.partitions,
                                      f'kafka.topic_mapping."{m.pattern}".partitions'))
    layouts = admin.layouts(declared)
    return [Disagreement(topic, count, layouts[topic][0], where)
            for topic, (count, where) in declared.items()
            if topic in layouts and layouts[topic][0] != count]
