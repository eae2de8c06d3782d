"""Everything the gateway takes in, held to one set of rules (in-process uvicorn, memory
broker): publish API headers and bodies, presence members, JSON depth, event names, and
the messages that say what was wrong (in words of JSON, never of Python)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from channelcast.brokers.memory import MemoryBroker
from channelcast.errors import AuthError, MessageError
from channelcast.gateway.auth import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    RequestVerifier,
    channel_auth,
    sign_channel,
    sign_request,
)
from channelcast.gateway.jsontext import MAX_DEPTH
from channelcast.gateway.presence import MAX_USER_INFO_BYTES, Member
from tests.gateway.conftest import (
    Client,
    Running,
    running_gateway,
    settings_with,
    signed_post_args,
    ws_client,
)

pytestmark = pytest.mark.timeout(120)

PYTHON_WORDS = ("Recursion", "recursion", "codec", "set_int_max_str_digits", "Traceback",
                "surrogates not allowed")


def nest(depth: int, inner: str = "") -> str:
    """Arrays nested ``depth`` deep."""
    return "[" * depth + inner + "]" * depth


def plain(message: str) -> str:
    for word in PYTHON_WORDS:
        assert word not in message, message
    return message


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    data = response.json()["data"]
    return response.status_code, data["code"], plain(data["message"])


# --- finding 2: publish API headers -----------------------------------------------------


def _signed_with_timestamp(settings: Any, body: bytes, timestamp: str) -> dict[str, str]:
    g = settings.gateway
    signature = hmac.new(g.app_secret.encode(), timestamp.encode() + b"." + body,
                         hashlib.sha256).hexdigest()
    return {HEADER_KEY: g.app_key, HEADER_TIMESTAMP: timestamp, HEADER_SIGNATURE: signature}


@pytest.mark.parametrize("timestamp", [
    "9" * 309, "9" * 4300, "9" * 5000, "-" + "9" * 309, "-5", "+1764201600",
    "1_764_201_600", "1.7e9", "0x6930", "9" * 13])
async def test_a_timestamp_that_is_not_unix_seconds_is_401_never_500(timestamp: str) -> None:
    body = json.dumps({"channel": "ts", "event": "e", "data": 1}).encode()
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        headers = _signed_with_timestamp(gw.settings(), body, timestamp)
        r = await http.post("/api/publish", content=body, headers=headers)
        status, code, message = error_of(r)
        assert (status, code) == (401, "auth_failed"), r.text
        assert "Unix seconds" in message or "window" in message


def test_the_replay_window_is_as_wide_both_ways() -> None:
    verifier = RequestVerifier("k", "s", window_s=300)
    body = b"{}"
    now = 1_764_201_600.7  # a fraction: the old check took 300.7 s as outside, 299.3 in
    for offset in (-300, 300, 0):
        ts = int(now) + offset
        verifier.verify(sign_request("k", "s", body, timestamp=ts), body, now=now)
    for offset in (-301, 301):
        ts = int(now) + offset
        with pytest.raises(AuthError, match="300s replay window"):
            verifier.verify(sign_request("k", "s", body, timestamp=ts), body, now=now)


# --- findings 6, 14: one strict parser, one depth limit -------------------------------


async def test_one_depth_limit_for_frames_with_one_message() -> None:
    async with running_gateway() as gw, ws_client(gw.ws_url, max_size=None) as ws:
        await ws.send(f'{{"type":"ping","data":{nest(MAX_DEPTH - 1, "1")}}}')  # 256 in all
        pong = await ws.expect("pong")
        assert pong["data"] == json.loads(nest(MAX_DEPTH - 1, "1"))
        for depth in (MAX_DEPTH, 800, 960, 1000, 1024, 1025, 5000):  # data nests one less
            await ws.send(f'{{"type":"ping","data":{nest(depth)}}}')
            frame = await ws.recv()
            assert frame["type"] == "error", (depth, frame)
            assert frame["data"]["code"] == "bad_json", (depth, frame)
            assert "deeper than 256 levels (the depth limit)" in plain(
                frame["data"]["message"]), (depth, frame)


async def test_the_publish_api_takes_only_strict_json() -> None:
    async with running_gateway(settings_with(demo=True)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        settings = gw.settings()

        async def post(raw: bytes) -> httpx.Response:
            g = settings.gateway
            return await http.post("/api/publish", content=raw,
                                   headers=sign_request(g.app_key, g.app_secret, raw))

        bad = {
            "309 digits": b'{"channel":"s","event":"e","data":' + b"9" * 309 + b"}",
            "5000 digits": b'{"channel":"s","event":"e","data":' + b"9" * 5000 + b"}",
            "1e400": b'{"channel":"s","event":"e","data":1e400}',
            "NaN": b'{"channel":"s","event":"e","data":NaN}',
            "BOM": b'\xef\xbb\xbf{"channel":"s","event":"e","data":1}',
            "lone surrogate": b'{"channel":"s","event":"e","data":"\\ud800"}',
            "not UTF-8": b'{"channel":"s","event":"e","data":"\xff"}',
            "deep": b'{"channel":"s","event":"e","data":' + nest(300).encode() + b"}",
            "very deep": b'{"channel":"s","event":"e","data":' + nest(3000).encode() + b"}",
        }
        for name, raw in bad.items():
            status, code, message = error_of(await post(raw))
            assert (status, code) == (400, "bad_message"), (name, message)
            assert message.startswith("body is not strict JSON"), (name, message)
        status, code, message = error_of(await post(bad["deep"]))
        assert "deeper than 256 levels (the depth limit)" in message
        # The same rules for the body of /auth.
        r = await http.post("/auth", content=b'{"connection_id":"1.1","x":' +
                            nest(300).encode() + b"}")
        assert error_of(r)[:2] == (400, "bad_request")
        assert "depth limit" in error_of(r)[2]
        # Nothing of the above was stored.
        assert (await gw.gateway.broker.end_position("s")).offset == -1


async def test_a_batch_is_refused_when_ambiguous_and_data_defaults_to_null() -> None:
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http, \
            ws_client(gw.ws_url) as client:
        settings = gw.settings()
        both = {"messages": [{"channel": "b", "event": "e", "data": 1}],
                "channel": "b", "event": "lost", "data": 2}
        status, code, message = error_of(await http.post(
            "/api/publish", **signed_post_args(settings, both)))
        assert (status, code) == (400, "bad_message")
        assert "holds nothing else" in message
        assert "'channel'" in message
        twice = {"messages": [{"channel": "b", "event": "e", "data": 1, "id": "same-id"},
                              {"channel": "b", "event": "e", "data": 2},
                              {"channel": "b", "event": "e", "data": 3, "id": "same-id"}]}
        status, code, message = error_of(await http.post(
            "/api/publish", **signed_post_args(settings, twice)))
        assert (status, code) == (400, "bad_message")
        assert message.startswith("messages[2].id repeats messages[0].id")
        assert (await gw.gateway.broker.end_position("b")).offset == -1  # all or nothing
        # A missing data is null (documented).
        await client.subscribe("b")
        r = await http.post("/api/publish", **signed_post_args(
            settings, {"channel": "b", "event": "e"}))
        assert r.status_code == 200, r.text
        assert (await client.expect("message"))["data"] is None


# --- finding 15: the Pusher protocol's event names ---------------------------------------


@pytest.mark.parametrize("event", ["pusher:connection_established", "pusher:error",
                                   "pusher_internal:subscription_succeeded"])
async def test_no_publisher_may_send_the_pusher_protocols_own_events(event: str) -> None:
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        r = await http.post("/api/publish", **signed_post_args(
            gw.settings(), {"channel": "xproto", "event": event, "data": {}}))
        status, code, message = error_of(r)
        assert (status, code) == (400, "bad_message")
        assert message.startswith("message.event must not start with 'pusher:' or")
    async with MemoryBroker() as broker:  # and a publisher in Python, through any broker
        with pytest.raises(MessageError, match="Pusher protocol's own"):
            await broker.publish("xproto", event, {})
        await broker.publish("xproto", "pusher-like-but-fine", {})


# --- findings 5, 13: presence members ----------------------------------------------------


async def _join(gw: Running, ws: Client, channel: str, channel_data: str) -> dict[str, Any]:
    g = gw.settings().gateway
    await ws.send({"type": "subscribe", "channel": channel, "channel_data": channel_data,
                   "auth": sign_channel(g.app_key, g.app_secret, ws.connection_id, channel,
                                        channel_data)})
    return await ws.recv()


async def test_member_info_is_bounded_where_it_enters_and_others_stay_connected() -> None:
    """Finding 5: a signed user_info nested ~954 deep made every other member's connection
    close with 1011 (its member_added could not be encoded)."""
    async with running_gateway() as gw, ws_client(gw.ws_url) as ann, \
            ws_client(gw.ws_url, max_size=None) as eve:
        channel = "presence-deep"
        assert (await _join(gw, ann, channel, '{"user_id":"ann"}'))["type"] == "subscribed"
        too_big = json.dumps({"user_id": "eve", "user_info": {"bio": "b" * 1100}})
        for channel_data, why in (
                (f'{{"user_id":"eve","user_info":{nest(954)}}}', "depth limit"),
                (f'{{"user_id":"eve","user_info":{nest(300)}}}', "depth limit"),
                (too_big, f"the limit is {MAX_USER_INFO_BYTES}"),
                ('{"user_id":5.5}', "user_id must be a string"),
                ('{"user_info":{}}', "no user_id")):
            reply = await _join(gw, eve, channel, channel_data)
            assert reply["type"] == "error", reply
            assert reply["data"]["code"] == "auth_failed"
            assert why in plain(reply["data"]["message"]), reply
        ok = json.dumps({"user_id": "eve", "user_info": {"bio": "b" * 1000}})
        assert (await _join(gw, eve, channel, ok))["type"] == "subscribed"
        added = await ann.expect("member_added")
        assert added["data"]["user_id"] == "eve"  # the first thing Ann heard of Eve
        await ann.send({"type": "ping", "data": "alive"})
        assert (await ann.expect("pong"))["data"] == "alive"


def test_a_member_from_anywhere_never_nests_too_deep_to_send() -> None:
    """Members read from the broker (other nodes' presence operations) pass the depth rule
    too: every member_added and member list listing them can be encoded."""
    deep: Any = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    assert Member.from_obj({"user_id": "u", "user_info": deep}) is None
    assert Member.from_obj({"user_id": "u", "user_info": deep[0]}) == Member("u", deep[0])
    with pytest.raises(ValueError, match="depth limit"):
        Member.parse({"user_id": "u", "user_info": deep})


async def test_a_numeric_user_id_is_listed_as_its_digits() -> None:
    """Finding 13, documented: Pusher clients and Laravel send numeric ids."""
    async with running_gateway() as gw, ws_client(gw.ws_url) as ws:
        reply = await _join(gw, ws, "presence-n", '{"user_id":5}')
        assert reply["data"]["members"] == [{"user_id": "5", "user_info": None}]
        g = gw.settings().gateway
        signed = channel_auth(g.app_key, g.app_secret, "1.1", "presence-n", user_id=5)
        assert signed["channel_data"] == '{"user_id":5,"user_info":null}'


@pytest.mark.parametrize(("channel", "kwargs", "why"), [
    ("private-a b", {}, "channel name"),
    ("private-;x", {}, "reserved"),
    ("", {}, "channel"),
    ("presence-r", {"user_id": "u", "user_info": {"bio": "b" * MAX_USER_INFO_BYTES}},
     "the limit is 1024"),
    ("presence-r", {"user_id": "u", "user_info": json.loads(nest(MAX_DEPTH))}, "depth limit"),
    ("presence-r", {"user_id": "x" * 129}, "1 to 128"),
    ("presence-r", {"user_id": 5.5}, "user_id must be a string"),
    ("presence-r", {"user_id": True}, "user_id must be a string"),
])
def test_channel_auth_refuses_to_sign_what_the_gateway_refuses(
        channel: str, kwargs: dict[str, Any], why: str) -> None:
    with pytest.raises(AuthError, match=why):
        channel_auth("k", "s", "1.1", channel, **kwargs)


# --- findings 16, 17: small things ------------------------------------------------------


async def test_a_fragmented_message_over_the_limit_is_closed_with_1009() -> None:
    """The WebSocket layer counts fragments too (this held before; the docs now say so)."""
    async with running_gateway() as gw, connect(gw.ws_url, max_size=None) as ws:
        await ws.recv()

        async def fragments() -> Any:
            yield '{"type":"ping","data":"' + "x" * 30_000
            for _ in range(50):
                yield "x" * 30_000
                await asyncio.sleep(0)
            yield '"}'

        with contextlib.suppress(ConnectionClosed):  # while sending, or at the next recv
            await ws.send(fragments())
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1009


async def test_small_things_say_what_they_mean() -> None:
    async with running_gateway(settings_with(demo=True)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        metrics = (await http.get("/metrics")).text
        assert 'channelcast_connections{transport="ws"} 0.0' in metrics
        assert 'channelcast_connections{transport="sse"} 0.0' in metrics
        r = await http.post("/auth", json={"connection_id": 5, "channel": "private-a"})
        assert error_of(r) == (400, "bad_request", "want JSON {connection_id, channel}: "
                               "connection_id must be a string")
        r = await http.post("/auth", json={"channel": "private-a"})
        assert "connection_id is missing" in error_of(r)[2]
        async with ws_client(gw.ws_url) as ws:
            for raw in (b'{"type":"ping","data":"\xff\xfe"}', b"\xed\xa0\x80",
                        '{"type":"ping"}'.encode("utf-16")):
                await ws.ws.send(raw)
                frame = await ws.recv()
                assert frame["data"] == {"code": "bad_json",
                                         "message": "binary frame is not UTF-8 text"}
            await ws.ws.send(b'{"type":"ping","data":1}')  # UTF-8 JSON in binary is fine
            assert (await ws.recv()) == {"type": "pong", "data": 1}


async def test_publish_timestamps_outside_the_window_are_refused_either_way() -> None:
    body = json.dumps({"channel": "f", "event": "e"}).encode()
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        g = gw.settings().gateway
        for offset, status in ((301 + 2, 401), (-301 - 2, 401), (290, 200), (-290, 200)):
            headers = sign_request(g.app_key, g.app_secret, body,
                                   timestamp=int(time.time()) + offset)
            r = await http.post("/api/publish", content=body, headers=headers)
            assert r.status_code == status, (offset, r.text)
