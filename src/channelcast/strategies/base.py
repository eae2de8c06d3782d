"""The topic-strategy contract: channel -> frozen Route; the topics a deployment needs.

Also the settings a strategy is built from, as a protocol (:class:`StrategySettings`):
strategies read those few attributes and never import :mod:`channelcast.config`, which
imports them (to check a strategy at load time), so the arrow runs one way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from channelcast.types import ChannelName, TopicName


@dataclass(frozen=True, slots=True)
class Route:
    """Where a channel's messages go. ``key`` is the channel as UTF-8 (the message key)."""

    topic: TopicName
    partition: int
    key: bytes


def partitions_text(count: int) -> str:
    """``"1 partition"``, ``"4 partitions"``: a partition count in a message."""
    return f"{count} partition" if count == 1 else f"{count} partitions"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic the strategy needs, for provisioning."""

    name: TopicName
    partitions: int
    replication_factor: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class TopicStrategy(Protocol):
    """Maps channels onto topics and partitions. Implementations are pure and thread-safe.

    Optional: ``partition_for(key: bytes, partitions: int) -> int``, the partition of a key
    in a topic of a given size. Brokers route by a topic's *real* partition count, as every
    Kafka client does; when it differs from what ``route`` assumed they call it (or, if a
    strategy lacks it, Kafka's default murmur2 partitioner).
    """

    name: str

    def route(self, channel: ChannelName) -> Route:
        """The topic, partition and key for one channel."""
        ...

    def topics(self, channels: Iterable[str] = ()) -> list[TopicSpec]:
        """Every topic needed: the declared ones plus those the given channels map to."""
        ...

    def topics_for(self, channels: Iterable[str]) -> frozenset[TopicName]:
        """The distinct topics a set of channels lives in (for subscribing)."""
        ...

    def subscription_topics(self, patterns: Iterable[str]) -> frozenset[str]:
        """Topics a consumer group needs for channel glob patterns.

        An entry starting with ``^`` is a topic regex (librdkafka's convention). The result
        may be wider than the patterns: consumers still filter by channel.
        """
        ...


class MappingRow(Protocol):
    """One row of a pattern table (``channelcast.config.TopicMapping`` is one)."""

    @property
    def pattern(self) -> str: ...
    @property
    def topic(self) -> TopicName: ...
    @property
    def partitions(self) -> int: ...
    @property
    def replication_factor(self) -> int | None: ...
    @property
    def config(self) -> Mapping[str, str]: ...


class StrategySettings(Protocol):
    """What building a strategy reads (``channelcast.config.KafkaSettings`` is one).

    Names and partition counts as in the ``[kafka]`` config section; ``topic_strategy``
    and ``partitioner`` are registry names or ``package.module:Name`` import paths.
    """

    @property
    def topic_strategy(self) -> str: ...
    @property
    def topic_prefix(self) -> str: ...
    @property
    def default_topic(self) -> str: ...
    @property
    def default_partitions(self) -> int: ...
    @property
    def replication_factor(self) -> int: ...
    @property
    def topic_mapping(self) -> Sequence[MappingRow]: ...
    @property
    def partitioner(self) -> str: ...


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")
