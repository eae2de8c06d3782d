"""What one connection may cost the server, over real sockets (in-process uvicorn, memory
broker): unread replies are bounded (backpressure, then 4008), SSE gets the bounded socket
buffers, a writer stops at once on a lost connection, an unfinished body times out."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

import httpx
import pytest

from channelcast.brokers.memory import MemoryBroker
from channelcast.gateway import api
from channelcast.gateway.hub import Hub
from channelcast.gateway.presence import Member, PresenceDiff
from channelcast.gateway.protocol import CLOSE_SLOW_CLIENT, ClientProtocol, Credentials
from channelcast.gateway.session import (
    CONTROL_LIMIT_BYTES,
    CONTROL_PAUSE_BYTES,
    Outgoing,
    Session,
)
from channelcast.types import ChannelName
from tests.gateway.conftest import running_gateway, settings_with, ws_client
from tests.gateway.test_fuzz_server import handshake, masked

pytestmark = pytest.mark.timeout(120)


def _open_raw_ws(port: int) -> socket.socket:
    """A WebSocket client with a tiny receive buffer that will never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(handshake(port))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0]
    return sock


def _flood(sock: socket.socket, frame: bytes, seconds: float) -> int:
    """Send ``frame`` over and over for ``seconds`` or until a send blocks for 1 s (TCP
    backpressure); the bytes sent."""
    sock.settimeout(1.0)
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sock.sendall(frame)
            sent += len(frame)
    except TimeoutError:
        pass
    return sent


async def test_a_client_that_sends_and_never_reads_holds_a_bounded_queue() -> None:
    """Finding 1: big pings as fast as possible, never reading. The replies waiting for it
    stay under the pause bound plus one reply, and the client meets TCP backpressure
    (before: the server read on and queued pongs without bound, RSS 70 -> 784 MB in 3 s)."""
    async with running_gateway() as gw:
        sock = await asyncio.to_thread(_open_raw_ws, gw.server.port)
        try:
            ping = json.dumps({"type": "ping", "data": "x" * 60_000}).encode()
            reply = len(ping) + 10
            [session] = gw.gateway.sessions
            flood = asyncio.create_task(asyncio.to_thread(_flood, sock, masked(ping), 4.0))
            most_items = most_bytes = 0
            while not flood.done():
                most_items = max(most_items, len(session.outbox))
                most_bytes = max(most_bytes, session.outbox.control_bytes)
                await asyncio.sleep(0.005)
            sent = await flood
            print(f"\nsent {sent / 1e6:.1f} MB; at most {most_items} replies, "
                  f"{most_bytes / 1024:.0f} KiB queued")
            assert most_bytes <= CONTROL_PAUSE_BYTES + reply
            assert most_items * reply <= CONTROL_PAUSE_BYTES + 2 * reply
            # What the kernel buffers hold (a few MB), not what a server reading on takes.
            assert sent < 32_000_000, sent
            assert gw.gateway.sessions == {session}  # bounded, not cut (within the timeout)
        finally:
            sock.close()


async def test_websocket_pings_without_reading_meet_backpressure_too() -> None:
    """The same fault one layer down: protocol-level pings (opcode 9), each answered with a
    pong into the socket's write buffer. Before: +70 MB in 5 s for one client."""
    size = 16384
    async with running_gateway(settings_with(send_buffer_bytes=size)) as gw:
        sock = await asyncio.to_thread(_open_raw_ws, gw.server.port)
        try:
            [protocol] = [p for p in gw.server.server_state.connections
                          if getattr(p, "scope", {}).get("path") == "/ws"]
            transport: Any = protocol.transport  # type: ignore[attr-defined]
            pings = masked(b"p" * 125, opcode=9) * 1000
            flood = asyncio.create_task(asyncio.to_thread(_flood, sock, pings, 4.0))
            most = 0
            while not flood.done():
                most = max(most, transport.get_write_buffer_size())
                await asyncio.sleep(0.005)
            sent = await flood
            print(f"\nsent {sent / 1e6:.1f} MB of pings; at most {most / 1024:.0f} KiB of "
                  "pongs buffered")
            assert sent < 32_000_000, sent
            assert most < 4 * 1024 * 1024, most  # the pongs of one read, not of all of them
        finally:
            sock.close()


