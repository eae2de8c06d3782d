"""Memory-broker specifics the contract suite cannot express: bounded history,
backpressure, regex (legacy) topic subscriptions, and picking backends by URL."""

from __future__ import annotations

import asyncio

import pytest

from channelcast.brokers import create_broker
from channelcast.brokers.memory import MemoryBroker
from channelcast.config import KafkaSettings, Settings
from channelcast.errors import ConfigError, HistoryUnavailable, MessageError
from channelcast.message import INTERNAL, Envelope, Record
from channelcast.strategies import OneTopicPerChannel
from channelcast.types import ChannelName


async def test_bounded_history_drops_the_oldest() -> None:
    async with MemoryBroker(history_size=5) as broker:
        positions = [await broker.publish("room.1", "e", i) for i in range(8)]
        assert [r.envelope.data for r in await broker.history("room.1", positions[2])] \
            == [3, 4, 5, 6, 7]
        with pytest.raises(HistoryUnavailable, match="oldest kept offset is 3"):
            await broker.history("room.1", positions[0])
        sub = broker.subscribe(["room.1"], since={"room.1": positions[0]})
        with pytest.raises(HistoryUnavailable):
            await sub.__anext__()
        live = await broker.publish("room.1", "e", "live")
        assert (await sub.__anext__()).position == live
        await sub.close()


async def test_a_full_subscription_makes_publish_wait() -> None:
    async with MemoryBroker() as broker:
        sub = broker.subscribe(["room.1"], max_queue=2)
        await broker.publish("room.1", "e", 1)
        await broker.publish("room.1", "e", 2)
        third = asyncio.create_task(broker.publish("room.1", "e", 3))
        await asyncio.sleep(0.05)
        assert not third.done()  # backpressure, nothing dropped
        assert (await sub.__anext__()).envelope.data == 1
        await asyncio.wait_for(third, 1)
        assert [(await sub.__anext__()).envelope.data for _ in range(2)] == [2, 3]
        await sub.close()


async def test_reserved_events_are_refused_and_no_subscriber_sees_them() -> None:
    async with MemoryBroker() as broker:
        sub = broker.subscribe(["room.1"])
        with pytest.raises(MessageError, match="reserved"):
            await broker.publish("room.1", "channelcast:presence", {"op": "join"})
        with pytest.raises(MessageError, match="reserved"):
            await broker.publish_many([Envelope(ChannelName("room.1"), "ok", 1),
                                       Envelope(ChannelName("room.1"), "channelcast:x", 2)])
        assert (await broker.end_position("room.1")).offset == -1
        # The internal route: the gateway's presence operations.
        await broker.publish_many([Envelope(ChannelName("room.1"), "channelcast:presence",
                                            {"op": "sync"}, type=INTERNAL)])
        got = await asyncio.wait_for(sub.__anext__(), 1)
        assert (got.envelope.event, got.envelope.type) == ("channelcast:presence", INTERNAL)
        await sub.close()


async def test_glob_workers_find_legacy_topics_created_later() -> None:
    async with MemoryBroker(OneTopicPerChannel("legacy")) as broker:
        seen: list[Record] = []

        async def handle(record: Record) -> None:
            seen.append(record)

        worker = broker.worker("g", channels={"user.*": handle})
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.05)
        await broker.publish("user.1", "e", 1)  # its topic did not exist when run() began
        await broker.publish("other.1", "e", 2)  # a topic the pattern does not cover
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        await worker.stop()
        await task
    assert [(r.position.topic, r.envelope.data) for r in seen] == [("legacy_user_1", 1)]


def test_backends_are_picked_by_url() -> None:
    settings = Settings(kafka=KafkaSettings(default_topic="t", default_partitions=3))
    memory = create_broker(settings, "memory://")
    assert isinstance(memory, MemoryBroker)
    assert memory.strategy.route("x").topic == "t"  # type: ignore[arg-type]
    kafka = create_broker(settings, "kafka://10.0.0.1:9092,10.0.0.2:9092")
    assert type(kafka).__name__ == "KafkaBroker"
    assert kafka.settings.brokers == "10.0.0.1:9092,10.0.0.2:9092"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="unknown broker URL"):
        create_broker(settings, "redis://localhost")
