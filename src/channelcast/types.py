"""Small shared names: what a channel, topic and position are."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NewType, TypeAlias

ChannelName = NewType("ChannelName", str)
TopicName = NewType("TopicName", str)

JSONValue: TypeAlias = Any
"""Anything ``json.dumps`` accepts; checked at publish time, not by the type system."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a message lives in the log: topic, partition and offset.

    Text form ``topic:partition:offset`` (used as the SSE event id and in the protocol).
    """

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """``topic:partition:offset`` -> Position; raises InvalidPosition on anything else.

        Strict on purpose (the text comes from clients): the topic must be a legal Kafka
        topic name, partition and offset plain non-negative ASCII decimals, no whitespace.
        """
        from channelcast.errors import InvalidPosition

        match = _POSITION.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidPosition(
                f"not a position (want topic:partition:offset): {str(text)[:80]!r}")
        topic, partition, offset = match.groups()
        # Kafka partitions are Java ints, offsets Java longs.
        if int(partition) >= 2**31 or int(offset) >= 2**63:
            raise InvalidPosition(f"position {text[:80]!r} is out of range")
        return cls(topic, int(partition), int(offset))


# Kafka topic names are 1-249 characters of A-Z a-z 0-9 . _ - (so never a colon).
_POSITION = re.compile(r"([A-Za-z0-9._\-]{1,249}):([0-9]{1,10}):([0-9]{1,19})")
