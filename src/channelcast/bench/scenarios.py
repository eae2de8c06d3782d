"""The benchmark scenarios, written against the Broker protocol (memory or Kafka).

* :func:`strategy_comparison`: the original's mapping at N channels, one-per-channel
  against grouped, same messages: topics, partitions, publish rate at saturation, and
  publish-to-subscriber latency at fixed offered loads and at saturation.
* :func:`overhead`: channelcast's publish and subscribe paths against raw confluent-kafka
  loops with the same message sizes (Kafka only), plus the raw produce-to-consume round
  trip at the same offered load as channelcast's "fraction of saturation" run.
* :func:`ceiling`: Kafka's own Java ``ProducerPerformance`` against the same broker, run
  from the Kafka jars the target was given (:mod:`.java`).

Latency is publish-to-subscriber: the sender writes the *intended* send time
(``time.monotonic_ns``, same process) into the message; the subscriber subtracts it from
the receive time. Every publish goes through the real path (validate, encode, route,
produce, acknowledge; consume, decode, filter, queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import random
import re
import string
import subprocess
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson

from channelcast.bench.hist import FixedRate, LatencyRecorder
from channelcast.bench.java import java_command
from channelcast.bench.model import BenchConfig, LatencyRun, StrategyResult, ThroughputRow
from channelcast.bench.targets import Target
from channelcast.brokers import Broker, Subscription
from channelcast.brokers.base import HEADER_CHANNEL, HEADER_EVENT, HEADER_ID
from channelcast.config import KafkaSettings, TopicMapping
from channelcast.errors import BrokerError, ConfigError, PublishError
from channelcast.message import MESSAGE, Envelope, encode, new_id
from channelcast.strategies import TopicSpec, create_strategy
from channelcast.types import ChannelName, Position, TopicName

if TYPE_CHECKING:
    from channelcast.bench.raw import RawMessage

_orjson_dumps = orjson.dumps

EVENT = "bench"
PROBE = "probe"

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


# --- settings and channels -----------------------------------------------------------


def original_mapping(run_id: str) -> KafkaSettings:
    """The PHP original's grouped mapping (user.* -> 10 partitions, public.* -> 3,
    default 10), with topic names unique to this run."""
    return KafkaSettings(
        topic_strategy="grouped",
        default_topic=f"bench.{run_id}.realtime",
        default_partitions=10,
        topic_mapping=(
            TopicMapping("user.*", TopicName(f"bench.{run_id}.user"), 10),
            TopicMapping("public.*", TopicName(f"bench.{run_id}.public"), 3),
        ),
    )


def one_per_channel(run_id: str) -> KafkaSettings:
    return KafkaSettings(topic_strategy="one-per-channel", topic_prefix=f"bench_{run_id}")


def bench_channels(n: int) -> list[ChannelName]:
    """N channels like the original's examples: 80% ``user.i``, 10% ``public.i``, and the
    rest unmatched (``room.i``, the default topic)."""
    out: list[ChannelName] = []
    for i in range(n):
        kind = i % 10
        prefix = "user" if kind < 8 else "public" if kind == 8 else "room"
        out.append(ChannelName(f"{prefix}.{i}"))
    return out


def needed_topics(kafka: KafkaSettings, channels: Sequence[str]) -> list[TopicSpec]:
    """Every topic a broker with these settings creates or uses for the channels (the
    declared ones too: the Kafka broker creates those at start)."""
    strategy = create_strategy(kafka)
    specs = {s.name: s for s in strategy.topics(channels)}
    for topic in strategy.topics_for(channels):
        specs.setdefault(topic, TopicSpec(topic, 1))
    return [specs[name] for name in sorted(specs)]


def padding_for(size: int, channels: Sequence[str]) -> str:
    """Padding that makes a benchmark envelope about ``size`` bytes encoded.

    Random letters (fixed seed), not one repeated character: lz4 would squeeze a run of
    "xxxx" to nothing and flatter every loop. Kafka's ProducerPerformance also sends
    random letters, one payload reused for every record, as this does."""
    longest = max(channels, key=len)
    sample = Envelope(channel=ChannelName(longest), event=EVENT,
                      data={"t": 10**13, "r": 999_999, "p": ""})
    rng = random.Random(size)
    return "".join(rng.choice(string.ascii_letters) for _ in range(
        max(0, size - len(encode(sample)))))


def envelope_size(message_bytes: int, channels: Sequence[str]) -> int:
    """The encoded size of a benchmark envelope on these channels (raw loops use it)."""
    channel = ChannelName(max(channels, key=len))
    return len(encode(_envelope(channel, 0, time.monotonic_ns(),
                                padding_for(message_bytes, channels))))


# --- the subscriber side ---------------------------------------------------------------


class GcPauses:
    """The benchmark process's garbage-collector pauses while installed (``gc.callbacks``):
    a stop-the-world pause delays every thread's Python code, the consumer's included."""

    def __init__(self) -> None:
        self.max_ns = 0
        self.total_ns = 0
        self._started = 0

    def __call__(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        elif self._started:
            pause = time.perf_counter_ns() - self._started
            self._started = 0
            self.total_ns += pause
            self.max_ns = max(self.max_ns, pause)

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self)


@dataclass
class _Phase:
    tag: int
    recorder: LatencyRecorder = field(default_factory=LatencyRecorder)
    record_latency: bool = True
    received: int = 0
    first_ns: int = 0
    last_ns: int = 0
    expected: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    begun_ns: int = field(default_factory=time.monotonic_ns)
    worst_ns: int = -1
    worst_sent_ns: int = 0
    gc: GcPauses = field(default_factory=GcPauses)

    def check(self) -> None:
        if self.expected is not None and self.received >= self.expected:
            self.done.set()


class Collector:
    """Reads a subscription in a task and records each message's latency into the phase
    it belongs to (``data["r"]``); probes mark partitions as live."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.phase: _Phase | None = None
        self.probed: set[tuple[str, int]] = set()
        self.probe_seen = asyncio.Event()
        self.stale = 0
        self.failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench-collector")

    async def _run(self) -> None:
        clock = time.monotonic_ns
        try:
            async for record in self.subscription:
                now = clock()
                env = record.envelope
                data = env.data
                if env.event == PROBE:
                    self.probed.add((record.position.topic, record.position.partition))
                    self.probe_seen.set()
                    continue
                phase = self.phase
                if phase is None or not isinstance(data, dict) or data.get("r") != phase.tag:
                    self.stale += 1
                    continue
                if phase.record_latency:
                    sent = int(data["t"])
                    phase.recorder.record_ns(now - sent)
                    if now - sent > phase.worst_ns:
                        phase.worst_ns, phase.worst_sent_ns = now - sent, sent
                if not phase.received:
                    phase.first_ns = now
                phase.last_ns = now
                phase.received += 1
                if phase.expected is not None and phase.received >= phase.expected:
                    phase.done.set()
        except Exception as exc:  # reported by the phase that waits
            self.failure = exc
            if self.phase is not None:
                self.phase.done.set()
            self.probe_seen.set()

    async def stop(self) -> None:
        if self.phase is not None:
            self.phase.gc.remove()
        await self.subscription.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def begin(self, tag: int, record_latency: bool = True) -> _Phase:
        if self.phase is not None:
            self.phase.gc.remove()
        self.phase = _Phase(tag, record_latency=record_latency)
        self.phase.gc.install()
        return self.phase

    async def wait(self, phase: _Phase, expected: int, drain_s: float) -> None:
        """Wait until ``expected`` messages of the phase arrived, or no progress for
        ``drain_s`` seconds (then the rest count as lost)."""
        phase.expected = expected
        phase.check()
        last = -1
        while not phase.done.is_set():
            if phase.received == last:
                break
            last = phase.received
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(phase.done.wait(), drain_s)
        if self.failure is not None:
            raise BrokerError(f"subscription failed: {self.failure}") from self.failure


