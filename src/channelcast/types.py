"""Small shared names: what a channel, topic and position are."""

from __future__ import annotations

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
        from channelcast.errors import InvalidPosition

        topic, sep, rest = text.rpartition(":")
        topic2, sep2, part = topic.rpartition(":")
        try:
            if not sep or not sep2 or not topic2:
                raise ValueError(text)
            return cls(topic2, int(part), int(rest))
        except ValueError as exc:
            raise InvalidPosition(
                f"not a position (want topic:partition:offset): {text!r}") from exc
