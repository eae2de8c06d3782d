"""pusher-js (node build, from npm) against the gateway, with the Python SDK as the server
side: public, private and presence channels with two clients, member events, client
events, sign-in and send_to_user, cache channels, refused subscriptions, termination, and
recovery through the documented wrapper (which keeps what was addressed away from the
client out of the replay)."""

from __future__ import annotations

import base64
import json

import pusher
import pytest

from channelcast.types import Position
from tests.gateway.conftest import running_gateway
from tests.pusher.conftest import (
    AuthServer,
    call,
    js_driver,
    port_of,
    pusher_settings,
    sdk,
    until_local_count,
)

pytestmark = pytest.mark.timeout(120)


async def test_public_private_and_presence_channels_with_two_clients() -> None:
    async with running_gateway(pusher_settings()) as gw, js_driver() as js:
        server = sdk(gw)
        with AuthServer(server) as auth:
            await js.connect("ann", gw, auth=auth, user="ann")
            await js.connect("bob", gw, auth=auth, user="bob")
            for who in ("ann", "bob"):
                for channel in ("news", "private-orders"):
                    await js.send("subscribe", id=who, channel=channel)
                    await js.expect(ev="event", id=who, channel=channel,
                                    event="pusher:subscription_succeeded")
            await js.send("subscribe", id="ann", channel="presence-room")
            first = await js.expect(ev="event", id="ann", channel="presence-room",
                                    event="pusher:subscription_succeeded")
            assert first["data"]["members"] == [{"id": "ann", "info": {"name": "Ann"}}]
            assert first["data"]["me"] == {"id": "ann", "info": {"name": "Ann"}}
            await js.send("subscribe", id="bob", channel="presence-room")
            second = await js.expect(ev="event", id="bob", channel="presence-room",
                                     event="pusher:subscription_succeeded")
            assert [m["id"] for m in second["data"]["members"]] == ["ann", "bob"]
            assert second["data"]["count"] == 2
            added = await js.expect(ev="event", id="ann", channel="presence-room",
                                    event="pusher:member_added")
            assert added["data"] == {"id": "bob", "info": {"name": "Bob"}}

            result = await call(server.trigger, ["news", "private-orders", "presence-room"],
                                "flash", {"text": "hi"})
            assert set(result["positions"]) == {"news", "private-orders", "presence-room"}
            for who in ("ann", "bob"):
                for channel in ("news", "private-orders", "presence-room"):
                    got = await js.expect(ev="event", id=who, channel=channel, event="flash")
                    assert got["data"] == {"text": "hi"}

            await js.send("unsubscribe", id="bob", channel="presence-room")
            removed = await js.expect(ev="event", id="ann", channel="presence-room",
                                      event="pusher:member_removed")
            assert removed["data"] == {"id": "bob", "info": {"name": "Bob"}}
            assert removed["members"] == [{"id": "ann", "info": {"name": "Ann"}}]


async def test_client_events_reach_the_others_with_the_user_id_but_not_the_sender() -> None:
    async with running_gateway(pusher_settings()) as gw, js_driver() as js:
        with AuthServer(sdk(gw)) as auth:
            for who in ("ann", "bob"):
                await js.connect(who, gw, auth=auth, user=who)
                for channel in ("private-chat", "presence-chat"):
                    await js.send("subscribe", id=who, channel=channel, bind=["client-typing"])
                    await js.expect(ev="event", id=who, channel=channel,
                                    event="pusher:subscription_succeeded")
            await js.send("trigger", id="ann", channel="private-chat", event="client-typing",
                          data={"typing": True})
            got = await js.expect(ev="bound", id="bob", channel="private-chat",
                                  event="client-typing")
            assert got["data"] == {"typing": True}
            assert "user_id" not in got
            await js.send("trigger", id="ann", channel="presence-chat", event="client-typing",
                          data={"typing": False})
            got = await js.expect(ev="bound", id="bob", channel="presence-chat",
                                  event="client-typing")
            assert got["data"] == {"typing": False}
            assert got["user_id"] == "ann"
            # A marker after both: the sender got neither of its own events.
            await js.send("trigger", id="bob", channel="private-chat", event="client-done",
                          data={})
            await js.expect(ev="event", id="ann", channel="private-chat", event="client-done")
            assert js.all(ev="event", id="ann", event="client-typing") == []