async def wait_live(broker: Broker, collector: Collector, channels: Sequence[ChannelName],
                    timeout_s: float = 90.0) -> None:
    """Publish probes to one channel per partition until the subscriber has seen each:
    only then is the subscription known to be positioned everywhere."""
    by_partition: dict[tuple[str, int], ChannelName] = {}
    for channel in channels:
        route = broker.strategy.route(channel)
        by_partition.setdefault((route.topic, route.partition), channel)
    deadline = time.monotonic() + timeout_s
    while True:
        todo = [c for tp, c in by_partition.items() if tp not in collector.probed]
        if not todo:
            return
        if collector.failure is not None:
            raise BrokerError(f"subscription failed: {collector.failure}") from collector.failure
        if time.monotonic() > deadline:
            raise BrokerError(f"subscriber not live on {len(todo)} partition(s) after "
                              f"{timeout_s:.0f}s")
        await broker.publish_many([Envelope(channel=c, event=PROBE, data=None) for c in todo])
        collector.probe_seen.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collector.probe_seen.wait(), 0.5)
        await asyncio.sleep(0.2)


# --- the publisher side ------------------------------------------------------------------


class _InFlight:
    """Publish calls running concurrently, at most ``limit``. A call leaves the count as
    soon as it finishes (not when the sender next looks), so the sender waits only while
    ``limit`` calls are really unacknowledged. The first error is raised after the others
    have finished (none is left unawaited)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.tasks: set[asyncio.Task[list[Position]]] = set()
        self.failed: list[BaseException] = []

    def _finished(self, task: asyncio.Task[list[Position]]) -> None:
        self.tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self.failed.append(exc)

    async def add(self, coro: Coroutine[Any, Any, list[Position]]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        while len(self.tasks) >= self.limit and not self.failed:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        await self._check()

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.wait(self.tasks)
        await self._check()

    async def _check(self) -> None:
        if self.failed:
            rest, self.tasks = self.tasks, set()
            await asyncio.gather(*rest, return_exceptions=True)
            raise self.failed[0]


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _envelope(channel: ChannelName, tag: int, intended_ns: int, pad: str) -> Envelope:
    return Envelope(channel=channel, event=EVENT, data={"t": intended_ns, "r": tag, "p": pad})


async def publish_saturated(broker: Broker, channels: Sequence[ChannelName], count: int,
                            tag: int, pad: str, batch: int, window: int) -> float:
    """Publish ``count`` messages round-robin over channels with ``publish_many``, ``window``
    batches in flight; returns seconds until the last one was acknowledged."""
    inflight = _InFlight(window)
    clock = time.monotonic_ns
    n = len(channels)
    start = time.perf_counter()
    for first in range(0, count, batch):
        now = clock()
        envs = [_envelope(channels[i % n], tag, now, pad)
                for i in range(first, min(count, first + batch))]
        await inflight.add(broker.publish_many(envs))
    await inflight.drain()
    return time.perf_counter() - start


async def publish_each(broker: Broker, channels: Sequence[ChannelName], count: int,
                       tag: int, pad: str, concurrency: int) -> float:
    """Publish ``count`` messages with single ``publish()`` calls from ``concurrency``
    concurrent callers (how an application publishes); seconds until all acknowledged."""
    n = len(channels)
    next_index = 0
    clock = time.monotonic_ns

    async def caller() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            await broker.publish(channels[i % n], EVENT, {"t": clock(), "r": tag, "p": pad})

    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, count)):
            group.create_task(caller())
    return time.perf_counter() - start


async def publish_fixed_rate(broker: Broker, channels: Sequence[ChannelName], rate: float,
                             seconds: float, tag: int, pad: str,
                             max_in_flight: int | None = None) -> tuple[int, float]:
    """Offer ``rate`` msg/s for ``seconds``; each message carries its *intended* send time.

    Whatever is due is published as one batch without waiting for earlier acks (up to
    ``max_in_flight`` unacknowledged batches, by default one second's worth: the raw
    round trip's sender never waits for acknowledgements either, and at high rates a
    batch is one or two messages, so 256 batches was a few milliseconds of sending that
    a broker stall used up); if the broker holds the sender up, later messages keep
    their scheduled times, so the stall shows in the latency. Returns (sent, seconds).
    """
    total = max(1, int(rate * seconds))
    schedule = FixedRate(rate, time.monotonic_ns() + 1_000_000)
    inflight = _InFlight(max_in_flight or max(256, int(rate)))
    n = len(channels)
    sent = 0
    while sent < total:
        now = time.monotonic_ns()
        due = min(total, schedule.due(now))
        if due > sent:
            envs = [_envelope(channels[i % n], tag, schedule.intended_ns(i), pad)
                    for i in range(sent, due)]
            sent = due
            await inflight.add(broker.publish_many(envs))
        if sent < total:
            pause = (schedule.intended_ns(sent) - time.monotonic_ns()) / 1e9
            await asyncio.sleep(max(0.0, pause))
    await inflight.drain()
    return sent, (time.monotonic_ns() - schedule.start_ns) / 1e9


def _run(label: str, rate: float | None, sent: int, seconds: float, phase: _Phase) -> LatencyRun:
    rec = phase.recorder
    phase.gc.remove()  # the phase is over; a late pause is the next phase's
    worst_at = ((phase.worst_sent_ns - phase.begun_ns) / 1e9 if phase.worst_ns >= 0
                else math.nan)
    return LatencyRun(label=label, offered_rate=rate, sent=sent, received=phase.received,
                      seconds=seconds, latency=rec.summary(), curve=rec.curve(),
                      histogram=rec.encode() if rec.count else "",
                      worst_at_s=worst_at, gc_max_ms=phase.gc.max_ns / 1e6,
                      gc_total_ms=phase.gc.total_ns / 1e6)


# --- before the scenarios -----------------------------------------------------------------


async def warm_up_broker(target: Target, config: BenchConfig, log: Log = _quiet) -> float:
    """``config.warm_up_s`` of untimed raw produce and round-trip load on a throwaway
    topic (removed afterwards); returns the seconds it took."""
    from channelcast.bench import raw

    bootstrap = target.bootstrap
    if bootstrap is None or config.warm_up_s <= 0:
        return 0.0
    spec = TopicSpec(TopicName(f"bench.{config.run_id}.warmup"), config.overhead_partitions)
    log(f"[warm-up] {config.warm_up_s:.0f}s of raw load on {spec.name}, untimed")
    t0 = time.perf_counter()
    await target.provision([spec])
    try:
        await asyncio.to_thread(raw.warm_up, bootstrap, spec.name, spec.partitions,
                                seconds=config.warm_up_s, size=config.message_bytes,
                                producer_config=dict(config.producer),
                                consumer_config=dict(config.consumer))
    finally:
        await target.drop([spec.name])
    return time.perf_counter() - t0


# --- scenario 1: strategies ----------------------------------------------------------------


async def measure_strategy(target: Target, name: str, kafka: KafkaSettings,
                           channels: Sequence[ChannelName], config: BenchConfig,
                           rates: Sequence[float], log: Log = _quiet) -> StrategyResult:
    """Provision, subscribe to every channel, saturate, then the fixed loads; cleans up."""
    specs = needed_topics(kafka, channels)
    log(f"[{name}] provisioning {len(specs)} topic(s), "
        f"{sum(s.partitions for s in specs)} partition(s)")
    t0 = time.perf_counter()
    await target.provision(specs)
    result = StrategyResult(strategy=name, channels=len(channels), topics=len(specs),
                            partitions=sum(s.partitions for s in specs),
                            provision_seconds=time.perf_counter() - t0)
    pad = padding_for(config.message_bytes, channels)
    loads: list[tuple[str, float]] = []
    clients: tuple[dict[str, Any], dict[str, Any]] | None = None
    try:
        async with target.broker(kafka) as broker:
            collector = Collector(broker.subscribe(channels, max_queue=10_000))
            collector.start()
            try:
                await wait_live(broker, collector, channels)
                tag = 1
                phase = collector.begin(tag)
                log(f"[{name}] saturation: {config.messages} messages")
                secs = await publish_saturated(broker, channels, config.messages, tag, pad,
                                               config.batch, config.window)
                await collector.wait(phase, config.messages, config.drain_s)
                result.publish_messages, result.publish_seconds = config.messages, secs
                result.runs.append(_run("saturation", None, config.messages, secs, phase))
                loads = [(f"{r:,.0f} msg/s", r) for r in rates]
                sat = result.publish_rate
                if sat == sat:  # not NaN
                    pct = f"{config.saturation_fraction:.0%}"
                    loads.append((f"{pct} of saturation", sat * config.saturation_fraction))
                for label, rate in loads:
                    tag += 1
                    phase = collector.begin(tag)
                    log(f"[{name}] fixed rate {rate:,.0f} msg/s for {config.rate_seconds}s")
                    sent, secs = await publish_fixed_rate(broker, channels, rate,
                                                          config.rate_seconds, tag, pad)
                    await collector.wait(phase, sent, config.drain_s)
                    result.runs.append(_run(label, rate, sent, secs, phase))
            finally:
                await collector.stop()
            clients = raw_client_configs(broker)
        if clients is not None and len(loads) > len(rates):
            # The raw baseline for the "fraction of saturation" run: the same topics and
            # partitions, rate, value size, keys and librdkafka settings, nothing else.
            label, rate = loads[-1]
            log(f"[{name}] raw round trip on the same topics at {rate:,.0f} msg/s")
            size = len(encode(_envelope(channels[-1], 0, time.monotonic_ns(), pad)))
            result.raw_round_trip, result.raw_round_trip_note = await raw_round_trip(
                kafka, channels, clients, rate, config.rate_seconds, size, config.drain_s)
        if target.bootstrap is not None:
            # The same messages to the same partitions with a bare produce() loop: tells
            # the broker's share of the difference between strategies from the client's.
            from channelcast.bench import raw

            log(f"[{name}] raw produce() loop on the same topics: {config.messages} messages")
            strategy = create_strategy(kafka)
            n = len(channels)
            messages = [raw.RawMessage(route.topic, route.partition, route.key,
                                       encode(_envelope(channels[i % n], 0, 0, pad)))
                        for i in range(config.messages)
                        for route in (strategy.route(channels[i % n]),)]
            t = await asyncio.to_thread(raw.produce_loop, target.bootstrap, messages,
                                        config=dict(config.producer))
            result.raw_publish_messages, result.raw_publish_seconds = t.messages, t.seconds
    finally:
        log(f"[{name}] removing {len(specs)} topic(s)")
        await target.drop([s.name for s in specs])
    return result


def raw_client_configs(broker: Broker) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(producer, consumer) librdkafka settings exactly as ``broker`` builds them for its
    publisher and its fan-out consumer; None for a broker that is not Kafka."""
    from channelcast.brokers.kafka.broker import KafkaBroker
    from channelcast.brokers.kafka.producer import producer_defaults

    if not isinstance(broker, KafkaBroker):
        return None
    settings = broker.settings
    producer = producer_defaults(settings.brokers, settings.timeout_s)
    producer.update(settings.producer)
    consumer = broker.consumer_config(**{
        "group.id": f"channelcast-bench-raw-{time.time_ns()}",
        "enable.auto.commit": False, "enable.auto.offset.store": False})
    return producer, consumer


