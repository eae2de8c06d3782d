"""The Pusher HTTP API driven by the ``pusher`` server SDK from PyPI (and, where the SDK
refuses to send something, by hand with the same signature): trigger, trigger_batch,
channels_info, channel_info, users_info, terminate_user_connections, socket_id exclusion,
app namespaces, ``info`` on triggers (per channel), and every error status (including
bodies that are not strict JSON and events naming both ``channel`` and ``channels``)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import httpx
import pusher
import pytest
from pusher.errors import PusherBadAuth, PusherBadRequest, PusherBadStatus, PusherForbidden

from channelcast.gateway.auth import sign_request
from channelcast.gateway.pusher.apps import PusherApp
from channelcast.gateway.pusher.signatures import sign_query
from tests.gateway.conftest import running_gateway, ws_client
from tests.pusher.conftest import (
    OTHER_APP,
    RawPusher,
    call,
    port_of,
    pusher_settings,
    raw_pusher,
    sdk,
    until_count,
)

pytestmark = pytest.mark.timeout(60)


async def subscribed(client: RawPusher, server: pusher.Pusher, channel: str,
                     user: str | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if channel.startswith("presence-"):
        extra = server.authenticate(channel, client.socket_id, {"user_id": user})
    elif channel.startswith("private-"):
        extra = server.authenticate(channel, client.socket_id)
    frame = await client.subscribe(channel, **extra)
    assert frame["event"] == "pusher_internal:subscription_succeeded", frame
    return frame


async def test_trigger_reaches_subscribers_except_the_excluded_socket() -> None:
    async with running_gateway(pusher_settings()) as gw, \
            raw_pusher(gw) as ann, raw_pusher(gw) as bob:
        server = sdk(gw)
        for client in (ann, bob):
            await subscribed(client, server, "news")
        result = await call(server.trigger, "news", "flash", {"n": 1}, ann.socket_id)
        position = result["positions"]["news"]
        frame = await bob.expect("flash")
        assert frame == {"event": "flash", "channel": "news", "data": '{"n": 1}',
                         "position": position}
        await call(server.trigger, "news", "flash", {"n": 2})
        frame = await ann.expect("flash")
        assert frame["data"] == '{"n": 2}', "ann got the event triggered without her"


async def test_trigger_batch_and_its_limit() -> None:
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann:
        server = sdk(gw)
        await subscribed(ann, server, "presence-lobby", "ann")
        await subscribed(ann, server, "news")
        batch = [{"channel": "news" if i % 2 else "presence-lobby", "name": "n",
                  "data": str(i)} for i in range(10)]
        result = await call(server.trigger_batch, batch)
        assert len(result["positions"]) == 10
        got = [json.loads((await ann.expect("n"))["data"]) for _ in range(10)]
        assert sorted(got) == list(range(10))
        with pytest.raises(PusherBadRequest, match="at most 10"):
            await call(server.trigger_batch, [*batch, batch[0]])
        # info asks for counts of the channels just triggered on.
        result = await call(server.trigger_batch, [
            {"channel": "presence-lobby", "name": "n", "data": "x",
             "info": "user_count,subscription_count"},
            {"channel": "news", "name": "n", "data": "y", "info": "subscription_count"}])
        assert result["batch"] == [
            {"channels": {"presence-lobby": {"subscription_count": 1, "user_count": 1}}},
            {"channels": {"news": {"subscription_count": 1}}}]


async def test_channels_channel_and_users_info() -> None:
    async with running_gateway(pusher_settings()) as gw, \
            raw_pusher(gw) as ann, raw_pusher(gw) as ann2, raw_pusher(gw) as bob:
        server = sdk(gw)
        await subscribed(ann, server, "presence-room", "ann")
        await subscribed(ann2, server, "presence-room", "ann")
        await subscribed(bob, server, "presence-room", "bob")
        await subscribed(bob, server, "news")
        await subscribed(bob, server, "private-x")
        await until_count(server, "presence-room", 3)
        assert await call(server.channels_info) == {
            "channels": {"news": {}, "presence-room": {}, "private-x": {}}}
        assert await call(server.channels_info, "presence-", ["user_count"]) == {
            "channels": {"presence-room": {"user_count": 2}}}
        assert await call(server.channels_info, "priv") == {"channels": {"private-x": {}}}
        assert await call(server.channel_info, "presence-room",
                          ["user_count", "subscription_count"]) == {
            "occupied": True, "user_count": 2, "subscription_count": 3}
        assert await call(server.channel_info, "nobody-here") == {"occupied": False}
        assert await call(server.channel_info, "news", ["subscription_count"]) == {
            "occupied": True, "subscription_count": 1}
        assert await call(server.users_info, "presence-room") == {
            "users": [{"id": "ann"}, {"id": "bob"}]}
        with pytest.raises(PusherBadRequest, match="presence"):
            await call(server.users_info, "news")
        with pytest.raises(PusherBadRequest, match="presence"):
            await call(server.channel_info, "news", ["user_count"])
        with pytest.raises(PusherBadRequest, match="filter_by_prefix=presence-"):
            await call(server.channels_info, None, ["user_count"])
        await ann2.ws.close()
        await until_count(server, "presence-room", 2)
        assert await call(server.users_info, "presence-room") == {
            "users": [{"id": "ann"}, {"id": "bob"}]}
        await ann.ws.close()
        await until_count(server, "presence-room", 1)
        assert await call(server.users_info, "presence-room") == {"users": [{"id": "bob"}]}


async def test_terminate_user_connections_closes_them_with_4009() -> None:
    async with running_gateway(pusher_settings()) as gw, \
            raw_pusher(gw) as ann, raw_pusher(gw) as bob:
        server = sdk(gw)
        for client, user in ((ann, "ann"), (bob, "bob")):
            signed = server.authenticate_user(client.socket_id, {"id": user})
            await client.send("pusher:signin", signed)
            await client.expect("pusher:signin_success")
        await call(server.terminate_user_connections, "ann")
        error = await ann.expect("pusher:error")
        assert error["data"]["code"] == 4009
        await asyncio.wait_for(ann.ws.wait_closed(), 5)
        assert ann.ws.close_code == 4009
        await bob.send("pusher:ping", {})
        await bob.expect("pusher:pong")


async def test_apps_have_their_own_channels() -> None:
    async with running_gateway(pusher_settings()) as gw, \
            raw_pusher(gw) as default, raw_pusher(gw, key=OTHER_APP.key) as other, \
            ws_client(gw.ws_url) as native:
        main, second = sdk(gw), sdk(gw, OTHER_APP)
        # One socket id shape for both protocols: the SDKs accept no other.
        for socket_id in (default.socket_id, other.socket_id, native.connection_id):
            assert re.fullmatch(r"[0-9]+\.[0-9]+", socket_id), socket_id
        await subscribed(default, main, "news")
        await subscribed(other, second, "news")
        assert (await native.subscribe("news"))["type"] == "subscribed"
        await call(main.trigger, "news", "from", "default")
        await call(second.trigger, "news", "from", "other")
        assert (await default.expect("from"))["data"] == "default"
        assert (await other.expect("from"))["data"] == "other"
        message = await native.expect("message")
        assert message["data"] == "default"  # the default app shares the native channels
        await call(main.trigger, "news", "from", "default again")
        assert (await default.expect("from"))["data"] == "default again"
        assert (await native.expect("message"))["data"] == "default again"
        await call(second.trigger, "news", "from", "other again")
        # The next event app 42's client sees is its own app's: nothing crossed over.
        assert (await other.expect("from"))["data"] == "other again"
        # Each app's channel API sees its own channels only.
        assert await call(second.channels_info) == {"channels": {"news": {}}}
        assert await call(second.channel_info, "news", ["subscription_count"]) == {
            "occupied": True, "subscription_count": 1}
        # The other app's channels are reserved names for native clients.
        await native.send({"type": "subscribe", "channel": ";42;news"})
        refused = await native.expect("error")
        assert refused["data"]["code"] == "invalid_channel"
        assert "reserved" in refused["data"]["message"]
        body = json.dumps({"channel": ";42;news", "event": "e", "data": 1}).encode()
        g = gw.settings().gateway
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            r = await http.post("/api/publish", content=body,
                                headers=sign_request(g.app_key, g.app_secret, body))
        assert r.status_code == 400
        assert "reserved" in r.text


async def test_native_messages_reach_pusher_clients_as_data_strings() -> None:
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann:
        await subscribed(ann, sdk(gw), "news")
        body = json.dumps({"channel": "news", "event": "flash", "data": {"a": [1, 2]}}).encode()
        g = gw.settings().gateway
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            r = await http.post("/api/publish", content=body,
                                headers=sign_request(g.app_key, g.app_secret, body))
        assert r.status_code == 200, r.text
        frame = await ann.expect("flash")
        assert frame == {"event": "flash", "channel": "news", "data": '{"a":[1,2]}',
                         "position": r.json()["positions"][0]}


# --- errors -------------------------------------------------------------------------------


async def test_signature_errors_are_401_with_a_text_body() -> None:
    async with running_gateway(pusher_settings()) as gw:
        g = gw.settings().gateway
        wrong = pusher.Pusher(app_id=g.app_id, key=g.app_key, secret="wrong", host="127.0.0.1",
                              port=port_of(gw), ssl=False)
        with pytest.raises(PusherBadAuth, match="invalid auth_signature"):
            await call(wrong.trigger, "news", "e", "x")
        unknown = pusher.Pusher(app_id=g.app_id, key="nobody", secret=g.app_secret,
                                host="127.0.0.1", port=port_of(gw), ssl=False)
        with pytest.raises(PusherBadAuth, match="auth_key"):
            await call(unknown.channels_info)
        app = gw.gateway.pusher.apps.by_id(g.app_id)
        assert app is not None
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            body = b'{"name":"e","data":"x","channel":"news"}'
            path = f"/apps/{app.id}/events"
            stale = sign_query(app, "POST", path, {}, body, timestamp=int(time.time()) - 601)
            r = await http.post(path, params=stale, content=body)
            assert (r.status_code, r.headers["content-type"].split(";")[0]) == (401, "text/plain")
            assert "auth_timestamp" in r.text
            fresh = sign_query(app, "POST", path, {}, body)
            r = await http.post(path, params=fresh, content=body + b" ")
            assert r.status_code == 401
            assert "body_md5" in r.text
            r = await http.post(path, params=fresh, content=body)
            assert r.status_code == 200, r.text


async def test_a_key_of_another_app_is_403_and_an_unknown_app_404() -> None:
    async with running_gateway(pusher_settings()) as gw:
        g = gw.settings().gateway
        crossed = pusher.Pusher(app_id=g.app_id, key=OTHER_APP.key, secret=OTHER_APP.secret,
                                host="127.0.0.1", port=port_of(gw), ssl=False)
        with pytest.raises(PusherForbidden, match="another app"):
            await call(crossed.trigger, "news", "e", "x")
        nowhere = pusher.Pusher(app_id="999", key=g.app_key, secret=g.app_secret,
                                host="127.0.0.1", port=port_of(gw), ssl=False)
        with pytest.raises(PusherBadStatus, match="404"):
            await call(nowhere.trigger, "news", "e", "x")


async def test_data_over_10_kb_is_413_and_other_bad_requests_400() -> None:
    async with running_gateway(pusher_settings()) as gw:
        server = sdk(gw)
        with pytest.raises(PusherBadStatus, match="413"):
            await call(server.trigger, "news", "big", "x" * 10_241)
        await call(server.trigger, "news", "big", "x" * 10_240)  # exactly the limit
        with pytest.raises(PusherBadRequest, match="reserved"):
            await call(server.trigger, "private-;1;x", "e", "x")
        with pytest.raises(PusherBadRequest, match="protocol's own"):
            await call(server.trigger, "news", "pusher_internal:member_added", "{}")
        g = gw.settings().gateway
        app = PusherApp(g.app_id, g.app_key, g.app_secret)
        path = f"/apps/{app.id}/events"
        cases = [
            ({"name": "e", "data": "x", "channels": [f"c{i}" for i in range(101)]}, "at most 100"),
            ({"name": "e", "data": {"not": "a string"}, "channel": "c"}, "data must be a string"),
            ({"name": "e", "data": "x", "channel": "bad name"}, "character ' '"),
            ({"name": "e", "data": "x", "channel": "c", "socket_id": "abc"}, "socket_id"),
            ({"data": "x", "channel": "c"}, "name"),
        ]
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            for event, why in cases:
                body = json.dumps(event).encode()
                r = await http.post(path, params=sign_query(app, "POST", path, {}, body),
                                    content=body)
                assert r.status_code == 400, (event, r.text)
                assert why in r.text, (event, r.text)
            body = json.dumps({"name": "e", "data": "x",
                               "channels": [f"c{i}" for i in range(100)]}).encode()
            r = await http.post(path, params=sign_query(app, "POST", path, {}, body),
                                content=body)
            assert r.status_code == 200, r.text
            assert len(r.json()["positions"]) == 100


async def _post(gw: Any, app: PusherApp, path: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        return await http.post(path, params=sign_query(app, "POST", path, {}, body),
                               content=body)


def _default_app(gw: Any) -> PusherApp:
    g = gw.settings().gateway
    return PusherApp(g.app_id, g.app_key, g.app_secret)


async def test_info_on_a_trigger_is_per_channel() -> None:
    """``user_count`` is answered for the presence channels among those triggered on and
    left out for the others (before: the whole trigger was refused, nothing published).
    The Python SDK's trigger() has no ``info``: the request is signed by hand."""
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann:
        server = sdk(gw)
        await subscribed(ann, server, "presence-room", "ann")
        await subscribed(ann, server, "news")
        app = _default_app(gw)
        body = json.dumps({"name": "e", "data": "x", "channels": ["news", "presence-room"],
                           "info": "subscription_count,user_count"}).encode()
        r = await _post(gw, app, f"/apps/{app.id}/events", body)
        assert r.status_code == 200, r.text
        assert r.json()["channels"] == {
            "news": {"subscription_count": 1},
            "presence-room": {"subscription_count": 1, "user_count": 1}}
        assert {(await ann.expect("e"))["channel"] for _ in range(2)} == {
            "news", "presence-room"}
        body = json.dumps({"batch": [
            {"name": "b", "data": "1", "channel": "news", "info": "user_count"},
            {"name": "b", "data": "2", "channel": "presence-room",
             "info": "user_count"}]}).encode()
        r = await _post(gw, app, f"/apps/{app.id}/batch_events", body)
        assert r.status_code == 200, r.text
        assert r.json()["batch"] == [{"channels": {"news": {}}},
                                     {"channels": {"presence-room": {"user_count": 1}}}]