async def test_signin_then_send_to_user_reaches_every_connection_of_that_user_only() -> None:
    async with running_gateway(pusher_settings()) as gw, js_driver() as js:
        server = sdk(gw)
        with AuthServer(server) as auth:
            for who, user in (("ann1", "ann"), ("ann2", "ann"), ("bob", "bob")):
                await js.connect(who, gw, auth=auth, user=user)
                await js.send("signin", id=who)
                signed = await js.expect(ev="signed_in", id=who)
                assert signed["user"]["id"] == user
            # pusher-js subscribes to each user's #server-to-user- channel by itself (the
            # SDK cannot ask about those: '#' ends the path of its URL).
            await until_local_count(gw, "#server-to-user-ann", 2)
            await until_local_count(gw, "#server-to-user-bob", 1)
            await call(server.send_to_user, "ann", "notice", {"n": 1})
            for who in ("ann1", "ann2"):
                got = await js.expect(ev="user", id=who, event="notice")
                assert got["data"] == {"n": 1}
            await call(server.send_to_user, "bob", "notice", {"n": 2})
            got = await js.expect(ev="user", id="bob", event="notice")
            assert got["data"] == {"n": 2}
            assert len(js.all(ev="user", event="notice")) == 3


async def test_a_bad_signature_is_a_subscription_error_and_the_connection_stays() -> None:
    async with running_gateway(pusher_settings()) as gw, js_driver() as js:
        server = sdk(gw)
        with AuthServer(server) as auth:
            await js.connect("ann", gw, auth=auth, user="ann")
            # An auth endpoint that signs with the wrong secret.
            auth.client = type(server)(app_id="1", key=gw.settings().gateway.app_key,
                                       secret="not-the-secret", host="127.0.0.1", port=1,
                                       ssl=False)
            await js.send("subscribe", id="ann", channel="private-vault")
            error = await js.expect(ev="event", id="ann", channel="private-vault",
                                    event="pusher:subscription_error")
            assert error["data"]["type"] == "AuthError"
            assert error["data"]["status"] == 401
            assert "invalid signature" in error["data"]["error"]
            # Still connected and usable.
            await js.send("subscribe", id="ann", channel="news")
            await js.expect(ev="event", id="ann", channel="news",
                            event="pusher:subscription_succeeded")
            await call(server.trigger, "news", "still", "here")
            got = await js.expect(ev="event", id="ann", channel="news", event="still")
            assert got["data"] == "here"
            assert js.all(ev="state", id="ann", current="disconnected") == []


async def test_terminate_connections_closes_the_users_connections_with_4009() -> None:
    async with running_gateway(pusher_settings()) as gw, js_driver() as js:
        server = sdk(gw)
        with AuthServer(server) as auth:
            for who, user in (("ann", "ann"), ("bob", "bob")):
                await js.connect(who, gw, auth=auth, user=user)
                await js.send("signin", id=who)
                await js.expect(ev="signed_in", id=who)
            await until_local_count(gw, "#server-to-user-ann", 1)
            assert await call(server.terminate_user_connections, "ann") == {}
            error = await js.expect(ev="error", id="ann",
                                    error=lambda e: isinstance(e, dict) and e.get("code") == 4009)
            assert "terminated" in error["error"]["message"]
            # 4000-4099: pusher-js does not reconnect.
            await js.expect(ev="state", id="ann", current="disconnected")
            await js.send("ping", id="bob")
            await js.expect(ev="pong", id="bob")
            assert js.all(ev="state", id="bob", current="disconnected") == []


