"""The contract suite's ``broker`` fixture: a started MemoryBroker or KafkaBroker.

Both are built from the same settings (unique topic names per test), so one test body
checks both backends. Kafka tests request ``kafka_bootstrap``: without Kafka they fail,
never skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from channelcast.brokers.base import Broker
from channelcast.config import KafkaSettings, Settings, TopicMapping
from channelcast.types import TopicName


@dataclass(frozen=True)
class Names:
    """The unique topic names of one contract test."""

    default: str
    orders: str
    dlq: str


def contract_settings(unique: str, brokers: str = "127.0.0.1:19092") -> KafkaSettings:
    return KafkaSettings(
        brokers=brokers,
        default_topic=f"cc-{unique}",
        default_partitions=4,
        topic_mapping=(TopicMapping("orders.*", TopicName(f"cc-{unique}-orders"), 2),),
        dead_letter_topic=f"cc-{unique}-dlq",
        timeout_s=5.0,
        max_message_bytes=10_000,
        # Short sessions so a group notices a departed member quickly.
        consumer={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    )


@pytest.fixture
def names(unique: str) -> Names:
    return Names(f"cc-{unique}", f"cc-{unique}-orders", f"cc-{unique}-dlq")


@pytest.fixture(params=[
    pytest.param("memory", id="memory"),
    pytest.param("kafka", id="kafka", marks=[pytest.mark.kafka, pytest.mark.timeout(90)]),
])
async def broker(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[Broker]:
    if request.param == "memory":
        from channelcast.brokers.memory import from_settings as memory_from_settings

        memory = memory_from_settings(Settings(kafka=contract_settings(unique)))
        async with memory:
            yield memory
        return
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    from channelcast.brokers.kafka import KafkaBroker
    from channelcast.brokers.kafka.admin import KafkaAdmin

    settings = contract_settings(unique, bootstrap)
    kafka = KafkaBroker(settings)
    async with kafka:
        yield kafka
    admin = KafkaAdmin(bootstrap, timeout_s=10)
    admin.delete_topics([t for t in admin.list_topics() if t.startswith(f"cc-{unique}")])
