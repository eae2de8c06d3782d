"""The benchmark's own processes: readers and writers that must not share an interpreter
(its GIL, event loop and garbage collector) with what they are compared with, as in a
deployment, where a publisher, a gateway node and a consumer are processes of their own.

Run as ``python -m channelcast.bench.nodes MODE SPEC`` (SPEC: one JSON object), driven by
:mod:`.procs`; the benchmark package never imports this module. On stdout, one line
each: ``ready`` once set up, then the result as one JSON object (or ``error: ...``, exit
code 1, traceback on stderr). Modes that wait for it start their timed part when ``go``
arrives on stdin.

Modes:

* ``gateway-reader``: a gateway node (a :class:`~channelcast.brokers.kafka.broker.
  KafkaBroker` and the gateway's :class:`~channelcast.gateway.hub.Hub`, one listener
  that counts) subscribed to one channel; ``ready`` once a probe of that channel came
  through, so its broker subscription is live. After ``go`` it waits until ``expected``
  messages of the channel were delivered and reports when the first and the last came.
* ``raw-reader``: :func:`channelcast.bench.raw.read_range`.
* ``cc-publisher``: a KafkaBroker that, after ``go``, publishes with ``publish_many``
  either ``count`` messages as fast as it can (``saturation``, batches in flight as
  the strategies scenario sends them) or ``rate`` messages per second for ``seconds``
  (each carrying its intended send time); ``ready`` once it has published one probe to
  every partition.
* ``cc-subscriber``: a KafkaBroker subscription to every channel; ``ready`` once live
  (``Subscription.ready()``); records each message's latency from the time it carries.
* ``raw-producer`` / ``raw-consumer``: the same two with bare confluent-kafka
  (:func:`channelcast.bench.raw.produce_stamped`, :func:`~channelcast.bench.raw.
  consume_stamped`), with the librdkafka settings the KafkaBroker builds for its
  publisher and its fan-out consumer.

Every channelcast mode routes with the strategies scenario's grouped mapping
(``original_mapping(run_id)``) over ``channels`` channels (``bench_channels``), so the
raw modes write to and read from the same partitions with the same keys.

It never creates or deletes topics (the parent does) and never judges speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from channelcast.errors import BrokerError
from channelcast.types import ChannelName

PROBE_EVENT = "probe"
"""Event of the messages that tell a reader's subscription is live (never counted)."""


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _wait_for_go() -> None:
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != "go":
        raise BrokerError(f"expected 'go' on stdin, got {line!r}")


def _kafka_settings(spec: Mapping[str, Any]) -> Any:
    """The KafkaSettings a spec names, with the run's librdkafka overrides: the grouped
    mapping of the strategies scenario (``run_id``), or one topic (``topic``,
    ``partitions``) for every channel."""
    from dataclasses import replace

    from channelcast.bench.scenarios import original_mapping
    from channelcast.config import KafkaSettings

    overrides = {"brokers": spec["bootstrap"], "timeout_s": 60.0,
                 "producer": dict(spec.get("producer", {})),
                 "consumer": dict(spec.get("consumer", {}))}
    if "run_id" in spec:
        return replace(original_mapping(spec["run_id"]), **overrides)
    return KafkaSettings(topic_strategy="grouped", default_topic=spec["topic"],
                         default_partitions=int(spec.get("partitions", 1)), **overrides)


def _channels(spec: Mapping[str, Any]) -> list[ChannelName]:
    from channelcast.bench.scenarios import bench_channels

    return bench_channels(int(spec["channels"]))


class _CountingListener:
    """A gateway listener (the Hub's Listener protocol) that only counts deliveries."""

    connection_id = "bench-reader"

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = 0
        self.first_ns = self.last_ns = 0
        self.cpu_first = self.cpu_last = 0.0
        self.probe_seen = asyncio.Event()
        self.done = asyncio.Event()
        self.lost: str | None = None

    def attached(self, channel: ChannelName, result: Any) -> None:
        return None

    def deliver(self, channel: ChannelName, record: Any, text: str) -> None:
        if record.event == PROBE_EVENT:
            self.probe_seen.set()
            return
        now = time.monotonic_ns()
        if not self.received:
            self.first_ns, self.cpu_first = now, time.process_time()
        self.received += 1
        if self.received >= self.expected:
            self.last_ns, self.cpu_last = now, time.process_time()
            self.done.set()

    def presence_changed(self, channel: ChannelName, diff: Any) -> None:
        return None

    def subscription_lost(self, channel: ChannelName, reason: str) -> None:
        self.lost = reason
        self.done.set()


