"""Running every scenario in one process against one broker, so the ratios are fair.

:func:`run_bench` is what ``channelcast bench`` and the tests call. A scenario that fails
is recorded in ``results.errors`` and the others still run; nothing here raises for a
scenario failure. :func:`bench` adds the output folder. Neither starts a broker.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from channelcast.bench import fanout, filtering, latency, scenarios
from channelcast.bench.java import check_kafka_libs
from channelcast.bench.model import BenchConfig, BenchResults
from channelcast.bench.report import write_outputs
from channelcast.bench.targets import KafkaTarget, MemoryTarget, Target, describe_machine

Log = Callable[[str], None]

DEFAULT_OUTPUT = Path("bench-results")

CEILING_NOT_RUN = "ceiling: not run: no --kafka-libs (the folder of Kafka's jars)"
"""What the report says of the Java ceiling when it was given no Kafka jars."""


def _quiet(_msg: str) -> None:
    return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def run_bench(target: Target, config: BenchConfig, log: Log = _quiet) -> BenchResults:
    """Run the configured scenarios against ``target``; returns everything measured."""
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    results = BenchResults(config=config, broker=target.url,
                           machine=describe_machine(target), started=started)
    # `channelcast bench` freezes its start-up heap (channelcast.runtime); say whether it is.
    results.machine["gc_frozen_objects"] = f"{gc.get_freeze_count():,}"
    t0 = time.perf_counter()
    log = _elapsed(log, t0)
    wanted = set(config.scenarios)
    if target.bootstrap is not None and config.warm_up_s > 0:
        try:
            took = await scenarios.warm_up_broker(target, config, log)
            results.machine["broker_warm_up"] = f"{took:.0f} s of raw load before the scenarios"
        except Exception as exc:
            results.errors.append(f"warm-up: {_describe(exc)}")
    if "strategies" in wanted:
        results.strategies = await scenarios.strategy_comparison(target, config, log,
                                                                 results.errors)
        for n in range(2, config.repeat + 1):
            log(f"[strategies] run {n} of {config.repeat}")
            # Fresh topic names: a name deleted a moment ago may still be being removed.
            again = replace(config, run_id=f"{config.run_id}r{n}")
            results.repeats.append(await scenarios.strategy_comparison(
                target, again, log, results.errors))
    kafka_only = [s for s in ("overhead", "ceiling", "filter", "latency") if s in wanted]
    if target.bootstrap is None:
        results.skipped += [f"{s}: needs Kafka (raw confluent-kafka / Java baselines)"
                            for s in kafka_only]
    else:
        if "overhead" in wanted:
            try:
                rows, trips = await scenarios.overhead(target, config,
                                                       _round_trip_rate(results), log)
                results.throughput += rows
                results.round_trips += trips
            except Exception as exc:
                results.errors.append(f"overhead: {_describe(exc)}")
        if "ceiling" in wanted and target.kafka_libs is None:
            results.skipped.append(CEILING_NOT_RUN)
        elif "ceiling" in wanted:
            try:
                size = scenarios.envelope_size(
                    config.message_bytes, [f"ovh.{config.overhead_channels - 1}"])
                results.throughput.append(await scenarios.ceiling(target, config, size, log))
            except Exception as exc:
                results.errors.append(f"ceiling: {_describe(exc)}")
    if "filter" in wanted and target.bootstrap is not None:
        try:
            results.reads += await filtering.fanout_read(target, config, log)
        except Exception as exc:
            results.errors.append(f"filter: {_describe(exc)}")
    if "latency" in wanted and target.bootstrap is not None:
        try:
            results.process_latency += await latency.process_latency(target, config, log)
        except Exception as exc:
            results.errors.append(f"latency: {_describe(exc)}")
    if "fanout" in wanted:
        try:
            ok, reason = fanout.available()
            if not ok:
                results.skipped.append(f"fanout: {reason}")
            else:
                results.fanout += await fanout.fanout(target, config, log)
        except Exception as exc:
            results.errors.append(f"fanout: {_describe(exc)}")
    results.seconds = time.perf_counter() - t0
    results.machine["load_average_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return results


def _elapsed(log: Log, t0: float) -> Log:
    """Progress lines prefixed with seconds since the start: a stall in a run's figures
    (its ``max at s``) can then be put next to what the benchmark did just before."""
    if log is _quiet:
        return log

    def timed(message: str) -> None:
        log(f"[{time.perf_counter() - t0:7.1f}s] {message}")

    return timed


def _round_trip_rate(results: BenchResults) -> float:
    """The raw round trip runs at the load of grouped's "fraction of saturation" run."""
    grouped = results.strategy("grouped")
    if grouped is not None:
        for run in grouped.runs:
            if run.label.endswith("of saturation") and run.offered_rate:
                return run.offered_rate
    rate = results.config.rates[0]
    return rate if not math.isnan(rate) else 1000.0


def kafka_target_for(config: BenchConfig, bootstrap: str,
                     kafka_libs: Path | None = None) -> KafkaTarget:
    """The Kafka target with the run's librdkafka settings: channelcast's brokers get the
    same overrides the raw baselines get. ``kafka_libs`` (Kafka's jars) enables the Java
    ceiling."""
    return KafkaTarget(bootstrap, producer=dict(config.producer),
                       consumer=dict(config.consumer), kafka_libs=kafka_libs)


def bench(config: BenchConfig, *, bootstrap: str | None = None,
          kafka_libs: Path | None = None, output: Path = DEFAULT_OUTPUT, log: Log = _quiet,
          ping_timeout_s: float = 10.0) -> tuple[BenchResults, dict[str, Path]]:
    """Run on Kafka at ``bootstrap`` (``HOST:PORT,...``), or on the memory broker without
    it; write report.md, results.json and bench.png into a new folder under ``output``.
    ``kafka_libs`` is a folder of Kafka's jars for the Java ceiling (without it that
    scenario is reported as not run).

    Raises (nothing run, nothing written) ConfigError if ``kafka_libs`` holds no Kafka
    jars, BrokerUnavailable if the Kafka broker does not answer within
    ``ping_timeout_s`` seconds."""
    target: Target
    if kafka_libs is not None:
        kafka_libs = check_kafka_libs(kafka_libs)
    if bootstrap:
        kafka_target = kafka_target_for(config, bootstrap, kafka_libs)
        kafka_target.ping(ping_timeout_s)
        target = kafka_target
    else:
        target = MemoryTarget()
    results = asyncio.run(run_bench(target, config, log))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    paths = write_outputs(results, output / f"{stamp}-{config.run_id}")
    return results, paths
