"""Issue 13 over real sockets (in-process uvicorn, memory broker): hostile or broken clients.

1. a client that hangs up (SSE, WebSocket, cancelled endpoints) leaves no subscription;
2. text that cannot be encoded (lone surrogates) is refused where it enters;
3. NaN and Infinity are refused, and every frame the server sends is strict JSON;
4. a frozen client with traffic is dropped after ``gateway.write_timeout_s``;
7. a client that hangs up mid-body on the HTTP API causes no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import time
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from channelcast.brokers.memory import MemoryBroker
from channelcast.errors import AuthError
from channelcast.gateway.auth import channel_auth, sign_channel
from channelcast.gateway.hub import Hub
from channelcast.gateway.node import Gateway
from channelcast.gateway.presence import Member, PresenceDiff
from channelcast.gateway.protocol import (
    CLOSE_INTERNAL_ERROR,
    ClientProtocol,
    Credentials,
    Subscribe,
)
from channelcast.gateway.session import Outgoing, Session
from channelcast.message import Envelope, Record
from channelcast.types import ChannelName, Position
from tests.gateway.conftest import Client, Running, running_gateway, settings_with, ws_client
from tests.gateway.logwatch import LogWatch
from tests.gateway.test_slow_client import open_non_reading_client

pytestmark = pytest.mark.timeout(60)


def metric(gw: Gateway, name: str, **labels: str) -> float:
    return gw.metrics.registry.get_sample_value(name, labels or None) or 0.0


async def scraped(gw: Running) -> dict[str, float]:
    """``/metrics`` over HTTP, as ``{"name{labels}": value}``."""
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        text = (await http.get("/metrics")).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def until(predicate: Any, seconds: float = 5.0, what: str = "condition") -> float:
    """Waits for ``predicate()`` (sync or async); returns how long it took."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return loop.time() - start
        if loop.time() - start > seconds:
            raise AssertionError(f"{what} not reached within {seconds} s")
        await asyncio.sleep(0.02)


async def nothing_left(gw: Running) -> bool:
    m = await scraped(gw)
    return (m.get("channelcast_subscriptions", -1) == 0
            and m.get("channelcast_broker_subscriptions", -1) == 0
            and m.get('channelcast_connections{transport="sse"}', 0) == 0
            and m.get('channelcast_connections{transport="ws"}', 0) == 0
            and gw.gateway.hub.feed_count() == 0 and not gw.gateway.sessions)


# --- 1. cleanup that cancellation cannot skip ------------------------------------------------