async def _until_done(done: asyncio.Event, progress: Callable[[], int],
                      drain_s: float) -> None:
    """Wait for ``done``, giving up after ``drain_s`` seconds without progress."""
    last = -1
    while not done.is_set():
        now = progress()
        if now == last:
            return
        last = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), drain_s)


async def gateway_reader(spec: Mapping[str, Any]) -> dict[str, Any]:
    from channelcast.brokers.kafka.broker import KafkaBroker
    from channelcast.gateway.hub import Hub
    from channelcast.message import Envelope
    from channelcast.runtime import freeze_startup_heap

    channel = ChannelName(spec["channel"])
    listener = _CountingListener(int(spec["expected"]))
    async with KafkaBroker(_kafka_settings(spec)) as broker, Hub(broker) as hub:
        await hub.attach(channel, listener)
        # Once a probe published now has come through, the feed's broker subscription is
        # registered with the fan-out consumer (live), whichever way it arrived.
        deadline = time.monotonic() + 60.0
        while not listener.probe_seen.is_set():
            if time.monotonic() > deadline:
                raise BrokerError("the gateway node never saw its probe")
            await broker.publish_many([Envelope(channel, PROBE_EVENT, None)])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.probe_seen.wait(), 1.0)
        freeze_startup_heap()  # as `channelcast serve` does
        _say("ready")
        await _wait_for_go()
        await _until_done(listener.done, lambda: listener.received,
                          float(spec.get("drain_s", 30.0)))
    if listener.lost is not None:
        raise BrokerError(f"the gateway node lost its subscription: {listener.lost}")
    return {"received": listener.received, "first_ns": listener.first_ns,
            "last_ns": listener.last_ns,
            "cpu_seconds": listener.cpu_last - listener.cpu_first,
            "skipped": broker.skipped_records}


def raw_reader(spec: Mapping[str, Any]) -> dict[str, Any]:
    from channelcast.bench import raw
    from channelcast.brokers.kafka.client import private_consumer_config

    # The fan-out consumer's own librdkafka settings (the run's overrides included).
    config = private_consumer_config(_kafka_settings(spec), "bench-reader")
    channel = spec.get("channel")
    _say("ready")
    read = raw.read_range(spec["bootstrap"], spec["topic"], int(spec.get("partition", 0)),
                          int(spec["start"]), int(spec["count"]),
                          channel=channel.encode() if channel is not None else None,
                          config=config, timeout_s=float(spec.get("timeout_s", 300.0)))
    return {"records": read.records, "seconds": read.seconds,
            "cpu_seconds": read.cpu_seconds, "matched": read.matched}


async def cc_publisher(spec: Mapping[str, Any]) -> dict[str, Any]:
    from channelcast.bench.scenarios import publish_fixed_rate, publish_saturated
    from channelcast.brokers.kafka.broker import KafkaBroker
    from channelcast.message import Envelope
    from channelcast.runtime import freeze_startup_heap

    channels = _channels(spec)
    tag, pad = int(spec["tag"]), str(spec["pad"])
    async with KafkaBroker(_kafka_settings(spec)) as broker:
        one_each = {(r.topic, r.partition): c for c in channels
                    for r in (broker.strategy.route(c),)}
        await broker.publish_many([Envelope(c, PROBE_EVENT, None)
                                   for c in one_each.values()])
        freeze_startup_heap()
        _say("ready")
        await _wait_for_go()
        if spec["mode"] == "saturation":
            sent = int(spec["count"])
            seconds = await publish_saturated(broker, channels, sent, tag, pad,
                                              int(spec["batch"]), int(spec["window"]))
        else:
            sent, seconds = await publish_fixed_rate(broker, channels, float(spec["rate"]),
                                                     float(spec["seconds"]), tag, pad)
    return {"sent": sent, "seconds": seconds}


