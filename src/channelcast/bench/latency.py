"""Scenario ``latency``: publish-to-subscriber latency as deployments run it, publisher
and subscriber in processes of their own, against the raw round trip run the same way.

Per run, on fresh topics of the strategies scenario's grouped mapping (``channels``
channels over its 23 partitions), each side a process of its own (:mod:`.nodes`):

1. **saturation**: a channelcast publisher process sends ``messages`` messages with
   ``publish_many`` (batches of ``batch``, ``window`` in flight) while a channelcast
   subscriber process reads them all; the rate is until the last acknowledgement.
2. at ``saturation_fraction`` (20%) of that rate for ``rate_seconds``: the channelcast
   publisher (``publish_many`` of whatever is due, each message carrying its intended
   send time) and subscriber, and the raw round trip: a bare confluent-kafka producer
   process (values of the envelope's size stamped with their intended send time, the
   same keys and the three headers channelcast writes) and a bare consumer process that
   has every partition assigned and ``poll()``s. Both pairs use the librdkafka settings
   the KafkaBroker builds (publisher; fan-out consumer) and route over the same
   partitions. Which pair goes first alternates from run to run.

Latency is from each message's intended send time (``time.monotonic_ns``, one clock for
every process on the machine) to its arrival in the subscriber process (coordinated
omission accounted for). The target compares the p99s, judged on the median of the
runs' ratios. The in-process figure of the strategies scenario stays as context.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from channelcast.bench.hist import LatencyRecorder
from channelcast.bench.model import BenchConfig, LatencyRun, ProcessLatency
from channelcast.bench.procs import Child, child
from channelcast.bench.scenarios import (
    bench_channels,
    envelope_size,
    needed_topics,
    original_mapping,
    padding_for,
)
from channelcast.bench.targets import Target
from channelcast.errors import BrokerError

Log = Callable[[str], None]

SATURATION, FIXED = 1, 2


def _quiet(_msg: str) -> None:
    return None


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.asynccontextmanager
async def _pair(writer: str, reader: str, spec: Mapping[str, Any],
                writer_spec: Mapping[str, Any], reader_spec: Mapping[str, Any]
                ) -> AsyncIterator[tuple[Child, Child]]:
    """A reader and a writer process, both ready (the reader live first)."""
    async with (child(reader, {**spec, **reader_spec}) as read,
                child(writer, {**spec, **writer_spec}) as write):
        await read.ready()
        await write.ready()
        yield write, read


def _latency_run(label: str, rate: float | None, sent: int, seconds: float,
                 got: Mapping[str, Any]) -> LatencyRun:
    recorder = LatencyRecorder()
    recorder.merge_encoded(got["histogram"])
    return LatencyRun(label=label, offered_rate=rate, sent=sent, received=got["received"],
                      seconds=seconds, latency=recorder.summary(), curve=recorder.curve(),
                      histogram=got["histogram"])


async def _run_pair(writer: str, reader: str, spec: Mapping[str, Any],
                    writer_spec: Mapping[str, Any], expected: int, label: str,
                    rate: float | None, timeout_s: float, drain_s: float) -> LatencyRun:
    async with _pair(writer, reader, spec, writer_spec,
                     {"expected": expected, "drain_s": drain_s}) as (write, read):
        read.go()
        write.go()
        sent = await write.result(timeout_s)
        got = await read.result(timeout_s + drain_s)
    return _latency_run(label, rate, int(sent["sent"]), float(sent["seconds"]), got)


async def process_latency(target: Target, config: BenchConfig,
                          log: Log = _quiet) -> list[ProcessLatency]:
    """Every run (``config.repeat``), in order; raises BrokerError on a failed run."""
    bootstrap = target.bootstrap
    if bootstrap is None:
        raise BrokerError("the latency scenario needs Kafka (raw confluent-kafka processes)")
    channels = bench_channels(config.channels)
    pad = padding_for(config.message_bytes, channels)
    size = envelope_size(config.message_bytes, channels)
    fraction = config.saturation_fraction
    label = f"{fraction:.0%} of saturation"
    out: list[ProcessLatency] = []
    for n in range(1, config.repeat + 1):
        run_id = f"{config.run_id}l{n}"
        specs = needed_topics(original_mapping(run_id), channels)
        await target.provision(specs)
        spec = {"bootstrap": bootstrap, "run_id": run_id, "channels": config.channels,
                "producer": dict(config.producer), "consumer": dict(config.consumer),
                "pad": pad, "size": size}
        load = _load()
        try:
            log(f"[latency] run {n}/{config.repeat}: channelcast publisher and subscriber "
                f"processes, saturation: {config.messages:,} messages")
            saturation = await _run_pair(
                "cc-publisher", "cc-subscriber", {**spec, "tag": SATURATION},
                {"mode": "saturation", "count": config.messages, "batch": config.batch,
                 "window": config.window}, config.messages, "saturation", None,
                config.drain_s + config.messages / 1_000, config.drain_s)
            rate = saturation.achieved_rate * fraction
            if not rate > 0:
                raise BrokerError("the saturation run published nothing")
            expected = max(1, int(rate * config.rate_seconds))
            timeout_s = config.rate_seconds + config.drain_s + 60
            fixed = {"mode": "rate", "rate": rate, "seconds": config.rate_seconds}
            runs: dict[str, LatencyRun] = {}
            order = ["channelcast", "raw"] if n % 2 else ["raw", "channelcast"]
            for who in order:
                log(f"[latency] run {n}: {who} at {rate:,.0f} msg/s for "
                    f"{config.rate_seconds:g}s, publisher and subscriber processes")
                if who == "channelcast":
                    runs[who] = await _run_pair(
                        "cc-publisher", "cc-subscriber", {**spec, "tag": FIXED}, fixed,
                        expected, label, rate, timeout_s, config.drain_s)
                else:
                    runs[who] = await _run_pair(
                        "raw-producer", "raw-consumer", spec, fixed, expected,
                        "raw round trip, separate processes", rate, timeout_s,
                        config.drain_s)
        finally:
            await target.drop([s.name for s in specs])
        out.append(ProcessLatency(n, sum(s.partitions for s in specs), saturation,
                                  runs["channelcast"], runs["raw"], load,
                                  " then ".join(order)))
    return out