async def test_cache_channels_send_the_last_event_or_cache_miss() -> None:
    async with running_gateway(pusher_settings()) as gw, js_driver() as js:
        server = sdk(gw)
        with AuthServer(server) as auth:
            await js.connect("ann", gw, auth=auth, user="ann")
            await js.send("subscribe", id="ann", channel="cache-prices")
            await js.expect(ev="event", id="ann", channel="cache-prices",
                            event="pusher:subscription_succeeded")
            await js.expect(ev="event", id="ann", channel="cache-prices",
                            event="pusher:cache_miss")
            for price in (1, 2, 3):
                await call(server.trigger, "cache-prices", "price", {"eur": price})
            # Some unrelated traffic in the same partition does not hide the last event.
            await call(server.trigger, "other", "x", "y")
            await call(server.trigger_batch, [{"channel": "private-cache-x", "name": "state",
                                               "data": json.dumps({"v": 7})}])
            await js.connect("bob", gw, auth=auth, user="bob")
            for channel in ("cache-prices", "private-cache-x"):
                await js.send("subscribe", id="bob", channel=channel)
                await js.expect(ev="event", id="bob", channel=channel,
                                event="pusher:subscription_succeeded")
            got = await js.expect(ev="event", id="bob", channel="cache-prices", event="price")
            assert got["data"] == {"eur": 3}
            got = await js.expect(ev="event", id="bob", channel="private-cache-x",
                                  event="state")
            assert got["data"] == {"v": 7}
            await call(server.trigger, "cache-prices", "price", {"eur": 4})
            got = await js.expect(ev="event", id="bob", channel="cache-prices", event="price")
            assert got["data"] == {"eur": 4}
            assert [e["data"] for e in js.all(ev="event", id="bob", event="price")] == \
                [{"eur": 3}, {"eur": 4}]
            assert js.all(ev="event", id="bob", event="pusher:cache_miss") == []


async def test_recovery_wrapper_replays_exactly_the_200_missed_events_in_order() -> None:
    async with running_gateway(pusher_settings()) as gw, js_driver() as js:
        server = sdk(gw)
        with AuthServer(server) as auth:
            await js.connect("ann", gw, auth=auth, user="ann", recovery=True)
            for channel in ("ticks", "presence-ticks"):
                await js.send("subscribe", id="ann", channel=channel)
                await js.expect(ev="event", id="ann", channel=channel,
                                event="pusher:subscription_succeeded")
            for n in range(5):
                await call(server.trigger, ["ticks", "presence-ticks"], "tick", str(n))
            for channel in ("ticks", "presence-ticks"):
                await js.expect(ev="event", id="ann", channel=channel, event="tick",
                                data=4)
            await js.send("disconnect", id="ann")
            await js.expect(ev="state", id="ann", current="disconnected")
            batch = [{"channel": ch, "name": "tick", "data": str(n)}
                     for n in range(5, 205) for ch in ("ticks", "presence-ticks")]
            for i in range(0, len(batch), 10):
                await call(server.trigger_batch, batch[i:i + 10])
            await js.send("reconnect", id="ann")
            for channel in ("ticks", "presence-ticks"):
                await js.expect(ev="event", id="ann", channel=channel, event="tick",
                                data=204, wait_s=20)
            await call(server.trigger, ["ticks", "presence-ticks"], "tick", "205")
            for channel in ("ticks", "presence-ticks"):
                await js.expect(ev="event", id="ann", channel=channel, event="tick", data=205)
                got = [e["data"] for e in js.all(ev="event", id="ann", channel=channel,
                                                  event="tick")]
                assert got == list(range(206)), f"{channel}: {got}"
            # Without the wrapper, pusher-js resubscribes from now: nothing replayed.
            await js.connect("bob", gw, auth=auth, user="bob")
            await js.send("subscribe", id="bob", channel="ticks")
            await js.expect(ev="event", id="bob", channel="ticks",
                            event="pusher:subscription_succeeded")
            await js.send("disconnect", id="bob")
            await js.expect(ev="state", id="bob", current="disconnected")
            await call(server.trigger, "ticks", "tick", "206")
            await js.send("reconnect", id="bob")
            await js.expect(ev="event", id="bob", channel="ticks",
                            event="pusher:subscription_succeeded")
            await call(server.trigger, "ticks", "tick", "207")
            await js.expect(ev="event", id="bob", channel="ticks", event="tick", data=207)
            assert [e["data"] for e in js.all(ev="event", id="bob", event="tick")] == [207]


