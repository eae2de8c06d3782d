"""Gateway test helpers: an in-process gateway on a free port, a JSON WebSocket client, and
the log watch that fails a test on any unexpected ERROR log record or traceback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from channelcast.brokers import Broker
from channelcast.brokers.memory import MemoryBroker
from channelcast.config import GatewaySettings, Settings
from channelcast.gateway.auth import sign_request
from channelcast.gateway.node import Authorizer, Gateway
from channelcast.gateway.server import GatewayServer, build_server
from tests.gateway.logwatch import server_log

__all__ = ["server_log"]  # the autouse log watch (tests.gateway.logwatch)


@dataclass
class Running:
    server: GatewayServer
    gateway: Gateway
    base_url: str
    ws_url: str

    def settings(self) -> Settings:
        return self.gateway.settings


def settings_with(**gateway: Any) -> Settings:
    return Settings(gateway=replace(GatewaySettings(), **gateway))


@asynccontextmanager
async def running_gateway(settings: Settings | None = None, *, broker: Broker | None = None,
                          authorizer: Authorizer | None = None,
                          **server_options: Any) -> AsyncIterator[Running]:
    """A gateway serving on a free port; ``server_options`` go to ``build_server``."""
    settings = settings or Settings()
    server = build_server(settings, host="127.0.0.1", port=0,
                          broker=broker or MemoryBroker(history_size=settings.gateway.history_size),
                          authorizer=authorizer, log_level="warning", **server_options)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    port = server.port
    try:
        yield Running(server, server.gateway, f"http://127.0.0.1:{port}",
                      f"ws://127.0.0.1:{port}/ws")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


class Client:
    """A WebSocket client speaking JSON frames, with helpers to wait for a frame type."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.connection_id = ""

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, wait_s: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), wait_s)
        frame: dict[str, Any] = json.loads(raw)
        return frame

    async def expect(self, kind: str, wait_s: float = 5.0,
                     where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """The next frame of this type; frames of other types are skipped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            frame = await self.recv(max(0.01, deadline - loop.time()))
            if frame["type"] == kind and (where is None or where(frame)):
                return frame

    async def subscribe(self, channel: str, **extra: Any) -> dict[str, Any]:
        await self.send({"type": "subscribe", "channel": channel, **extra})
        frame = await self.recv()
        return frame

    async def close(self) -> None:
        await self.ws.close()


@asynccontextmanager
async def ws_client(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    async with connect(url, open_timeout=10, **kwargs) as ws:
        client = Client(ws)
        hello = await client.recv()
        assert hello["type"] == "connected"
        client.connection_id = hello["data"]["connection_id"]
        yield client


def signed_post_args(settings: Settings, body: dict[str, Any] | list[Any]) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    g = settings.gateway
    headers = sign_request(g.app_key, g.app_secret, raw)
    headers["Content-Type"] = "application/json"
    return {"content": raw, "headers": headers}