def _describe_clients(producer: dict[str, Any], consumer: dict[str, Any]) -> str:
    shown = ("acks", "enable.idempotence", "linger.ms", "compression.type", "batch.size")
    fetch = ("fetch.wait.max.ms", "fetch.min.bytes", "fetch.queue.backoff.ms")
    parts = [f"{k}={producer[k]}" for k in shown if k in producer]
    parts += [f"{k}={consumer[k]}" for k in fetch if k in consumer]
    return ", ".join(parts) + (" (fetch settings: librdkafka defaults)"
                               if not any(k in consumer for k in fetch) else "")


async def raw_round_trip(kafka: KafkaSettings, channels: Sequence[ChannelName],
                         clients: tuple[dict[str, Any], dict[str, Any]], rate: float,
                         seconds: float, size: int, drain_s: float) -> tuple[LatencyRun, str]:
    """A bare confluent-kafka produce-to-consume round trip over the partitions these
    channels route to (round-robin over the channels, as the fixed-rate publisher sends,
    each with its channel as key), with channelcast's own producer and fan-out consumer
    settings; latency from each message's intended send time."""
    from channelcast.bench.raw import spread_round_trip

    strategy = create_strategy(kafka)
    routes: list[tuple[str, int, bytes | None]] = [
        (r.topic, r.partition, r.key) for c in channels for r in (strategy.route(c),)]
    producer, consumer = clients
    rec = LatencyRecorder()
    trip = await asyncio.to_thread(
        spread_round_trip, producer, consumer, routes, rate=rate, seconds=seconds, size=size,
        on_latency=rec.record_ns, drain_s=drain_s)
    sent, received, secs = trip.sent, trip.received, trip.seconds
    partitions = len({(t, p) for t, p, _ in routes})
    note = (f"{partitions} partition(s) of {len({t for t, _, _ in routes})} topic(s), "
            f"{size} B values keyed by channel (channelcast adds 3 small headers), "
            f"{rate:,.0f} msg/s; the same librdkafka settings as channelcast's producer and "
            f"fan-out consumer: {_describe_clients(producer, consumer)}")
    run = LatencyRun(label="raw round trip, same topics", offered_rate=rate, sent=sent,
                     received=received, seconds=secs, latency=rec.summary(),
                     curve=rec.curve(), histogram=rec.encode() if rec.count else "")
    return run, note