async def test_recovery_leaves_out_what_was_addressed_away_from_the_client() -> None:
    """The wrapper sends the client's earlier socket ids with ``since``: after a reconnect
    neither its own whisper nor an event triggered with its old socket_id (Laravel's
    toOthers()) is replayed, nor delivered live; everything else is (before: both were
    replayed, the old socket id no longer matching the new connection's)."""
    settings = pusher_settings(client_events=True)
    async with running_gateway(settings) as gw, js_driver() as js:
        server = sdk(gw)
        with AuthServer(server) as auth:
            old = await js.connect("ann", gw, auth=auth, user="ann", recovery=True)
            await js.connect("bob", gw, auth=auth, user="bob")
            for who in ("ann", "bob"):
                await js.send("subscribe", id=who, channel="private-echoback")
                await js.expect(ev="event", id=who, channel="private-echoback",
                                event="pusher:subscription_succeeded")
            await js.send("trigger", id="ann", channel="private-echoback",
                          event="client-mine", data={"hello": 1})
            await js.expect(ev="event", id="bob", event="client-mine", data={"hello": 1})
            await js.send("disconnect", id="ann")
            await js.expect(ev="state", id="ann", current="disconnected")
            await call(server.trigger, "private-echoback", "excluded-for-ann", "x", old)
            await call(server.trigger, "private-echoback", "for-all", "y")
            await js.send("reconnect", id="ann")
            new = (await js.expect(ev="state", id="ann", current="connected"))["socket_id"]
            assert new != old
            await js.expect(ev="event", id="ann", channel="private-echoback",
                            event="for-all", wait_s=20)
            # A request the app still makes with the old socket id stays away too.
            await call(server.trigger, "private-echoback", "excluded-for-ann", "z", old)
            await call(server.trigger, "private-echoback", "last", "w")
            await js.expect(ev="event", id="ann", channel="private-echoback", event="last")
            got = [e["event"] for e in js.all(ev="event", id="ann", channel="private-echoback")
                   if not e["event"].startswith("pusher:")]
            assert got == ["for-all", "last"]
            await js.expect(ev="event", id="bob", event="last")
            assert [e["event"] for e in js.all(ev="event", id="bob") if e["event"] in (
                "excluded-for-ann", "for-all", "last")] == [
                "excluded-for-ann", "for-all", "excluded-for-ann", "last"]


async def test_encrypted_channels_pass_through_opaque() -> None:
    master_key = base64.b64encode(b"k" * 32).decode()
    async with running_gateway(pusher_settings()) as gw, js_driver() as js:
        g = gw.settings().gateway
        server = pusher.Pusher(app_id=g.app_id, key=g.app_key, secret=g.app_secret,
                               host="127.0.0.1", port=port_of(gw), ssl=False,
                               encryption_master_key_base64=master_key)
        with AuthServer(server) as auth:
            await js.connect("ann", gw, auth=auth, user="ann")
            await js.send("subscribe", id="ann", channel="private-encrypted-vault")
            await js.expect(ev="event", id="ann", channel="private-encrypted-vault",
                            event="pusher:subscription_succeeded")
            result = await call(server.trigger, "private-encrypted-vault", "secret",
                                {"pin": 1234})
            got = await js.expect(ev="event", id="ann", channel="private-encrypted-vault",
                                  event="secret")
            assert got["data"] == {"pin": 1234}
        # What the gateway stored and relayed is the SDK's ciphertext.
        stored = await gw.gateway.broker.history(
            "private-encrypted-vault", _before(result["positions"]["private-encrypted-vault"]))
        (record,) = stored
        assert set(json.loads(record.envelope.data)) == {"nonce", "ciphertext"}
        assert "1234" not in record.envelope.data


def _before(position: str) -> Position:
    p = Position.parse(position)
    return Position(p.topic, p.partition, p.offset - 1)
