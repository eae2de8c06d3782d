"""The WebSocket servers of the peers comparison, each started as a process of its own on
127.0.0.1 with a config written to a temp folder, and a publisher for it.

A :class:`Contender` names a server, its client protocol (:mod:`.wire`), its version and
settings, and how to start it; entering :meth:`Contender.start` runs it
(:func:`~channelcast.bench.peers.process.server_process`: always stopped on exit) and
yields a :class:`Running` with the WebSocket URL and a :class:`Publisher` that sends one
message or one batch the way an application would:

* channelcast: ``channelcast serve``; the signed HTTP publish API (``POST /api/publish``,
  a ``messages`` list for a batch).
* Centrifugo: its HTTP server API with the API key (``POST /api/publish``; a batch is
  ``POST /api/batch`` of publish commands).
* sockudo: the Pusher HTTP API with the query-string signature (``POST
  /apps/{id}/events``; a batch is ``POST /apps/{id}/batch_events``).
* plain websockets: a publisher WebSocket whose frames the server broadcasts.

It measures nothing itself; the scenarios do.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml
from websockets.asyncio.client import ClientConnection, connect

from channelcast.bench.peers.configs import (
    PusherApp,
    centrifugo_config,
    gateway_config,
    sockudo_config,
)
from channelcast.bench.peers.install import Peer
from channelcast.bench.peers.plain_server import PUBLISH_PATH
from channelcast.bench.peers.process import (
    PeerFailed,
    Server,
    free_port,
    server_process,
    write_file,
)
from channelcast.bench.peers.wire import (
    Mode,
    centrifugo_publish,
    pusher_event,
    pusher_path,
    pusher_signed_query,
)
from channelcast.gateway.auth import sign_request

EVENT = "bench"
GATEWAY_KEY, GATEWAY_SECRET = "bench-key", "bench-secret"
CENTRIFUGO_API_KEY = "bench-api-key"
SERVE = "import sys; from channelcast.cli.main import main; sys.exit(main(sys.argv[1:]))"
"""``channelcast serve`` run by this interpreter (the installed command may be another)."""


class Publisher(Protocol):
    async def one(self, channel: str, data: Any) -> None: ...

    async def many(self, channel: str, items: Sequence[Any]) -> None: ...


@dataclass
class Running:
    server: Server
    url: str
    publisher: Publisher


Starter = Callable[[Path], AbstractAsyncContextManager[Running]]


@dataclass
class Contender:
    name: str
    mode: Mode
    version: str
    settings: str
    start: Starter
    channelcast: bool = False


def _checked(response: httpx.Response, who: str) -> None:
    if response.status_code >= 400:
        raise PeerFailed(f"{who} publish failed: HTTP {response.status_code}: "
                         f"{response.text[:300]}")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# --- channelcast serve --------------------------------------------------------------------


@dataclass
class GatewayPublisher:
    http: httpx.AsyncClient

    async def _post(self, body: bytes) -> None:
        headers = {"content-type": "application/json",
                   **sign_request(GATEWAY_KEY, GATEWAY_SECRET, body)}
        _checked(await self.http.post("/api/publish", content=body, headers=headers),
                 "channelcast")

    async def one(self, channel: str, data: Any) -> None:
        await self._post(_json_bytes({"channel": channel, "event": EVENT, "data": data}))

    async def many(self, channel: str, items: Sequence[Any]) -> None:
        await self._post(_json_bytes({"messages": [
            {"channel": channel, "event": EVENT, "data": d} for d in items]}))


def gateway_starter(broker: str = "memory://", *, send_queue: int = 256,
                    kafka_brokers: str | None = None,
                    default_topic: str | None = None) -> Starter:
    @contextlib.asynccontextmanager
    async def start(workdir: Path) -> AsyncIterator[Running]:
        port = free_port()
        path = write_file(workdir, "channelcast.yaml", yaml.safe_dump(gateway_config(
            broker, app_key=GATEWAY_KEY, app_secret=GATEWAY_SECRET, send_queue=send_queue,
            kafka_brokers=kafka_brokers, default_topic=default_topic)))
        argv = [sys.executable, "-c", SERVE, "serve", "--config", str(path),
                "--host", "127.0.0.1", "--port", str(port)]
        async with server_process("channelcast serve", argv, port=port,
                                  workdir=workdir) as server, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            yield Running(server, f"ws://127.0.0.1:{port}/ws", GatewayPublisher(http))

    return start


# --- Centrifugo -------------------------------------------------------------------------


@dataclass
class CentrifugoPublisher:
    http: httpx.AsyncClient

    async def _post(self, path: str, body: Any) -> None:
        response = await self.http.post(path, content=_json_bytes(body),
                                        headers={"X-API-Key": CENTRIFUGO_API_KEY,
                                                 "content-type": "application/json"})
        _checked(response, "Centrifugo")
        if b'"error"' in response.content:
            raise PeerFailed(f"Centrifugo publish failed: {response.text[:300]}")

    async def one(self, channel: str, data: Any) -> None:
        await self._post("/api/publish", centrifugo_publish(channel, data))

    async def many(self, channel: str, items: Sequence[Any]) -> None:
        await self._post("/api/batch", {"commands": [
            {"publish": centrifugo_publish(channel, d)} for d in items]})


def centrifugo_starter(peer: Peer, *, kafka_brokers: str | None = None,
                       kafka_topic: str | None = None,
                       consumer_group: str | None = None) -> Starter:
    @contextlib.asynccontextmanager
    async def start(workdir: Path) -> AsyncIterator[Running]:
        assert peer.path is not None
        port = free_port()
        path = write_file(workdir, "config.json", json.dumps(centrifugo_config(
            port, CENTRIFUGO_API_KEY, kafka_brokers=kafka_brokers, kafka_topic=kafka_topic,
            consumer_group=consumer_group), indent=1))
        async with server_process("Centrifugo", [str(peer.path), "--config", str(path)],
                                  port=port, workdir=workdir) as server, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            yield Running(server, f"ws://127.0.0.1:{port}/connection/websocket",
                          CentrifugoPublisher(http))

    return start


# --- sockudo ----------------------------------------------------------------------------


@dataclass
class PusherPublisher:
    http: httpx.AsyncClient
    app: PusherApp

    async def _post(self, path: str, body: Any) -> None:
        raw = _json_bytes(body)
        query = pusher_signed_query("POST", path, raw, self.app.key, self.app.secret)
        _checked(await self.http.post(f"{path}?{query}", content=raw,
                                      headers={"content-type": "application/json"}),
                 "sockudo")

    async def one(self, channel: str, data: Any) -> None:
        await self._post(f"/apps/{self.app.id}/events", pusher_event(channel, EVENT, data))

    async def many(self, channel: str, items: Sequence[Any]) -> None:
        await self._post(f"/apps/{self.app.id}/batch_events",
                         {"batch": [pusher_event(channel, EVENT, d) for d in items]})


def sockudo_starter(peer: Peer, app: PusherApp | None = None) -> Starter:
    app = app or PusherApp()

    @contextlib.asynccontextmanager
    async def start(workdir: Path) -> AsyncIterator[Running]:
        assert peer.path is not None
        port = free_port()
        path = write_file(workdir, "sockudo.json", json.dumps(sockudo_config(port, app),
                                                               indent=1))
        # Run in its own folder: sockudo also reads ./config/config.toml if there is one.
        async with server_process("sockudo", [str(peer.path), "--config", str(path)],
                                  port=port, workdir=workdir) as server, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            yield Running(server, f"ws://127.0.0.1:{port}{pusher_path(app.key)}",
                          PusherPublisher(http, app))

    return start


# --- plain websockets -----------------------------------------------------------------------


@dataclass
class PlainPublisher:
    ws: ClientConnection

    @staticmethod
    def frame(channel: str, data: Any) -> str:
        return json.dumps({"type": "message", "channel": channel, "event": EVENT,
                           "data": data}, separators=(",", ":"), ensure_ascii=False)

    async def one(self, channel: str, data: Any) -> None:
        await self.ws.send(self.frame(channel, data))

    async def many(self, channel: str, items: Sequence[Any]) -> None:
        for d in items:
            await self.ws.send(self.frame(channel, d))


def plain_starter() -> Starter:
    @contextlib.asynccontextmanager
    async def start(workdir: Path) -> AsyncIterator[Running]:
        port = free_port()
        argv = [sys.executable, "-m", "channelcast.bench.peers.plain_server", str(port)]
        async with server_process("plain websockets", argv, port=port,
                                  workdir=workdir) as server:
            publisher = await connect(f"ws://127.0.0.1:{port}{PUBLISH_PATH}",
                                      compression=None, max_size=1 << 22)
            try:
                yield Running(server, f"ws://127.0.0.1:{port}/", PlainPublisher(publisher))
            finally:
                await publisher.close()

    return start