async def strategy_comparison(target: Target, config: BenchConfig, log: Log = _quiet,
                              errors: list[str] | None = None) -> list[StrategyResult]:
    """Both strategies, same channels and messages. A strategy that fails is reported in
    ``errors`` (when given, else raised) and the other still runs."""
    channels = bench_channels(config.channels)
    run = config.run_id
    out: list[StrategyResult] = []
    # One-per-channel first, so its 1,000 topic creations do not linger behind grouped.
    for name, kafka in (("one-per-channel", one_per_channel(run)),
                        ("grouped", original_mapping(run))):
        try:
            out.append(await measure_strategy(target, name, kafka, channels, config,
                                              config.rates, log))
        except Exception as exc:
            if errors is None:
                raise
            errors.append(f"strategies ({name}): {type(exc).__name__}: {exc}")
    return out


# --- scenario 2: overhead against raw confluent-kafka ------------------------------------


def overhead_settings(run_id: str, partitions: int) -> KafkaSettings:
    return KafkaSettings(topic_strategy="grouped", default_topic=f"bench.{run_id}.overhead",
                         default_partitions=partitions)


async def overhead(target: Target, config: BenchConfig, round_trip_rate: float,
                   log: Log = _quiet) -> tuple[list[ThroughputRow], list[LatencyRun]]:
    """Raw produce loop vs publish_many vs publish(); raw consumer vs subscription; raw
    round trip at ``round_trip_rate``. Same topic, channels, keys and value sizes."""
    from channelcast.bench import raw

    bootstrap = target.bootstrap
    if bootstrap is None:
        raise BrokerError("the overhead scenario needs Kafka (raw confluent-kafka baselines)")
    kafka = overhead_settings(config.run_id, config.overhead_partitions)
    topic = kafka.default_topic
    channels = [ChannelName(f"ovh.{i}") for i in range(config.overhead_channels)]
    strategy = create_strategy(kafka)
    pad = padding_for(config.message_bytes, channels)
    count = config.messages
    values = [(channels[i % len(channels)],
               encode(_envelope(channels[i % len(channels)], 0, time.monotonic_ns(), pad)))
              for i in range(count)]
    size = len(values[0][1])
    tag = 7  # the subscriber test counts messages of this tag
    messages = [raw.RawMessage(strategy.route(c).topic, strategy.route(c).partition,
                               strategy.route(c).key, encode(_envelope(c, tag, 0, pad)))
                for c, _v in values]
    del values
    partitions = [(topic, p) for p in range(config.overhead_partitions)]
    await target.provision([TopicSpec(TopicName(topic), config.overhead_partitions)])
    rows: list[ThroughputRow] = []
    trips: list[LatencyRun] = []
    note = (f"{size} B values, {len(channels)} channels, {config.overhead_partitions} "
            "partitions, channelcast's producer settings")
    producer_cfg = dict(config.producer)
    envelopes = [json.loads(m.value) for m in messages]
    # Like-for-like records: the same value, key and the three headers channelcast writes.
    with_headers = [replace(m, headers={HEADER_CHANNEL: m.key, HEADER_EVENT: EVENT,
                                        HEADER_ID: env["id"]})
                    for m, env in zip(messages, envelopes, strict=True)]
    # The application's payloads exist before it publishes, as the raw loop's bytes do;
    # channelcast's timed work is the rest: envelope (id, timestamp), encode, route,
    # produce, acknowledgement and positions.
    payloads = [env["data"] for env in envelopes]
    try:
        rounds = max(1, config.overhead_rounds)
        runs: dict[str, list[tuple[int, float, float]]] = {}  # loop -> (n, seconds, cpu s)

        def record(loop: str, n: int, seconds: float, cpu: float) -> None:
            runs.setdefault(loop, []).append((n, seconds, cpu))

        # The floor: the same payload objects, each envelope built and encoded in the loop.
        as_payloads = [replace(m, value=(channels[i % len(channels)], data), headers=None)
                       for i, (m, data) in enumerate(zip(messages, payloads, strict=True))]
        # The benchmark's own prepared inputs (several hundred thousand objects) stay out of
        # the garbage collector's way: full collections would walk them on channelcast's bill.
        gc.collect()
        gc.freeze()
        try:
            async with target.broker(kafka) as broker:
                # The same untimed warm-up the raw loop gets: one message to every channel.
                await broker.publish_many([_envelope(c, 0, time.monotonic_ns(), pad)
                                           for c in channels])
                # Alternating rounds: a noisy moment hits one round, not one loop.
                for r in range(1, rounds + 1):
                    log(f"[overhead] round {r}/{rounds}: raw produce() loop, {count} messages")
                    t = await asyncio.to_thread(raw.produce_loop, bootstrap, messages,
                                                config=producer_cfg)
                    record(RAW_PRODUCE, t.messages, t.seconds, t.cpu_seconds)
                    log(f"[overhead] round {r}/{rounds}: raw produce() + headers, {count} messages")
                    t = await asyncio.to_thread(raw.produce_loop, bootstrap, with_headers,
                                                config=producer_cfg)
                    record(RAW_PRODUCE_HEADERS, t.messages, t.seconds, t.cpu_seconds)
                    log(f"[overhead] round {r}/{rounds}: raw produce() + ULID + orjson "
                        f"envelope, {count} messages")
                    t = await asyncio.to_thread(raw.produce_built, bootstrap, as_payloads,
                                                build_envelope_record, config=producer_cfg)
                    record(RAW_PRODUCE_FLOOR, t.messages, t.seconds, t.cpu_seconds)
                    log(f"[overhead] round {r}/{rounds}: channelcast publish_many, "
                        f"{count} messages")
                    cpu0 = time.process_time()
                    secs = await publish_payloads(broker, channels, payloads, config.batch,
                                                  config.window)
                    record(PUBLISH_MANY, count, secs, time.process_time() - cpu0)
                log(f"[overhead] raw produce() + json.dumps loop: {count} messages")
                as_objects = [replace(m, value=env)
                              for m, env in zip(with_headers, envelopes, strict=True)]
                t = await asyncio.to_thread(raw.produce_loop, bootstrap, as_objects,
                                            config=producer_cfg, encode_value=_json_bytes)
                del as_objects
                record(RAW_PRODUCE_JSON, t.messages, t.seconds, t.cpu_seconds)
                log(f"[overhead] channelcast publish: {count} messages")
                cpu0 = time.process_time()
                secs = await publish_each(broker, channels, count, 0, pad, config.publishers)
                record(PUBLISH_ONE, count, secs, time.process_time() - cpu0)
        finally:
            gc.unfreeze()
        # The subscriber runs next: only the raw messages it replays stay alive.
        del envelopes, payloads, with_headers, as_payloads
        notes = {
            RAW_PRODUCE: note,
            RAW_PRODUCE_HEADERS: "the same records as channelcast writes: value, key and its "
                                 "three headers (channel, event, id)",
            PUBLISH_MANY: f"batches of {config.batch}, {config.window} in flight; payload "
                          "objects prepared, envelopes made in the timed loop",
            RAW_PRODUCE_JSON: "context: json.dumps of the envelope per message, with the "
                              "headers (what an application writing these records by hand "
                              "pays, ids aside)",
            RAW_PRODUCE_FLOOR: "context, the floor of publishing this envelope from Python: "
                               "per message a ULID and timestamp (channelcast's new_id), "
                               "the envelope encoded with orjson, the three headers, a "
                               "delivery callback keeping the offset; no checks, routing, "
                               "asyncio or positions",
            PUBLISH_ONE: f"{config.publishers} concurrent callers",
        }
        for loop in (RAW_PRODUCE, RAW_PRODUCE_HEADERS, RAW_PRODUCE_JSON, RAW_PRODUCE_FLOOR,
                     PUBLISH_MANY, PUBLISH_ONE):
            rows.append(_median_row(loop, runs[loop], notes[loop]))
        # The subscriber reads a burst live (the only way it reads); the raw consumer then
        # reads the same burst from where it starts, on its own (no producer competing).
        burst_at = await asyncio.to_thread(raw.end_offsets, bootstrap, partitions)
        log(f"[overhead] channelcast subscriber: {count} messages")
        n, secs = await _subscriber_throughput(target, kafka, channels, messages, config)
        rows.append(ThroughputRow("subscribe", "channelcast subscription", n, secs,
                                  "subscribe(channels), live, while the raw producer writes"))
        log(f"[overhead] raw consumer loop: {count} messages")
        t = await asyncio.to_thread(raw.consume_loop, bootstrap, partitions, count,
                                    start=burst_at, config=dict(config.consumer),
                                    timeout_s=max(60.0, count / 2_000))
        rows.append(ThroughputRow("subscribe", "raw confluent-kafka consumer loop",
                                  t.messages, t.seconds, "assign(), same messages, stored"))
        t = await asyncio.to_thread(raw.consume_loop, bootstrap, partitions, count,
                                    start=burst_at, config=dict(config.consumer),
                                    decode_value=json.loads,
                                    timeout_s=max(60.0, count / 2_000))
        rows.append(ThroughputRow("subscribe", "raw consumer + json.loads per message",
                                  t.messages, t.seconds, "context: the decoding any "
                                  "application needs"))
        log(f"[overhead] raw round trip at {round_trip_rate:,.0f} msg/s")
        rec = LatencyRecorder()
        trip = await asyncio.to_thread(
            raw.round_trip, bootstrap, topic, 0, rate=round_trip_rate,
            seconds=config.rate_seconds, size=size, on_latency=rec.record_ns,
            producer_config=producer_cfg, consumer_config=dict(config.consumer),
            drain_s=config.drain_s)
        trips.append(LatencyRun(
            label="raw produce-to-consume round trip", offered_rate=round_trip_rate,
            sent=trip.sent, received=trip.received, seconds=trip.seconds,
            latency=rec.summary(), curve=rec.curve(),
            histogram=rec.encode() if rec.count else ""))
    finally:
        await target.drop([topic])
    return rows, trips


