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


async def test_a_full_subscription_never_makes_publish_wait_and_catches_up() -> None:
    async with MemoryBroker() as broker:
        sub = broker.subscribe(["room.1"], max_queue=2)
        other = broker.subscribe(["room.2"], max_queue=2)
        for i in range(1, 6):  # fills its queue after 2: publish must not wait
            await asyncio.wait_for(broker.publish("room.1", "e", i), 1)
        assert sub.lagging
        await broker.publish("room.2", "e", "other")
        assert (await asyncio.wait_for(other.__anext__(), 1)).envelope.data == "other"
        # Nothing dropped: the reader gets the queued ones, then the missed ones from the
        # history, then live ones again.
        got = [(await asyncio.wait_for(sub.__anext__(), 1)).envelope.data for _ in range(5)]
        assert got == [1, 2, 3, 4, 5]
        assert not sub.lagging
        await broker.publish("room.1", "e", 6)
        assert (await asyncio.wait_for(sub.__anext__(), 1)).envelope.data == 6
        await sub.close()
        await other.close()


async def test_a_subscription_behind_the_history_says_so() -> None:
    async with MemoryBroker(history_size=3) as broker:
        sub = broker.subscribe(["room.1"], max_queue=1)
        for i in range(10):  # it holds 1; the history keeps 3: offsets 1..6 are gone
            await broker.publish("room.1", "e", i)
        assert (await sub.__anext__()).envelope.data == 0
        with pytest.raises(HistoryUnavailable, match=r"fell behind at .*:1 "):
            await sub.__anext__()
        await broker.publish("room.1", "e", "live")
        assert (await asyncio.wait_for(sub.__anext__(), 1)).envelope.data == "live"
        await sub.close()


async def test_history_is_bounded_by_bytes_too() -> None:
    async with MemoryBroker(history_size=1000, history_bytes=10_000) as broker:
        first = await broker.publish("room.1", "e", "x" * 3000)
        for _ in range(5):
            await broker.publish("room.1", "e", "x" * 3000)
        low, high = broker.watermarks(first.topic, first.partition)
        assert (low, high) == (3, 6)  # three ~3 KB messages fit in 10,000 bytes
        with pytest.raises(HistoryUnavailable, match="oldest kept offset is 3"):
            await broker.history("room.1", first)


async def test_positions_carry_the_run_and_another_run_cannot_recover() -> None:
    async with MemoryBroker() as first_run:
        kept = await first_run.publish("news.r", "e", 1)
    assert kept.epoch == first_run.epoch
    assert str(kept).endswith(f"@{first_run.epoch}")
    async with MemoryBroker() as second_run:
        for i in range(8):
            await second_run.publish("news.r", "e", i)
        assert second_run.epoch != first_run.epoch
        with pytest.raises(HistoryUnavailable, match="another run of the memory broker"):
            await second_run.history("news.r", kept)
        # A position without an epoch (written before epochs existed) still works.
        legacy = kept.__class__(kept.topic, kept.partition, 4)
        assert len(await second_run.history("news.r", legacy)) == 3


async def test_reserved_events_are_refused_and_no_subscriber_sees_them() -> None:
    async with MemoryBroker() as broker:
        sub = broker.subscribe(["room.1"])
        internal = broker.subscribe(["room.1"], include_internal=True)
        with pytest.raises(MessageError, match="reserved"):
            await broker.publish("room.1", "channelcast:presence", {"op": "join"})
        with pytest.raises(MessageError, match="reserved"):
            await broker.publish_many([Envelope(ChannelName("room.1"), "ok", 1),
                                       Envelope(ChannelName("room.1"), "channelcast:x", 2)])
        assert (await broker.end_position("room.1")).offset == -1
        # The internal route: the gateway's presence operations, marked by a header.
        start = await broker.end_position("room.1")
        await broker.publish_many([Envelope(ChannelName("room.1"), "channelcast:presence",
                                            {"op": "sync"}, type=INTERNAL)])
        await broker.publish("room.1", "ok", "after")
        got = await asyncio.wait_for(internal.__anext__(), 1)
        assert (got.envelope.event, got.envelope.type, got.internal) == (
            "channelcast:presence", INTERNAL, True)
        assert got.headers["channelcast.internal"] == "1"
        # Left out of every consumer API unless asked for.
        assert (await asyncio.wait_for(sub.__anext__(), 1)).envelope.data == "after"
        assert [r.envelope.data for r in await broker.history("room.1", start)] == ["after"]
        assert len(await broker.history("room.1", start, include_internal=True)) == 2
        await sub.close()
        await internal.close()


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
