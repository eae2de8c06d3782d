"""Finding 12: one INFO line when a connection opens (with its id) and one when it ends (its
id, the close code and why), however it ends (in-process uvicorn, memory broker)."""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
import pytest

from channelcast.gateway.session import Session
from tests.gateway.conftest import running_gateway, settings_with, ws_client
from tests.gateway.test_slow_client import open_non_reading_client

pytestmark = pytest.mark.timeout(60)


def lines(caplog: pytest.LogCaptureFixture, connection_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "channelcast.gateway"
            and r.levelno == logging.INFO and f"connection {connection_id} " in r.getMessage()]


async def ended(caplog: pytest.LogCaptureFixture, connection_id: str) -> list[str]:
    for _ in range(200):
        found = [m for m in lines(caplog, connection_id) if " closed: " in m]
        if found:
            await asyncio.sleep(0.1)  # a second line would show up now
            return [m for m in lines(caplog, connection_id) if " closed: " in m]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no end line for {connection_id}: {lines(caplog, connection_id)}")


async def test_a_websocket_connection_logs_its_open_and_its_end_by_the_client(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    async with running_gateway() as gw:
        async with ws_client(gw.ws_url) as client:
            conn = client.connection_id
            [opened] = lines(caplog, conn)
            assert re.fullmatch(rf"connection {re.escape(conn)} \(ws\) open from "
                                r"127\.0\.0\.1:\d+", opened), opened
            await client.ws.close(1000, "bye")
        assert await ended(caplog, conn) == [
            f"connection {conn} (ws) closed: code 1000 by the client: 'bye'"]


async def test_a_slow_client_closed_with_4008_is_logged_with_code_and_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    settings = settings_with(send_queue=4, slow_client_policy="disconnect",
                             send_buffer_bytes=16384)
    async with running_gateway(settings) as gw:
        sock = await asyncio.to_thread(open_non_reading_client, gw.server.port, "slow.log")
        try:
            for _ in range(200):
                if gw.gateway.hub.feed_count():
                    break
                await asyncio.sleep(0.01)
            [session] = gw.gateway.sessions
            for i in range(400):
                await gw.gateway.broker.publish("slow.log", "e", {"i": i, "pad": "x" * 2000})
                if not gw.gateway.sessions:
                    break
            assert await ended(caplog, session.connection_id) == [
                f"connection {session.connection_id} (ws) closed: code 4008 by the server: "
                "slow client: send buffer full (slow_client_policy = disconnect)"]
        finally:
            sock.close()


async def test_a_write_timeout_is_one_line_not_two(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    settings = settings_with(write_timeout_s=0.5, send_buffer_bytes=16384)
    async with running_gateway(settings) as gw:
        sock = await asyncio.to_thread(open_non_reading_client, gw.server.port, "frozen.log")
        try:
            for _ in range(200):
                if gw.gateway.hub.feed_count():
                    break
                await asyncio.sleep(0.01)
            [session] = gw.gateway.sessions
            for i in range(2000):
                await gw.gateway.broker.publish("frozen.log", "e", {"i": i, "pad": "x" * 3000})
                await asyncio.sleep(0.002)
                if not gw.gateway.sessions:
                    break
            conn = session.connection_id
            assert await ended(caplog, conn) == [
                f"connection {conn} (ws) closed: cut by the server without a close frame "
                "reaching the client (1006): write timeout: the client took nothing for "
                "0.5 s"]
            assert len(lines(caplog, conn)) == 2  # open, closed: nothing else at INFO
        finally:
            sock.close()


async def test_an_sse_stream_logs_its_open_and_its_end(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        async with http.stream("GET", "/sse?channels=log.sse") as resp:
            stream = resp.aiter_lines()
            while not (line := await anext(stream)).startswith("data: "):
                pass
            conn = line[len('data: "'):-1]
            assert lines(caplog, conn)[0].startswith(f"connection {conn} (sse) open from ")
        assert await ended(caplog, conn) == [
            f"connection {conn} (sse) closed: the client went away"]
        await gw.gateway.drain("maintenance")


def test_how_a_session_ended_reads_the_server_first() -> None:
    session = object.__new__(Session)
    session.transport = object()  # type: ignore[assignment]
    session.end_code, session.end_reason, session.client_close = None, "", None
    assert session.end_summary() == "the client went away"
    session.client_closed(1005)
    assert session.end_summary() == "the client went away without a close code (1005)"
    session.server_ended(1001, "server shutting down")
    session.server_ended(1011, "later")  # the first reason wins
    assert session.end_summary() == "code 1001 by the server: server shutting down"
