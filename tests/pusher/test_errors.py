"""Every Pusher error code the gateway sends, with a hand-written client that sees the
exact frames and close codes: 4001, 4006, 4007 (any version below 7, negative ones too),
4008 (connect refused), 4100 (connection quota), 4200 (graceful shutdown), 4201 (no
pong), 4009 (terminated; also a refused sign-in), 4301 (client event refused),
``pusher:subscription_error`` 401 and 400 (presence channel_data that breaks a rule,
signed by the SDK), and ``pusher:error`` for frames that are not strict JSON."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.gateway.conftest import running_gateway
from tests.pusher.conftest import (
    OTHER_APP,
    RawPusher,
    port_of,
    pusher_settings,
    raw_pusher,
    sdk,
)

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("path", "code", "words"), [
    ("/app/nobody?protocol=7", 4001, "unknown app key"),
    ("/app/channelcast-key?protocol=6", 4007, "protocol 6 is not supported"),
    ("/app/channelcast-key?protocol=-1", 4007, "protocol -1 is not supported"),
    ("/app/channelcast-key?protocol=-99999999999", 4007, "is not supported"),
    ("/app/channelcast-key?protocol=0", 4007, "protocol 0 is not supported"),
    ("/app/channelcast-key?protocol=seven", 4006, "invalid protocol version"),
    ("/app/channelcast-key?protocol=7.0", 4006, "invalid protocol version"),
    ("/app/channelcast-key", 4008, "no protocol version"),
])
async def test_refused_connections_get_pusher_error_then_the_close_code(
        path: str, code: int, words: str) -> None:
    async with running_gateway(pusher_settings()) as gw, \
            connect(f"ws://127.0.0.1:{port_of(gw)}{path}") as ws:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert frame["event"] == "pusher:error"
        assert frame["data"]["code"] == code
        assert words in frame["data"]["message"]
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == code


@pytest.mark.parametrize("version", ["7", "8", "99999999999999999999"])
async def test_versions_from_7_up_are_served_as_7(version: str) -> None:
    async with running_gateway(pusher_settings()) as gw, \
            raw_pusher(gw, query=f"protocol={version}") as ann:
        assert (await ann.subscribe("news"))["event"] == \
            "pusher_internal:subscription_succeeded"


@pytest.mark.parametrize(("custom", "words"), [
    ({"user_id": "u" * 129}, "user_id is 129 characters; it must have 1 to 128"),
    ({"user_id": True}, "user_id must be a string or an integer, not a boolean"),
    ({"user_id": "ann", "user_info": {"bio": "x" * 60_000}}, "the limit is 1024"),
    ({"user_id": "ann", "user_info": ["x"]}, "user_info must be a JSON object"),
])
async def test_presence_channel_data_that_breaks_a_rule_is_named(custom: dict[str, object],
                                                                 words: str) -> None:
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann:
        signed = sdk(gw).authenticate("presence-x", ann.socket_id, custom)
        frame = await ann.subscribe("presence-x", **signed)
        assert frame["event"] == "pusher:subscription_error"
        assert (frame["data"]["type"], frame["data"]["status"]) == ("InvalidChannelData", 400)
        assert words in frame["data"]["error"]
        fine = sdk(gw).authenticate("presence-x", ann.socket_id,
                                    {"user_id": "u" * 128, "user_info": {"bio": "x" * 900}})
        ok = await ann.subscribe("presence-x", **fine)
        assert ok["event"] == "pusher_internal:subscription_succeeded"


async def test_frames_that_are_not_strict_json_are_refused() -> None:
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann, \
            raw_pusher(gw) as bob:
        server = sdk(gw)
        for client in (ann, bob):
            await client.subscribe("private-a", **server.authenticate("private-a",
                                                                      client.socket_id))
        for data in ("NaN", "-Infinity", '"\\udc00"', "1e400"):
            await ann.ws.send(f'{{"event": "client-x", "channel": "private-a", '
                              f'"data": {data}}}')
            error = await ann.expect("pusher:error")
            assert "not strict JSON" in error["data"]["message"], data
        await ann.send("client-x", {"ok": 1}, "private-a")
        got = await bob.expect("client-x")
        assert got["data"] == '{"ok":1}', "only the strict frame was published"


async def test_a_connection_over_the_apps_quota_is_closed_with_4100() -> None:
    limited = replace(OTHER_APP, max_connections=2)
    async with running_gateway(pusher_settings(apps=(limited,))) as gw, \
            raw_pusher(gw, key=limited.key), raw_pusher(gw, key=limited.key) as second:
        async with connect(f"ws://127.0.0.1:{port_of(gw)}/app/{limited.key}?protocol=7") as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert frame["data"]["code"] == 4100
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 4100
        # The default app has no quota; a slot of the limited one frees up on close.
        async with raw_pusher(gw), raw_pusher(gw):
            pass
        await second.ws.close()
        await asyncio.sleep(0.1)
        async with raw_pusher(gw, key=limited.key) as third:
            assert third.socket_id


async def test_graceful_shutdown_closes_with_4200() -> None:
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann:
        await gw.gateway.drain("server shutting down")
        frame = await ann.expect("pusher:error")
        assert frame["data"] == {"code": 4200, "message": "server shutting down"}
        await asyncio.wait_for(ann.ws.wait_closed(), 5)
        assert ann.ws.close_code == 4200


async def test_a_silent_client_is_pinged_then_closed_with_4201() -> None:
    settings = pusher_settings(activity_timeout=1, pong_timeout_s=0.5)
    async with running_gateway(settings) as gw, raw_pusher(gw) as silent, \
            raw_pusher(gw) as alive:

        async def answer_pings() -> int:
            pings = 0
            while pings < 2:
                await alive.expect("pusher:ping", wait_s=3)
                pings += 1
                await alive.send("pusher:pong", {})
            return pings

        answering = asyncio.create_task(answer_pings())
        hello = json.loads(silent.frames[0]["data"])
        assert hello["activity_timeout"] == 1
        ping = await silent.expect("pusher:ping", wait_s=3)
        assert ping["data"] == {}
        error = await silent.expect("pusher:error", wait_s=3)
        assert error["data"]["code"] == 4201
        await asyncio.wait_for(silent.ws.wait_closed(), 5)
        assert silent.ws.close_code == 4201
        # A client that answers the pings stays connected.
        assert await answering == 2
        await alive.send("pusher:ping", {})
        assert (await alive.expect("pusher:pong"))["data"] == {}


async def test_a_refused_signin_is_pusher_error_4009_and_the_connection_stays() -> None:
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann:
        server = sdk(gw)
        signed = server.authenticate_user("1.2", {"id": "ann"})  # another socket's
        await ann.send("pusher:signin", signed)
        error = await ann.expect("pusher:error")
        assert error["data"]["code"] == 4009
        assert "invalid user signature" in error["data"]["message"]
        # Not signed in: the user channel is refused.
        frame = await ann.subscribe("#server-to-user-ann")
        assert frame["event"] == "pusher:subscription_error"
        assert frame["data"]["status"] == 401
        signed = server.authenticate_user(ann.socket_id, {"id": "ann"})
        await ann.send("pusher:signin", signed)
        success = await ann.expect("pusher:signin_success")
        assert json.loads(success["data"]["user_data"]) == {"id": "ann"}
        frame = await ann.subscribe("#server-to-user-ann")
        assert frame["event"] == "pusher_internal:subscription_succeeded"
        assert (await ann.subscribe("#server-to-user-bob"))["data"]["status"] == 401


@pytest.mark.parametrize(("channel", "auth", "words"), [
    ("private-x", "channelcast-key:0000", "invalid signature"),
    ("private-x", None, "needs an auth signature"),
    ("private-x", "other-key:abcd", "unknown app key"),
    ("presence-x", "channelcast-key:0000", "channel_data"),
    ("private-encrypted-x", "channelcast-key:0000", "invalid signature"),
])
async def test_bad_channel_auth_is_subscription_error_401(channel: str, auth: str | None,
                                                          words: str) -> None:
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann:
        data = {} if auth is None else {"auth": auth}
        frame = await ann.subscribe(channel, **data)
        assert frame == {"event": "pusher:subscription_error", "channel": channel,
                         "data": {"type": "AuthError", "error": frame["data"]["error"],
                                  "status": 401}}
        assert words in frame["data"]["error"]
        assert (await ann.subscribe("news"))["event"] == \
            "pusher_internal:subscription_succeeded"


async def test_presence_auth_is_checked_on_the_exact_channel_data_string() -> None:
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann:
        signed = sdk(gw).authenticate("presence-x", ann.socket_id, {"user_id": "ann"})
        respaced = signed["channel_data"].replace(":", ": ")
        assert json.loads(respaced) == json.loads(signed["channel_data"])
        frame = await ann.subscribe("presence-x", auth=signed["auth"], channel_data=respaced)
        assert frame["event"] == "pusher:subscription_error"
        frame = await ann.subscribe("presence-x", **signed)
        assert frame["event"] == "pusher_internal:subscription_succeeded"


async def rejected(client: RawPusher, event: str, channel: str, data: object) -> str:
    await client.send(event, data, channel)
    frame = await client.expect("pusher:error")
    assert frame["data"]["code"] == 4301, frame
    return str(frame["data"]["message"])


async def test_client_events_refused_with_4301() -> None:
    async with running_gateway(pusher_settings(client_events=False)) as gw, \
            raw_pusher(gw) as ann, raw_pusher(gw, key=OTHER_APP.key) as other:
        server, other_server = sdk(gw), sdk(gw, OTHER_APP)
        await ann.subscribe("private-a", **server.authenticate("private-a", ann.socket_id))
        assert "not enabled" in await rejected(ann, "client-x", "private-a", {})
        # App 42 takes client events, but not on public channels, nor unsubscribed ones.
        await other.subscribe("news")
        await other.subscribe("private-a",
                              **other_server.authenticate("private-a", other.socket_id))
        assert "only private and presence" in await rejected(other, "client-x", "news", {})
        assert "not subscribed" in await rejected(other, "client-x", "private-b", {})
        assert "limit is 10240" in await rejected(other, "client-x", "private-a",
                                                  "x" * 10_300)
        # 10 per second: a burst of 15 has at least 5 refused.
        for i in range(15):
            await other.send("client-burst", {"i": i}, "private-a")
        await other.send("pusher:ping", {})
        await other.expect("pusher:pong")
        refused = [f for f in other.frames if f["event"] == "pusher:error"
                   and "client events per second" in f["data"]["message"]]
        assert len(refused) >= 5
        assert all(f["data"]["code"] == 4301 for f in refused)
        # Still connected.
        await other.send("pusher:ping", {})
        await other.expect("pusher:pong")


async def test_a_draining_node_refuses_new_connections_with_4200() -> None:
    async with running_gateway(pusher_settings()) as gw:
        gw.gateway.accepting = False
        async with connect(f"ws://127.0.0.1:{port_of(gw)}/app/channelcast-key?protocol=7") as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert frame["data"]["code"] == 4200
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 4200
        gw.gateway.accepting = True


async def test_with_pusher_disabled_nothing_answers_the_pusher_paths() -> None:
    async with running_gateway(pusher_settings(enabled=False)) as gw:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{port_of(gw)}/app/channelcast-key?protocol=7"):
                pass
        assert info.value.response.status_code == 403
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            assert (await http.post("/apps/1/events", content=b"{}")).status_code == 404
