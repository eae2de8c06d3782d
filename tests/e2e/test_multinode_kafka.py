"""Acceptance on real Kafka: two ``channelcast serve`` processes share the work.

A client on node A receives what was published through node B; presence on B shows a member
connected to A; when A is killed (SIGKILL, no goodbye) its member disappears from B within
the documented bound (1.1 x presence_ttl_s); a client moving to B recovers exactly the 500
messages it missed; once those records are deleted it is told that recovery failed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from websockets.asyncio.client import ClientConnection, connect

from channelcast.brokers.kafka.admin import KafkaAdmin, ensure_topics
from channelcast.config import GatewaySettings
from channelcast.gateway.auth import channel_auth, sign_request
from channelcast.strategies import TopicSpec
from channelcast.types import Position, TopicName
from tests.e2e.conftest import ServeProcess, serve_process

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

TTL = 3.0
G = GatewaySettings()


async def recv(ws: ClientConnection, kind: str, wait_s: float = 20,
               where: Any = None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        frame: dict[str, Any] = json.loads(
            await asyncio.wait_for(ws.recv(), max(0.05, deadline - loop.time())))
        if frame["type"] == kind and (where is None or where(frame)):
            return frame


async def open_client(node: ServeProcess) -> tuple[ClientConnection, str]:
    ws = await connect(node.url.replace("http", "ws") + "/ws", open_timeout=10)
    hello = json.loads(await ws.recv())
    return ws, hello["data"]["connection_id"]


async def publish(node: ServeProcess, channel: str, values: list[int]) -> list[str]:
    body = json.dumps({"messages": [{"channel": channel, "event": "n", "data": v}
                                    for v in values]}).encode()
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(node.url + "/api/publish", content=body,
                            headers=sign_request(G.app_key, G.app_secret, body))
    assert r.status_code == 200, r.text
    positions: list[str] = r.json()["positions"]
    return positions


async def scenario(a: ServeProcess, b: ServeProcess, unique: str, bootstrap: str) -> None:
    news, room = f"news-{unique}", f"presence-room-{unique}"
    ws_a, conn_a = await open_client(a)
    ws_b, conn_b = await open_client(b)
    try:
        await ws_a.send(json.dumps({"type": "subscribe", "channel": news}))
        await recv(ws_a, "subscribed")
        # Published through B, received on A.
        positions = await publish(b, news, [1, 2, 3])
        got = [await recv(ws_a, "message") for _ in range(3)]
        assert [m["data"] for m in got] == [1, 2, 3]
        assert [m["position"] for m in got] == positions
        last_on_a = got[-1]["position"]

        # alice is on A; bob on B sees her.
        alice = channel_auth(G.app_key, G.app_secret, conn_a, room, user_id="alice")
        await ws_a.send(json.dumps({"type": "subscribe", "channel": room, **alice}))
        await recv(ws_a, "subscribed", where=lambda f: f["channel"] == room)
        bob = channel_auth(G.app_key, G.app_secret, conn_b, room, user_id="bob")
        await ws_b.send(json.dumps({"type": "subscribe", "channel": room, **bob}))
        sub = await recv(ws_b, "subscribed")
        members = {m["user_id"] for m in sub["data"]["members"]}
        if "alice" not in members:  # B learns of A's members from A's heartbeat
            added = await recv(ws_b, "member_added", wait_s=TTL * 2)
            assert added["data"]["user_id"] == "alice"
        await recv(ws_a, "member_added", wait_s=TTL * 2,
                   where=lambda f: f["data"]["user_id"] == "bob")

        # Node A crashes: its member vanishes from B within 1.1 x ttl (+ delivery slack).
        a.proc.send_signal(signal.SIGKILL)
        crashed = time.monotonic()
        removed = await recv(ws_b, "member_removed", wait_s=TTL * 4)
        took = time.monotonic() - crashed
        assert removed["data"]["user_id"] == "alice"
        assert took <= TTL * 1.1 + 2.0, took
        print(f"\nmember of the killed node removed after {took:.2f}s (ttl {TTL}s)")

        # The client of A reconnects to B with its position and gets what it missed.
        missed = await publish(b, news, list(range(500)))
        ws_c, _ = await open_client(b)
        try:
            await ws_c.send(json.dumps({"type": "subscribe", "channel": news,
                                        "since": last_on_a}))
            reply = await recv(ws_c, "subscribed")
            assert reply["data"]["recovered"] is True
            replay = [await recv(ws_c, "message") for _ in range(500)]
            assert [m["position"] for m in replay] == missed
            assert [m["data"] for m in replay] == list(range(500))
        finally:
            await ws_c.close()

        # History gone (as retention would do it): recovery fails, and says so.
        newest = Position.parse(missed[-1])
        admin = AdminClient({"bootstrap.servers": bootstrap})
        futures = admin.delete_records(
            [TopicPartition(newest.topic, newest.partition, newest.offset + 1)])
        for future in futures.values():
            await asyncio.to_thread(future.result, 30)
        ws_d, _ = await open_client(b)
        try:
            await ws_d.send(json.dumps({"type": "subscribe", "channel": news,
                                        "since": last_on_a}))
            reply = await recv(ws_d, "subscribed")
            assert reply["data"]["recovered"] is False
            error = await recv(ws_d, "error")
            assert error["data"]["code"] == "recovery_failed"
        finally:
            await ws_d.close()
    finally:
        await ws_a.close()
        await ws_b.close()


def test_two_gateway_nodes_on_kafka(kafka_bootstrap: str, unique: str,
                                    tmp_path: Path) -> None:
    topic, dlq = f"gw-{unique}", f"gw-{unique}-dlq"
    ensure_topics(kafka_bootstrap, [TopicSpec(TopicName(topic), 4), TopicSpec(TopicName(dlq), 1)],
                  timeout_s=30)
    config = tmp_path / "channelcast.toml"
    config.write_text(f'broker = "kafka://{kafka_bootstrap}"\n'
                      f'[kafka]\ndefault_topic = "{topic}"\ndefault_partitions = 4\n'
                      f'dead_letter_topic = "{dlq}"\n'
                      f'[gateway]\npresence_ttl_s = {TTL}\n')
    try:
        with serve_process(tmp_path, "--config", str(config), ready_s=60) as a, \
                serve_process(tmp_path, "--config", str(config), ready_s=60) as b:
            asyncio.run(scenario(a, b, unique, kafka_bootstrap))
            assert b.stop() == 0, b.output()
    finally:
        KafkaAdmin(kafka_bootstrap, timeout_s=30).delete_topics([topic, dlq])