async def cc_subscriber(spec: Mapping[str, Any]) -> dict[str, Any]:
    from channelcast.bench.hist import LatencyRecorder
    from channelcast.brokers.kafka.broker import KafkaBroker
    from channelcast.runtime import freeze_startup_heap

    tag = int(spec["tag"])
    expected = int(spec["expected"])
    recorder = LatencyRecorder()
    done = asyncio.Event()
    state = {"received": 0, "first": 0, "last": 0}
    clock = time.monotonic_ns

    async def read(subscription: Any) -> None:
        try:
            async for record in subscription:
                now = clock()
                data = record.envelope.data
                if type(data) is not dict or data.get("r") != tag:
                    continue  # probes, and anything not of this run
                recorder.record_ns(now - int(data["t"]))
                if not state["received"]:
                    state["first"] = now
                state["last"] = now
                state["received"] += 1
                if state["received"] >= expected:
                    return
        finally:
            done.set()

    async with (KafkaBroker(_kafka_settings(spec)) as broker,
                broker.subscribe(_channels(spec), max_queue=10_000) as subscription):
        freeze_startup_heap()
        _say("ready")
        await _wait_for_go()
        reader = asyncio.create_task(read(subscription))
        try:
            await _until_done(done, lambda: state["received"],
                              float(spec.get("drain_s", 60.0)))
        finally:
            reader.cancel()
            (outcome,) = await asyncio.gather(reader, return_exceptions=True)
        if isinstance(outcome, Exception):
            raise outcome
    return {"received": state["received"], "seconds": (state["last"] - state["first"]) / 1e9,
            "histogram": recorder.encode() if recorder.count else ""}


def _raw_clients(spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(producer, consumer) librdkafka settings as the KafkaBroker builds them for its
    publisher and its fan-out consumer."""
    from channelcast.brokers.kafka.client import private_consumer_config
    from channelcast.brokers.kafka.producer import producer_defaults

    settings = _kafka_settings(spec)
    producer = producer_defaults(settings.brokers, settings.timeout_s)
    producer.update(settings.producer)
    return producer, private_consumer_config(settings, "bench-raw")


def _routes(spec: Mapping[str, Any]) -> list[tuple[str, int, bytes | None]]:
    from channelcast.strategies import create_strategy

    strategy = create_strategy(_kafka_settings(spec))
    return [(r.topic, r.partition, r.key) for c in _channels(spec)
            for r in (strategy.route(c),)]


def _go_when_told() -> None:
    _say("ready")
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise BrokerError(f"expected 'go' on stdin, got {line!r}")


def raw_producer(spec: Mapping[str, Any]) -> dict[str, Any]:
    from channelcast.bench import raw
    from channelcast.runtime import freeze_startup_heap

    producer, _consumer = _raw_clients(spec)
    routes = _routes(spec)
    freeze_startup_heap()
    sent = raw.produce_stamped(producer, routes, rate=float(spec["rate"]),
                               seconds=float(spec["seconds"]), size=int(spec["size"]),
                               ready=_go_when_told)
    return {"sent": sent.sent, "seconds": sent.seconds}


def raw_consumer(spec: Mapping[str, Any]) -> dict[str, Any]:
    from channelcast.bench import raw
    from channelcast.bench.hist import LatencyRecorder
    from channelcast.runtime import freeze_startup_heap

    _producer, consumer = _raw_clients(spec)
    partitions = sorted({(t, p) for t, p, _key in _routes(spec)})
    recorder = LatencyRecorder()
    freeze_startup_heap()
    got = raw.consume_stamped(consumer, partitions, expected=int(spec["expected"]),
                              on_latency=recorder.record_ns, ready=_go_when_told,
                              drain_s=float(spec.get("drain_s", 60.0)),
                              timeout_s=float(spec.get("timeout_s", 30.0)))
    return {"received": got.received, "seconds": got.seconds,
            "histogram": recorder.encode() if recorder.count else ""}


_MODES: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "gateway-reader": lambda spec: asyncio.run(gateway_reader(spec)),
    "raw-reader": raw_reader,
    "cc-publisher": lambda spec: asyncio.run(cc_publisher(spec)),
    "cc-subscriber": lambda spec: asyncio.run(cc_subscriber(spec)),
    "raw-producer": raw_producer,
    "raw-consumer": raw_consumer,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in _MODES:
        _say(f"error: usage: python -m channelcast.bench.nodes {{{','.join(_MODES)}}} SPEC")
        return 2
    try:
        result = _MODES[args[0]](json.loads(args[1]))
    except Exception as exc:
        _say(f"error: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return 1
    _say(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
