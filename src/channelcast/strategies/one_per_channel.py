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


def _glob_to_topic_regex(pattern: str) -> str:
    """A channel glob -> a regex over legacy topic names (``user.[12]*`` -> ``user_[12].*``).

    Characters are mapped the way channel names are (outside ``[A-Za-z0-9]`` -> ``_``), so
    the regex may match a few more topics than the glob matches channels: consumers
    still filter by channel.
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        end = pattern.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif end != -1:
            body = pattern[i + 1:end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            chars = "".join(
                "-" if ch == "-" and 0 < j < len(body) - 1 else _safe(ch)
                for j, ch in enumerate(body))
            if negate:
                # Excluding "_" would also exclude every channel character mapped onto it.
                chars = chars.replace("_", "")
                out.append(f"[^{chars}]" if chars.strip("-") else ".")
            else:
                out.append(f"[{chars}]")
            i = end
        else:
            out.append(_safe(c))
        i += 1
    return "".join(out)
