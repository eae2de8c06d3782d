"""``peers-publish``: publishing to Kafka from Python, channelcast's ``publish_many()``
against FastStream's batch publish (both of its Kafka integrations), broadcaster's Kafka
backend and the raw confluent-kafka loops, in one process against one broker.

Every loop sends ``config.messages`` messages of the same size (channelcast's encoded
envelope for the same payload, about ``message_bytes``) to the same topic of
``overhead_partitions`` partitions, from payloads prepared before the clock starts; the
clock stops when the last one is acknowledged. Batching loops send batches of
``config.batch`` with ``config.window`` batches in flight (channelcast's overhead
scenario's figures). Per run each loop runs once, the order rotating with each repeat.

* raw confluent-kafka ``produce()`` loop, bare and with channelcast's three headers
  (:mod:`channelcast.bench.raw`), channelcast's producer settings.
* channelcast ``publish_many()``: envelopes from the prepared payloads, keyed by channel.
* FastStream ``KafkaBroker.publish_batch()`` on confluent-kafka (``faststream.confluent``,
  one ``produce()`` per message in a task group) and on aiokafka (``faststream.kafka``,
  one aiokafka record batch per call, so one partition per batch: aiokafka's
  ``send_batch`` takes a single partition), each with channelcast's durability and
  batching settings (acks=all, idempotence, lz4, linger 5 ms; aiokafka's
  ``max_batch_size`` raised to 1 MiB so that a batch of 500 fits), ``KafkaPublishMessage``
  per message with the channel as key; the same JSON object channelcast would encode.
  FastStream's documentation names no fastest path, so both run and the faster one's
  median is what the target compares with.
* broadcaster ``Broadcast.publish()`` on ``kafka://``: one ``send_and_wait`` per message;
  ``batch`` calls in flight (with ``batch * window``, 4,000, aiokafka's sends timed out on
  this machine). Its backend gives aiokafka no settings (acks=1, no
  compression, linger 0: cheaper than the others' acks=all) and maps a channel to a
  topic of that name, so all its messages go to the one topic (unkeyed).
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any

from channelcast.bench.model import BenchConfig
from channelcast.bench.peers.install import find_python_peer, package_version
from channelcast.bench.peers.model import CPU_US_PER_MSG, MSG_PER_S, PUBLISH, PeerResult, PeerRun
from channelcast.bench.scenarios import EVENT, padding_for, publish_payloads
from channelcast.bench.targets import Target
from channelcast.brokers.base import HEADER_CHANNEL, HEADER_EVENT, HEADER_ID
from channelcast.config import KafkaSettings
from channelcast.message import Envelope, encode
from channelcast.strategies import TopicSpec, create_strategy
from channelcast.types import ChannelName, TopicName

Log = Callable[[str], None]

RAW = "raw confluent-kafka produce() loop"
RAW_HEADERS = "raw produce() + channelcast's headers"
CHANNELCAST = "channelcast publish_many()"
FASTSTREAM_CONFLUENT = "FastStream publish_batch() (confluent-kafka)"
FASTSTREAM_AIOKAFKA = "FastStream publish_batch() (aiokafka)"
BROADCASTER = "broadcaster publish() (kafka://)"
FASTSTREAM = (FASTSTREAM_CONFLUENT, FASTSTREAM_AIOKAFKA)
SHARED_SETTINGS = "acks=all, idempotence, lz4, linger 5 ms"


def _quiet(_msg: str) -> None:
    return None


@dataclass
class Inputs:
    """What every loop sends, prepared before any clock starts."""

    bootstrap: str
    topic: str
    kafka: KafkaSettings
    channels: list[ChannelName]
    payloads: list[dict[str, Any]]
    """The application's data, one per message (channelcast wraps each in an envelope)."""
    bodies: list[dict[str, Any]]
    """The same messages as the JSON objects channelcast writes (the peers' bodies)."""
    texts: list[str]
    """The same, as JSON text (broadcaster publishes strings)."""
    raw: list[Any]
    raw_headers: list[Any]
    batch: int
    window: int


