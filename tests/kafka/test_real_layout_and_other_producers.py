"""Issue 12, cases 1 and 5, on real Kafka with Kafka's own Java tools beside channelcast.

1. A topic whose partition count differs from the config (fewer and more): channelcast
   routes by the topic's real count, so channelcast -> Java consumer and Java producer ->
   channelcast subscriber and gateway agree; the disagreement is reported loudly.
5. Records other producers wrote (no channelcast headers) are delivered, normalised;
   what cannot be a message is skipped with a log line naming topic:partition:offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from channelcast.brokers.kafka import KafkaBroker
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.cli.main import main
from channelcast.config import Settings, TopicMapping
from channelcast.message import Record
from channelcast.strategies import murmur2_partition
from channelcast.types import TopicName
from tests.gateway.conftest import running_gateway, ws_client
from tests.kafka.helpers.java_tools import java_consume, java_produce
from tests.kafka.helpers.support import settings_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=60)
    KafkaAdmin(bootstrap).wait_for_topics({topic: partitions})  # visible in metadata


def _delete(bootstrap: str, *topics: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(list(topics)).values():
        with contextlib.suppress(KafkaException):  # never created: nothing to delete
            future.result(timeout=60)


async def _take(sub: object, count: int, within: float = 20.0) -> list[Record]:
    out: list[Record] = []
    async with asyncio.timeout(within):
        async for record in sub:  # type: ignore[attr-defined]
            out.append(record)
            if len(out) == count:
                break
    return out


@pytest.mark.parametrize("actual", [4, 12])
async def test_routes_follow_the_topics_real_partition_count(
        kafka_bootstrap: str, unique: str, actual: int,
        caplog: pytest.LogCaptureFixture) -> None:
    topic = f"mm.user-{unique}"
    _create(kafka_bootstrap, topic, actual)  # created by someone else, not as configured
    kafka = settings_for(kafka_bootstrap, unique, topic_mapping=(
        TopicMapping("user.*", TopicName(topic), 10),))
    channels = [f"user.{i}" for i in range(1, 21)]
    try:
        with caplog.at_level(logging.WARNING, logger="channelcast.kafka"):
            broker = KafkaBroker(kafka)  # creates only the missing default topic
            await broker.start()
        assert f"topic {topic!r} has {actual} partitions but the config routes its " \
               "channels over 10" in caplog.text
        try:
            # channelcast -> Kafka's Java consumer: every record on murmur2(key) % actual.
            positions = [await broker.publish(c, "e", i) for i, c in enumerate(channels)]
            for channel, position in zip(channels, positions, strict=True):
                assert position.partition == murmur2_partition(channel.encode(), actual)
            for partition, key, _value in java_consume(kafka_bootstrap, topic, 20):
                assert partition == murmur2_partition(key.encode(), actual), key
            # Kafka's Java producer -> a channelcast subscriber and a gateway client.
            sub = broker.subscribe(channels)
            await sub.ready()
            async with running_gateway(Settings(kafka=kafka), broker=broker) as gw, \
                    ws_client(gw.ws_url) as client:
                await client.subscribe("user.1")
                java_produce(kafka_bootstrap, topic,
                             [(c, json.dumps({"n": i})) for i, c in enumerate(channels)])
                got = await _take(sub, 20)
                assert sorted(r.channel for r in got) == sorted(channels)
                assert {r.channel: r.envelope.data for r in got}["user.7"] == {"n": 6}
                frame = await client.expect("message", 20)
                assert (frame["channel"], frame["data"]) == ("user.1", {"n": 0})
                assert frame["position"].startswith(
                    f"{topic}:{murmur2_partition(b'user.1', actual)}:")
            await sub.close()
        finally:
            await broker.close()
        # The loud report before start, and the real partition on the command line.
        assert main(["config", "check", "--bootstrap", kafka_bootstrap,
                     "--config", str(_write_config(unique, topic, kafka_bootstrap))]) == 1
        assert main(["route", "user.7", "--bootstrap", kafka_bootstrap, "--json",
                     "--config", str(_write_config(unique, topic, kafka_bootstrap))]) == 0
    finally:
        _delete(kafka_bootstrap, topic, kafka.default_topic)


def _produce_bytes(bootstrap: str, topic: str, key: bytes, value: bytes | None) -> None:
    """Binary values from another producer (Kafka's console producer reads text lines)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    producer.produce(topic, value, key, partition=0)
    assert producer.flush(30) == 0


def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, dict[str, str]]]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-read",
                         "enable.auto.commit": False})
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out = []
        while len(out) < high:
            msg = consumer.poll(10)
            assert msg is not None
            assert msg.error() is None
            out.append((msg.key(), {k: v.decode() for k, v in msg.headers() or []}))
        return out
    finally:
        consumer.close()