async def open_sse(port: int, channels: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw SSE client that has read its ``subscribed`` events."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /sse?channels={channels} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    seen = b""
    want = channels.count(",") + 1
    while seen.count(b"event: subscribed") < want:
        chunk = await asyncio.wait_for(reader.read(4096), 5)
        assert chunk, seen
        seen += chunk
    return reader, writer


async def test_an_sse_client_that_hangs_up_leaves_no_subscription_behind() -> None:
    """Starlette cancels the SSE stream when the client disconnects; the session's cleanup
    must still detach it from the hub, or its broker subscription leaks (issue 13, 1)."""
    async with running_gateway() as gw:
        # The node's own standing subscriptions (the Pusher side follows its state channel).
        baseline = gw.gateway.broker.subscription_count()  # type: ignore[attr-defined]
        for i in range(5):
            _, writer = await open_sse(gw.server.port, "leak.a,leak.b" if i % 2 else "leak.a")
            m = await scraped(gw)
            assert m["channelcast_subscriptions"] >= 1
            assert m["channelcast_broker_subscriptions"] >= 1
            writer.close()  # the client hangs up
            await until(lambda: nothing_left(gw), what="every subscription released")
        assert gw.gateway.broker.subscription_count() == baseline  # type: ignore[attr-defined]
        # The channel still works for the next subscriber.
        async with ws_client(gw.ws_url) as client:
            assert (await client.subscribe("leak.a"))["type"] == "subscribed"
            await gw.gateway.broker.publish("leak.a", "e", 1)
            assert (await client.expect("message"))["data"] == 1


async def test_an_sse_client_that_hangs_up_while_messages_flow_leaves_nothing() -> None:
    async with running_gateway(settings_with(send_buffer_bytes=8192)) as gw:
        for _ in range(3):
            _, writer = await open_sse(gw.server.port, "flow")
            for i in range(50):
                await gw.gateway.broker.publish("flow", "e", {"i": i, "pad": "x" * 2000})
            writer.transport.abort()  # a reset, in the middle of the stream
            await until(lambda: nothing_left(gw), what="every subscription released")


class RecordingTransport:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.closed_with: list[int] = []

    async def send(self, item: Outgoing) -> None:
        self.texts.append(item.text)

    async def close(self, code: int, reason: str) -> None:
        self.closed_with.append(code)


async def test_session_release_survives_repeated_cancellation_and_a_second_call() -> None:
    """The endpoint that closes a session may be cancelled again and again (anyio task
    groups do that): every channel is still detached, and a second aclose is harmless."""
    async with MemoryBroker() as broker, Hub(broker) as hub:
        protocol = ClientProtocol("n.1", Credentials("k", "s"))
        session = Session(hub, protocol, RecordingTransport())
        session.start()
        for name in ("a", "b", "c", "presence-d"):
            channel = ChannelName(name)
            protocol.channels.add(channel)
            member = Member("u") if name.startswith("presence-") else None
            await session.subscribe(Subscribe(channel, None, member))
        assert hub.feed_count() == 4
        assert hub.metrics.registry.get_sample_value("channelcast_subscriptions") == 4

        closer = asyncio.create_task(session.aclose())
        for _ in range(20):  # cancelled at every await, as an anyio cancel scope does
            await asyncio.sleep(0)
            closer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closer
        await until(lambda: hub.feed_count() == 0, what="every feed stopped")
        assert hub.metrics.registry.get_sample_value("channelcast_subscriptions") == 0
        assert not broker._subs
        await asyncio.wait_for(session.aclose(), 5)  # again: nothing left to do, no error
        assert session.closed.is_set()


async def test_a_websocket_endpoint_cancelled_mid_connection_still_releases(
        server_log: LogWatch) -> None:
    server_log.expect(r"(?s)Exception in ASGI application.*CancelledError")  # ours, below
    async with running_gateway() as gw, ws_client(gw.ws_url) as client:
        for name in ("w1", "w2", "w3"):
            assert (await client.subscribe(name))["type"] == "subscribed"
        # Cancel the endpoint task itself (a server stopping it, a task group...).
        [session] = gw.gateway.sessions
        [endpoint] = [t for t in asyncio.all_tasks()  # uvicorn's task running the app
                      if getattr(t.get_coro(), "__qualname__", "").endswith(".run_asgi")]
        for _ in range(10):
            endpoint.cancel()
            await asyncio.sleep(0)
        await until(lambda: nothing_left(gw), what="every subscription released")
        assert session.closed.is_set()


# --- 2. lone surrogates ------------------------------------------------------------------


async def read_until_closed(client: Client) -> None:
    while True:
        await client.recv(10)


def strict(text: str | bytes) -> Any:
    """A frame as a browser's JSON.parse sees it: strict JSON in valid UTF-8."""
    raw = text.encode() if isinstance(text, str) else text
    return orjson.loads(raw)


LONE = ['{"type":"ping","data":"\\ud800"}',
        '{"type":"ping","data":{"\\udc00":1}}',
        '{"type":"ping","data":["ok","\\ud800\\u0041"]}',
        '{"type":"subscribe","channel":"\\ud800"}',
        '{"type":"subscribe","channel":"a","since":"\\udfff"}',
        '{"type":"\\ud800"}']


@pytest.mark.parametrize("frame", LONE)
async def test_a_frame_with_a_lone_surrogate_is_refused_and_the_connection_lives_on(
        frame: str) -> None:
    async with running_gateway() as gw, connect(gw.ws_url) as ws:
        assert strict(await ws.recv())["type"] == "connected"
        await ws.send(frame)  # the escape written literally: valid UTF-8 text
        reply = strict(await asyncio.wait_for(ws.recv(), 5))
        assert reply["type"] == "error"
        assert reply["data"]["code"] == "bad_json"
        assert "surrogate" in reply["data"]["message"]
        await ws.send('{"type":"ping","data":"still here \\ud83d\\ude00"}')  # a valid pair
        assert strict(await asyncio.wait_for(ws.recv(), 5)) == {
            "type": "pong", "data": "still here \U0001F600"}


async def test_presence_user_info_with_a_lone_surrogate_is_refused_even_when_signed() -> None:
    async with running_gateway() as gw, ws_client(gw.ws_url) as ann, \
            connect(gw.ws_url) as bob:
        g = gw.settings().gateway
        ok = channel_auth(g.app_key, g.app_secret, ann.connection_id, "presence-r",
                          user_id="ann")
        assert (await ann.subscribe("presence-r", **ok))["type"] == "subscribed"
        bob_id = strict(await bob.recv())["data"]["connection_id"]
        # A backend that signed it anyway (channel_auth itself refuses, see below).
        data = '{"user_id":"bob","user_info":{"name":"\\ud800"}}'
        await bob.send(json.dumps({
            "type": "subscribe", "channel": "presence-r", "channel_data": data,
            "auth": sign_channel(g.app_key, g.app_secret, bob_id, "presence-r", data)}))
        reply = strict(await asyncio.wait_for(bob.recv(), 5))
        assert reply["data"]["code"] == "auth_failed", reply
        assert "surrogate" in reply["data"]["message"]
        # Ann is not sent a member_added she could not parse, and still works.
        await ann.send({"type": "ping", "data": 1})
        assert strict(await ann.ws.recv()) == {"type": "pong", "data": 1}


def test_channel_auth_refuses_text_that_cannot_be_encoded() -> None:
    for user_id, user_info in (("ann", {"name": "\ud800"}), ("\udc00", None),
                               ("ann", ["\ud800x"]), ("ann", {"\ud800": 1})):
        with pytest.raises(AuthError, match="surrogate"):
            channel_auth("k", "s", "n.1", "presence-x", user_id=user_id, user_info=user_info)
    with pytest.raises(AuthError, match="surrogate"):
        channel_auth("k", "s", "n.\ud800", "private-x")


async def test_a_writer_that_cannot_encode_closes_1011_with_a_warning(
        server_log: LogWatch) -> None:
    """Should unencodable text reach a writer anyway (a bug), the connection is closed
    with 1011 and a WARNING names it: never open but dead."""
    server_log.expect(r"writer of \S+ failed \(UnicodeEncodeError")
    for direct in (True, False):
        async with running_gateway() as gw, ws_client(gw.ws_url) as client:
            await client.subscribe("enc")
            [session] = gw.gateway.sessions
            if not direct:
                session.transport._room = lambda: 0  # type: ignore[attr-defined]
            record = Record(Envelope(channel=ChannelName("enc"), event="e", data=1),
                            Position("t", 0, 1))
            session.deliver(ChannelName("enc"), record, '{"type":"message","data":"\ud800"}')
            with pytest.raises(ConnectionClosed):
                await read_until_closed(client)
            assert client.ws.close_code == CLOSE_INTERNAL_ERROR
            await until(lambda gw=gw: nothing_left(gw), what="released")
    warnings = [r for r in server_log.problems if "UnicodeEncodeError" in r.getMessage()]
    assert len(warnings) == 2


async def test_a_server_frame_that_cannot_be_encoded_closes_1011_and_never_raises(
        caplog: pytest.LogCaptureFixture) -> None:
    """A member that slipped past the checks (built directly here) must not raise into the
    hub's fan-out: that connection is closed with 1011 and a WARNING, the others go on."""
    caplog.set_level(logging.WARNING, logger="channelcast.gateway")
    async with MemoryBroker() as broker, Hub(broker) as hub:
        transport = RecordingTransport()
        session = Session(hub, ClientProtocol("n.1", Credentials("k", "s")), transport)
        session.start()
        diff = PresenceDiff(added=[Member("u", math.nan)])
        session.presence_changed(ChannelName("presence-x"), diff)  # must not raise
        await until(lambda: transport.closed_with == [CLOSE_INTERNAL_ERROR])
        assert session.outbox_closed
        await session.aclose()
    assert any("n.1: a 'member_added' frame cannot be sent as strict JSON" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)


async def test_an_sse_frame_that_cannot_be_encoded_ends_the_stream_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="channelcast.gateway")
    async with running_gateway() as gw:
        reader, writer = await open_sse(gw.server.port, "enc.sse")
        [session] = gw.gateway.sessions
        record = Record(Envelope(channel=ChannelName("enc.sse"), event="e", data=1),
                        Position("t", 0, 1))
        session.deliver(ChannelName("enc.sse"), record, '{"data":"\ud800"}')
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):  # the chunked response's proper end
            chunk = await asyncio.wait_for(reader.read(4096), 5)
            assert chunk, rest
            rest += chunk
        await until(lambda: nothing_left(gw), what="released")
        writer.close()
    assert any(f"SSE stream of {session.connection_id}: a frame cannot be encoded"
               in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


# --- 3. NaN and Infinity ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
async def test_nan_and_infinity_in_a_frame_are_refused_as_bad_json(value: str) -> None:
    async with running_gateway() as gw, connect(gw.ws_url) as ws:
        strict(await ws.recv())
        await ws.send(f'{{"type":"ping","data":{value}}}')
        reply = strict(await asyncio.wait_for(ws.recv(), 5))
        assert reply["type"] == "error"
        assert reply["data"]["code"] == "bad_json"
        await ws.send('{"type":"ping","data":123456789012345678901234567890}')
        # Exact values are kept (a big int stays an int, not a float).
        pong = await asyncio.wait_for(ws.recv(), 5)
        assert pong == '{"type":"pong","data":123456789012345678901234567890}'


async def test_presence_channel_data_with_nan_is_refused_even_when_signed() -> None:
    async with running_gateway() as gw, connect(gw.ws_url) as ws:
        g = gw.settings().gateway
        conn = strict(await ws.recv())["data"]["connection_id"]
        for data in ('{"user_id":"u","user_info":{"score":NaN}}',
                     '{"user_id":"u","user_info":Infinity}'):
            await ws.send(json.dumps({
                "type": "subscribe", "channel": "presence-n", "channel_data": data,
                "auth": sign_channel(g.app_key, g.app_secret, conn, "presence-n", data)}))
            reply = strict(await asyncio.wait_for(ws.recv(), 5))
            assert reply["data"]["code"] == "auth_failed", reply
            assert "NaN" in reply["data"]["message"] or "Infinity" in reply["data"]["message"]
        assert not next(iter(gw.gateway.sessions)).attached_channels


def test_channel_auth_refuses_nan_and_infinity() -> None:
    for bad in (math.nan, math.inf, -math.inf, {"score": math.nan}, [1.0, math.inf]):
        with pytest.raises(AuthError, match=r"NaN|Infinity"):
            channel_auth("k", "s", "n.1", "presence-x", user_id="u", user_info=bad)


async def test_the_auth_endpoint_refuses_constants_and_surrogates_in_its_body() -> None:
    async with running_gateway(settings_with(demo=True)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        for body in ('{"connection_id":"n.1","channel":"presence-x","user_id":NaN}',
                     '{"connection_id":"n.1","channel":"presence-x","user_id":"\\ud800"}',
                     '{"connection_id":"n.\\ud800","channel":"private-x"}'):
            r = await http.post("/auth", content=body)
            assert r.status_code == 400, r.text
            assert r.json()["data"]["code"] == "bad_request"


# --- 4. frozen clients with traffic -------------------------------------------------------


async def test_a_frozen_client_with_traffic_is_dropped_within_the_write_timeout() -> None:
    """A real TCP peer completes the handshake, subscribes, then neither reads nor writes.
    3 KB messages fill its buffers; the server closes it within the write timeout plus a
    margin, and releases its subscription."""
    timeout_s = 1.0
    settings = settings_with(write_timeout_s=timeout_s, send_buffer_bytes=16384,
                             send_queue=64, slow_client_policy="drop-oldest")
    async with running_gateway(settings) as gw:
        frozen = await asyncio.to_thread(open_non_reading_client, gw.server.port, "ho.busy")
        try:
            await until(lambda: metric(gw.gateway, "channelcast_subscriptions") == 1)
            started = time.monotonic()
            sent = 0
            while gw.gateway.sessions and time.monotonic() - started < timeout_s + 10:
                await gw.gateway.broker.publish("ho.busy", "load", {"n": sent, "pad": "x" * 3000})
                sent += 1
                await asyncio.sleep(0.002)
            took = time.monotonic() - started
            assert not gw.gateway.sessions, f"still connected after {took:.1f} s"
            print(f"\nfrozen client cut {took:.2f} s after the traffic started "
                  f"({sent} messages of 3 KB; write timeout {timeout_s} s)")
            # Filling the buffers takes a moment; then the write timeout runs.
            assert took < timeout_s + 3, took
            await until(lambda: nothing_left(gw), what="every count back to 0")
            # The server really cut the TCP connection: the client sees its end.
            frozen.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                while await asyncio.to_thread(frozen.recv, 1 << 16):
                    pass
        finally:
            frozen.close()
        # Others are served as before.
        async with ws_client(gw.ws_url) as client:
            await client.subscribe("ho.busy")
            await gw.gateway.broker.publish("ho.busy", "e", "hi")
            assert (await client.expect("message"))["data"] == "hi"


async def test_a_slow_reader_that_keeps_draining_is_not_dropped() -> None:
    """The write timeout is about no progress, not about a long backlog: stalls of 0.3 s,
    ten times shorter than the timeout (margin for a loaded 2-core machine), while the
    backlog takes far longer than the timeout to drain."""
    settings = settings_with(write_timeout_s=3.0, send_buffer_bytes=16384)
    async with running_gateway(settings) as gw, \
            connect(gw.ws_url, max_size=None, max_queue=4) as ws:
        strict(await ws.recv())
        await ws.send('{"type":"subscribe","channel":"slow"}')
        strict(await ws.recv())
        count = 300
        publisher = asyncio.create_task(gw.gateway.broker.publish_many(
            [Envelope(channel=ChannelName("slow"), event="e", data={"i": i, "pad": "y" * 3000})
             for i in range(count)]))
        got = 0
        while got < count:
            frame = strict(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] == "message":
                got += 1
            elif frame["type"] == "dropped":  # the send buffer's policy, not a disconnect
                got += frame["data"]["count"]
            await asyncio.sleep(0.001 if got % 50 else 0.3)  # stalls shorter than the timeout
        await publisher
        assert ws.close_code is None


# --- 7. hang-ups on the HTTP API ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/publish", "/auth"])
async def test_a_client_that_hangs_up_mid_body_causes_no_traceback(
        path: str, server_log: LogWatch) -> None:
    async with running_gateway(settings_with(demo=True)) as gw:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", gw.server.port))
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         "\r\nContent-Length: 1000\r\n\r\n{\"channel\":".encode())
            await asyncio.sleep(0.1)
            sock.close()
        await asyncio.sleep(0.5)
        assert server_log.unexpected() == []
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            assert (await http.get("/healthz")).status_code == 200
