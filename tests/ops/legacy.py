"""Helpers that fill legacy one-per-channel topics with known, interleaved messages."""

from __future__ import annotations

import random
from collections import defaultdict

from channelcast.brokers.base import HEADER_CHANNEL, HEADER_EVENT, HEADER_ID
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.brokers.kafka.reader import LogWriter, read_ranges
from channelcast.message import Envelope, decode, encode
from channelcast.strategies import TopicSpec, legacy_topic_name
from channelcast.types import ChannelName, TopicName


def legacy_channels(count: int) -> list[str]:
    """Mostly user.* channels, some public.* and some that only the default topic takes."""
    names = []
    for i in range(count):
        kind = ("user", "public", "misc")[i % 3]
        names.append(f"{kind}.{i}")
    return names


def fill_legacy(admin: KafkaAdmin, prefix: str, channels: list[str], messages: int,
                cleanup: list[str], seed: int = 7) -> dict[str, list[str]]:
    """Create one single-partition topic per channel, write ``messages`` interleaved
    envelopes (random channel each time) and return the ids per channel in order."""
    topics = {c: legacy_topic_name(prefix, c) for c in channels}
    cleanup.extend(topics.values())
    admin.create_topics([TopicSpec(TopicName(t), 1, 1) for t in topics.values()])
    rng = random.Random(seed)
    ids: dict[str, list[str]] = defaultdict(list)
    with LogWriter(admin.bootstrap, timeout_s=30) as writer:
        for n in range(messages):
            channel = rng.choice(channels)
            env = Envelope(ChannelName(channel), "tick", {"seq": len(ids[channel]), "n": n})
            ids[channel].append(env.id)
            writer.write(topics[channel], 0, channel.encode(), encode(env),
                         [(HEADER_CHANNEL, channel.encode()), (HEADER_EVENT, b"tick"),
                          (HEADER_ID, env.id.encode())])
            if n % 2000 == 1999:
                writer.flush()
        writer.flush()
    return dict(ids)


def read_targets(admin: KafkaAdmin, topics: list[str]) -> dict[str, list[tuple[str, int]]]:
    """Every envelope in the target topics: channel -> [(id, seq)] in log order; also
    checks that each message sits on the partition its key says."""
    marks = {(w.topic, w.partition): (w.low, w.high) for w in admin.watermarks(topics)}
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    where: dict[str, tuple[str, int]] = {}
    for msg in read_ranges(admin.bootstrap, marks, timeout_s=30):
        env = decode(msg.value)
        assert msg.key == env.channel.encode()
        assert msg.header(HEADER_ID) == env.id
        assert where.setdefault(env.channel, (msg.topic, msg.partition)) == (
            msg.topic, msg.partition), f"channel {env.channel} is on two partitions"
        out[env.channel].append((env.id, env.data["seq"]))
    return dict(out)