def _write_config(unique: str, topic: str, bootstrap: str) -> object:
    import tempfile
    from pathlib import Path

    path = Path(tempfile.gettempdir()) / f"cc-{unique}.toml"
    path.write_text(f'broker = "kafka://{bootstrap}"\n[kafka]\ndefault_topic = "acc-{unique}"\n'
                    f'[kafka.topic_mapping."user.*"]\ntopic = "{topic}"\npartitions = 10\n')
    return path


async def test_route_and_config_check_show_the_real_layout(
        kafka_bootstrap: str, unique: str, capsys: pytest.CaptureFixture[str]) -> None:
    topic = f"mm.user-{unique}"
    _create(kafka_bootstrap, topic, 4)
    _create(kafka_bootstrap, f"acc-{unique}", 10)
    config = str(_write_config(unique, topic, kafka_bootstrap))
    try:
        assert main(["config", "check", "--bootstrap", kafka_bootstrap, "--config",
                     config]) == 1
        err = capsys.readouterr().err
        assert f"topic '{topic}' has 4 partitions but kafka.topic_mapping.\"user.*\"." \
               "partitions says 10" in err
        assert main(["route", "user.1", "user.7", "--bootstrap", kafka_bootstrap, "--json",
                     "--config", config]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["channel"], r["partition"]) for r in rows] == [
            ("user.1", murmur2_partition(b"user.1", 4)),
            ("user.7", murmur2_partition(b"user.7", 4))]
        # murmur2("user.1") % 10 == 2
        assert rows[0]["note"] == ("config says partition 2 (of 10); the topic has 4 "
                                   "partitions")
    finally:
        _delete(kafka_bootstrap, topic, f"acc-{unique}")


