"""Scenario ``filter``: how fast a gateway node reads a partition it needs 1% of.

A gateway node subscribed to one channel reads every record of that channel's partition,
and here the partition is shared with ``filter_channels`` (100) busy channels. Three
readers, each a process of its own (:mod:`.procs`), read the same pre-filled range of
that one partition (``filter_records`` records, one per channel in turn, each exactly
what channelcast's publisher writes: the encoded envelope, the channel as key, its three
headers):

* **channelcast**: a gateway node, a KafkaBroker and the gateway's Hub with one listener,
  attached to the channel through the live fan-out path (the fan-out consumer routes by
  the ``channel`` header, the feed builds each frame, the listener counts);
* **raw, filtering**: a bare confluent-kafka consumer that reads the same partition and
  takes the records whose ``channel`` header is that channel (the target's baseline);
* **raw, counting**: the same consumer that only counts (context).

What is timed is each reader's capacity, not the producer's rate: the range is written
before each reader drains it. The raw readers start after the fill at its first offset.
The gateway node only reads live (a fan-out subscription starts at the end of the log),
so it subscribes first, proves its subscription live with a probe, and is then stopped
(SIGSTOP) while the range is written and continued (SIGCONT) afterwards: its fan-out
consumer then finds the whole range waiting, as after a burst it could not keep up
with, and drains it through the live path. Each reader's clock runs from its first
record to its last (both of the subscribed channel), its CPU over the same span.

Every reader fetches with :data:`READ_FETCH` (the run's ``--consumer`` settings win over
it): with librdkafka's default of 1 MiB per partition per fetch, all three readers of
one partition were held at the same ~130,000 records/s by the broker's fetch round trips
on the development machine (docs/benchmarks.md), which measures the broker, not them.
With ``repeat`` the whole scenario runs again on a fresh topic; the target is judged on
the median of the runs' ratios.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence

from channelcast.bench.model import (
    READ_COUNT,
    READ_FILTER,
    READ_GATEWAY,
    BenchConfig,
    ReadRun,
)
from channelcast.bench.procs import child
from channelcast.bench.scenarios import EVENT, padding_for
from channelcast.bench.targets import Target
from channelcast.brokers.base import HEADER_CHANNEL, HEADER_EVENT, HEADER_ID
from channelcast.errors import BrokerError
from channelcast.message import Envelope, encode, new_id
from channelcast.strategies import TopicSpec
from channelcast.types import ChannelName, TopicName

Log = Callable[[str], None]

FILL_TAG = 3

READ_FETCH: dict[str, int] = {"fetch.max.bytes": 64 << 20,
                              "max.partition.fetch.bytes": 32 << 20}
"""librdkafka fetch sizes of every reader here (64 MiB a fetch, 32 MiB of it from one
partition), so that fetch round trips do not set the pace of a one-partition read."""


def _quiet(_msg: str) -> None:
    return None


def filter_channels(busy: int) -> list[ChannelName]:
    """The subscribed channel first, then its ``busy`` neighbours in the partition."""
    return [ChannelName(f"filter.{i}") for i in range(busy + 1)]


def fill_count(records: int, channels: int) -> int:
    """At least ``records``, one per channel in turn, first and last of channel 0."""
    return max(1, -(-(records - 1) // channels)) * channels + 1


def record_maker(channels: Sequence[ChannelName], pad: str
                 ) -> Callable[[int], tuple[bytes, bytes, dict[str, str | bytes | None]]]:
    """``make(i)`` -> (value, key, headers) of record ``i`` (channel ``i % n``): exactly
    what channelcast's publisher writes for an envelope with a fresh id (the encoded
    envelope with its 26-character id spliced in; the key and the three headers)."""
    templates = []
    for channel in channels:
        value = encode(Envelope(channel, EVENT, {"t": 0, "r": FILL_TAG, "p": pad}))
        if not value.startswith(b'{"id":"') or value[33:34] != b'"':
            raise BrokerError(f"unexpected envelope encoding: {value[:40]!r}")
        templates.append((value[:7], value[33:], channel.encode(), channel.encode()))
    n = len(templates)

    def make(i: int) -> tuple[bytes, bytes, dict[str, str | bytes | None]]:
        head, tail, key, name = templates[i % n]
        mid = new_id()
        return (head + mid.encode() + tail, key,
                {HEADER_CHANNEL: name, HEADER_EVENT: EVENT, HEADER_ID: mid})

    return make


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def fanout_read(target: Target, config: BenchConfig,
                      log: Log = _quiet) -> list[ReadRun]:
    """Every run of every reader (``config.repeat`` runs), in the order measured."""
    from channelcast.bench import raw

    bootstrap = target.bootstrap
    if bootstrap is None:
        raise BrokerError("the filter scenario needs Kafka (raw confluent-kafka readers)")
    channels = filter_channels(config.filter_channels)
    count = fill_count(config.filter_records, len(channels))
    expected = (count - 1) // len(channels) + 1
    pad = padding_for(config.message_bytes, channels)
    make = record_maker(channels, pad)
    out: list[ReadRun] = []
    for n in range(1, config.repeat + 1):
        topic = f"bench.{config.run_id}.filter{n}"
        spec = {"bootstrap": bootstrap, "topic": topic, "partitions": 1,
                "producer": dict(config.producer),
                "consumer": {**READ_FETCH, **config.consumer}}
        await target.provision([TopicSpec(TopicName(topic), 1)])
        try:
            log(f"[filter] run {n}/{config.repeat}: gateway node subscribing to "
                f"{channels[0]} (1 of {len(channels)} channels in {topic}:0)")
            async with child("gateway-reader", {**spec, "channel": channels[0],
                                                "expected": expected,
                                                "drain_s": config.drain_s}) as node:
                await node.ready()
                start = (await asyncio.to_thread(raw.end_offsets, bootstrap,
                                                 [(topic, 0)]))[(topic, 0)]
                log(f"[filter] run {n}: gateway node stopped; writing {count:,} records")
                node.pause()
                try:
                    filled = await asyncio.to_thread(
                        raw.produce_generated, bootstrap, topic, 0, count, make,
                        config=dict(config.producer))
                finally:
                    node.resume()
                load = _load()
                log(f"[filter] run {n}: written at {filled.rate:,.0f} records/s; gateway "
                    "node continued, draining")
                node.go()
                got = await node.result(config.drain_s + count / 1_000)
            if got["received"] < expected:
                raise BrokerError(f"the gateway node got {got['received']} of {expected} "
                                  f"messages of {channels[0]}")
            out.append(ReadRun(READ_GATEWAY, n, count - 1, (got["last_ns"] - got["first_ns"]) / 1e9,
                               got["cpu_seconds"], got["received"], load))
            # Which raw reader goes first alternates, so a noisy moment is shared.
            raws = [(READ_FILTER, channels[0]), (READ_COUNT, None)]
            for name, wanted in raws if n % 2 else raws[::-1]:
                log(f"[filter] run {n}: {name}")
                load = _load()
                async with child("raw-reader", {**spec, "partition": 0, "start": start,
                                                "count": count, "channel": wanted}) as reader:
                    got = await reader.result(config.drain_s + count / 1_000)
                if wanted is not None and got["matched"] != expected:
                    raise BrokerError(f"the raw reader matched {got['matched']} of "
                                      f"{expected} records of {wanted}")
                out.append(ReadRun(name, n, got["records"], got["seconds"],
                                   got["cpu_seconds"], got["matched"], load))
        finally:
            await target.drop([topic])
    return out