RAW_PRODUCE = "raw confluent-kafka produce() loop"
RAW_PRODUCE_HEADERS = "raw produce() + channelcast's headers"
RAW_PRODUCE_JSON = "raw produce() + json.dumps + headers"
RAW_PRODUCE_FLOOR = "raw produce() + ULID + orjson envelope + headers"
PUBLISH_MANY = "channelcast publish_many()"
PUBLISH_ONE = "channelcast publish()"


def build_envelope_record(message: RawMessage) -> tuple[bytes, dict[str, str | bytes | None]]:
    """The floor loop's record for ``message.value`` = (channel, data): the envelope with a
    fresh ULID and timestamp, encoded by orjson, and channelcast's three headers."""
    channel, data = message.value
    ms = time.time_ns() // 1_000_000
    mid = new_id(ms)
    return (_orjson_dumps({"id": mid, "type": MESSAGE, "channel": channel, "event": EVENT,
                           "data": data, "timestamp": ms}),
            {HEADER_CHANNEL: message.key, HEADER_EVENT: EVENT, HEADER_ID: mid})


def _median_row(loop: str, runs: list[tuple[int, float, float]], note: str) -> ThroughputRow:
    """The run with the median rate; the note lists every run's rate and process CPU."""
    ordered = sorted(runs, key=lambda r: r[0] / r[1] if r[1] > 0 else 0.0)
    n, seconds, _cpu = ordered[(len(ordered) - 1) // 2]
    each = ", ".join(f"{m / s:,.0f} msg/s ({cpu / m * 1e6:.1f} µs CPU/msg)"
                     for m, s, cpu in runs)
    label = "runs" if len(runs) > 1 else "run"
    return ThroughputRow("publish", loop, n, seconds, f"{note}; {label}: {each}")


async def publish_payloads(broker: Broker, channels: Sequence[ChannelName],
                           payloads: Sequence[Any], batch: int, window: int) -> float:
    """``publish_many`` of one envelope per prepared payload, round-robin over channels,
    ``window`` batches in flight; seconds until the last one was acknowledged."""
    inflight = _InFlight(window)
    n = len(channels)
    count = len(payloads)
    start = time.perf_counter()
    for first in range(0, count, batch):
        await inflight.add(broker.publish_many(
            [Envelope(channels[i % n], EVENT, payloads[i])
             for i in range(first, min(count, first + batch))]))
    await inflight.drain()
    return time.perf_counter() - start


async def _subscriber_throughput(target: Target, kafka: KafkaSettings,
                                 channels: Sequence[ChannelName], messages: Sequence[RawMessage],
                                 config: BenchConfig) -> tuple[int, float]:
    """A channelcast subscription reads, live, the same burst written by the raw producer;
    (records after the first, seconds from the first to the last)."""
    from channelcast.bench import raw

    assert target.bootstrap is not None
    async with target.broker(kafka) as broker:
        collector = Collector(broker.subscribe(channels, max_queue=10_000))
        collector.start()
        try:
            await wait_live(broker, collector, channels)
            # Count only: the raw consumer it is compared with records nothing either.
            phase = collector.begin(7, record_latency=False)
            # No warm-up messages: the burst is exactly what both consumers read.
            await asyncio.to_thread(raw.produce_loop, target.bootstrap, messages,
                                    config=dict(config.producer), warm_up=False)
            await collector.wait(phase, len(messages), config.drain_s)
        finally:
            await collector.stop()
    if phase.received < len(messages):
        raise BrokerError(f"channelcast subscription got {phase.received} of "
                          f"{len(messages)} messages")
    return phase.received - 1, (phase.last_ns - phase.first_ns) / 1e9


# --- scenario 3: the Java ceiling ---------------------------------------------------------

_PERF_LINE = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec .*?"
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, "
    r"(?P<p50>\d+) ms 50th, (?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th")


