"""``--quick`` on real Kafka: every scenario runs, end to end, in well under 2 minutes.

It asserts that each scenario produced its figures and cleaned up after itself, never how
fast anything was (speed is what the benchmark reports, not what tests assert).
"""

from __future__ import annotations

import json
from pathlib import Path

import kafka_local
import pytest

from channelcast.bench import (
    CEILING_NOT_RUN,
    READ_COUNT,
    READ_FILTER,
    READ_GATEWAY,
    BenchConfig,
    KafkaTarget,
    bench,
    render_markdown,
    run_bench,
)
from channelcast.bench.filtering import fill_count
from channelcast.brokers.kafka.admin import KafkaAdmin


@pytest.mark.kafka
@pytest.mark.timeout(120)
def test_quick_bench_runs_every_scenario(kafka_bootstrap: str, unique: str,
                                         tmp_path: Path) -> None:
    config = BenchConfig.quick(run_id=unique)
    # The Java ceiling runs from the jars of the repository's local Kafka (what
    # scripts/bench hands to --kafka-libs); the package itself never looks for them.
    libs = kafka_local.fetch(quiet=True)
    # The 2-minute bound of --quick is the timeout above; nothing here is about speed.
    results, paths = bench(config, bootstrap=kafka_bootstrap, kafka_libs=libs, output=tmp_path)

    assert results.errors == []
    legacy, grouped = results.strategy("one-per-channel"), results.strategy("grouped")
    assert legacy is not None
    assert grouped is not None
    assert (legacy.topics, legacy.partitions) == (50, 50)
    assert (grouped.topics, grouped.partitions) == (3, 23)
    for strategy in (legacy, grouped):
        assert strategy.publish_messages == config.messages
        assert strategy.raw_publish_messages == config.messages
        assert strategy.raw_publish_seconds > 0
        assert [r.label for r in strategy.runs] == [
            "saturation", "500 msg/s", "2,000 msg/s", "20% of saturation"]
        for run in strategy.runs:
            assert run.received == run.sent > 0
            assert run.latency.count == run.sent
        # The raw baseline on the strategy's own partitions, at its fraction-of-saturation
        # rate, with the settings it reports.
        raw_trip = strategy.raw_round_trip
        assert raw_trip is not None
        assert raw_trip.received == raw_trip.sent > 0
        assert raw_trip.offered_rate == strategy.runs[-1].offered_rate
        # The partitions the channels route to (what the subscription reads, too).
        used = int(strategy.raw_round_trip_note.split(" partition(s)")[0])
        assert 0 < used <= strategy.partitions
        assert "linger.ms=5" in strategy.raw_round_trip_note
    names = {row.name for row in results.throughput}
    assert names == {"raw confluent-kafka produce() loop", "channelcast publish_many()",
                     "raw produce() + json.dumps + headers", "channelcast publish()",
                     "raw produce() + channelcast's headers",
                     "raw produce() + ULID + orjson envelope + headers",
                     "raw confluent-kafka consumer loop", "channelcast subscription",
                     "raw consumer + json.loads per message",
                     "Java ProducerPerformance (Kafka's own tool)"}
    for row in results.throughput:
        assert row.messages > 0, row
        assert row.seconds > 0, row
        if row.group == "publish" and "Java" not in row.name:
            assert "µs CPU/msg" in row.note, row  # every publish loop reports its CPU
    (trip,) = results.round_trips
    assert trip.received == trip.sent > 0
    assert trip.latency.count == trip.sent

    assert [row.name for row in results.fanout] == ["channelcast gateway",
                                                     "plain websockets broadcast"]
    for row in results.fanout:
        # The burst and the fixed-rate messages reached every client.
        assert row.messages == config.fanout_clients * config.fanout_burst, row
        assert row.latency is not None
        assert row.latency.count == config.fanout_clients * config.fanout_messages
    # The fan-out read: each reader drained the whole pre-filled range once; the gateway
    # node delivered every message of its channel, the raw filter took exactly those.
    assert [r.reader for r in results.reads] == [READ_GATEWAY, READ_FILTER, READ_COUNT]
    records = fill_count(config.filter_records, config.filter_channels + 1)
    for read in results.reads:
        assert read.records == records - 1, read  # timed from the first to the last
        assert read.seconds > 0, read
        assert read.cpu_seconds > 0, read
    gateway, filtering, counting = results.reads
    assert gateway.matched == filtering.matched == (records - 1) // 101 + 1
    assert counting.matched == records
    # Latency across processes: every message of every run arrived, channelcast and raw
    # at the same rate, which is the fraction of that run's own saturation.
    (crossed,) = results.process_latency
    assert crossed.partitions == 23
    assert crossed.saturation.received == crossed.saturation.sent == config.messages
    for run in (crossed.channelcast, crossed.raw):
        assert run.received == run.sent > 0, run
        assert run.latency.count == run.sent, run
    assert crossed.channelcast.sent == crossed.raw.sent
    assert crossed.channelcast.offered_rate == crossed.raw.offered_rate == pytest.approx(
        crossed.saturation.achieved_rate * config.saturation_fraction)
    assert crossed.p99_ratio > 0
    assert results.skipped == []
    assert results.machine["kafka"] == kafka_local_version(libs)

    report = paths["report"].read_text()
    for heading in ("## 1. Topic strategies", "## 2-3. Overhead", "## 4. Gateway fan-out",
                    "## 5. Fan-out read", "## 6. Latency at 20% of saturation", "## Targets"):
        assert heading in report
    assert paths["plot"].stat().st_size > 10_000
    assert json.loads(paths["json"].read_text())["config"]["run_id"] == unique

    leftovers = [t for t in KafkaAdmin(kafka_bootstrap).list_topics() if unique in t]
    assert leftovers == []


