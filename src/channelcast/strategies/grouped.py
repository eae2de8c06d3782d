"""The grouped strategy: an ordered table of glob patterns onto a few partitioned topics.

The first matching pattern wins; unmatched channels go to the default topic. The key is
the channel, the partition is ``partitioner(key) % partitions``, so one channel always
lives on one partition and keeps its order.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from channelcast.strategies.base import Route, TopicSpec, is_glob
from channelcast.strategies.partitioners import Partitioner, murmur2_partition
from channelcast.types import ChannelName, TopicName


@dataclass(frozen=True, slots=True)
class TopicRule:
    """One row of the mapping: channels matching ``pattern`` go to ``topic``."""

    pattern: str
    topic: TopicName
    partitions: int
    replication_factor: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)

    def regex(self) -> re.Pattern[str]:
        return re.compile(fnmatch.translate(self.pattern))


class GroupedTopics:
    name = "grouped"

    def __init__(
        self,
        rules: Sequence[TopicRule],
        default: TopicSpec,
        partitioner: Partitioner = murmur2_partition,
    ) -> None:
        self.rules = tuple(rules)
        self.default = default
        self.partitioner = partitioner
        self._compiled = [(r.regex(), r) for r in self.rules]
        self.route = lru_cache(maxsize=65536)(self._route)  # type: ignore[method-assign]

    def rule_for(self, channel: str) -> TopicRule | None:
        for regex, rule in self._compiled:
            if regex.match(channel):
                return rule
        return None

    def _route(self, channel: ChannelName) -> Route:
        rule = self.rule_for(channel)
        topic, partitions = (rule.topic, rule.partitions) if rule else (
            self.default.name, self.default.partitions)
        key = channel.encode()
        return Route(topic, self.partitioner(key, partitions), key)

    def route(self, channel: ChannelName) -> Route:  # replaced by the cached bound method
        return self._route(channel)

    def topics(self, channels: Iterable[str] = ()) -> list[TopicSpec]:
        specs: dict[str, TopicSpec] = {}
        for rule in self.rules:
            specs.setdefault(rule.topic, TopicSpec(rule.topic, rule.partitions,
                                                   rule.replication_factor, rule.config))
        specs.setdefault(self.default.name, self.default)
        return list(specs.values())

    def topics_for(self, channels: Iterable[str]) -> frozenset[TopicName]:
        return frozenset(self.route(ChannelName(c)).topic for c in channels)

    def subscription_topics(self, patterns: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        by_pattern = {r.pattern: r.topic for r in self.rules}
        for pattern in patterns:
            if pattern in by_pattern:
                out.add(by_pattern[pattern])
            elif not is_glob(pattern):
                out.add(self.route(ChannelName(pattern)).topic)
            else:
                out.update(spec.name for spec in self.topics())
        return frozenset(out)
