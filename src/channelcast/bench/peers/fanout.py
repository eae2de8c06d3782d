"""``peers-fanout``: one channel to N WebSocket clients through channelcast's gateway,
Centrifugo, sockudo and a plain ``websockets`` broadcast loop, each a server process of
its own on 127.0.0.1, the same client process for all (browser-like handshakes).

Per server and run: ``fanout_messages`` messages at ``fanout_rate`` msg/s (latency from
each message's intended send time to each client), then a burst of ``fanout_burst``
messages published at once in batches of :data:`BURST_BATCH` (deliveries per second from
the first publish to the last delivery, the server process's CPU time over the same
span per delivery, and, on the clients' side, the WebSocket frames per delivery and the
client process's CPU per delivery: 1,000 Python clients in one process can be what limits
the rate). Every server gets the same payload: ``{"t", "r", "p"}`` with padding
to ``message_bytes``. channelcast's gateway runs on the memory broker here, as the peers
run on their in-memory engines (the Kafka path is ``peers-kafka-browser``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from channelcast.bench.hist import FixedRate, LatencyRecorder
from channelcast.bench.model import BenchConfig
from channelcast.bench.peers.fleet import client_fleet, negotiated
from channelcast.bench.peers.install import Peer, package_version
from channelcast.bench.peers.model import (
    CLIENT_CPU_US_PER_DELIVERY,
    CPU_US_PER_DELIVERY,
    DELIVERED,
    DELIVERIES_PER_S,
    FANOUT,
    FRAMES_PER_DELIVERY,
    P50_MS,
    P99_MS,
    PeerResult,
    PeerRun,
)
from channelcast.bench.peers.process import cpu_seconds
from channelcast.bench.peers.servers import (
    Contender,
    Publisher,
    Starter,
    centrifugo_starter,
    gateway_starter,
    plain_starter,
    sockudo_starter,
)
from channelcast.bench.peers.wire import Mode

Log = Callable[[str], None]
CHANNEL = "fanout.0"
FIXED, BURST = 1, 2
MIN_TICKS = 10
"""The least server CPU, in clock ticks, that the burst must use for a per-delivery figure."""
BURST_BATCH = 10
"""Messages per publish request in the burst: the Pusher HTTP API's documented batch
limit, used for every server alike."""


def _quiet(_msg: str) -> None:
    return None


def data_padding(size: int) -> str:
    """Padding that makes the payload ``{"t":<19 digits>,"r":N,"p":...}`` about ``size``
    bytes of JSON: random letters (fixed seed), which compression cannot squeeze to
    nothing, as in the other scenarios."""
    empty = len(json.dumps({"t": 10**18, "r": 1, "p": ""}, separators=(",", ":")))
    rng = random.Random(size)
    return "".join(rng.choice(string.ascii_letters) for _ in range(max(0, size - empty)))


def stamp(tag: int, intended_ns: int, pad: str) -> dict[str, Any]:
    return {"t": intended_ns, "r": tag, "p": pad}


def contenders(config: BenchConfig, centrifugo: Peer, sockudo: Peer,
               ) -> tuple[list[Contender], list[PeerResult]]:
    """The servers that can run, and a "not run" result for each that cannot."""
    queue = max(256, config.fanout_messages + config.fanout_burst + 16)
    runnable = [Contender(
        "channelcast gateway", "channelcast", package_version("channelcast"),
        f"channelcast serve, memory broker, uvicorn {package_version('uvicorn')}, "
        f"send_queue {queue}; publish: POST /api/publish (signed)",
        gateway_starter("memory://", send_queue=queue), channelcast=True)]
    missing: list[PeerResult] = []
    peers: list[tuple[Peer, Callable[[Peer], Starter], Mode, str]] = [
        (centrifugo, centrifugo_starter, "centrifugo",
         "memory engine, JSON protocol, anonymous subscribe allowed, WebSocket "
         "compression off (default); publish: HTTP server API"),
        (sockudo, sockudo_starter, "pusher",
         "local adapter, memory app manager, rate limiter off, WebSocket compression "
         "disabled (default); Pusher protocol 7; publish: HTTP API (signed)")]
    for peer, make, mode, settings in peers:
        if peer.found:
            runnable.append(Contender(peer.name, mode, peer.version, settings, make(peer)))
        else:
            missing.append(PeerResult(FANOUT, peer.name, not_run=peer.missing))
    runnable.append(Contender(
        "plain websockets broadcast", "plain", package_version("websockets"),
        "websockets.broadcast() in a server of its own, library defaults; publish: "
        "frames on a publisher WebSocket", plain_starter()))
    return runnable, missing


async def _fixed_rate(publisher: Publisher, config: BenchConfig, pad: str) -> None:
    """``fanout_messages`` at ``fanout_rate``, each sent at its intended time without
    waiting for the previous answer (a slow server shows in the latency)."""
    schedule = FixedRate(config.fanout_rate, time.monotonic_ns() + 1_000_000)
    sends: list[asyncio.Task[None]] = []
    for i in range(config.fanout_messages):
        pause = (schedule.intended_ns(i) - time.monotonic_ns()) / 1e9
        if pause > 0:
            await asyncio.sleep(pause)
        sends.append(asyncio.create_task(
            publisher.one(CHANNEL, stamp(FIXED, schedule.intended_ns(i), pad))))
    await asyncio.gather(*sends)


async def _burst(publisher: Publisher, config: BenchConfig, pad: str) -> int:
    start = time.monotonic_ns()
    # One nanosecond apart: every request body differs (channelcast's publish API refuses
    # a signed body it has seen, as a replay), and the latency is not what a burst reports.
    items = [stamp(BURST, start + i, pad) for i in range(config.fanout_burst)]
    await asyncio.gather(*(publisher.many(CHANNEL, items[i:i + BURST_BATCH])
                           for i in range(0, len(items), BURST_BATCH)))
    return start


async def run_one(contender: Contender, config: BenchConfig, pad: str, workdir: Path,
                  log: Log = _quiet) -> tuple[PeerRun, str]:
    """One run of one server: (figures, what it negotiated)."""
    expected = config.fanout_messages + config.fanout_burst
    clients = config.fanout_clients
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    async with contender.start(workdir) as running:
        log(f"[peers-fanout] {contender.name}: {clients} clients connecting")
        async with client_fleet(running.url, clients, CHANNEL, contender.mode, expected,
                                workdir) as fleet:
            log(f"[peers-fanout] {contender.name}: {config.fanout_messages} messages at "
                f"{config.fanout_rate:g}/s, then a burst of {config.fanout_burst}")
            await _fixed_rate(running.publisher, config, pad)
            await asyncio.sleep(1.0)  # let the fixed-rate phase land before the burst
            running.server.check_alive()
            cpu0 = running.server.cpu_seconds()
            client0 = cpu_seconds(fleet.process.pid)
            start = await _burst(running.publisher, config, pad)
            await fleet.wait_for("received", config.drain_s + 60)
            cpu1 = running.server.cpu_seconds()
            client1 = cpu_seconds(fleet.process.pid)
            result = await fleet.result(120)
    phases = result["phases"]
    burst = phases.get(str(BURST), {"count": 0, "last_ns": start})
    fixed = LatencyRecorder()
    fixed_count = 0
    if str(FIXED) in phases:
        fixed.merge_encoded(phases[str(FIXED)]["histogram"])
        fixed_count = phases[str(FIXED)]["count"]
    summary = fixed.summary()
    seconds = (burst["last_ns"] - start) / 1e9
    deliveries = burst["count"]
    cpu = cpu1 - cpu0
    # /proc counts CPU in clock ticks (10 ms): fewer than MIN_TICKS is not a measurement.
    measured = cpu >= MIN_TICKS / os.sysconf("SC_CLK_TCK")
    figures = {
        DELIVERIES_PER_S: deliveries / seconds if seconds > 0 and deliveries else math.nan,
        CPU_US_PER_DELIVERY: cpu / deliveries * 1e6 if deliveries and measured else math.nan,
        P50_MS: summary.p50_ms, P99_MS: summary.p99_ms,
        DELIVERED: 100.0 * (deliveries + fixed_count) / (clients * expected),
        FRAMES_PER_DELIVERY: burst.get("frames", math.nan) / deliveries
        if deliveries else math.nan,
        CLIENT_CPU_US_PER_DELIVERY: (client1 - client0) / deliveries * 1e6
        if deliveries and client1 - client0 >= MIN_TICKS / os.sysconf("SC_CLK_TCK")
        else math.nan,
    }
    note = (f"burst {deliveries:,}/{clients * config.fanout_burst:,} delivered in "
            f"{seconds:.2f} s, {cpu:.2f} s server CPU"
            f"{'' if measured else ' (too little to measure per delivery)'}; fixed rate "
            f"{fixed_count:,}/{clients * config.fanout_messages:,} delivered")
    return PeerRun(figures, note, load), negotiated(result)


async def peers_fanout(config: BenchConfig, centrifugo: Peer, sockudo: Peer, workdir: Path,
                       log: Log = _quiet) -> list[PeerResult]:
    """Every server ``config.repeat`` times (the order rotates with each repeat, so drift
    on a shared machine does not always hit the same one); a failed run is recorded in
    that server's ``errors`` and the others still run."""
    runnable, results = contenders(config, centrifugo, sockudo)
    pad = data_padding(config.message_bytes)
    by_name = {c.name: PeerResult(FANOUT, c.name, c.version, c.channelcast, c.settings)
               for c in runnable}
    for n in range(config.repeat):
        order = runnable[n % len(runnable):] + runnable[:n % len(runnable)]
        for contender in order:
            result = by_name[contender.name]
            try:
                run, ext = await run_one(contender, config, pad,
                                         workdir / f"fanout-{n + 1}-{contender.mode}", log)
            except Exception as exc:
                result.errors.append(f"run {n + 1}: {type(exc).__name__}: {exc}")
                log(f"[peers-fanout] {contender.name} failed: {exc}")
                continue
            result.runs.append(run)
            result.negotiated = ext
    return [by_name[c.name] for c in runnable] + results
