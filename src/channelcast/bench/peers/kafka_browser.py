"""``peers-kafka-browser``: from a Kafka record to a WebSocket client, channelcast's
gateway (``channelcast serve`` on ``kafka://``) against Centrifugo's Kafka consumer in
publication data mode, on the same topic of the benchmark's broker.

A raw confluent-kafka producer (:func:`channelcast.bench.raw.produce_scheduled`, with
channelcast's producer settings) writes ``browser_rate`` records per second for
``rate_seconds`` to a one-partition topic: each is exactly what channelcast's publisher
writes (the encoded envelope, the channel as key, its three headers) plus Centrifugo's
``centrifugo-channels`` header, so both servers read the same kind of record and deliver
it to ``browser_clients`` WebSocket clients (a process of its own, browser-like
handshakes). Latency is from each record's *intended* produce time to each client; before
the timed part, probes go to the topic until every client has seen one (the server is
live: Centrifugo's consumer group has joined, the gateway's feed reads).

Per repeat one fresh topic: Centrifugo runs first on it (its new consumer group starts
at the beginning of the partition, which then holds nothing but probes), the gateway
second on the same topic (its feed starts at the end). The order is fixed for that
reason; it does not rotate.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path

from channelcast.bench.hist import LatencyRecorder
from channelcast.bench.model import BenchConfig
from channelcast.bench.peers.configs import CENTRIFUGO_CHANNELS_HEADER
from channelcast.bench.peers.fanout import CHANNEL, data_padding, stamp
from channelcast.bench.peers.fleet import client_fleet, negotiated
from channelcast.bench.peers.install import Peer, package_version
from channelcast.bench.peers.model import (
    DELIVERED,
    KAFKA_BROWSER,
    MAX_MS,
    P50_MS,
    P99_MS,
    P999_MS,
    PeerResult,
    PeerRun,
)
from channelcast.bench.peers.servers import (
    EVENT,
    Contender,
    centrifugo_starter,
    gateway_starter,
)
from channelcast.bench.raw import RawHeaders
from channelcast.bench.targets import Target
from channelcast.brokers.base import HEADER_CHANNEL, HEADER_EVENT, HEADER_ID
from channelcast.message import Envelope, encode
from channelcast.strategies import TopicSpec
from channelcast.types import ChannelName, TopicName

Log = Callable[[str], None]
PROBE, TIMED = 0, 3

Record = tuple[bytes, bytes | None, RawHeaders]


def _quiet(_msg: str) -> None:
    return None


def record_maker(tag: int, pad: str) -> Callable[[int, int], Record]:
    """Records as channelcast's publisher writes them (value, key, the channel, event and
    id headers in that order) plus Centrifugo's channels header."""
    channel = ChannelName(CHANNEL)
    key = CHANNEL.encode()

    def make(_index: int, intended_ns: int) -> Record:
        env = Envelope(channel=channel, event=EVENT, data=stamp(tag, intended_ns, pad))
        return encode(env), key, [(HEADER_CHANNEL, key), (HEADER_EVENT, EVENT.encode()),
                                  (HEADER_ID, env.id.encode()),
                                  (CENTRIFUGO_CHANNELS_HEADER, key)]

    return make


def contenders(bootstrap: str, topic: str, centrifugo: Peer, config: BenchConfig,
               ) -> tuple[list[Contender], list[PeerResult]]:
    out: list[Contender] = []
    missing: list[PeerResult] = []
    if centrifugo.found:
        out.append(Contender(
            centrifugo.name, "centrifugo", centrifugo.version,
            "Kafka consumer (franz-go) in publication data mode, its own consumer group, "
            "default fetch settings (fetch_max_wait 500 ms); memory engine",
            centrifugo_starter(centrifugo, kafka_brokers=bootstrap, kafka_topic=topic,
                               consumer_group=f"{topic}.centrifugo")))
    else:
        missing.append(PeerResult(KAFKA_BROWSER, centrifugo.name, not_run=centrifugo.missing))
    out.append(Contender(
        "channelcast gateway", "channelcast", package_version("channelcast"),
        "channelcast serve on kafka:// (grouped, one partition), its default consumer "
        "settings",
        gateway_starter(f"kafka://{bootstrap}", send_queue=max(256, int(2 * config.browser_rate)),
                        kafka_brokers=bootstrap, default_topic=topic), channelcast=True))
    return out, missing


