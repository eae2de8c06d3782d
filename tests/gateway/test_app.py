"""The gateway over real sockets (in-process uvicorn, memory broker)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from channelcast.errors import (
    AuthError,
    BrokerClosed,
    InvalidChannel,
    InvalidPosition,
    MessageTooLarge,
    RequestRefused,
)
from channelcast.gateway.api import MAX_PUBLISH_BODY
from channelcast.gateway.app import ERROR_STATUS, status_of
from channelcast.gateway.auth import channel_auth, sign_request
from channelcast.gateway.node import AuthGrant, AuthRequest
from tests.gateway.conftest import (
    running_gateway,
    settings_with,
    signed_post_args,
    ws_client,
)

pytestmark = pytest.mark.timeout(60)


async def test_message_published_over_http_reaches_websocket_subscriber() -> None:
    async with running_gateway() as gw, ws_client(gw.ws_url) as client:
        reply = await client.subscribe("news")
        assert reply["type"] == "subscribed"
        assert reply["channel"] == "news"
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            r = await http.post("/api/publish", **signed_post_args(
                gw.settings(), {"channel": "news", "event": "flash", "data": {"n": 1}}))
            assert r.status_code == 200, r.text
            position = r.json()["positions"][0]
        msg = await client.expect("message")
        assert msg["channel"] == "news"
        assert msg["event"] == "flash"
        assert msg["data"] == {"n": 1}
        assert msg["position"] == position
        assert set(msg) >= {"id", "type", "channel", "event", "data", "timestamp", "position"}


async def test_batch_publish_returns_positions_in_order() -> None:
    async with running_gateway() as gw, ws_client(gw.ws_url) as client:
        await client.subscribe("batch")
        batch = {"messages": [{"channel": "batch", "event": "e", "data": i} for i in range(5)]}
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            r = await http.post("/api/publish", **signed_post_args(gw.settings(), batch))
        assert r.status_code == 200, r.text
        positions = r.json()["positions"]
        assert len(positions) == 5
        got = [await client.expect("message") for _ in range(5)]
        assert [m["data"] for m in got] == list(range(5))
        assert [m["position"] for m in got] == positions


async def test_publish_api_refuses_bad_key_signature_timestamp_and_repeats_idempotently(
        ) -> None:
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        g = gw.settings().gateway
        body = json.dumps({"channel": "a", "event": "e", "data": 1}).encode()
        cases = {
            "missing": {},
            "bad key": sign_request("other-key", g.app_secret, body),
            "bad signature": sign_request(g.app_key, "wrong-secret", body),
            "stale": sign_request(g.app_key, g.app_secret, body, timestamp=1_000_000),
        }
        for name, headers in cases.items():
            r = await http.post("/api/publish", content=body, headers=headers)
            assert r.status_code == 401, name
            assert r.json()["type"] == "error"
            assert r.json()["data"]["code"] == "auth_failed", name
        good = sign_request(g.app_key, g.app_secret, body)
        first = await http.post("/api/publish", content=body, headers=good)
        assert first.status_code == 200
        # The same signed request again is a retry: the first answer, nothing published.
        repeat = await http.post("/api/publish", content=body, headers=good)
        assert repeat.status_code == 200
        assert repeat.json() == first.json()
        assert (await gw.gateway.broker.end_position("a")).offset == 0
        # A signature over another body does not authorize this one.
        other = sign_request(g.app_key, g.app_secret, body + b" ")
        assert (await http.post("/api/publish", content=body, headers=other)).status_code == 401


async def test_publish_api_rejects_bad_messages_and_stores_nothing() -> None:
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        bad_bodies = [
            {"channel": "bad channel!", "event": "e", "data": 1},
            {"channel": "ok", "event": "", "data": 1},
            {"channel": "ok", "event": "channelcast:presence", "data": {}},
            {"messages": []},
            {"messages": [{"channel": "ok", "event": "e"}, {"channel": "", "event": "e"}]},
        ]
        for body in bad_bodies:
            r = await http.post("/api/publish", **signed_post_args(gw.settings(), body))
            assert r.status_code == 400, body
            assert r.json()["data"]["code"] in ("invalid_channel", "bad_message")
        raw = b"{not json"
        r = await http.post("/api/publish", content=raw, headers=sign_request(
            gw.settings().gateway.app_key, gw.settings().gateway.app_secret, raw))
        assert r.status_code == 400
        end = await gw.gateway.broker.end_position("ok")
        assert end.offset == -1  # the half-good batch stored nothing


async def test_bad_frames_each_get_their_error_and_the_connection_survives() -> None:
    settings = settings_with(max_subscriptions=2, max_frame_bytes=1024)
    async with running_gateway(settings) as gw, ws_client(gw.ws_url) as client:
        cases = [
            ("{oops", "bad_json"),
            ("[1,2]", "bad_frame"),
            ({"type": "dance"}, "unknown_type"),
            ({"no": "type"}, "bad_frame"),
            ({"type": "ping", "data": "x" * 2000}, "frame_too_large"),
            ({"type": "subscribe", "channel": "has space"}, "invalid_channel"),
            ({"type": "subscribe", "channel": 42}, "invalid_channel"),
            ({"type": "subscribe", "channel": "private-x"}, "auth_required"),
            ({"type": "subscribe", "channel": "private-x", "auth": "k:deadbeef"},
             "auth_failed"),
            ({"type": "subscribe", "channel": "presence-x", "auth": "k:deadbeef"},
             "auth_failed"),
            ({"type": "subscribe", "channel": "a", "since": "nope"}, "invalid_position"),
            ({"type": "unsubscribe", "channel": "never"}, "not_subscribed"),
        ]
        for frame, code in cases:
            await client.send(frame)
            reply = await client.recv()
            assert reply["type"] == "error", frame
            assert reply["data"]["code"] == code, (frame, reply)
            assert reply["data"]["message"]
        assert (await client.subscribe("a"))["type"] == "subscribed"
        assert (await client.subscribe("b"))["type"] == "subscribed"
        too_many = await client.subscribe("c")
        assert too_many["data"]["code"] == "too_many_subscriptions"
        again = await client.subscribe("a")
        assert again["data"]["code"] == "already_subscribed"
        await client.send({"type": "ping", "data": 7})
        assert await client.recv() == {"type": "pong", "data": 7}


async def test_private_and_presence_channels_with_valid_signatures() -> None:
    async with running_gateway() as gw:
        g = gw.settings().gateway
        async with ws_client(gw.ws_url) as ann, ws_client(gw.ws_url) as bob:
            signed = channel_auth(g.app_key, g.app_secret, ann.connection_id, "private-room")
            assert (await ann.subscribe("private-room", **signed))["type"] == "subscribed"
            # Ann's signature is bound to her connection id: Bob cannot reuse it.
            stolen = await bob.subscribe("private-room", **signed)
            assert stolen["data"]["code"] == "auth_failed"

            a = channel_auth(g.app_key, g.app_secret, ann.connection_id, "presence-room",
                             user_id="ann", user_info={"name": "Ann"})
            first = await ann.subscribe("presence-room", **a)
            assert first["data"]["members"] == [{"user_id": "ann", "user_info": {"name": "Ann"}}]
            # Changing the member data breaks the signature.
            forged = dict(a, channel_data=json.dumps({"user_id": "root"}))
            assert (await bob.subscribe("presence-room", **forged))["data"]["code"] == \
                "auth_failed"
            b = channel_auth(g.app_key, g.app_secret, bob.connection_id, "presence-room",
                             user_id="bob")
            second = await bob.subscribe("presence-room", **b)
            assert [m["user_id"] for m in second["data"]["members"]] == ["ann", "bob"]
            added = await ann.expect("member_added")
            assert added["data"]["user_id"] == "bob"
        # Bob's connection closed (context exit order: bob first, then ann): nothing to assert
        # on ann now; the hub test checks member_removed.


async def test_auth_endpoint_hook_signs_for_the_demo_authorizer() -> None:
    async with running_gateway(settings_with(demo=True)) as gw, \
            ws_client(gw.ws_url) as client, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        r = await http.post("/auth", json={"connection_id": client.connection_id,
                                           "channel": "presence-lobby", "user_id": "zoe"})
        assert r.status_code == 200, r.text
        reply = await client.subscribe("presence-lobby", **r.json())
        assert reply["data"]["members"][0]["user_id"] == "zoe"
        bad = await http.post("/auth", json={"connection_id": "x", "channel": "bad name"})
        assert bad.status_code == 400


async def test_auth_endpoint_respects_a_denying_hook_and_demo_can_be_disabled() -> None:
    async def deny(req: object) -> None:
        return None

    async with running_gateway(settings_with(demo=False), authorizer=deny) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        r = await http.post("/auth", json={"connection_id": "n.1", "channel": "private-a"})
        assert r.status_code == 403
        assert (await http.post("/demo/publish", json={})).status_code in (404, 405)
        assert (await http.get("/")).json()["demo"] == "disabled"


async def test_health_ready_metrics() -> None:
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        async with ws_client(gw.ws_url) as client:
            await client.subscribe("m1")
            await http.post("/api/publish", **signed_post_args(
                gw.settings(), {"channel": "m1", "event": "e", "data": 1}))
            await client.expect("message")
            text = (await http.get("/metrics")).text
            assert 'channelcast_connections{transport="ws"} 1.0' in text
            assert "channelcast_subscriptions 1.0" in text
            assert "channelcast_broker_subscriptions 1.0" in text
            assert "channelcast_deliveries_total 1.0" in text
            assert "channelcast_publish_latency_seconds_count 1.0" in text
        await gw.gateway.broker.close()
        assert (await http.get("/readyz")).status_code == 503


async def test_sse_stream_and_last_event_id_resume() -> None:
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        async def publish(n: int) -> list[str]:
            batch = {"messages": [{"channel": "feed", "event": "e", "data": i}
                                  for i in range(n)]}
            r = await http.post("/api/publish", **signed_post_args(gw.settings(), batch))
            positions: list[str] = r.json()["positions"]
            return positions

        events: list[tuple[str, str, str]] = []

        async def read(headers: dict[str, str], want: int) -> None:
            async with http.stream("GET", "/sse?channels=feed", headers=headers) as resp:
                assert resp.status_code == 200
                event_id = kind = ""
                async for line in resp.aiter_lines():
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind == "message":
                        events.append((event_id, kind, line[6:]))
                        if len(events) >= want:
                            return
                    elif line.startswith("data: ") and kind == "subscribed":
                        sub_ready.set()

        sub_ready = asyncio.Event()
        reader = asyncio.create_task(read({}, 3))
        await asyncio.wait_for(sub_ready.wait(), 5)
        first = await publish(3)
        await asyncio.wait_for(reader, 5)
        assert [e[0] for e in events] == first  # event id = position
        missed = await publish(4)  # while disconnected
        events.clear()
        sub_ready = asyncio.Event()
        await asyncio.wait_for(read({"Last-Event-ID": first[-1]}, 4), 5)
        assert [e[0] for e in events] == missed
        assert [json.loads(e[2])["data"] for e in events] == [0, 1, 2, 3]
        r = await http.get("/sse?channels=private-x")
        assert r.status_code == 403
        # An id it cannot use: a live stream that says so (a 400 would stop EventSource).
        async with http.stream("GET", "/sse?channels=feed",
                               headers={"Last-Event-ID": "garbage"}) as resp:
            assert resp.status_code == 200
            lines = resp.aiter_lines()
            async with asyncio.timeout(5):
                while (line := await anext(lines)) != "event: error":
                    assert line != "event: message", "no recovery from an unusable id"
                error = json.loads((await anext(lines))[len("data: "):])
        assert error["data"]["code"] == "recovery_failed"
        assert error["channel"] == "feed"


async def test_sse_takes_a_channel_with_a_comma_and_never_echoes_a_non_ascii_id() -> None:
    """tgw3 finding 11: the grammar allows ',' in a channel name, which channels= splits;
    a Last-Event-ID that is not ASCII was echoed back as mojibake."""
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        url = "/sse?channel=a,b&channel=plain&channels=c,d&channels=e"  # both repeat
        async with http.stream("GET", url, headers={"Last-Event-ID": "\u00e9\u00ff"
                                                    .encode()}) as resp:
            assert resp.status_code == 200
            subscribed: list[str] = []
            errors: list[dict[str, Any]] = []
            lines = resp.aiter_lines()
            kind = ""
            async with asyncio.timeout(5):
                while len(subscribed) < 5 or len(errors) < 5:
                    line = await anext(lines)
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind == "subscribed":
                        subscribed.append(json.loads(line[6:])["channel"])
                    elif line.startswith("data: ") and kind == "error":
                        errors.append(json.loads(line[6:]))
        assert sorted(subscribed) == ["a,b", "c", "d", "e", "plain"]
        for error in errors:
            assert error["data"]["code"] == "recovery_failed"
            assert "not ASCII" in error["data"]["message"], error
            assert "\u00c3" not in error["data"]["message"]


async def test_graceful_shutdown_tells_clients_and_closes_1001() -> None:
    async with running_gateway() as gw, ws_client(gw.ws_url) as client:
        await client.subscribe("bye")
        await gw.gateway.drain("maintenance")
        closing = await client.expect("closing")
        assert closing["data"]["reason"] == "maintenance"
        with pytest.raises(Exception):  # noqa: B017,PT011 - the connection is closed
            await client.recv()
        assert client.ws.close_code == 1001
        # Draining: a new connection is told to come back later.
        async with connect(gw.ws_url) as late:
            with pytest.raises(Exception):  # noqa: B017,PT011 - closed by the server
                await asyncio.wait_for(late.recv(), 5)
            assert late.close_code == 1013
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            assert (await http.get("/readyz")).status_code == 503


async def test_sse_multi_channel_cursor_resumes_every_channel_and_shutdown_ends_stream() -> None:
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        async def publish(channel: str, values: list[int]) -> list[str]:
            body = {"messages": [{"channel": channel, "event": "e", "data": v} for v in values]}
            r = await http.post("/api/publish", **signed_post_args(gw.settings(), body))
            positions: list[str] = r.json()["positions"]
            return positions

        async def read(headers: dict[str, str], want: int,
                       subscribed: asyncio.Event | None = None) -> list[tuple[str, str, str]]:
            out: list[tuple[str, str, str]] = []
            async with http.stream("GET", "/sse?channels=left,right", headers=headers) as resp:
                assert resp.status_code == 200
                event_id = kind = ""
                subs = 0
                async for line in resp.aiter_lines():
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        if kind == "subscribed":
                            subs += 1
                            if subs == 2 and subscribed is not None:
                                subscribed.set()
                        out.append((event_id, kind, line[6:]))
                        if sum(1 for e in out if e[1] in ("message", "closing")) >= want:
                            return out
            return out

        ready = asyncio.Event()
        reader = asyncio.create_task(read({}, 2, ready))
        await asyncio.wait_for(ready.wait(), 5)
        left = await publish("left", [1])
        right = await publish("right", [2])
        events = await asyncio.wait_for(reader, 5)
        last_id = events[-1][0]
        assert sorted(last_id.split()) == [f"left:{left[0]}", f"right:{right[0]}"]

        missed_left = await publish("left", [3, 4])
        missed_right = await publish("right", [5])
        events = await asyncio.wait_for(read({"Last-Event-ID": last_id}, 3), 5)
        messages = [json.loads(e[2]) for e in events if e[1] == "message"]
        assert sorted(m["position"] for m in messages) == sorted(missed_left + missed_right)
        assert [m["data"] for m in messages if m["channel"] == "left"] == [3, 4]

        # Graceful shutdown ends an open stream with a "closing" event.
        ready = asyncio.Event()
        reader = asyncio.create_task(read({}, 1, ready))
        await asyncio.wait_for(ready.wait(), 5)
        await gw.gateway.drain("bye")
        events = await asyncio.wait_for(reader, 10)
        assert events[-1][1] == "closing"


async def test_frames_beyond_the_websocket_limit_close_with_1009() -> None:
    async with running_gateway(settings_with(max_frame_bytes=1024)) as gw:
        async with ws_client(gw.ws_url, max_size=None) as client:
            await client.send({"type": "ping", "data": "x" * 5000})  # over max_frame_bytes
            assert (await client.recv())["data"]["code"] == "frame_too_large"
            await client.ws.send("x" * (2 << 20))  # over the 1 MiB WebSocket-layer limit
            with pytest.raises(Exception):  # noqa: B017,PT011 - closed by the server
                await client.recv()
            assert client.ws.close_code == 1009
        async with ws_client(gw.ws_url) as other:  # the server is fine
            assert (await other.subscribe("ok"))["type"] == "subscribed"


def error_of(r: httpx.Response) -> tuple[int, str]:
    body = r.json()
    assert body["type"] == "error", body
    assert isinstance(body["data"]["message"], str)
    assert body["data"]["message"]
    return r.status_code, body["data"]["code"]


async def test_every_refusal_has_its_status_code_and_error_body() -> None:
    async def presence_without_user(req: AuthRequest) -> AuthGrant:
        return AuthGrant()  # a presence channel needs a user_id: the grant cannot be signed

    async with running_gateway(settings_with(max_subscriptions=2),
                               authorizer=presence_without_user) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        settings = gw.settings()
        too_big = b"x" * (MAX_PUBLISH_BODY + 1)
        cases: list[tuple[httpx.Response, tuple[int, str], str]] = [
            (await http.post("/api/publish", content=too_big), (413, "body_too_large"), ""),
            (await http.post("/auth", content=too_big), (413, "body_too_large"), ""),
            (await http.post("/auth", content=b"[1]"), (400, "bad_request"), "not an object"),
            (await http.post("/auth", json={"channel": "a"}), (400, "bad_request"),
             "connection_id"),
            (await http.post("/auth", json={"connection_id": "n.1", "channel": "no way"}),
             (400, "invalid_channel"), ""),
            (await http.post("/auth", json={"connection_id": "n.1", "channel": "presence-a"}),
             (403, "auth_failed"), "user_id"),
            (await http.post("/api/publish", **signed_post_args(settings, {
                "channel": "a", "event": "x" * 201})), (400, "bad_message"),
             "message.event must be at most 200"),
            (await http.post("/api/publish", **signed_post_args(settings, {"messages": [
                {"channel": "a", "event": "e"}, {"channel": "a", "event": "channelcast:x"}]})),
             (400, "bad_message"), "messages[1].event must not start with 'channelcast:'"),
            (await http.post("/api/publish", **signed_post_args(settings, {
                "channel": "a b", "event": "e"})), (400, "invalid_channel"), "message:"),
            (await http.get("/sse"), (400, "invalid_channel"), "give channels"),
            (await http.get("/sse?channels=a,b,c"), (400, "too_many_subscriptions"), ""),
            (await http.get("/sse?channels=a,presence-b"), (403, "auth_required"), ""),
        ]
        for response, expected, text in cases:
            assert error_of(response) == expected, (expected, response.text)
            assert text in response.json()["data"]["message"], response.text
        await gw.gateway.broker.close()
        r = await http.post("/api/publish", **signed_post_args(settings, {
            "channel": "a", "event": "e"}))
        assert error_of(r) == (503, "broker_error")
        await gw.gateway.drain("bye")
        assert error_of(await http.get("/sse?channels=a")) == (503, "shutting_down")


async def test_auth_without_a_hook_is_404() -> None:
    async with running_gateway(settings_with(demo=False)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        r = await http.post("/auth", json={"connection_id": "n.1", "channel": "private-a"})
        assert error_of(r) == (404, "no_authorizer")


def test_the_error_table_maps_each_error_class_once_and_in_order() -> None:
    assert status_of(InvalidChannel("x")) == (400, "invalid_channel")
    assert status_of(InvalidPosition("x")) == (400, "invalid_position")
    assert status_of(MessageTooLarge("x")) == (400, "bad_message")  # a MessageError
    assert status_of(AuthError("x")) == (401, "auth_failed")
    assert status_of(BrokerClosed("x")) == (503, "broker_error")  # a BrokerError
    assert status_of(RequestRefused(418, "teapot", "x")) == (418, "teapot")
    # Every class in the table is reachable: none is shadowed by an earlier superclass.
    for i, (cls, _, _) in enumerate(ERROR_STATUS):
        assert not any(issubclass(cls, earlier) for earlier, _, _ in ERROR_STATUS[:i])


def test_the_single_module_names_are_still_importable_from_app() -> None:
    from channelcast.gateway import api, app, node, sse

    assert app.Gateway is node.Gateway
    assert app.AuthRequest is node.AuthRequest
    assert app.AuthGrant is node.AuthGrant
    assert app.Authorizer is node.Authorizer
    assert app.demo_authorizer is node.demo_authorizer
    assert app.parse_publish is api.parse_publish
    assert app.parse_cursor is sse.parse_cursor
    assert app.format_cursor is sse.format_cursor
    assert callable(app.create_app)
