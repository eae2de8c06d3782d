"""Fan-out details only Kafka has: one shared consumer that may lag behind the end."""

from __future__ import annotations

import asyncio

import pytest

from channelcast.brokers.kafka import KafkaBroker
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.errors import BrokerUnavailable
from channelcast.message import Envelope
from channelcast.types import ChannelName
from tests.gateway.logwatch import LogWatch
from tests.kafka.helpers.support import settings_for


@pytest.mark.kafka
@pytest.mark.timeout(90)
async def test_joining_behind_the_end_skips_what_since_already_covers(
        kafka_bootstrap: str, unique: str) -> None:
    settings = settings_for(kafka_bootstrap, unique, partitions=1)
    async with KafkaBroker(settings) as broker:
        # A subscriber that does not read holds the shared consumer back (queue of 1).
        stalled = broker.subscribe(["room.a"], max_queue=1)
        await stalled.ready()
        for start in (0, 20):
            await broker.publish_many([Envelope(channel=ChannelName("room.a"), event="e",
                                                data=i) for i in range(start, start + 20)])
            # The consumer took the first 20 and is stuck handing them over; the second
            # 20 wait in Kafka, so the shared consumer is 20 behind the end.
            await asyncio.sleep(1)
        end = await broker.end_position("room.a")
        late = broker.subscribe(["room.a"], since={"room.a": end})
        await asyncio.wait_for(late.ready(), 20)
        after = await broker.publish("room.a", "e", "after")
        drained = [(await asyncio.wait_for(stalled.__anext__(), 10)).envelope.data
                   for _ in range(41)]
        assert drained == [*range(40), "after"]
        first = await asyncio.wait_for(late.__anext__(), 10)
        assert first.position == after  # nothing at or before `since` came again
        await late.close()
        await stalled.close()
    KafkaAdmin(kafka_bootstrap).delete_topics([settings.default_topic])


@pytest.mark.kafka
@pytest.mark.timeout(90)
async def test_a_crashed_fanout_consumer_is_reported_and_replaced(
        kafka_bootstrap: str, unique: str, server_log: LogWatch) -> None:
    server_log.expect(r"fan-out consumer thread crashed")  # the simulated bug, logged
    settings = settings_for(kafka_bootstrap, unique, partitions=1)
    async with KafkaBroker(settings) as broker:
        first = broker.subscribe(["room.a"])
        await first.ready()
        fanout = broker._fanout
        assert fanout is not None

        def explode() -> None:
            raise RuntimeError("simulated bug in the consumer thread")

        fanout._commands.put(explode)  # runs on the consumer thread
        with pytest.raises(BrokerUnavailable, match="crashed"):
            await asyncio.wait_for(first.__anext__(), 10)
        await first.close()
        # A new subscription gets a fresh consumer and works.
        async with broker.subscribe(["room.a"]) as second:
            position = await broker.publish("room.a", "e", 1)
            assert (await asyncio.wait_for(second.__anext__(), 10)).position == position
        assert broker._fanout is not fanout
    KafkaAdmin(kafka_bootstrap).delete_topics([settings.default_topic])
