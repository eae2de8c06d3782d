"""Acceptance: 1,000 channels x 100 messages, interleaved; fan-out keeps per-channel order."""

from __future__ import annotations

import asyncio
import time

import pytest

from channelcast.brokers.kafka import KafkaBroker, KafkaSubscription
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.message import Envelope
from channelcast.types import ChannelName, Position
from tests.kafka.helpers.support import settings_for

CHANNELS = 1000
PER_CHANNEL = 100


async def collect(sub: KafkaSubscription, total: int,
                  where: dict[tuple[str, int], Position] | None = None) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    count = 0
    async for record in sub:
        seen.setdefault(record.channel, []).append(record.envelope.data)
        if where is not None:
            where[(record.channel, record.envelope.data)] = record.position
        count += 1
        if count == total:
            break
    return seen


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_interleaved_channels_arrive_complete_and_in_order(
        kafka_bootstrap: str, unique: str) -> None:
    settings = settings_for(kafka_bootstrap, unique, partitions=8)
    channels = [f"chan.{i}" for i in range(CHANNELS)]
    total = CHANNELS * PER_CHANNEL
    async with KafkaBroker(settings) as publisher, KafkaBroker(settings) as second:
        # Two independent subscribers (two brokers = two fan-out consumers), plus one
        # narrow subscription that shares the first broker's consumer.
        wide_one = publisher.subscribe(channels)
        wide_two = second.subscribe(channels)
        narrow = publisher.subscribe(channels[:10])
        for sub in (wide_one, wide_two, narrow):
            await sub.ready()
        stored_at: dict[tuple[str, int], Position] = {}
        acked_at: dict[tuple[str, int], Position] = {}
        tasks = [asyncio.create_task(collect(wide_one, total, stored_at)),
                 asyncio.create_task(collect(wide_two, total)),
                 asyncio.create_task(collect(narrow, 10 * PER_CHANNEL))]
        started = time.perf_counter()
        for seq in range(0, PER_CHANNEL, 10):  # 10 rounds of 10,000 interleaved messages
            batch = [Envelope(channel=ChannelName(c), event="n", data=s)
                     for s in range(seq, seq + 10) for c in channels]
            positions = await publisher.publish_many(batch)
            acked_at.update(((e.channel, e.data), p) for e, p in zip(batch, positions, strict=True))
        published = time.perf_counter() - started
        results = await asyncio.wait_for(asyncio.gather(*tasks), 180)
        received = time.perf_counter() - started
        for sub in (wide_one, wide_two, narrow):
            await sub.close()
    print(f"\n{total} messages: published in {published:.1f}s, all received in {received:.1f}s")
    expected = list(range(PER_CHANNEL))
    for seen in results[:2]:
        assert len(seen) == CHANNELS
        bad = [c for c in channels if seen.get(c) != expected]
        assert not bad, f"{len(bad)} channels out of order or incomplete, e.g. {bad[0]}"
    assert acked_at == stored_at  # publish_many reported where each message really is
    assert set(results[2]) == set(channels[:10])
    assert all(v == expected for v in results[2].values())
    KafkaAdmin(kafka_bootstrap).delete_topics([settings.default_topic])