def parse_producer_performance(output: str) -> tuple[int, float, dict[str, float]]:
    """(records, records/s, latency ms by name) from ProducerPerformance's final line."""
    matches = list(_PERF_LINE.finditer(output))
    if not matches:
        raise BrokerError(f"unexpected ProducerPerformance output: {output[-500:]!r}")
    m = matches[-1]
    lat = {k: float(m.group(k)) for k in ("avg", "max", "p50", "p95", "p99")}
    return int(m.group("records")), float(m.group("rate")), lat


JAVA_SHARED_SETTINGS = ("acks", "enable.idempotence", "linger.ms", "compression.type",
                        "batch.size")
"""Producer settings the Java client and librdkafka both have, under the same names."""


def java_producer_props(bootstrap: str, overrides: Mapping[str, Any]) -> list[str]:
    """The settings channelcast's producer uses that the Java client knows too, with the
    run's overrides of them (``--producer``), as ``key=value`` properties."""
    from channelcast.brokers.kafka.producer import producer_defaults

    merged = {**producer_defaults(bootstrap, 30.0), **overrides}
    settings = {k: merged[k] for k in JAVA_SHARED_SETTINGS if k in merged}
    return [f"bootstrap.servers={bootstrap}",
            *(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
              for k, v in settings.items())]