async def test_bodies_that_are_not_strict_json_or_name_two_targets_are_400() -> None:
    async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann:
        await subscribed(ann, sdk(gw), "a")
        await subscribed(ann, sdk(gw), "b")
        app = _default_app(gw)
        events, batch = f"/apps/{app.id}/events", f"/apps/{app.id}/batch_events"
        cases = [
            (events, b'{"name": "e", "data": NaN, "channel": "a"}', "NaN is not JSON"),
            (events, b'{"name": "e", "data": "x", "channel": "a", "n": Infinity}',
             "Infinity is not JSON"),
            (events, b'{"name": "e", "data": "\\ud800", "channel": "a"}', "strict JSON"),
            (events, b'{"name": "e", "data": "x", "channels": ["a"], "channel": "b"}',
             "either channels or channel, not both"),
            (batch, b'{"batch": [{"name": "e", "data": "x", "channel": "a", '
                    b'"channels": ["b"]}]}', "batch[0].give either channels or channel"),
            (batch, b'{"batch": [{"name": "e", "data": "x", "channels": ["a", "b"]}]}',
             "batch[0].channels: a batch event has one 'channel'"),
        ]
        for path, body, why in cases:
            r = await _post(gw, app, path, body)
            assert (r.status_code, r.headers["content-type"].split(";")[0]) == \
                (400, "text/plain"), (body, r.text)
            assert why in r.text, (body, r.text)
        ok = await _post(gw, app, events, b'{"name": "e", "data": "fine", "channel": "a"}')
        assert ok.status_code == 200, ok.text
        got = await ann.expect("e")
        assert (got["channel"], got["data"]) == ("a", "fine"), "nothing refused was published"
