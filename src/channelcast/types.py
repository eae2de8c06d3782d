"""Small shared names: what a channel, topic and position are."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NewType, TypeAlias

ChannelName = NewType("ChannelName", str)
TopicName = NewType("TopicName", str)

JSONValue: TypeAlias = Any
"""Anything ``json.dumps`` accepts; checked at publish time, not by the type system."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a message lives in the log: topic, partition, offset, and the log's epoch.

    Text form ``topic:partition:offset`` or, with an epoch, ``topic:partition:offset@epoch``
    (used as the SSE event id and in the protocol). Offset ``-1`` means "before the first
    message" (what a channel without messages reports).

    ``epoch`` names the incarnation of the log the offset belongs to: on Kafka the first 11
    characters of the topic's id (URL-safe base64; a deleted and recreated topic gets a new
    id, KIP-516), on the memory broker a random id per broker instance. Offsets of another
    epoch say nothing about this log, so recovery from them fails instead of guessing.
    ``None`` (positions written before epochs existed) means "unknown". The epoch takes no
    part in comparisons: two positions are equal and ordered by topic, partition, offset.
    """

    topic: str
    partition: int
    offset: int
    epoch: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.epoch is None:
            return f"{self.topic}:{self.partition}:{self.offset}"
        return f"{self.topic}:{self.partition}:{self.offset}@{self.epoch}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """``topic:partition:offset[@epoch]`` -> Position; raises InvalidPosition on anything
        else.

        Strict on purpose (the text comes from clients): the topic must be a legal Kafka
        topic name, partition and offset plain ASCII decimals (the offset may be ``-1``),
        the epoch 1-32 characters of ``A-Z a-z 0-9 _ -``, no whitespace.
        """
        from channelcast.errors import InvalidPosition

        match = _POSITION.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidPosition(
                "not a position (want topic:partition:offset or "
                f"topic:partition:offset@epoch): {str(text)[:80]!r}")
        topic, partition, offset, epoch = match.groups()
        # Kafka partitions are Java ints, offsets Java longs.
        if int(partition) >= 2**31 or int(offset) >= 2**63:
            raise InvalidPosition(f"position {text[:80]!r} is out of range")
        return cls(topic, int(partition), int(offset), epoch)


# Kafka topic names are 1-249 characters of A-Z a-z 0-9 . _ - (so never a colon or an @).
_POSITION = re.compile(
    r"([A-Za-z0-9._\-]{1,249}):([0-9]{1,10}):(-1|[0-9]{1,19})(?:@([A-Za-z0-9_\-]{1,32}))?")
