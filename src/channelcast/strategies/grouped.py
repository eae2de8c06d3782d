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

    def partition_for(self, key: bytes, partitions: int) -> int:
        """The partition of ``key`` in a topic of ``partitions`` partitions (the broker uses
        the topic's real count when it differs from the configured one)."""
        return self.partitioner(key, partitions)

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
        """Topics holding every channel a pattern can match.

        First match wins, so a pattern equal to rule N may also catch channels of an
        earlier rule; those topics are added unless the two patterns provably cannot
        match the same channel. A pattern no rule covers also needs the default topic.
        """
        out: set[str] = set()
        for pattern in patterns:
            if not is_glob(pattern):
                out.add(self.route(ChannelName(pattern)).topic)
                continue
            covered = False
            for rule in self.rules:
                if _may_overlap(pattern, rule.pattern):
                    out.add(rule.topic)
                if _covers(rule.pattern, pattern):
                    covered = True
                    break
            if not covered:
                out.add(self.default.name)
        return frozenset(out)


def _literal_ends(pattern: str) -> tuple[str, str]:
    """The literal text before the first and after the last glob character."""
    globs = [i for i, c in enumerate(pattern) if c in "*?[]"]
    if not globs:
        return pattern, pattern
    return pattern[:globs[0]], pattern[globs[-1] + 1:]


def _may_overlap(a: str, b: str) -> bool:
    """False only when no channel can match both globs (their literal ends disagree)."""
    a_head, a_tail = _literal_ends(a)
    b_head, b_tail = _literal_ends(b)
    heads_agree = a_head.startswith(b_head) or b_head.startswith(a_head)
    tails_agree = a_tail.endswith(b_tail) or b_tail.endswith(a_tail)
    return heads_agree and tails_agree


def _covers(rule: str, pattern: str) -> bool:
    """True when every channel matching ``pattern`` also matches ``rule``."""
    if rule == pattern:
        return True
    head = rule[:-1]
    # "prefix*" covers any pattern whose literal head starts with that prefix.
    return rule.endswith("*") and not is_glob(head) and _literal_ends(pattern)[0].startswith(head)
