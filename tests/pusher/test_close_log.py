"""The connection log lines of Pusher connections (in-process uvicorn, memory broker): the
open line names the peer, and the end line states the close code the client saw, who
closed and why (4009 terminate, 4100 quota, 4200 shutdown, 4201 pong timeout, the client's
own codes, the server's 1009 and 1007)."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest

from channelcast.gateway.node import Gateway
from channelcast.gateway.pusher.protocol import (
    CLOSE_OVER_QUOTA,
    CLOSE_RECONNECT,
    CLOSE_TERMINATED,
)
from channelcast.gateway.pusher.session import PusherSession
from tests.gateway.conftest import Running, running_gateway
from tests.gateway.rawws import RawWebSocket, masked_frame
from tests.pusher.conftest import pusher_settings, raw_pusher

pytestmark = pytest.mark.timeout(60)


def lines(caplog: pytest.LogCaptureFixture, conn: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "channelcast.gateway"
            and r.levelno == logging.INFO and f"connection {conn} " in r.getMessage()]


async def end_of(caplog: pytest.LogCaptureFixture, gw: Gateway, conn: str) -> list[str]:
    for _ in range(300):
        if any(" closed: " in m for m in lines(caplog, conn)) and not gw.sessions:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # a second line would show up now
    return [m for m in lines(caplog, conn) if " closed: " in m]


def only_session(gw: Running) -> PusherSession:
    [session] = gw.gateway.sessions
    assert isinstance(session, PusherSession)
    return session


def raw(gw: Running) -> RawWebSocket:
    key = gw.settings().gateway.app_key
    return RawWebSocket(gw.server.port, f"/app/{key}?protocol=7&client=raw&version=1")


def socket_id(ws: RawWebSocket) -> str:
    hello = json.loads(ws.text_frame())
    assert hello["event"] == "pusher:connection_established", hello
    return str(json.loads(hello["data"])["socket_id"])


async def test_the_open_line_names_the_peer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as client:
        [opened] = lines(caplog, client.socket_id)
        assert re.fullmatch(rf"connection {re.escape(client.socket_id)} \(pusher\) open "
                            r"from 127\.0\.0\.1:\d+", opened), opened


@pytest.mark.parametrize(("code", "reason", "shown"), [
    (1000, "", "code 1000 by the client"),
    (4321, "my reason", "code 4321 by the client: 'my reason'"),
])
async def test_a_clients_close_is_logged_with_its_code(
        caplog: pytest.LogCaptureFixture, code: int, reason: str, shown: str) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    async with running_gateway(pusher_settings()) as gw:
        async with raw_pusher(gw) as client:
            conn = client.socket_id
            await client.ws.close(code, reason)
        assert await end_of(caplog, gw.gateway, conn) == [
            f"connection {conn} (pusher) closed: {shown}"]


@pytest.mark.parametrize(("code", "reason"), [
    (CLOSE_TERMINATED, "connection terminated by the app"),
    (CLOSE_OVER_QUOTA, "app 1 is over its connection quota"),
    (CLOSE_RECONNECT, "subscription lost; reconnect"),
])
async def test_a_terminated_connection_is_logged_with_the_code_the_client_got(
        caplog: pytest.LogCaptureFixture, code: int, reason: str) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    async with running_gateway(pusher_settings()) as gw:
        ws = await asyncio.to_thread(raw, gw)
        try:
            conn = await asyncio.to_thread(socket_id, ws)
            terminate = asyncio.create_task(only_session(gw).terminate(code, reason))
            got = await asyncio.to_thread(ws.close_code)
            ws.send(masked_frame(0x8, got[0].to_bytes(2, "big")))
            await terminate
        finally:
            ws.close()
        assert got == (code, reason)
        assert await end_of(caplog, gw.gateway, conn) == [
            f"connection {conn} (pusher) closed: code {code} by the server: {reason}"]


async def test_a_shutdown_is_logged_as_4200(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    async with running_gateway(pusher_settings()) as gw:
        ws = await asyncio.to_thread(raw, gw)
        try:
            conn = await asyncio.to_thread(socket_id, ws)
            drain = asyncio.create_task(gw.gateway.drain("server shutting down", 2.0))
            got = await asyncio.to_thread(ws.close_code)
            await drain
        finally:
            ws.close()
        assert got == (4200, "server shutting down")
        assert await end_of(caplog, gw.gateway, conn) == [
            f"connection {conn} (pusher) closed: code 4200 by the server: server shutting "
            "down"]


async def test_a_pong_timeout_is_logged_as_4201(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    settings = pusher_settings(activity_timeout=1, pong_timeout_s=0.3)
    async with running_gateway(settings) as gw:
        ws = await asyncio.to_thread(raw, gw)
        try:
            conn = await asyncio.to_thread(socket_id, ws)
            got = await asyncio.to_thread(ws.close_code)  # pusher:ping never answered
        finally:
            ws.close()
        assert got == (4201, "pong reply not received")
        assert await end_of(caplog, gw.gateway, conn) == [
            f"connection {conn} (pusher) closed: code 4201 by the server: pong reply not "
            "received"]


async def test_the_servers_1009_and_1007_are_logged_as_the_servers(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    async with running_gateway(pusher_settings()) as gw:
        for frame, code in [
                (masked_frame(0x1, b"x" * 100, length=1_100_000)[:110], 1009),
                (masked_frame(0x1, b'{"event":"\xff"}'), 1007),
                (masked_frame(0x1, b'{"event":"\xc3', fin=False) + masked_frame(0x0, b'\x28"}'),
                 1007)]:
            ws = await asyncio.to_thread(raw, gw)
            try:
                conn = await asyncio.to_thread(socket_id, ws)
                ws.send(frame)
                got, reason = await asyncio.to_thread(ws.close_code)
            finally:
                ws.close()
            assert got == code
            assert await end_of(caplog, gw.gateway, conn) == [
                f"connection {conn} (pusher) closed: code {code} by the server: {reason}"]
            assert not gw.gateway.sessions
            assert not gw.gateway.pusher.connections
            assert (gw.gateway.metrics.registry.get_sample_value(
                "channelcast_connections", {"transport": "pusher"}) or 0.0) == 0


@pytest.mark.parametrize(("path", "code", "why"), [
    ("/app/nokey?protocol=7", 4001, "unknown app key"),
    ("/app/{key}", 4008, "no protocol version given"),
    ("/app/{key}?protocol=5", 4007, "protocol 5 is not supported"),
    ("/app/{key}?protocol=seven", 4006, "invalid protocol version 'seven'"),
])
async def test_a_refused_connection_says_why_in_the_log(
        caplog: pytest.LogCaptureFixture, path: str, code: int, why: str) -> None:
    """tgw4 finding 2: refusals at connect left no line of the gateway's."""
    caplog.set_level(logging.INFO, logger="channelcast.gateway")
    async with running_gateway(pusher_settings()) as gw:
        key = gw.settings().gateway.app_key
        ws = await asyncio.to_thread(RawWebSocket, gw.server.port, path.format(key=key))
        try:
            assert (await asyncio.to_thread(ws.close_code))[0] == code
        finally:
            ws.abort()
    refused = [r.getMessage() for r in caplog.records
               if r.levelno == logging.INFO and "refused" in r.getMessage()]
    assert len(refused) == 1, refused
    assert re.fullmatch(r"pusher connection from 127\.0\.0\.1:\d+ \(app key '[^']*'\) "
                        rf"refused: code {code}: {re.escape(why)}.*", refused[0]), refused