@pytest.mark.kafka
@pytest.mark.timeout(60)
async def test_warm_up_loads_the_broker_and_removes_its_topic(kafka_bootstrap: str,
                                                              unique: str) -> None:
    from channelcast.bench import raw
    from channelcast.strategies import TopicSpec
    from channelcast.types import TopicName

    # The loop itself: produce loops, then a round trip over every partition.
    topic = f"{unique}.warm"
    raw.create_topics(kafka_bootstrap, [TopicSpec(TopicName(topic), 3)])
    try:
        sent = raw.warm_up(kafka_bootstrap, topic, 3, seconds=2.0, size=100)
        ends = raw.end_offsets(kafka_bootstrap, [(topic, p) for p in range(3)])
        assert sent >= 20_000 + 1  # at least one produce loop and a round-trip message
        assert sum(ends.values()) >= sent  # every one is in the log (plus probes)
        assert all(end > 0 for end in ends.values())
    finally:
        raw.delete_topics(kafka_bootstrap, [topic])

    # As the benchmark runs it: before the scenarios, recorded, its topic gone after.
    config = BenchConfig.quick(run_id=unique, scenarios=(), warm_up_s=1.0)
    results = await run_bench(KafkaTarget(kafka_bootstrap), config)
    assert results.errors == []
    assert "raw load before the scenarios" in results.machine["broker_warm_up"]
    leftovers = [t for t in KafkaAdmin(kafka_bootstrap).list_topics() if unique in t]
    assert leftovers == []


def kafka_local_version(libs: Path) -> str:
    (jar,) = libs.glob("kafka-clients-*.jar")
    return jar.stem.removeprefix("kafka-clients-")


@pytest.mark.kafka
@pytest.mark.timeout(60)
async def test_without_kafka_jars_the_ceiling_is_reported_as_not_run(kafka_bootstrap: str,
                                                                     unique: str) -> None:
    config = BenchConfig.quick(run_id=unique, scenarios=("ceiling",))
    results = await run_bench(KafkaTarget(kafka_bootstrap), config)
    assert results.errors == []
    assert results.throughput == []
    assert results.skipped == [CEILING_NOT_RUN]
    assert "- ceiling: not run: no --kafka-libs" in render_markdown(results)