class _StuckTransport:
    """A transport whose client never takes a frame."""

    def __init__(self) -> None:
        self.closed: tuple[int, str] | None = None

    async def send(self, item: Outgoing) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_control_frames_the_server_sends_of_its_own_are_bounded_by_4008() -> None:
    """Presence events are not replies (pausing the reads does not stop them): past
    CONTROL_LIMIT_BYTES unread, the connection is closed with 4008."""
    async with MemoryBroker() as broker, Hub(broker) as hub:
        transport = _StuckTransport()
        session = Session(hub, ClientProtocol("n.1", Credentials("k", "s")), transport)
        session.start()
        channel = ChannelName("presence-busy")
        for i in range(2 * CONTROL_LIMIT_BYTES // 1000):
            diff = PresenceDiff(added=[Member(f"user{i}", {"pad": "p" * 900})])
            session.presence_changed(channel, diff)
            assert session.outbox.control_bytes <= CONTROL_LIMIT_BYTES + 1100
            if transport.closed is not None:
                break
            await asyncio.sleep(0)
        for _ in range(100):
            if transport.closed is not None:
                break
            await asyncio.sleep(0.01)
        assert transport.closed is not None
        assert transport.closed[0] == CLOSE_SLOW_CLIENT
        assert "control frames unread" in session.end_summary()
        assert session.metrics.slow_disconnects._value.get() == 1
        await session.aclose()


async def test_sse_connections_get_the_bounded_socket_buffers() -> None:
    """Finding 7: an SSE stream's socket has the configured send buffer and transport
    high-water mark, as a WebSocket's has (before: the OS's, megabytes)."""
    size = 32768
    async with running_gateway(settings_with(send_buffer_bytes=size)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http, \
            http.stream("GET", "/sse?channels=buf") as resp:
        assert resp.status_code == 200
        lines = resp.aiter_lines()
        while (await asyncio.wait_for(anext(lines), 5)) != "event: subscribed":
            pass
        protocols = [p for p in gw.server.server_state.connections
                     if getattr(p, "scope", {}).get("path") == "/sse"]
        assert len(protocols) == 1
        transport: Any = protocols[0].transport  # type: ignore[attr-defined]
        assert transport.get_write_buffer_limits()[1] == size
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * size  # Linux x2


async def test_a_writer_stops_at_once_when_the_connection_is_lost(
        caplog: pytest.LogCaptureFixture) -> None:
    """Finding 8: a connection lost while frames wait. uvicorn hears of the loss a turn of
    the event loop later; the writer must not write the backlog into the dead socket
    meanwhile (asyncio logs every write from the fifth: 188 lines for one client)."""
    async with running_gateway() as gw, ws_client(gw.ws_url) as client:
        await client.subscribe("lost")
        [session] = gw.gateway.sessions
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for i in range(50):  # wakes the writer: it runs before connection_lost below
                session.outbox.put(Outgoing(json.dumps({"type": "pong", "data": i})))
            abort = getattr(session.transport, "abort")  # noqa: B009 - WebSocketTransport
            await abort()  # the server cuts the connection: connection_lost comes later
            for _ in range(100):
                if not gw.gateway.sessions:
                    break
                await asyncio.sleep(0.01)
        lost_writes = [r for r in caplog.records if "socket.send() raised" in r.getMessage()]
        assert lost_writes == []
        assert not gw.gateway.sessions


def _post_half_a_body(port: int, path: str) -> tuple[float, bytes]:
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 500\r\n\r\n{\"chan".encode())
        started = time.monotonic()
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(4096):  # until the server closes the connection
            answer += chunk
        return time.monotonic() - started, answer
    finally:
        sock.close()


@pytest.mark.parametrize("path", ["/api/publish", "/auth"])
async def test_a_body_that_never_completes_gets_408_and_the_connection_closed(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 9: before, the request was held forever."""
    monkeypatch.setattr(api, "BODY_TIMEOUT_S", 0.5)
    async with running_gateway(settings_with(demo=True)) as gw:
        took, answer = await asyncio.to_thread(_post_half_a_body, gw.server.port, path)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in head.lower()
        assert json.loads(body)["data"]["code"] == "request_timeout"
        assert 0.4 < took < 5, took  # answered at the timeout, then closed at once
