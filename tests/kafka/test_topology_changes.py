"""Issue 12 cases 2, 3 and 6 on real Kafka: a running gateway follows what happens to its
topics (growth, deletion and recreation), and never answers with silence.

2. Partition growth while a gateway runs: its client receives what a publisher with the
   new layout writes to the channel's new partition.
3. A topic deleted and recreated: a position of the old topic gives ``recovered: false``
   plus ``recovery_failed``, never a replay from the new topic's offsets.
6. A topic deleted while running: publishing fails at once with an error naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from channelcast.brokers.kafka import KafkaBroker
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.config import Settings, TopicMapping
from channelcast.errors import PublishError
from channelcast.message import Record
from channelcast.strategies import murmur2_partition
from channelcast.types import TopicName
from tests.gateway.conftest import running_gateway, ws_client
from tests.kafka.helpers.support import settings_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


# Each keeps its AdminClient referenced until its futures are done: a client that is
# garbage-collected first destroys its handle and the request never completes.


def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = _admin(bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(60)
    KafkaAdmin(bootstrap).wait_for_topics({topic: partitions})


def _grow(bootstrap: str, topic: str, partitions: int) -> None:
    admin = _admin(bootstrap)
    admin.create_partitions([NewPartitions(topic, partitions)])[topic].result(60)
    KafkaAdmin(bootstrap).wait_for_topics({topic: partitions})


def _delete(bootstrap: str, *topics: str) -> None:
    admin = _admin(bootstrap)
    for future in admin.delete_topics(list(topics)).values():
        with contextlib.suppress(KafkaException):
            future.result(60)


def _wait_gone(bootstrap: str, topic: str) -> None:
    admin = KafkaAdmin(bootstrap)
    for _ in range(100):
        if topic not in admin.layouts([topic]):
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} still exists")


async def test_partition_growth_while_a_gateway_runs(
        kafka_bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    topic = f"g.events-{unique}"
    # A channel that lives in partition 5 of 10 and in one of the new partitions of 20.
    channel = next(c for c in (f"g.{i}" for i in range(10_000))
                   if murmur2_partition(c.encode(), 10) == 5
                   and murmur2_partition(c.encode(), 20) >= 10)
    _create(kafka_bootstrap, topic, 10)

    def settings(partitions: int) -> Settings:
        return Settings(kafka=settings_for(
            kafka_bootstrap, unique, metadata_refresh_s=1.0,
            topic_mapping=(TopicMapping("g.*", TopicName(topic), partitions),)))

    gateway_broker = KafkaBroker(settings(10).kafka)
    try:
        with caplog.at_level(logging.INFO, logger="channelcast.kafka"):
            async with running_gateway(settings(10), broker=gateway_broker) as gw, \
                    ws_client(gw.ws_url) as client:
                sub = await client.subscribe(channel)
                assert sub["data"]["position"].startswith(f"{topic}:5:")
                async with KafkaBroker(settings(10).kafka) as old_publisher:
                    await old_publisher.publish(channel, "e", "before")
                assert (await client.expect("message", 10))["data"] == "before"
                # Grow the topic as docs/operations.md says, then publish with the new layout.
                _grow(kafka_bootstrap, topic, 20)
                new_partition = murmur2_partition(channel.encode(), 20)
                async with KafkaBroker(settings(20).kafka) as publisher:
                    positions = [await publisher.publish(channel, "e", i) for i in range(5)]
                assert {p.partition for p in positions} == {new_partition}
                frames = [await client.expect("message", 30) for _ in range(5)]
                assert [f["data"] for f in frames] == list(range(5))
                assert all(f["position"].startswith(f"{topic}:{new_partition}:")
                           for f in frames)
        assert f"channel {channel} moved to {topic}:{new_partition}" in caplog.text
    finally:
        _delete(kafka_bootstrap, topic, f"acc-{unique}")


async def test_recovery_across_a_recreated_topic_fails_instead_of_replaying_a_gap(
        kafka_bootstrap: str, unique: str) -> None:
    kafka = settings_for(kafka_bootstrap, unique, partitions=1, metadata_refresh_s=1.0)
    topic = kafka.default_topic
    try:
        async with running_gateway(Settings(kafka=kafka), broker=KafkaBroker(kafka)) as gw:
            async with ws_client(gw.ws_url) as client:
                await client.subscribe("news.r")
                async with KafkaBroker(kafka) as publisher:
                    for i in range(5):
                        await publisher.publish("news.r", "e", i)
                frames = [await client.expect("message", 10) for _ in range(5)]
            kept = frames[-1]["position"]
            assert "@" in kept  # positions carry the topic's epoch
            _delete(kafka_bootstrap, topic)
            _wait_gone(kafka_bootstrap, topic)
            _create(kafka_bootstrap, topic, 1)
            async with KafkaBroker(kafka) as publisher:
                for i in range(8):
                    await publisher.publish("news.r", "e", f"new {i}")
            async with ws_client(gw.ws_url) as client:
                reply = await client.subscribe("news.r", since=kept)
                assert reply["type"] == "subscribed"
                assert reply["data"]["recovered"] is False
                error = await client.expect("error", 10)
                assert error["data"]["code"] == "recovery_failed"
                assert "recreated" in error["data"]["message"] or \
                       "another incarnation" in error["data"]["message"]
    finally:
        _delete(kafka_bootstrap, topic)


async def test_publishing_to_a_deleted_topic_fails_promptly_naming_it(
        kafka_bootstrap: str, unique: str) -> None:
    kafka = settings_for(kafka_bootstrap, unique, partitions=1, metadata_refresh_s=1.0)
    topic = kafka.default_topic
    try:
        async with KafkaBroker(kafka) as broker:
            await broker.publish("room.1", "e", "before")
            sub = broker.subscribe(["room.1"])
            await sub.ready()
            _delete(kafka_bootstrap, topic)
            _wait_gone(kafka_bootstrap, topic)
            await asyncio.sleep(2.5)  # two metadata refreshes
            started = time.monotonic()
            with pytest.raises(PublishError, match=f"topic '{topic}' was deleted"):
                await broker.publish("room.1", "e", "after")
            assert time.monotonic() - started < 2.0
            # Its subscriptions end with an error naming it, not silence.
            with pytest.raises(Exception, match=f"topic '{topic}' was deleted"):
                await asyncio.wait_for(sub.__anext__(), 10)
            await sub.close()
    finally:
        _delete(kafka_bootstrap, topic)


async def test_after_growth_new_subscriptions_and_running_publishers_use_new_partitions(
        kafka_bootstrap: str, unique: str) -> None:
    # Found by a tester: after a topic grew, a running gateway could not subscribe a
    # channel that moved to a new partition (its consumer's metadata did not know it), and
    # a running publisher failed for minutes (_UNKNOWN_PARTITION, not retriable).
    topic = f"g.grow-{unique}"
    channel = next(c for c in (f"g.{i}" for i in range(10_000))
                   if murmur2_partition(c.encode(), 6) >= 3)
    _create(kafka_bootstrap, topic, 3)
    settings = Settings(kafka=settings_for(
        kafka_bootstrap, unique, metadata_refresh_s=1.0,
        topic_mapping=(TopicMapping("g.*", TopicName(topic), 3),)))
    try:
        async with KafkaBroker(settings.kafka) as publisher, \
                running_gateway(settings, broker=KafkaBroker(settings.kafka)) as gw:
            await publisher.publish(channel, "e", "before")
            _grow(kafka_bootstrap, topic, 6)
            await asyncio.sleep(2.5)  # both brokers' topic tables notice
            new_partition = murmur2_partition(channel.encode(), 6)
            position = await publisher.publish(channel, "e", "after")
            assert position.partition == new_partition
            async with ws_client(gw.ws_url) as client:
                reply = await client.subscribe(channel)
                assert reply["type"] == "subscribed", reply
                assert reply["data"]["position"].startswith(f"{topic}:{new_partition}:")
                await publisher.publish(channel, "e", "live")
                frame = await client.expect("message", 20)
                assert frame["data"] == "live"
    finally:
        _delete(kafka_bootstrap, topic, f"acc-{unique}")


def _channel_moving(before: tuple[int, int], after: tuple[int, int]) -> str:
    """A channel ``g.N`` in partition ``before[1]`` of ``before[0]`` partitions and in
    ``after[1]`` of ``after[0]`` (murmur2, as every Kafka client routes it)."""
    return next(c for c in (f"g.{i}" for i in range(10_000))
                if murmur2_partition(c.encode(), before[0]) == before[1]
                and murmur2_partition(c.encode(), after[0]) == after[1])


def _grouped(bootstrap: str, unique: str, topic: str, partitions: int,
             refresh: float) -> Settings:
    """``g.*`` mapped onto ``topic`` with ``partitions``, metadata refreshed every
    ``refresh`` seconds."""
    return Settings(kafka=settings_for(
        bootstrap, unique, metadata_refresh_s=refresh,
        topic_mapping=(TopicMapping("g.*", TopicName(topic), partitions),)))


async def test_a_channel_subscribed_just_after_growth_moves_into_a_partition_already_read(
        kafka_bootstrap: str, unique: str) -> None:
    # Found by a second tester: a subscribe within metadata_refresh_s after the growth, of
    # a channel that moves into a partition the process already reads, left the channel
    # silent for good (the catch-up was never started: its reader waited on an empty
    # inbox).
    topic = f"g.win-{unique}"
    here = _channel_moving((2, 0), (5, 0))
    mover = _channel_moving((2, 1), (5, 0))
    _create(kafka_bootstrap, topic, 2)

    def settings(partitions: int, refresh: float) -> Settings:
        return _grouped(kafka_bootstrap, unique, topic, partitions, refresh)

    try:
        async with KafkaBroker(settings(2, 3.0).kafka) as node:
            first = node.subscribe([here])
            await first.ready()
            _grow(kafka_bootstrap, topic, 5)
            late = node.subscribe([mover])  # before the node noticed the growth
            await late.ready()
            got: list[int] = []

            async def read() -> None:  # waiting from the start, as a gateway's feed does
                async for record in late:
                    got.append(record.envelope.data)
                    if len(got) == 10:
                        return

            reader = asyncio.create_task(read())
            async with KafkaBroker(settings(5, 1.0).kafka) as publisher:
                for i in range(10):
                    await publisher.publish(mover, "e", i)
                    await publisher.publish(here, "e", i)
                    await asyncio.sleep(0.3)  # across the node's refresh
            await asyncio.wait_for(reader, 30)
            assert sorted(got) == list(range(10))
            await late.close()
            await first.close()
    finally:
        _delete(kafka_bootstrap, topic, f"acc-{unique}")


async def test_one_subscription_of_two_channels_takes_each_only_from_its_own_partition(
        kafka_bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    # Found by a second tester: a subscription to channels of two partitions delivered an
    # envelope of one channel found in the other's partition (by chance, again).
    kafka = settings_for(kafka_bootstrap, unique, partitions=2)
    a = next(c for c in (f"x.{i}" for i in range(100)) if murmur2_partition(c.encode(), 2) == 0)
    b = next(c for c in (f"x.{i}" for i in range(100)) if murmur2_partition(c.encode(), 2) == 1)
    async with KafkaBroker(kafka) as broker:
        sub = broker.subscribe([a, b])
        await sub.ready()
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        envelope = json.dumps({"channel": b, "event": "e", "data": "misplaced"}).encode()
        producer.produce(kafka.default_topic, envelope, None, partition=0)
        producer.produce(kafka.default_topic, b'"marker"', a.encode(), partition=0)
        assert producer.flush(30) == 0
        with caplog.at_level(logging.WARNING, logger="channelcast.kafka"):
            record = await asyncio.wait_for(sub.__anext__(), 20)
        assert record.envelope.data == "marker"
        assert "does not live" in caplog.text
        await sub.close()
    _delete(kafka_bootstrap, kafka.default_topic, kafka.dead_letter_topic)


async def test_growth_moving_a_channel_into_its_subscriptions_other_partition_duplicates_none(
        kafka_bootstrap: str, unique: str) -> None:
    # Found by a third tester: when a channel moved into a partition the subscription
    # already read for another of its channels, the catch-up read that partition again
    # from before the growth and delivered the other channel's records a second time.
    topic = f"g.dup-{unique}"
    stay = _channel_moving((2, 1), (3, 1))
    mover = _channel_moving((2, 0), (3, 1))
    _create(kafka_bootstrap, topic, 2)

    def settings(partitions: int, refresh: float) -> Settings:
        return _grouped(kafka_bootstrap, unique, topic, partitions, refresh)

    try:
        async with KafkaBroker(settings(2, 1.0).kafka) as node:
            sub = node.subscribe([stay, mover])
            await sub.ready()
            got: list[Record] = []

            async def read(until: int) -> None:
                async for record in sub:
                    got.append(record)
                    if len(got) == until:
                        return

            async with KafkaBroker(settings(2, 1.0).kafka) as before:
                for i in range(30):
                    await before.publish(stay, "e", i)
                    await before.publish(mover, "e", i)
            await asyncio.wait_for(read(60), 30)
            _grow(kafka_bootstrap, topic, 3)
            async with KafkaBroker(settings(3, 1.0).kafka) as after:
                for i in range(30, 50):
                    await after.publish(stay, "e", i)
                    await after.publish(mover, "e", i)
                    await asyncio.sleep(0.1)  # across the node's refresh
            await asyncio.wait_for(read(100), 30)
            with contextlib.suppress(TimeoutError):  # anything more is a duplicate
                await asyncio.wait_for(read(101), 3)
            seen = [(r.channel, r.envelope.data) for r in got]
            assert len(seen) == len(set(seen)) == 100, sorted(
                x for x in seen if seen.count(x) > 1)[:10]
            for channel in (stay, mover):
                assert [d for c, d in seen if c == channel] == list(range(50)), channel
            await sub.close()
    finally:
        _delete(kafka_bootstrap, topic, f"acc-{unique}")
