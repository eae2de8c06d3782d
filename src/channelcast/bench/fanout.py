"""Scenario 4: fan-out through the gateway against a plain ``websockets`` broadcast loop.

The same N clients (a separate process, :mod:`.fanout_client`) connect first to the
channelcast gateway (in this process, on the benchmark's broker, subscribed to one
channel) and then to a plain ``websockets`` server that broadcasts the same frames. Each
server gets two phases: a fixed rate (latency from the intended send time) and a burst of
the same messages published at once (deliveries per second, from the first publish to the
last delivery). The plain server never touches a broker, so it is the ceiling for the
WebSocket part alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from channelcast.bench.hist import FixedRate, LatencyRecorder
from channelcast.bench.model import BenchConfig, ThroughputRow
from channelcast.bench.scenarios import (
    EVENT,
    needed_topics,
    padding_for,
    publish_fixed_rate,
)
from channelcast.bench.targets import Target
from channelcast.config import KafkaSettings
from channelcast.errors import BrokerError
from channelcast.message import Envelope
from channelcast.types import ChannelName

Log = Callable[[str], None]
CHANNEL = ChannelName("fanout.0")
FIXED, BURST = 1, 2


def _quiet(_msg: str) -> None:
    return None


def fanout_settings(run_id: str) -> KafkaSettings:
    return KafkaSettings(topic_strategy="grouped", default_topic=f"bench.{run_id}.fanout",
                         default_partitions=1)


def expected_per_client(config: BenchConfig) -> int:
    return config.fanout_messages + config.fanout_burst


def available() -> tuple[bool, str]:
    try:
        import channelcast.gateway.server  # noqa: F401
    except ImportError as exc:
        return False, f"the gateway cannot be imported: {exc}"
    return True, ""


@dataclass
class _Clients:
    process: asyncio.subprocess.Process

    async def result(self, timeout_s: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise BrokerError("the fan-out clients exited without a result")
                if line.startswith(b"{"):
                    await self.process.wait()
                    data: dict[str, Any] = json.loads(line)
                    return data


@contextlib.asynccontextmanager
async def _clients(url: str, n: int, mode: str, expected: int) -> AsyncIterator[_Clients]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "channelcast.bench.fanout_client", url, str(n), CHANNEL,
        mode, str(expected), stdout=asyncio.subprocess.PIPE, limit=1 << 24)
    try:
        assert process.stdout is not None
        async with asyncio.timeout(180):
            while (line := await process.stdout.readline()) != b"ready\n":
                if not line:
                    raise BrokerError("the fan-out clients failed to connect")
        yield _Clients(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _row(name: str, result: dict[str, Any], config: BenchConfig, burst_start_ns: int,
         note: str) -> ThroughputRow:
    phases = result["phases"]
    fixed = LatencyRecorder()
    fixed_count = 0
    if str(FIXED) in phases:
        fixed.merge_encoded(phases[str(FIXED)]["histogram"])
        fixed_count = phases[str(FIXED)]["count"]
    burst = phases.get(str(BURST), {"count": 0, "last_ns": burst_start_ns})
    seconds = max(1e-9, (burst["last_ns"] - burst_start_ns) / 1e9)
    clients = config.fanout_clients
    return ThroughputRow(
        "fanout", name, burst["count"], seconds,
        f"{clients} clients; burst of {config.fanout_burst}: "
        f"{burst['count']:,}/{clients * config.fanout_burst:,} delivered; "
        f"{config.fanout_rate:g} msg/s: {fixed_count:,}/{clients * config.fanout_messages:,} "
        f"delivered; {note}", latency=fixed.summary())


async def _phases(publish_rate: Callable[[float, int], Awaitable[None]],
                  publish_burst: Callable[[int], Awaitable[None]],
                  config: BenchConfig) -> int:
    await publish_rate(config.fanout_rate, config.fanout_messages)
    await asyncio.sleep(1.0)  # let the fixed-rate phase land before the burst
    start = time.monotonic_ns()
    await publish_burst(config.fanout_burst)
    return start


async def _gateway_run(target: Target, config: BenchConfig, pad: str,
                       log: Log) -> ThroughputRow:
    from channelcast.config import GatewaySettings, Settings
    from channelcast.gateway.server import build_server

    broker = target.broker(fanout_settings(config.run_id))
    # A send queue that holds a whole burst: we measure delivery, not the drop policy.
    gateway = replace(GatewaySettings(), send_queue=max(256, expected_per_client(config) + 16))
    server = build_server(Settings(gateway=gateway), host="127.0.0.1", port=0, broker=broker,
                          log_level="warning")
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(3000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        if not server.started:
            raise BrokerError("the gateway did not start")
        url = f"ws://127.0.0.1:{server.port}/ws"
        log(f"[fanout] gateway: {config.fanout_clients} clients connecting")
        async with _clients(url, config.fanout_clients, "channelcast",
                            expected_per_client(config)) as clients:

            async def rate(r: float, n: int) -> None:
                await publish_fixed_rate(broker, [CHANNEL], r, n / r, FIXED, pad)

            async def burst(n: int) -> None:
                now = time.monotonic_ns()
                await broker.publish_many([
                    Envelope(channel=CHANNEL, event=EVENT, data={"t": now, "r": BURST, "p": pad})
                    for _ in range(n)])

            log(f"[fanout] gateway: {config.fanout_messages} messages at "
                f"{config.fanout_rate:g}/s, then a burst of {config.fanout_burst}")
            start = await _phases(rate, burst, config)
            result = await clients.result(config.drain_s + 60)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 60)
    return _row("channelcast gateway", result, config, start, f"broker {target.url}")


async def _plain_run(config: BenchConfig, pad: str, log: Log) -> ThroughputRow:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    connections: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        connections.add(ws)
        try:
            await ws.wait_closed()
        finally:
            connections.discard(ws)

    def frame(tag: int, intended_ns: int, seq: int) -> str:
        env = Envelope(channel=CHANNEL, event=EVENT, data={"t": intended_ns, "r": tag, "p": pad})
        d = env.to_dict()
        d["position"] = f"bench:0:{seq}"
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False)

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=1 << 22,
                     ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        log(f"[fanout] plain websockets: {config.fanout_clients} clients connecting")
        async with _clients(f"ws://127.0.0.1:{port}/", config.fanout_clients, "plain",
                            expected_per_client(config)) as clients:

            async def rate(r: float, n: int) -> None:
                schedule = FixedRate(r, time.monotonic_ns())
                for i in range(n):
                    pause = (schedule.intended_ns(i) - time.monotonic_ns()) / 1e9
                    if pause > 0:
                        await asyncio.sleep(pause)
                    broadcast(connections, frame(FIXED, schedule.intended_ns(i), i))

            async def burst(n: int) -> None:
                now = time.monotonic_ns()
                for i in range(n):
                    broadcast(connections, frame(BURST, now, i))
                    await asyncio.sleep(0)  # a real loop yields; lets buffers drain

            start = await _phases(rate, burst, config)
            result = await clients.result(config.drain_s + 60)
    return _row("plain websockets broadcast", result, config, start, "no broker")


async def fanout(target: Target, config: BenchConfig,
                 log: Log = _quiet) -> list[ThroughputRow]:
    specs = needed_topics(fanout_settings(config.run_id), [CHANNEL])
    pad = padding_for(config.message_bytes, [CHANNEL])
    await target.provision(specs)
    try:
        gateway_row = await _gateway_run(target, config, pad, log)
    finally:
        await target.drop([s.name for s in specs])
    plain_row = await _plain_run(config, pad, log)
    return [gateway_row, plain_row]