def prepare(bootstrap: str, config: BenchConfig, topic: str) -> Inputs:
    from channelcast.bench import raw

    partitions = config.overhead_partitions
    kafka = KafkaSettings(topic_strategy="grouped", default_topic=topic,
                          default_partitions=partitions)
    channels = [ChannelName(f"pub.{i}") for i in range(config.overhead_channels)]
    pad = padding_for(config.message_bytes, channels)
    strategy = create_strategy(kafka)
    n = len(channels)
    payloads, bodies, texts, plain, with_headers = [], [], [], [], []
    for i in range(config.messages):
        channel = channels[i % n]
        data = {"t": 0, "r": 7, "p": pad}
        value = encode(Envelope(channel=channel, event=EVENT, data=data))
        body = json.loads(value)
        route = strategy.route(channel)
        payloads.append(data)
        bodies.append(body)
        texts.append(value.decode())
        message = raw.RawMessage(route.topic, route.partition, route.key, value)
        plain.append(message)
        with_headers.append(replace(message, headers={
            HEADER_CHANNEL: channel, HEADER_EVENT: EVENT, HEADER_ID: body["id"]}))
    return Inputs(bootstrap, topic, kafka, channels, payloads, bodies, texts, plain,
                  with_headers, config.batch, config.window)


async def _windowed(calls: Sequence[Callable[[], Coroutine[Any, Any, Any]]],
                    window: int) -> None:
    """Run the calls in order with at most ``window`` unfinished. The first error is
    raised once the others are cancelled and awaited (none is left running)."""
    running: set[asyncio.Task[Any]] = set()
    try:
        for call in calls:
            if len(running) >= window:
                done, running = await asyncio.wait(running,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            running.add(asyncio.create_task(call()))
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


# --- the loops: each returns (messages, seconds, process CPU seconds) ---------------------

Measured = tuple[int, float, float]


async def _raw_loop(inputs: Inputs, headers: bool, config: BenchConfig) -> Measured:
    from channelcast.bench import raw

    t = await asyncio.to_thread(raw.produce_loop, inputs.bootstrap,
                                inputs.raw_headers if headers else inputs.raw,
                                config=dict(config.producer))
    return t.messages, t.seconds, t.cpu_seconds


async def _channelcast_loop(target: Target, inputs: Inputs) -> Measured:
    async with target.broker(inputs.kafka) as broker:
        # The same untimed warm-up the raw loop gets: one message to every channel.
        await broker.publish_many([Envelope(c, EVENT, inputs.payloads[0])
                                   for c in inputs.channels])
        cpu = time.process_time()
        seconds = await publish_payloads(broker, inputs.channels, inputs.payloads,
                                         inputs.batch, inputs.window)
        return len(inputs.payloads), seconds, time.process_time() - cpu


async def _faststream_loop(inputs: Inputs, flavour: str) -> Measured:
    if flavour == "confluent":
        from faststream.confluent import KafkaBroker, KafkaPublishMessage

        broker: Any = KafkaBroker(inputs.bootstrap, acks="all", enable_idempotence=True,
                                  compression_type="lz4", linger_ms=5, logger=None)
        message: Any = KafkaPublishMessage
    else:
        from faststream.kafka import KafkaBroker as AioBroker
        from faststream.kafka import KafkaPublishMessage as AioMessage

        broker = AioBroker(inputs.bootstrap, acks="all", enable_idempotence=True,
                           compression_type="lz4", linger_ms=5, max_batch_size=1 << 20,
                           logger=None)
        message = AioMessage
    bodies, channels, topic = inputs.bodies, inputs.channels, inputs.topic
    keys = [c.encode() for c in channels]
    n, count, batch = len(channels), len(bodies), inputs.batch
    async with broker:
        # Untimed warm-up: connections, metadata, the idempotent producer id.
        await broker.publish_batch(*[message(bodies[i], key=keys[i % n]) for i in range(n)],
                                   topic=topic)

        def call(first: int) -> Callable[[], Coroutine[Any, Any, Any]]:
            async def send() -> None:
                await broker.publish_batch(
                    *[message(bodies[i], key=keys[i % n])
                      for i in range(first, min(count, first + batch))], topic=topic)
            return send

        cpu = time.process_time()
        start = time.perf_counter()
        await _windowed([call(first) for first in range(0, count, batch)], inputs.window)
        return count, time.perf_counter() - start, time.process_time() - cpu


async def _broadcaster_loop(inputs: Inputs) -> Measured:
    from broadcaster import Broadcast

    texts, topic = inputs.texts, inputs.topic
    broadcast = Broadcast(f"kafka://{inputs.bootstrap}")
    await broadcast.connect()
    try:
        await broadcast.publish(topic, texts[0])  # untimed: connection and metadata

        def call(i: int) -> Callable[[], Coroutine[Any, Any, Any]]:
            async def send() -> None:
                await broadcast.publish(topic, texts[i])
            return send

        cpu = time.process_time()
        start = time.perf_counter()
        await _windowed([call(i) for i in range(len(texts))], inputs.batch)
        return len(texts), time.perf_counter() - start, time.process_time() - cpu
    finally:
        await broadcast.disconnect()


# --- the scenario --------------------------------------------------------------------------


@dataclass
class Loop:
    name: str
    version: str
    settings: str
    run: Callable[[Inputs], Awaitable[Measured]]
    channelcast: bool = False


def loops(target: Target, config: BenchConfig) -> tuple[list[Loop], list[PeerResult]]:
    confluent = f"confluent-kafka {package_version('confluent-kafka')}"
    out = [
        Loop(RAW, confluent, "channelcast's producer settings, pre-encoded values",
             lambda i: _raw_loop(i, False, config)),
        Loop(RAW_HEADERS, confluent, "the same records channelcast writes (3 headers)",
             lambda i: _raw_loop(i, True, config)),
        Loop(CHANNELCAST, package_version("channelcast"),
             f"batches of {config.batch}, {config.window} in flight; {SHARED_SETTINGS}",
             lambda i: _channelcast_loop(target, i), channelcast=True),
    ]
    missing: list[PeerResult] = []
    faststream = find_python_peer("FastStream", "faststream", "faststream.confluent",
                                  "faststream.kafka")
    broadcaster = find_python_peer("broadcaster", "broadcaster", "broadcaster", "aiokafka")
    fs_settings = (f"batches of {config.batch}, {config.window} in flight; "
                   f"{SHARED_SETTINGS}")
    if faststream.found:
        out.append(Loop(FASTSTREAM_CONFLUENT, f"{faststream.version} ({confluent})",
                        f"{fs_settings}; keyed by channel",
                        lambda i: _faststream_loop(i, "confluent")))
        out.append(Loop(FASTSTREAM_AIOKAFKA,
                        f"{faststream.version} (aiokafka {package_version('aiokafka')})",
                        f"{fs_settings}, max_batch_size 1 MiB; one partition per batch",
                        lambda i: _faststream_loop(i, "aiokafka")))
    else:
        missing += [PeerResult(PUBLISH, name, not_run=faststream.missing)
                    for name in FASTSTREAM]
    if broadcaster.found:
        out.append(Loop(BROADCASTER,
                        f"{broadcaster.version} (aiokafka {package_version('aiokafka')})",
                        f"{config.batch} publish() calls in flight; "
                        "aiokafka defaults (acks=1, no compression, linger 0), unkeyed",
                        _broadcaster_loop))
    else:
        missing.append(PeerResult(PUBLISH, BROADCASTER, not_run=broadcaster.missing))
    return out, missing


async def peers_publish(target: Target, config: BenchConfig,
                        log: Log = _quiet) -> list[PeerResult]:
    """Every loop ``config.repeat`` times on a fresh topic per repeat (removed after)."""
    bootstrap = target.bootstrap
    if bootstrap is None:
        raise ValueError("peers-publish needs Kafka")
    runnable, missing = loops(target, config)
    results = {loop.name: PeerResult(PUBLISH, loop.name, loop.version, loop.channelcast,
                                      loop.settings) for loop in runnable}
    for n in range(config.repeat):
        topic = f"bench.{config.run_id}.peers{n + 1}"
        await target.provision([TopicSpec(TopicName(topic), config.overhead_partitions)])
        try:
            inputs = prepare(bootstrap, config, topic)
            gc.collect()
            gc.freeze()  # the prepared inputs stay out of every loop's collections
            try:
                order = runnable[n % len(runnable):] + runnable[:n % len(runnable)]
                for loop in order:
                    log(f"[peers-publish] run {n + 1}/{config.repeat}: {loop.name}, "
                        f"{config.messages} messages")
                    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
                    try:
                        count, seconds, cpu = await loop.run(inputs)
                    except Exception as exc:
                        results[loop.name].errors.append(
                            f"run {n + 1}: {type(exc).__name__}: {exc}")
                        continue
                    results[loop.name].runs.append(PeerRun(
                        {MSG_PER_S: count / seconds if seconds > 0 else math.nan,
                         CPU_US_PER_MSG: cpu / count * 1e6},
                        f"{count:,} in {seconds:.2f} s", load))
            finally:
                gc.unfreeze()
            del inputs
        finally:
            await target.drop([topic])
    return [results[loop.name] for loop in runnable] + missing
