"""Acceptance: one client that never reads does not reduce delivery to 100 others.

The same load runs twice on one gateway, without and then with a client that completes the
WebSocket handshake, subscribes, and never reads again. The 100 readers' counts must be
complete both times and their latency comparable; the slow client's send buffer must really
have overflowed (drops counted) for the comparison to mean anything.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import statistics
import time

import pytest
from websockets.asyncio.client import connect

from channelcast.gateway.node import Gateway
from tests.gateway.conftest import running_gateway, settings_with

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

READERS = 100
MESSAGES = 300
ROUNDS = 2
PAYLOAD = "x" * 4000


def metric(gw: Gateway, name: str) -> float:
    return gw.metrics.registry.get_sample_value(name) or 0.0


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def open_non_reading_client(port: int, channel: str) -> socket.socket:
    """A WebSocket client that subscribes and then never reads (tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0]
    sock.sendall(masked_text_frame(json.dumps({"type": "subscribe", "channel": channel})
                                   .encode()))
    return sock


async def run_load(url: str, gw: Gateway, channel: str) -> tuple[list[int], list[float]]:
    """Returns each reader's message count and the median latency (ms) per reader."""
    ready = asyncio.Event()
    subscribed = [0]
    counts = [0] * READERS
    latencies: list[list[float]] = [[] for _ in range(READERS)]

    async def reader(i: int) -> None:
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "subscribe", "channel": channel}))
            async for raw in ws:
                frame = json.loads(raw)
                if frame["type"] == "subscribed":
                    subscribed[0] += 1
                    if subscribed[0] == READERS:
                        ready.set()
                elif frame["type"] == "message":
                    latencies[i].append(time.time() * 1000 - frame["timestamp"])
                    counts[i] += 1
                    if frame["data"]["seq"] == MESSAGES - 1:
                        return
                elif frame["type"] == "dropped":
                    raise AssertionError(f"reader {i} had messages dropped: {frame}")

    tasks = [asyncio.create_task(reader(i)) for i in range(READERS)]
    await asyncio.wait_for(ready.wait(), 60)
    for seq in range(MESSAGES):
        await gw.broker.publish(channel, "load", {"seq": seq, "pad": PAYLOAD})
        if seq % 10 == 9:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*tasks), 90)
    return counts, [statistics.median(x) for x in latencies]


async def test_a_client_that_never_reads_does_not_slow_down_100_others() -> None:
    settings = settings_with(send_queue=64, slow_client_policy="drop-oldest",
                             send_buffer_bytes=32768)
    # Alternate runs without and with the slow client, so load from elsewhere on the
    # machine hits both alike; compare the medians of the runs.
    alone: list[float] = []
    beside: list[float] = []
    async with running_gateway(settings) as gw:
        for round_ in range(ROUNDS):
            counts, latency = await run_load(gw.ws_url, gw.gateway, f"calm{round_}")
            assert counts == [MESSAGES] * READERS
            alone.append(statistics.median(latency))

            drops_before = metric(gw.gateway, "channelcast_drops_total")
            channel = f"busy{round_}"
            slow = await asyncio.to_thread(open_non_reading_client, gw.server.port, channel)
            try:
                counts, latency = await run_load(gw.ws_url, gw.gateway, channel)
                drops = metric(gw.gateway, "channelcast_drops_total") - drops_before
            finally:
                slow.close()
            assert counts == [MESSAGES] * READERS
            assert drops > 0, "the slow client never filled its buffer: the test proved nothing"
            beside.append(statistics.median(latency))
    base_p50, p50 = statistics.median(alone), statistics.median(beside)
    print(f"\nreaders' median latency per run: {[round(x, 1) for x in alone]} ms alone, "
          f"{[round(x, 1) for x in beside]} ms beside a client that never reads")
    assert p50 <= 2 * base_p50 + 50, (alone, beside)


async def test_disconnect_policy_closes_the_slow_client_with_4008() -> None:
    settings = settings_with(send_queue=16, slow_client_policy="disconnect",
                             send_buffer_bytes=32768)
    async with running_gateway(settings) as gw:
        slow = await asyncio.to_thread(open_non_reading_client, gw.server.port, "d")
        try:
            for _ in range(200):
                if metric(gw.gateway, "channelcast_subscriptions") >= 1:
                    break
                await asyncio.sleep(0.01)
            for seq in range(400):
                await gw.gateway.broker.publish("d", "load", {"seq": seq, "pad": PAYLOAD})
                if seq % 20 == 0:
                    await asyncio.sleep(0.005)
            for _ in range(300):
                if metric(gw.gateway, "channelcast_slow_client_disconnects_total") >= 1:
                    break
                await asyncio.sleep(0.01)
            assert metric(gw.gateway, "channelcast_slow_client_disconnects_total") == 1
            # The close frame waits behind the unread data (for a grace period): read it all.
            slow.settimeout(5)
            close_frame = bytes([0x88, 2 + len(b"slow client")]) + (4008).to_bytes(2, "big")
            data = b""
            while close_frame not in data[-64:]:
                chunk = await asyncio.to_thread(slow.recv, 1 << 16)
                assert chunk, "connection ended without a 4008 close frame"
                data += chunk
            assert data.endswith(close_frame + b"slow client")
            assert data.count(b'"type":"message"') < 400  # it did not get everything
        finally:
            slow.close()