async def test_records_from_other_producers_are_delivered_normalised(
        kafka_bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    kafka = settings_for(kafka_bootstrap, unique, partitions=1)
    topic = kafka.default_topic
    async with KafkaBroker(kafka) as broker:
        sub = broker.subscribe(["orders.1"])
        await sub.ready()
        with caplog.at_level(logging.WARNING, logger="channelcast.kafka"):
            java_produce(kafka_bootstrap, topic, [
                # a plain JSON object, key = channel, no headers
                ("orders.1", '{"total":12.5,"items":[1,2]}'),
                # the original PHP envelope with microtime(true) and with seconds
                ("orders.1", '{"id":"php-1","type":"message","channel":"orders.1",'
                             '"event":"created","data":{"n":1},"timestamp":1764201600.25}'),
                ("orders.1", '{"id":"php-2","type":"message","channel":"orders.1",'
                             '"event":"created","data":{"n":2},"timestamp":1764201600}'),
            ])
            # a lone surrogate, NaN, binary garbage: never delivered, each logged
            java_produce(kafka_bootstrap, topic, [("orders.1", '{"name":"\\ud800"}'),
                                                 ("orders.1", '{"x":NaN}')])
            _produce_bytes(kafka_bootstrap, topic, b"orders.1", b"\x89PNG\r\n\x1a\n\x00\xff")
            # an event from a header
            java_produce(kafka_bootstrap, topic, [("orders.1", '"shipped"')],
                         headers=[{"event": "status"}])
            got = await _take(sub, 4)
            for _ in range(50):
                if broker.skipped_records >= 3:
                    break
                await asyncio.sleep(0.1)
        plain, php_float, php_seconds, status = got
        assert (plain.envelope.event, plain.envelope.data) == (
            "message", {"total": 12.5, "items": [1, 2]})
        assert len(plain.id) == 26
        assert plain.envelope.timestamp > 1_700_000_000_000
        assert (php_float.id, php_float.envelope.event, php_float.envelope.data,
                php_float.envelope.timestamp) == ("php-1", "created", {"n": 1},
                                                  1764201600250)
        assert php_seconds.envelope.timestamp == 1764201600000
        assert (status.envelope.event, status.envelope.data) == ("status", "shipped")
        # Clients get strict JSON frames for them.
        assert json.loads(plain.frame())["position"] == str(plain.position)
        assert broker.skipped_records == 3
        skipped = [r.getMessage() for r in caplog.records if "skipping the record" in
                   r.getMessage()]
        assert len(skipped) == 3
        offset = plain.position.offset
        assert f"{topic}:0:{offset + 3}: not JSON a client can read: a string holds a " \
               "lone surrogate" in skipped[0]
        assert f"{topic}:0:{offset + 4}: not JSON: NaN is not valid JSON" in skipped[1]
        assert f"{topic}:0:{offset + 5}: not UTF-8 JSON: byte 0x89" in skipped[2]
        # The same ids on every reader: history derives the same id for the plain record.
        [again] = [r for r in await broker.history(
            "orders.1", plain.position.__class__(topic, 0, offset - 1))
            if r.position == plain.position]
        assert again.id == plain.id
        await sub.close()
    _delete(kafka_bootstrap, topic, kafka.dead_letter_topic)


async def test_a_worker_gets_other_producers_records_and_dead_letters_garbage_clearly(
        kafka_bootstrap: str, unique: str) -> None:
    kafka = settings_for(kafka_bootstrap, unique, partitions=1, manual_commit=True,
                         max_attempts=1)
    seen: list[Record] = []

    async def handle(record: Record) -> None:
        seen.append(record)

    async with KafkaBroker(kafka) as broker:
        java_produce(kafka_bootstrap, kafka.default_topic, [("jobs.1", '{"job":1}')])
        _produce_bytes(kafka_bootstrap, kafka.default_topic, b"jobs.1", b"\xff\xfe\x00")
        # Garbage of another channel is its owner's to dead-letter; a tombstone is none.
        _produce_bytes(kafka_bootstrap, kafka.default_topic, b"other.9", b"\xff\xfe\x00")
        _produce_bytes(kafka_bootstrap, kafka.default_topic, b"jobs.1", None)
        java_produce(kafka_bootstrap, kafka.default_topic, [("jobs.1", '{"job":2}')])
        dead = broker.subscribe(["jobs.1"])  # nothing: garbage never reaches subscribers
        worker = broker.worker(f"g-{unique}", channels={"jobs.*": handle})
        task = asyncio.create_task(worker.run())
        for _ in range(200):
            if len(seen) >= 2:  # the last record: everything before it was handled
                break
            await asyncio.sleep(0.1)
        await worker.stop()
        await asyncio.wait_for(task, 30)
        assert [r.envelope.data for r in seen] == [{"job": 1}, {"job": 2}]
        assert worker.stats.dead_lettered == 1
        await dead.close()
    [(key, headers)] = _read_all(kafka_bootstrap, kafka.dead_letter_topic)
    assert key == b"jobs.1"
    assert "MalformedMessage: not UTF-8 JSON: byte 0xff at position 0" in headers["dlq.error"]
    _delete(kafka_bootstrap, kafka.default_topic, kafka.dead_letter_topic)


async def test_records_the_fan_out_cannot_attribute_are_reported_not_dropped_silently(
        kafka_bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    # Found by a tester: an invalid channel header, an undecodable key, and an envelope
    # naming a channel of another partition were dropped (or delivered by chance) with no
    # log line, while workers handled them.
    kafka = settings_for(kafka_bootstrap, unique, partitions=2)
    topic = kafka.default_topic
    here = next(c for c in (f"p.{i}" for i in range(100))
                if murmur2_partition(c.encode(), 2) == 0)
    there = next(c for c in (f"p.{i}" for i in range(100))
                 if murmur2_partition(c.encode(), 2) == 1)
    async with KafkaBroker(kafka) as broker:
        sub_here = broker.subscribe([here])
        sub_there = broker.subscribe([there])
        await sub_here.ready()
        await sub_there.ready()
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        # 1. a header that is not a channel name: the key decides, as for workers
        producer.produce(topic, b'{"n":1}', here.encode(), partition=0,
                         headers=[("channel", b"bad channel!")])
        # 2. a key that is not UTF-8 and no header: reported
        producer.produce(topic, b'{"n":2}', b"\xff\xfe", partition=0)
        # 3. an envelope of `there` in `here`'s partition: never delivered by chance
        producer.produce(topic, json.dumps({"channel": there, "event": "e",
                                            "data": 3}).encode(), here.encode(),
                         partition=0)
        producer.produce(topic, b'{"n":4}', here.encode(), partition=0)  # a marker
        assert producer.flush(30) == 0
        with caplog.at_level(logging.WARNING, logger="channelcast.kafka"):
            got = await _take(sub_here, 2)
            await asyncio.sleep(0.5)
        assert [r.envelope.data for r in got] == [{"n": 1}, {"n": 4}]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub_there.__anext__(), 1.0)
        skipped = [r.getMessage() for r in caplog.records if "skipping the record" in
                   r.getMessage()]
        assert any("no channel" in line for line in skipped), skipped
        assert any(f"channel '{there}' in a partition where that channel does not live"
                   in line for line in skipped), skipped
        assert broker.skipped_records >= 2
        await sub_here.close()
        await sub_there.close()
    _delete(kafka_bootstrap, topic, kafka.dead_letter_topic)


async def test_a_flood_of_records_without_a_message_is_counted_exactly_and_logged_briefly(
        kafka_bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    """tkafka2 finding 8: 300 binary records were 300 WARNING lines. Now the first of each
    kind is logged, the rest counted (exactly, in skipped_records)."""
    from confluent_kafka import Producer

    kafka = settings_for(kafka_bootstrap, unique, partitions=1)
    topic = kafka.default_topic
    try:
        async with KafkaBroker(kafka) as broker:
            sub = broker.subscribe(["orders.1"])
            await sub.ready()
            with caplog.at_level(logging.WARNING, logger="channelcast.kafka"):
                producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
                for n in range(300):  # garbage whose details (byte, position) vary
                    producer.produce(topic, b"{" * (n % 7) + bytes([0x80 + n % 64]),
                                     b"orders.1", partition=0)
                producer.produce(topic, b'{"x":NaN}', b"orders.1", partition=0)
                producer.produce(topic, b'{"n":1}', b"orders.1", partition=0)  # a marker
                assert producer.flush(30) == 0
                got = await _take(sub, 1)
            assert got[0].envelope.data == {"n": 1}
            assert broker.skipped_records == 301
            lines = [r.getMessage() for r in caplog.records
                     if "skipping the record" in r.getMessage()]
            assert len(lines) == 2, lines  # one per kind: not UTF-8, NaN
            assert any("not UTF-8" in line for line in lines), lines
            assert any("NaN" in line for line in lines), lines
            await sub.close()
    finally:
        _delete(kafka_bootstrap, topic, kafka.dead_letter_topic)


async def test_a_subscription_that_catches_up_does_not_count_skipped_records_again(
        kafka_bootstrap: str, unique: str) -> None:
    """tfin finding 2: behind subscriptions (SSE clients under load) re-read the log to
    catch up, and each re-read counted the records without a message again."""
    from confluent_kafka import Producer

    kafka = settings_for(kafka_bootstrap, unique, partitions=1)
    topic = kafka.default_topic
    try:
        async with KafkaBroker(kafka) as broker:
            subs = [broker.subscribe(["orders.1"], max_queue=2) for _ in range(2)]
            for sub in subs:
                await sub.ready()
            producer = Producer({"bootstrap.servers": kafka_bootstrap, "acks": "all"})
            for n in range(200):
                value = b"\xff bad" if n % 2 else f'{{"n":{n}}}'.encode()
                producer.produce(topic, value, b"orders.1", partition=0)
            assert producer.flush(30) == 0
            await asyncio.sleep(2)  # the queues overflow: both fall behind
            for sub in subs:
                got = await _take(sub, 100, within=60)
                assert [r.envelope.data["n"] for r in got] == list(range(0, 200, 2))
            assert broker.skipped_records == 100
            for sub in subs:
                await sub.close()
    finally:
        _delete(kafka_bootstrap, topic, kafka.dead_letter_topic)