async def ceiling(target: Target, config: BenchConfig, size: int,
                  log: Log = _quiet) -> ThroughputRow:
    """Kafka's own Java producer benchmark, same broker, same record size, acks=all; run
    with the target's Kafka jars (``target.kafka_libs``: ConfigError without them)."""
    bootstrap = target.bootstrap
    if bootstrap is None:
        raise BrokerError("the ceiling scenario needs Kafka")
    libs = target.kafka_libs
    if libs is None:
        raise ConfigError("--kafka-libs", "the ceiling scenario needs the folder of Kafka's "
                                          "jars (its Java ProducerPerformance)")
    topic = f"bench.{config.run_id}.ceiling"
    partitions = config.overhead_partitions
    await target.provision([TopicSpec(TopicName(topic), partitions)])
    try:
        props = java_producer_props(bootstrap, config.producer)
        cmd = java_command(
            libs, "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
            "--num-records", str(config.java_records), "--record-size", str(size),
            "--throughput", "-1", "--producer-props", *props, heap="512m")
        log(f"[ceiling] Java ProducerPerformance: {config.java_records} records of {size} B")
        proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                       timeout=600)
        if proc.returncode != 0:
            raise PublishError(f"ProducerPerformance failed ({proc.returncode}): "
                               f"{(proc.stderr or proc.stdout)[-500:]}")
        records, rate, lat = parse_producer_performance(proc.stdout)
    finally:
        await target.drop([topic])
    return ThroughputRow(
        "publish", "Java ProducerPerformance (Kafka's own tool)", records, records / rate,
        f"{size} B records, {partitions} partitions, acks=all, lz4; its latency: "
        f"p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms")