async def run_one(contender: Contender, bootstrap: str, topic: str, config: BenchConfig,
                  pad: str, workdir: Path, log: Log = _quiet) -> tuple[PeerRun, str]:
    from channelcast.bench import raw

    count = max(1, int(config.browser_rate * config.rate_seconds))
    clients = config.browser_clients
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    producer = dict(config.producer)
    async with contender.start(workdir) as running:
        log(f"[peers-kafka-browser] {contender.name}: {clients} clients connecting")
        async with client_fleet(running.url, clients, CHANNEL, contender.mode, count,
                                workdir) as fleet:
            stop = threading.Event()
            probes = asyncio.create_task(asyncio.to_thread(
                raw.produce_scheduled, bootstrap, topic, 0, 1_000, 4.0,
                record_maker(PROBE, pad), config=producer, stop=stop))
            try:
                await fleet.wait_for("probed", 120)
            finally:
                stop.set()
                await probes
            running.server.check_alive()
            log(f"[peers-kafka-browser] {contender.name}: {count} records at "
                f"{config.browser_rate:g}/s")
            await asyncio.to_thread(raw.produce_scheduled, bootstrap, topic, 0, count,
                                    config.browser_rate, record_maker(TIMED, pad),
                                    config=producer)
            await fleet.wait_for("received", config.drain_s + 60)
            result = await fleet.result(120)
    timed = result["phases"].get(str(TIMED), {"count": 0, "histogram": ""})
    rec = LatencyRecorder()
    rec.merge_encoded(timed["histogram"])
    summary = rec.summary()
    delivered = timed["count"]
    figures = {P50_MS: summary.p50_ms, P99_MS: summary.p99_ms, P999_MS: summary.p999_ms,
               MAX_MS: summary.max_ms,
               DELIVERED: 100.0 * delivered / (clients * count) if count else math.nan}
    note = f"{delivered:,}/{clients * count:,} delivered"
    return PeerRun(figures, note, load), negotiated(result)


async def peers_kafka_browser(target: Target, config: BenchConfig, centrifugo: Peer,
                              workdir: Path, log: Log = _quiet) -> list[PeerResult]:
    bootstrap = target.bootstrap
    if bootstrap is None:
        raise ValueError("peers-kafka-browser needs Kafka")
    pad = data_padding(config.message_bytes)
    by_name: dict[str, PeerResult] = {}
    missing: list[PeerResult] = []
    names: list[str] = []
    for n in range(config.repeat):
        topic = f"bench.{config.run_id}.k2b{n + 1}"
        runnable, missing = contenders(bootstrap, topic, centrifugo, config)
        await target.provision([TopicSpec(TopicName(topic), 1)])
        try:
            for contender in runnable:
                if contender.name not in by_name:
                    names.append(contender.name)
                    by_name[contender.name] = PeerResult(
                        KAFKA_BROWSER, contender.name, contender.version,
                        contender.channelcast, contender.settings)
                result = by_name[contender.name]
                try:
                    run, ext = await run_one(contender, bootstrap, topic, config, pad,
                                             workdir / f"k2b-{n + 1}-{contender.mode}", log)
                except Exception as exc:
                    result.errors.append(f"run {n + 1}: {type(exc).__name__}: {exc}")
                    log(f"[peers-kafka-browser] {contender.name} failed: {exc}")
                    continue
                result.runs.append(run)
                result.negotiated = ext
        finally:
            await target.drop([topic])
    return [by_name[name] for name in names] + missing
