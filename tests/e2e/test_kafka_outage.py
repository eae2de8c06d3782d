"""Acceptance: the Kafka broker under a gateway is killed and restarted.

The gateway process stays up (``/healthz``), reports not-ready while Kafka is gone
(``/readyz`` 503) and ready again after; a subscribed client then receives what is published
next, without a gap: either its subscription survived the outage, or it was told plainly
(``subscription_lost``) and recovers with its position. Runs a private single-node cluster.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from channelcast.config import GatewaySettings
from channelcast.gateway.auth import sign_request
from tests.conftest import kafka_local, private_cluster
from tests.e2e.conftest import ServeProcess, serve_process

pytestmark = [pytest.mark.kafka, pytest.mark.cluster, pytest.mark.slow,
              pytest.mark.timeout(300)]

G = GatewaySettings()


@pytest.fixture
def outage_cluster() -> Iterator[kafka_local.Cluster]:
    with private_cluster("gateway-outage", 24092) as cluster:
        yield cluster


def wait_status(url: str, status: int, within: float) -> float:
    start = time.monotonic()
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == status:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        if time.monotonic() - start > within:
            raise AssertionError(f"{url} did not answer {status} within {within}s")
        time.sleep(0.2)


async def publish(node: ServeProcess, channel: str, value: int) -> str:
    body = json.dumps({"channel": channel, "event": "n", "data": value}).encode()
    async with httpx.AsyncClient(timeout=60) as http:
        r = await http.post(node.url + "/api/publish", content=body,
                            headers=sign_request(G.app_key, G.app_secret, body))
    assert r.status_code == 200, r.text
    position: str = r.json()["positions"][0]
    return position


async def next_frame(ws: ClientConnection, wait_s: float = 60) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), wait_s))
    return frame


def test_gateway_survives_a_kafka_restart(outage_cluster: kafka_local.Cluster, unique: str,
                                          tmp_path: Path) -> None:
    bootstrap = outage_cluster.bootstrap
    channel = f"outage-{unique}"
    config = tmp_path / "channelcast.toml"
    config.write_text(f'broker = "kafka://{bootstrap}"\n'
                      f'[kafka]\ndefault_topic = "gw-{unique}"\ndefault_partitions = 2\n'
                      f'dead_letter_topic = "gw-{unique}-dlq"\ntimeout_s = 5\n')
    with serve_process(tmp_path, "--config", str(config), ready_s=90) as node:
        async def before() -> tuple[ClientConnection, str]:
            ws = await connect(node.url.replace("http", "ws") + "/ws", open_timeout=10)
            assert (await next_frame(ws))["type"] == "connected"
            await ws.send(json.dumps({"type": "subscribe", "channel": channel}))
            assert (await next_frame(ws))["type"] == "subscribed"
            position = await publish(node, channel, 1)
            frame = await next_frame(ws)
            assert frame["position"] == position
            return ws, position

        loop = asyncio.new_event_loop()
        try:
            ws, last = loop.run_until_complete(before())

            node_id = outage_cluster.running_nodes()[0]
            outage_cluster.kill_node(node_id)
            took = wait_status(node.url + "/readyz", 503, within=60)
            print(f"\n/readyz went 503 {took:.1f}s after the broker was killed")
            assert httpx.get(node.url + "/healthz").status_code == 200

            outage_cluster.start_node(node_id)
            outage_cluster.wait_ready()
            wait_status(node.url + "/readyz", 200, within=120)

            async def after() -> list[int]:
                position = await publish(node, channel, 2)
                frame = await next_frame(ws)
                if frame["type"] == "error":
                    assert frame["data"]["code"] == "subscription_lost", frame
                    await ws.send(json.dumps({"type": "subscribe", "channel": channel,
                                              "since": last}))
                    reply = await next_frame(ws)
                    assert reply["type"] == "subscribed"
                    assert reply["data"]["recovered"] is True
                    frame = await next_frame(ws)
                    print("the subscription was lost, then recovered from its position")
                else:
                    print("the subscription survived the outage")
                assert frame["type"] == "message"
                assert frame["position"] == position
                await ws.close()
                return [frame["data"]]

            assert loop.run_until_complete(after()) == [2]
        finally:
            loop.close()
        assert node.stop() == 0, node.output()
