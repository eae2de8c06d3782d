"""The legacy strategy: one single-partition topic per channel.

``user.1`` -> ``realtime_user_1``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from functools import lru_cache

from channelcast.channels import CHANNEL_CHARACTERS
from channelcast.strategies.base import Route, TopicSpec, is_glob
from channelcast.strategies.partitioners import murmur2_partition
from channelcast.types import ChannelName, TopicName

_UNSAFE = re.compile(r"[^A-Za-z0-9]")


def legacy_topic_name(prefix: str, channel: str) -> TopicName:
    return TopicName(f"{prefix}_{_UNSAFE.sub('_', channel)}")


class OneTopicPerChannel:
    """Topic ``{prefix}_{channel}`` with every character outside ``[A-Za-z0-9]`` as ``_``."""

    name = "one-per-channel"

    def __init__(self, prefix: str = "realtime", replication_factor: int | None = None) -> None:
        self.prefix = prefix
        self.replication_factor = replication_factor
        self.route = lru_cache(maxsize=65536)(self._route)  # type: ignore[method-assign]

    def _route(self, channel: ChannelName) -> Route:
        return Route(legacy_topic_name(self.prefix, channel), 0, channel.encode())

    def route(self, channel: ChannelName) -> Route:  # replaced by the cached bound method
        return self._route(channel)

    def partition_for(self, key: bytes, partitions: int) -> int:
        """A legacy topic someone gave more than one partition: Kafka's default
        partitioner (murmur2), as a Java producer keyed by the channel would pick."""
        return murmur2_partition(key, partitions)

    def topics(self, channels: Iterable[str] = ()) -> list[TopicSpec]:
        names = sorted({legacy_topic_name(self.prefix, c) for c in channels})
        return [TopicSpec(n, 1, self.replication_factor) for n in names]

    def topics_for(self, channels: Iterable[str]) -> frozenset[TopicName]:
        return frozenset(legacy_topic_name(self.prefix, c) for c in channels)

    def subscription_topics(self, patterns: Iterable[str]) -> frozenset[str]:
        """Exact topic names, or a ``^regex$`` (librdkafka's convention) for a glob."""
        out: set[str] = set()
        for pattern in patterns:
            if not is_glob(pattern):
                out.add(legacy_topic_name(self.prefix, pattern))
            else:
                out.add(f"^{re.escape(self.prefix)}_{_glob_to_topic_regex(pattern)}$")
        return frozenset(out)


def _safe(c: str) -> str:
    return c if c.isascii() and c.isalnum() else "_"


def _class_end(pattern: str, i: int) -> int:
    """Index of the ``]`` closing the bracket expression at ``pattern[i]``, or -1 when
    fnmatch would read that ``[`` as a literal (the same scan as ``fnmatch.translate``)."""
    j = i + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    return pattern.find("]", j)


def _glob_to_topic_regex(pattern: str) -> str:
    """A channel glob -> a regex over legacy topic names (``user.[12]*`` -> ``user_[12].*``).

    Characters are mapped the way channel names are (outside ``[A-Za-z0-9]`` -> ``_``), so
    the regex may match a few more topics than the glob matches channels: consumers
    still filter by channel. A bracket expression becomes the class of the mapped
    characters of every channel character it matches (asked of fnmatch itself).
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        end = _class_end(pattern, i) if c == "[" else -1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif end != -1:
            bracket = pattern[i:end + 1]
            chars = sorted({_safe(ch) for ch in CHANNEL_CHARACTERS
                            if fnmatch.fnmatchcase(ch, bracket)})
            # No channel character matches: "!" never occurs in a topic name.
            out.append(f"[{_ranges(chars)}]" if chars else "!")
            i = end
        else:
            out.append(_safe(c))
        i += 1
    return "".join(out)


def _ranges(chars: list[str]) -> str:
    """Sorted class characters, runs of three or more written as ranges (``0-9``)."""
    out: list[str] = []
    start = 0
    for k in range(1, len(chars) + 1):
        if k == len(chars) or ord(chars[k]) != ord(chars[k - 1]) + 1:
            run = chars[start:k]
            out.append(f"{run[0]}-{run[-1]}" if len(run) >= 3 else "".join(run))
            start = k
    return "".join(out)
