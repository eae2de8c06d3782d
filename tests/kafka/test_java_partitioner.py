"""channelcast's murmur2 partitioner agrees with Apache Kafka's own Java producer.

Kafka's console producer (run from the same jars as the broker) sends keyed records
WITHOUT a partition; the Java client's default partitioner picks one. Reading them back
from the real broker, every record must sit on the partition channelcast computes.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import kafka_local
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from channelcast.strategies import crc32_partition, murmur2_partition

PARTITION_COUNTS = (1, 3, 7, 10, 32)

# Logs the Java producer's effective configuration to stderr, so the test can see that
# no partitioner was configured (the built-in keyed partitioner was used).
PRODUCER_CONFIG_LOG4J = """\
rootLogger.level=WARN
rootLogger.appenderRef.err.ref=STDERR
appender.err.type=Console
appender.err.name=STDERR
appender.err.target=SYSTEM_ERR
appender.err.layout.type=PatternLayout
appender.err.layout.pattern=%p %m%n
logger.pconf.name=org.apache.kafka.common.config.AbstractConfig
logger.pconf.level=INFO
"""


def _keys() -> list[str]:
    """>= 1,000 distinct keys: the original's channels plus every length 1..64 and UTF-8."""
    keys = [f"user.{i}" for i in range(1, 1001)]
    keys += ["public.news", "private-orders.7", "presence-room.42", "a", "ab", "abc"]
    rng = random.Random(20261127)
    alphabet = "abcXYZ019_-=@,.;" + "éüß日本語€"
    for length in range(1, 65):
        for _ in range(3):
            keys.append("".join(rng.choice(alphabet) for _ in range(length)))
    return list(dict.fromkeys(keys))


def _create_topics(bootstrap: str, names: dict[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in names.items()],
        operation_timeout=30)
    for future in futures.values():
        future.result(timeout=60)


def _java_produce(bootstrap: str, topic: str, keys: list[str], log4j: Path) -> str:
    """Send ``key<TAB>index`` lines through Kafka's ConsoleProducer; returns its stderr."""
    cmd = kafka_local.java_command(
        "org.apache.kafka.tools.ConsoleProducer",
        "--bootstrap-server", bootstrap, "--topic", topic,
        "--property", "parse.key=true", "--property", "key.separator=\t",
        "--producer-property", "acks=all", "--producer-property", "linger.ms=5",
    )
    # A later -D wins over the default log4j config java_command puts first.
    cmd.insert(cmd.index("-cp"), f"-Dlog4j2.configurationFile={log4j}")
    lines = "".join(f"{key}\t{i}\n" for i, key in enumerate(keys))
    proc = subprocess.run(cmd, input=lines.encode(), capture_output=True, timeout=120)
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"ConsoleProducer failed ({proc.returncode}):\n{stderr}"
    return stderr


def _read_back(bootstrap: str, topic: str, partitions: int) -> list[tuple[str, int, int]]:
    """Every record of ``topic`` as (key, value index, partition), read to the high mark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-check",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        wanted = {}
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                wanted[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in wanted])
        out: list[tuple[str, int, int]] = []
        done: set[int] = set()
        while len(done) < len(wanted):
            msg = consumer.poll(10.0)
            assert msg is not None, f"timed out reading {topic}; finished {sorted(done)}"
            err = msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, f"consume error: {err}"
                continue
            key, value = msg.key(), msg.value()
            assert key is not None
            assert value is not None
            out.append((key.decode(), int(value), msg.partition()))
            if msg.offset() + 1 >= wanted[msg.partition()]:
                done.add(msg.partition())
        return out
    finally:
        consumer.close()


@pytest.mark.kafka
@pytest.mark.timeout(300)
def test_java_default_partitioner_agrees_with_murmur2(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    keys = _keys()
    assert len(keys) >= 1000
    assert any(len(k.encode()) != len(k) for k in keys), "want multi-byte UTF-8 keys too"
    log4j = tmp_path / "log4j2.properties"
    log4j.write_text(PRODUCER_CONFIG_LOG4J)
    topics = {f"javapart-{unique}-{n}": n for n in PARTITION_COUNTS}
    _create_topics(kafka_bootstrap, topics)
    try:
        _check_agreement(kafka_bootstrap, topics, keys, log4j)
    finally:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for future in admin.delete_topics(list(topics), operation_timeout=30).values():
            future.result(timeout=60)


def _check_agreement(bootstrap: str, topics: dict[str, int], keys: list[str],
                     log4j: Path) -> None:
    for topic, n in topics.items():
        stderr = _java_produce(bootstrap, topic, keys, log4j)
        # The Java client ran with its defaults: no partitioner class, keys not ignored.
        assert "ProducerConfig values" in stderr, stderr[-2000:]
        assert "partitioner.class = null" in stderr
        assert "partitioner.ignore.keys = false" in stderr

        records = _read_back(bootstrap, topic, n)
        assert sorted(i for _, i, _ in records) == list(range(len(keys))), "records lost"
        wrong = [(key, p, murmur2_partition(key.encode(), n))
                 for key, i, p in records
                 if key != keys[i] or p != murmur2_partition(key.encode(), n)]
        assert not wrong, f"{len(wrong)} records disagree on {n} partitions, e.g. {wrong[:5]}"
        used = {p for _, _, p in records}
        assert len(used) == n, f"keys landed on {len(used)} of {n} partitions"
        if n > 1:
            # The check can tell partitioners apart: crc32 would put many keys elsewhere.
            assert sum(p != crc32_partition(k.encode(), n) for k, _, p in records) > len(keys) // 3


@pytest.mark.kafka
@pytest.mark.timeout(120)
def test_librdkafka_murmur2_random_agrees_too(kafka_bootstrap: str, unique: str) -> None:
    """librdkafka's Java-compatible partitioner (``murmur2_random``) picks the same
    partitions, so a confluent-kafka producer left to partition by itself agrees as well."""
    keys = _keys()
    topic, n = f"rdkpart-{unique}", 7
    _create_topics(kafka_bootstrap, {topic: n})
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap,
                             "partitioner": "murmur2_random", "linger.ms": 5})
        for i, key in enumerate(keys):
            producer.produce(topic, key=key.encode(), value=str(i).encode())
        assert producer.flush(30) == 0
        records = _read_back(kafka_bootstrap, topic, n)
        assert len(records) == len(keys)
        assert all(p == murmur2_partition(k.encode(), n) for k, _, p in records)
        assert {p for _, _, p in records} == set(range(n))
    finally:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        for future in admin.delete_topics([topic], operation_timeout=30).values():
            future.result(timeout=60)
