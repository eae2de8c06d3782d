"""The legacy strategy on Kafka: one single-partition topic per channel, created on first
use; glob workers find topics that appear later; per-topic callbacks still work."""

from __future__ import annotations

import asyncio

import pytest

from channelcast.brokers.kafka import KafkaBroker
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.message import Record
from tests.kafka.helpers.support import eventually, settings_for


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_topic_per_channel_end_to_end(kafka_bootstrap: str, unique: str) -> None:
    prefix = f"leg{unique}"
    settings = settings_for(kafka_bootstrap, unique, topic_strategy="one-per-channel",
                            topic_prefix=prefix)
    seen: list[Record] = []
    by_topic: list[Record] = []

    async def handle(record: Record) -> None:
        seen.append(record)

    async def handle_topic(record: Record) -> None:
        by_topic.append(record)

    async with KafkaBroker(settings) as broker:
        first = await broker.publish("user.1", "e", 1)  # creates leg..._user_1
        assert (first.topic, first.partition) == (f"{prefix}_user_1", 0)
        async with broker.subscribe(["user.2"]) as sub:  # creates leg..._user_2
            worker = broker.worker(f"g-{unique}", channels={"user.*": handle},
                                   topics={f"{prefix}_user_1": handle_topic})
            task = asyncio.create_task(worker.run())
            try:
                await eventually(lambda: len(by_topic) == 1, 40, "the per-topic callback")
                later = await broker.publish("user.2", "e", 2)
                assert (await asyncio.wait_for(sub.__anext__(), 10)).position == later
                await broker.publish("user.3", "e", 3)  # a topic born after subscribe()
                await eventually(lambda: {r.envelope.data for r in seen} == {2, 3}, 60,
                                 "the glob worker to find new topics")
            finally:
                await worker.stop()
                await task
    assert [r.envelope.data for r in by_topic] == [1]  # the topic callback wins for its topic
    admin = KafkaAdmin(kafka_bootstrap)
    admin.delete_topics([t for t in admin.list_topics() if t.startswith(prefix)]
                        + [settings.dead_letter_topic])
