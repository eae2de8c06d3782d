"""A 10,000-frame hostile fuzz against a real uvicorn gateway (memory broker), from a seeded
random generator: lone surrogates, NaN/Infinity, deep nesting, huge numbers, wrong types,
oversize frames, and disconnects at every point (mid-handshake, mid-frame, after subscribe,
SSE streams, HTTP bodies), while messages and presence flow.

Afterwards every connection either works (a ping gets its pong) or was closed, every frame
the server sent is strict JSON (what a browser's ``JSON.parse`` accepts), the log watch saw
no ERROR and no traceback, and ``/metrics`` counts nothing once every client is gone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from channelcast.gateway.auth import sign_channel
from channelcast.gateway.node import Gateway
from tests.gateway.conftest import Running, running_gateway, settings_with

pytestmark = pytest.mark.timeout(120)

SEED = 13
TALKERS = 16
FRAMES_PER_TALKER = 620
DISCONNECTERS = 320
KEY, SECRET = "fuzz-key", "fuzz-secret"
PUBLIC = ("fz.a", "fz.b", "fz.c")
MAX_FRAME = 8192


def nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def hostile_frame(rng: random.Random, conn: str) -> str | bytes:
    """One client frame: valid, broken in one of many ways, or hostile."""
    channel = rng.choice([*PUBLIC, "presence-fz", "private-fz", "private-other"])
    kind = rng.randrange(22)
    if kind == 0:
        return json.dumps({"type": "ping", "data": rng.choice([1, "x", [1, {"a": None}],
                                                                   10**30, -0.5])})
    if kind == 1:
        return json.dumps({"type": rng.choice(["subscribe", "unsubscribe"]),
                           "channel": rng.choice(PUBLIC)})
    if kind == 2:  # a valid presence subscription (signed for this connection)
        data = json.dumps({"user_id": f"u{rng.randrange(5)}", "user_info": {"n": "é😀"}})
        return json.dumps({"type": "subscribe", "channel": "presence-fz", "channel_data": data,
                           "auth": sign_channel(KEY, SECRET, conn, "presence-fz", data)})
    if kind == 3:
        return json.dumps({"type": "subscribe", "channel": "private-fz",
                           "auth": sign_channel(KEY, SECRET, conn, "private-fz")})
    if kind == 4:  # lone surrogates, written as escapes (valid UTF-8 text)
        return rng.choice(['{"type":"ping","data":"\\ud800"}',
                           '{"type":"ping","data":{"\\udfff":[1]}}',
                           '{"type":"subscribe","channel":"fz.\\udc00"}',
                           '{"type":"subscribe","channel":"fz.a","since":"\\ud800:0:1"}',
                           '{"type":"\\ud800"}', '"\\udbff"'])
    if kind == 5:  # a signed channel_data with a lone surrogate or a constant in it
        data = rng.choice(['{"user_id":"u","user_info":"\\ud800"}',
                           '{"user_id":"u","user_info":NaN}',
                           '{"user_id":"u","user_info":{"s":-Infinity}}'])
        return json.dumps({"type": "subscribe", "channel": "presence-fz", "channel_data": data,
                           "auth": sign_channel(KEY, SECRET, conn, "presence-fz", data)})
    if kind == 6:
        constant = rng.choice(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1E+309"])
        return rng.choice([f'{{"type":"ping","data":{constant}}}',
                           f'{{"type":"ping","data":[1,{{"x":{constant}}}]}}',
                           f'{{"type":"subscribe","channel":"fz.a","since":{constant}}}'])
    if kind == 7:  # deep nesting, around the parsers' limits
        depth = rng.choice([100, 900, 1000, 1023, 1024, 1025, 3000])
        return f'{{"type":"ping","data":{nest(depth)}}}'
    if kind == 8:  # huge numbers
        digits = rng.choice([20, 30, 400, 4000])
        return f'{{"type":"ping","data":{"9" * digits}}}'
    if kind == 9:  # wrong types
        return json.dumps(rng.choice([
            {"type": 5}, {"type": None}, {"type": ["ping"]}, {"channel": "fz.a"},
            {"type": "dance"}, {"type": "PING"},
            {"type": "subscribe", "channel": 5}, {"type": "subscribe", "channel": ["fz.a"]},
            {"type": "subscribe", "channel": {"x": 1}}, {"type": "subscribe", "channel": None},
            {"type": "subscribe", "channel": "fz.a", "since": 12},
            {"type": "subscribe", "channel": "private-fz", "auth": 7},
            {"type": "subscribe", "channel": "presence-fz", "auth": "k:s",
             "channel_data": {"user_id": "u"}},
            {"type": "unsubscribe", "channel": 1.5}]))
    if kind == 10:
        return rng.choice(["", " ", "null", "[]", "[1,2]", "{", "}", '"ping"', "true",
                           '{"type":"ping"', '{"type":"ping"}}', "\ufeff{}"])
    if kind == 11:  # binary frames: JSON, UTF-16, invalid UTF-8, random bytes
        return rng.choice([b'{"type":"ping","data":1}',
                           '{"type":"ping"}'.encode("utf-16"), b"\xff\xfe\xfd",
                           b'{"type":"ping","data":"\xed\xa0\x80"}', os.urandom(16)])
    if kind == 12:
        return '{"type":"ping","data":"' + "x" * (MAX_FRAME + 10) + '"}'  # frame_too_large
    if kind == 13:
        return json.dumps({"type": "subscribe", "channel": channel, "auth": "fuzz-key:00"})
    if kind == 14:
        return json.dumps({"type": "subscribe", "channel": rng.choice(PUBLIC),
                           "since": rng.choice(["realtime:0:0", "realtime:0:-1", "a:b:c",
                                                "realtime:9:99999", "x:0:1"])})
    if kind == 15:
        return "".join(rng.choice('{}[]":,ab1\\ u') for _ in range(rng.randrange(1, 40)))
    if kind == 16:  # valid JSON, odd but legal text
        return json.dumps({"type": "ping", "data": "\u2028\u0000\U0001F600\\\"</script>"},
                          ensure_ascii=rng.random() < 0.5)
    return json.dumps({"type": rng.choice(["ping", "subscribe", "unsubscribe"]),
                       "channel": channel, "data": rng.random()})


def masked(payload: bytes, opcode: int = 1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def handshake(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


@dataclass
class Tally:
    frames_sent: int = 0
    frames_received: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    works: int = 0
    closed: int = 0
    disconnects: dict[str, int] = field(default_factory=dict)


def check_frame(raw: str | bytes, tally: Tally) -> dict[str, Any]:
    frame = orjson.loads(raw.encode() if isinstance(raw, str) else raw)  # strict JSON
    assert isinstance(frame, dict)
    assert isinstance(frame["type"], str)
    tally.frames_received += 1
    if frame["type"] == "error":
        code = frame["data"]["code"]
        tally.errors[code] = tally.errors.get(code, 0) + 1
    elif frame["type"] == "message":
        tally.messages += 1
    return frame


async def talker(i: int, url: str, tally: Tally) -> None:
    rng = random.Random(SEED * 1000 + i)
    sent = 0
    # Some talkers hang up abruptly once, part-way, then reconnect and go on.
    reset_at = rng.randrange(1, FRAMES_PER_TALKER) if i % 4 == 3 else None
    while sent < FRAMES_PER_TALKER:
        async with connect(url, max_size=None, open_timeout=10) as ws:
            hello = check_frame(await ws.recv(), tally)
            conn = hello["data"]["connection_id"]
            pongs: asyncio.Queue[Any] = asyncio.Queue()
            reader = asyncio.create_task(read_all(ws, tally, pongs))
            try:
                while sent < FRAMES_PER_TALKER:
                    if sent == reset_at:
                        reset_at = None
                        tally.disconnects["talker reset"] = \
                            tally.disconnects.get("talker reset", 0) + 1
                        ws.transport.abort()
                        break
                    try:
                        await ws.send(hostile_frame(rng, conn))
                    except ConnectionClosed:
                        break
                    sent += 1
                    tally.frames_sent += 1
                    if sent % 8 == 0:
                        await asyncio.sleep(0)
                else:
                    await final_check(ws, i, pongs, tally)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            # Closed by the server or by us before the end: reconnect and go on.


async def read_all(ws: ClientConnection, tally: Tally, pongs: asyncio.Queue[Any]) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            frame = check_frame(raw, tally)
            if frame["type"] == "pong":
                pongs.put_nowait(frame.get("data"))


async def final_check(ws: ClientConnection, i: int, pongs: asyncio.Queue[Any],
                      tally: Tally) -> None:
    """The connection works (our ping gets its pong) or the server closed it."""
    marker = f"final-{i}"
    try:
        await ws.send(json.dumps({"type": "ping", "data": marker}))
        while True:
            if await asyncio.wait_for(pongs.get(), 30) == marker:
                tally.works += 1
                return
    except ConnectionClosed:
        assert ws.close_code is not None
        tally.closed += 1


async def read_until(reader: asyncio.StreamReader, marker: bytes, limit_s: float = 5) -> bytes:
    seen = b""
    while marker not in seen:
        chunk = await asyncio.wait_for(reader.read(65536), limit_s)
        if not chunk:
            break
        seen += chunk
    return seen


async def disconnecter(n: int, port: int, tally: Tally) -> None:
    """One connection that hangs up at some point of its life, politely or with a reset."""
    rng = random.Random(SEED * 7919 + n)
    point = rng.choice(["mid-handshake", "after handshake", "mid-frame", "after subscribe",
                        "after subscribe", "mid-frame after subscribe", "sse", "sse",
                        "http body"])
    tally.disconnects[point] = tally.disconnects.get(point, 0) + 1
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if point == "mid-handshake":
            request = handshake(port)
            writer.write(request[:rng.randrange(1, len(request))])
        elif point == "sse":
            writer.write(f"GET /sse?channels={rng.choice(PUBLIC)} HTTP/1.1\r\nHost: x\r\n\r\n"
                         .encode())
            if rng.random() < 0.7:
                assert b"event: subscribed" in await read_until(reader, b"event: subscribed")
        elif point == "http body":
            path = rng.choice(["/api/publish", "/auth"])
            writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
                         '{"channel":"fz.a",'.encode())
        else:
            writer.write(handshake(port))
            assert b" 101 " in await read_until(reader, b"\r\n\r\n")
            if "subscribe" in point:
                for channel in rng.sample(PUBLIC, rng.randrange(1, 4)):
                    writer.write(masked(json.dumps({"type": "subscribe",
                                                    "channel": channel}).encode()))
                    tally.frames_sent += 1
                for _ in range(rng.randrange(4)):
                    frame = hostile_frame(rng, "nobody")
                    payload = frame if isinstance(frame, bytes) else frame.encode()
                    writer.write(masked(payload, 2 if isinstance(frame, bytes) else 1))
                    tally.frames_sent += 1
                await read_until(reader, b'"subscribed"')
            if "mid-frame" in point:
                whole = masked(json.dumps({"type": "ping", "data": "x" * 300}).encode())
                writer.write(whole[:rng.randrange(1, len(whole))])
                tally.frames_sent += 1
        await writer.drain()
        await asyncio.sleep(rng.choice([0, 0, 0.01, 0.05]))
    finally:
        if rng.random() < 0.5:
            writer.transport.abort()  # a reset
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def publisher(gw: Gateway, stop: asyncio.Event) -> int:
    count = 0
    while not stop.is_set():
        await gw.broker.publish(random.choice(PUBLIC), "tick", {"n": count, "t": "é😀"})
        count += 1
        await asyncio.sleep(0.002)
    return count


async def counts_are_zero(gw: Running) -> bool:
    m = gw.gateway.metrics.registry.get_sample_value
    return (m("channelcast_subscriptions") == 0
            and m("channelcast_broker_subscriptions") == 0
            and (m("channelcast_connections", {"transport": "ws"}) or 0) == 0
            and (m("channelcast_connections", {"transport": "sse"}) or 0) == 0
            and gw.gateway.hub.feed_count() == 0 and not gw.gateway.sessions)


async def test_ten_thousand_hostile_frames_and_disconnects_leave_a_clean_server() -> None:
    settings = settings_with(app_key=KEY, app_secret=SECRET, max_frame_bytes=MAX_FRAME,
                             max_subscriptions=4, presence_ttl_s=5, write_timeout_s=5.0)
    tally = Tally()
    async with running_gateway(settings) as gw:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stop = asyncio.Event()
        publishing = asyncio.create_task(publisher(gw.gateway, stop))
        limit = asyncio.Semaphore(8)

        async def one_disconnect(n: int) -> None:
            async with limit:
                await disconnecter(n, gw.server.port, tally)

        await asyncio.gather(*(talker(i, gw.ws_url, tally) for i in range(TALKERS)),
                             *(one_disconnect(n) for n in range(DISCONNECTERS)))
        stop.set()
        published = await publishing
        took = loop.time() - started
        for _ in range(500):  # every client is gone: nothing may be left counted
            if await counts_are_zero(gw):
                break
            await asyncio.sleep(0.02)
        assert await counts_are_zero(gw), gw.gateway.metrics.render().decode()
        print(f"\n{tally.frames_sent} frames sent in {took:.1f} s, {tally.frames_received} "
              f"received (all strict JSON), {tally.messages} messages of {published} "
              f"published; errors by code: {dict(sorted(tally.errors.items()))}; "
              f"disconnects: {dict(sorted(tally.disconnects.items()))}; "
              f"{tally.works} connections worked to the end, {tally.closed} were closed")
        assert tally.frames_sent >= 10_000
        assert tally.works + tally.closed >= TALKERS - TALKERS // 4  # each ended one way
        for code in ("bad_json", "bad_frame", "invalid_channel", "auth_failed",
                     "frame_too_large", "unknown_type"):
            assert tally.errors.get(code, 0) > 0, code  # the fuzz reached each refusal
        assert tally.messages > 0
        # The server still serves a newcomer normally.
        async with connect(gw.ws_url) as ws:
            check_frame(await ws.recv(), tally)
            await ws.send('{"type":"subscribe","channel":"fz.a"}')
            assert check_frame(await ws.recv(), tally)["type"] == "subscribed"
