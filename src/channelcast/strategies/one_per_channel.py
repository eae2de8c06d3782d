"""The legacy strategy: one single-partition topic per channel.

``user.1`` -> ``realtime_user_1``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from channelcast.strategies.base import Route, TopicSpec, is_glob
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

    def topics(self, channels: Iterable[str] = ()) -> list[TopicSpec]:
        names = sorted({legacy_topic_name(self.prefix, c) for c in channels})
        return [TopicSpec(n, 1, self.replication_factor) for n in names]

    def topics_for(self, channels: Iterable[str]) -> frozenset[TopicName]:
        return frozenset(legacy_topic_name(self.prefix, c) for c in channels)

    def subscription_topics(self, patterns: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        for pattern in patterns:
            if not is_glob(pattern):
                out.add(legacy_topic_name(self.prefix, pattern))
                continue
            body = "".join(".*" if c == "*" else "." if c == "?" else
                           c if c.isascii() and c.isalnum() else "_" for c in pattern)
            out.add(f"^{re.escape(self.prefix)}_{body}$")
        return frozenset(out)
