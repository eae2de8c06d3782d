"""Kafka-specific failure behaviour: error translation, unreachable brokers, retention,
missing topics, and the wire format (key, headers, dead-letter headers)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from channelcast.brokers.base import RetryPolicy
from channelcast.brokers.kafka import KafkaBroker
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.brokers.kafka.errors import translate
from channelcast.config import KafkaSettings
from channelcast.errors import (
    BrokerUnavailable,
    ConfigError,
    HistoryUnavailable,
    MessageTooLarge,
    PublishError,
)
from channelcast.message import Envelope, Record
from channelcast.types import ChannelName, Position
from tests.kafka.helpers.support import eventually, settings_for

# --- translation (no network) ------------------------------------------------------


def test_unreachable_codes_become_broker_unavailable() -> None:
    err = KafkaError(KafkaError._TRANSPORT, "down", retriable=True)
    out = translate(KafkaException(err), "publishing")
    assert isinstance(out, BrokerUnavailable)
    assert out.retriable


def test_fatal_errors_are_never_retriable() -> None:
    err = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "bad", fatal=True,
                     retriable=True)
    out = translate(err, "publishing")
    assert isinstance(out, PublishError)
    assert not out.retriable
    assert "fatal" in str(out)


def test_retriable_flag_is_kept() -> None:
    out = translate(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION, "moved",
                               retriable=True), "publishing")
    assert isinstance(out, PublishError)
    assert out.retriable
    assert not translate(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "no"),
                         "publishing").retriable


def test_broker_side_size_limit_becomes_message_too_large() -> None:
    assert isinstance(translate(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "big"), "x"),
                      MessageTooLarge)


# --- against sockets / the real broker ---------------------------------------------------


@pytest.mark.timeout(30)
async def test_unreachable_broker_fails_within_the_timeout() -> None:
    broker = KafkaBroker(KafkaSettings(brokers="127.0.0.1:1", timeout_s=2.0))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await broker.start()
    assert time.monotonic() - started < 6.0
    await broker.close()


@pytest.mark.kafka
@pytest.mark.timeout(60)
async def test_missing_topic_without_ensure_topics_is_a_clear_error(
        kafka_bootstrap: str, unique: str) -> None:
    broker = KafkaBroker(settings_for(kafka_bootstrap, unique), ensure_topics=False)
    with pytest.raises(PublishError, match="does not exist"):
        await broker.start()
    await broker.close()


@pytest.mark.kafka
@pytest.mark.timeout(90)
async def test_history_removed_by_retention_is_unavailable(
        kafka_bootstrap: str, unique: str) -> None:
    settings = settings_for(kafka_bootstrap, unique, partitions=1)
    async with KafkaBroker(settings) as broker:
        positions = await broker.publish_many(
            [Envelope(channel=ChannelName("room.1"), event="e", data=i) for i in range(10)])
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        futures = admin.delete_records([TopicPartition(settings.default_topic, 0, 5)])
        for future in futures.values():
            future.result(10)
        with pytest.raises(HistoryUnavailable):
            await broker.history("room.1", positions[2])
        assert [r.position for r in await broker.history("room.1", positions[5])] \
            == positions[6:]
        # A subscription asking for lost history says so once, then continues live.
        async with broker.subscribe(["room.1"], since={"room.1": positions[1]}) as sub:
            with pytest.raises(HistoryUnavailable):
                await sub.__anext__()
            live = await broker.publish("room.1", "e", "live")
            record = await asyncio.wait_for(sub.__anext__(), 10)
            assert record.position == live
    KafkaAdmin(kafka_bootstrap).delete_topics([settings.default_topic])


def read_all(bootstrap: str, topic: str, count: int) -> list[Message]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[Message] = []
    deadline = time.monotonic() + 20
    try:
        while len(out) < count and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                assert msg.error() is None
                out.append(msg)
    finally:
        consumer.close()
    return out


@pytest.mark.kafka
@pytest.mark.timeout(90)
async def test_wire_format_and_dead_letter_headers(kafka_bootstrap: str, unique: str) -> None:
    settings = settings_for(kafka_bootstrap, unique, partitions=1)
    async with KafkaBroker(settings) as broker:
        batch = [Envelope(channel=ChannelName("orders.7"), event="placed", data={"n": i})
                 for i in range(6)]
        positions = await broker.publish_many(batch)

        stored = await asyncio.to_thread(read_all, kafka_bootstrap, settings.default_topic, 6)
        first = stored[0]
        assert first.key() == b"orders.7"
        headers = dict(first.headers())
        assert headers == {"channel": b"orders.7", "event": b"placed",
                           "id": batch[0].id.encode()}
        body = json.loads(first.value())
        assert set(body) == {"id", "type", "channel", "event", "data", "timestamp"}

        done: list[Record] = []

        async def fails_on_two(record: Record) -> None:
            if record.envelope.data["n"] == 2:
                raise RuntimeError("no stock")
            done.append(record)

        worker = broker.worker(f"g-{unique}", channels={"orders.*": fails_on_two},
                               manual_commit=True,
                               retry=RetryPolicy(4, initial_backoff_s=0.01))
        task = asyncio.create_task(worker.run())
        await eventually(lambda: len(done) == 5, 40, "the rest of the partition")
        await worker.stop()
        await task
    dead = await asyncio.to_thread(read_all, kafka_bootstrap, settings.dead_letter_topic, 1)
    assert len(dead) == 1
    msg = dead[0]
    h = {k: v.decode() for k, v in msg.headers()}
    assert h["dlq.attempts"] == "4"
    assert h["dlq.error"] == "RuntimeError: no stock"
    assert Position(h["dlq.topic"], int(h["dlq.partition"]), int(h["dlq.offset"])) \
        == positions[2]
    assert h["id"] == batch[2].id
    assert msg.key() == b"orders.7"
    KafkaAdmin(kafka_bootstrap).delete_topics([settings.default_topic,
                                               settings.dead_letter_topic])


@pytest.mark.timeout(30)
async def test_a_setting_librdkafka_rejects_is_a_config_error() -> None:
    broker = KafkaBroker(KafkaSettings(brokers="127.0.0.1:1", producer={"acks": "maybe"}))
    with pytest.raises(ConfigError, match=r"kafka\.producer"):
        await broker.start()
    await broker.close()
