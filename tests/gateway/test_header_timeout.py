"""Slowloris: a connection that does not complete its request headers in time is closed
(408 when some of a request came), logged once and counted; nothing after the headers is
timed by it (keep-alive, WebSocket, Server-Sent Events). In-process uvicorn, memory broker,
a 1 s header timeout."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import httpx
import pytest

from channelcast.gateway.node import Gateway
from tests.gateway.conftest import running_gateway, ws_client

pytestmark = pytest.mark.timeout(60)

TIMEOUT_S = 1.0


def timeouts(gw: Gateway) -> float:
    return gw.metrics.registry.get_sample_value(
        "channelcast_request_header_timeouts_total") or 0.0


def read_until_closed(sock: socket.socket, *, drip: bytes = b"", every_s: float = 0.2,
                      limit_s: float = 10.0) -> tuple[bytes, float]:
    """Send ``drip`` one byte every ``every_s`` while reading; return what the server sent
    until it closed, and when (seconds from the call)."""
    start = time.monotonic()
    sock.settimeout(every_s)
    got = b""
    sent = 0
    while time.monotonic() - start < limit_s:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if sent < len(drip):
                try:
                    sock.sendall(drip[sent:sent + 1])
                except OSError:
                    break
                sent += 1
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got, time.monotonic() - start


@pytest.mark.parametrize(("first", "drip"), [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a" * 100),  # slowloris
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b""),  # incomplete, then nothing
    (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n", b""),  # a handshake, too
])
async def test_incomplete_request_headers_get_a_408_and_a_close(
        caplog: pytest.LogCaptureFixture, first: bytes, drip: bytes) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    async with running_gateway(header_timeout_s=TIMEOUT_S) as gw:
        sock = socket.create_connection(("127.0.0.1", gw.server.port))
        try:
            sock.sendall(first)
            got, after = await asyncio.to_thread(read_until_closed, sock, drip=drip)
        finally:
            sock.close()
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), got
        assert b"connection: close" in head.lower()
        assert json.loads(body)["data"]["code"] == "request_timeout"
        assert TIMEOUT_S - 0.1 < after < TIMEOUT_S + 2
        logged = [r.getMessage() for r in caplog.records if "were not complete" in
                  r.getMessage()]
        assert len(logged) == 1
        assert logged[0].startswith("HTTP connection from 127.0.0.1:")
        assert timeouts(gw.gateway) == 1


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with running_gateway(header_timeout_s=TIMEOUT_S) as gw:
        sock = socket.create_connection(("127.0.0.1", gw.server.port))
        try:
            got, after = await asyncio.to_thread(read_until_closed, sock)
        finally:
            sock.close()
        assert got == b""  # nothing of a request came: no response, just the close
        assert TIMEOUT_S - 0.1 < after < TIMEOUT_S + 2
        assert timeouts(gw.gateway) == 1


async def test_what_follows_the_headers_is_not_timed_by_it() -> None:
    async with running_gateway(header_timeout_s=TIMEOUT_S) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        # Keep-alive: idle longer than the header timeout (uvicorn's own keep-alive
        # timeout, 5 s, governs that), then a second request on the same connection.
        first = await http.get("/healthz")
        await asyncio.sleep(TIMEOUT_S * 1.5)
        second = await http.get("/healthz")
        assert first.status_code == second.status_code == 200
        async with ws_client(gw.ws_url) as client, \
                http.stream("GET", "/sse?channels=long.sse") as resp:
            lines = resp.aiter_lines()
            while not (await anext(lines)).startswith("data: "):
                pass
            await asyncio.sleep(TIMEOUT_S * 2)
            await client.send({"type": "ping", "data": 1})
            assert (await client.expect("pong"))["data"] == 1
            await gw.gateway.broker.publish("long.sse", "e", {"late": True})
            async with asyncio.timeout(5):
                while '"late"' not in (line := await anext(lines)):
                    pass
            assert line.startswith("data: ")
        assert timeouts(gw.gateway) == 0


async def test_a_slow_body_keeps_its_own_timeout() -> None:
    """The headers came in time: the body's 408 (10 s, api.BODY_TIMEOUT_S) is not cut
    short by the header timeout."""
    async with running_gateway(header_timeout_s=TIMEOUT_S) as gw:
        sock = socket.create_connection(("127.0.0.1", gw.server.port))
        try:
            sock.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                         b"Content-Type: application/json\r\n\r\n{")
            got, after = await asyncio.to_thread(read_until_closed, sock, limit_s=2.5)
        finally:
            sock.close()
        assert got == b""
        assert after >= 2.4
        assert timeouts(gw.gateway) == 0
