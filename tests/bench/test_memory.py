"""The scenarios wired to the Broker protocol, run on the memory broker (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from channelcast.bench import BenchConfig, MemoryTarget, bench, run_bench
from channelcast.bench.scenarios import bench_channels, needed_topics, original_mapping
from channelcast.cli.main import main
from channelcast.errors import BrokerError, BrokerUnavailable

TINY = {"channels": 20, "messages": 2_000, "rates": (400.0,), "rate_seconds": 0.5,
        "drain_s": 5.0, "scenarios": ("strategies",)}


def test_channels_follow_the_original_mapping() -> None:
    channels = bench_channels(1000)
    assert len(set(channels)) == 1000
    specs = needed_topics(original_mapping("x"), channels)
    assert {(s.name, s.partitions) for s in specs} == {
        ("bench.x.user", 10), ("bench.x.public", 3), ("bench.x.realtime", 10)}


@pytest.mark.timeout(60)
async def test_strategy_comparison_on_the_memory_broker() -> None:
    config = BenchConfig.quick(**TINY)
    results = await run_bench(MemoryTarget(), config)
    assert results.errors == []
    legacy, grouped = results.strategy("one-per-channel"), results.strategy("grouped")
    assert legacy is not None
    assert grouped is not None
    assert (legacy.topics, legacy.partitions) == (20, 20)
    assert (grouped.topics, grouped.partitions) == (3, 23)
    for strategy in (legacy, grouped):
        assert strategy.publish_messages == 2_000
        assert strategy.publish_rate > 0
        assert strategy.raw_publish_messages == 0  # no raw client on the memory broker
        labels = [r.label for r in strategy.runs]
        assert labels == ["saturation", "400 msg/s", "20% of saturation"]
        for run in strategy.runs:
            # Every message published reached the subscriber and was measured.
            assert run.sent > 0
            assert run.received == run.sent
            assert run.latency.count == run.sent
            assert 0 < run.latency.p50_ms <= run.latency.p99_ms <= run.latency.max_ms
            # The slowest message was sent during the run; GC pauses were watched.
            assert 0 <= run.worst_at_s <= run.seconds + 1
            assert 0 <= run.gc_max_ms <= run.gc_total_ms
        assert strategy.raw_round_trip is None  # no raw client on the memory broker
        fixed = strategy.runs[1]
        assert fixed.sent == 200  # 400 msg/s for 0.5 s
    assert results.skipped == []  # only what was asked for ran


@pytest.mark.timeout(60)
def test_cli_runs_on_memory_and_writes_the_report(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--quick", "--channels", "10", "--messages", "500", "--rates", "200",
                 "--rate-seconds", "0.3", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "## 1. Topic strategies" in out.out
    assert "overhead: needs Kafka" in out.out
    (run_dir,) = tmp_path.iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == ["bench.png", "report.md",
                                                         "results.json"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--scenarios", "strategies,warp"], "unknown scenario"),
    (["--rates", "fast"], "--rates"),
    (["--kafka-libs", "/nonexistent/kafka/libs"], "--kafka-libs"),
    (["--repeat", "0"], "bench.repeat"),
    (["--rounds", "0"], "bench.overhead_rounds"),
    (["--warm-up", "-1"], "bench.warm_up_s"),
    (["--producer", "linger.ms"], "--producer"),
    (["--consumer", "=1"], "--consumer"),
])
def test_cli_bad_options_are_one_line_errors(argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.timeout(30)
def test_fails_fast_when_kafka_is_not_there(tmp_path: Path) -> None:
    # Nothing listens on port 1: one clear error, no report, no per-scenario waits.
    with pytest.raises(BrokerUnavailable, match=r"unreachable|no answer"):
        bench(BenchConfig.quick(), bootstrap="127.0.0.1:1", output=tmp_path,
              ping_timeout_s=2.0)
    assert list(tmp_path.iterdir()) == []


def test_gc_pauses_are_measured_while_installed() -> None:
    import gc

    from channelcast.bench.scenarios import GcPauses

    pauses = GcPauses()
    pauses.install()
    pauses.install()  # once only
    try:
        assert gc.callbacks.count(pauses) == 1
        gc.collect()
    finally:
        pauses.remove()
    assert pauses not in gc.callbacks
    assert 0 < pauses.max_ns <= pauses.total_ns
    seen = pauses.total_ns
    gc.collect()
    assert pauses.total_ns == seen  # removed: no longer counting


@pytest.mark.timeout(60)
async def test_repeat_runs_the_strategies_again_on_fresh_topics() -> None:
    config = BenchConfig.quick(**{**TINY, "repeat": 2})
    results = await run_bench(MemoryTarget(), config)
    assert results.errors == []
    assert len(results.repeats) == 1
    assert [s.strategy for s in results.repeats[0]] == ["one-per-channel", "grouped"]
    assert all(run.received == run.sent > 0 for s in results.repeats[0] for run in s.runs)


async def test_in_flight_counts_only_unfinished_calls_and_raises_the_first_error() -> None:
    import asyncio

    from channelcast.bench.scenarios import _InFlight
    from channelcast.types import Position

    gates = [asyncio.Event() for _ in range(3)]

    async def call(i: int) -> list[Position]:
        await gates[i].wait()
        return []

    inflight = _InFlight(2)
    await inflight.add(call(0))
    gates[0].set()
    await asyncio.sleep(0.01)
    assert not inflight.tasks  # finished: out of the count without anyone looking
    await inflight.add(call(1))
    adding = asyncio.ensure_future(inflight.add(call(2)))
    await asyncio.sleep(0.01)
    assert not adding.done()  # two unacknowledged: the sender waits
    gates[1].set()
    await asyncio.wait_for(adding, 1)
    gates[2].set()
    await inflight.drain()

    async def boom() -> list[Position]:
        raise BrokerError("no")

    failing = _InFlight(10)
    await failing.add(boom())
    await asyncio.sleep(0.01)
    with pytest.raises(BrokerError, match="no"):
        await failing.drain()


def test_librdkafka_overrides_reach_channelcast_and_the_raw_baselines_alike() -> None:
    from channelcast.bench.runner import kafka_target_for
    from channelcast.bench.scenarios import raw_client_configs

    config = BenchConfig.quick(producer={"linger.ms": "1"}, consumer={"fetch.wait.max.ms": "50"})
    target = kafka_target_for(config, "127.0.0.1:1")
    broker = target.broker(original_mapping("x"))  # built, never started: no connection
    # channelcast's publisher and fan-out consumer are built from these settings, and the
    # raw round trip copies exactly what the broker would use.
    clients = raw_client_configs(broker)
    assert clients is not None
    producer, consumer = clients
    assert producer["linger.ms"] == "1"
    assert consumer["fetch.wait.max.ms"] == "50"
