"""Laravel Echo (from npm) with its pusher connector, as a Laravel front end uses it:
``channel().listen()`` with Laravel's event-name namespace, ``private()``, ``join()`` with
here/joining/leaving, and whispers; the Python SDK stands in for Laravel's broadcaster
(both speak the same HTTP API)."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import running_gateway
from tests.pusher.conftest import AuthServer, call, js_driver, port_of, pusher_settings, sdk

pytestmark = pytest.mark.timeout(120)


async def test_laravel_echo_channels_presence_and_whispers() -> None:
    async with running_gateway(pusher_settings()) as gw, js_driver() as js:
        server = sdk(gw)
        with AuthServer(server) as auth:
            for who in ("ann", "bob"):
                await js.send("echo_connect", id=who, key=gw.settings().gateway.app_key,
                              host="127.0.0.1", port=port_of(gw),
                              authEndpoint=auth.url + "/auth",
                              options={"auth": {"params": {"user_id": who}}})
                await js.expect(ev="state", id=who, current="connected")
            await js.send("echo", id="ann", kind="channel", channel="orders",
                          event="OrderShipped")
            await js.send("echo", id="ann", kind="channel", channel="orders",
                          event=".status.changed")
            await js.send("echo", id="ann", kind="private", channel="chat", event="Message",
                          whisper="typing")
            await js.send("echo", id="bob", kind="private", channel="chat", event="Message",
                          whisper="typing")
            for who in ("ann", "bob"):
                await js.expect(ev="echo", id=who, channel="chat", subscribed=True)
            await js.send("echo", id="ann", kind="join", channel="room")
            here = await js.expect(ev="echo", id="ann", channel="room",
                                   here=lambda users: isinstance(users, list))
            assert here["here"] == [{"name": "Ann"}]
            await js.send("echo", id="bob", kind="join", channel="room")
            here = await js.expect(ev="echo", id="bob", channel="room",
                                   here=lambda users: isinstance(users, list))
            assert sorted(u["name"] for u in here["here"]) == ["Ann", "Bob"]
            joining = await js.expect(ev="echo", id="ann", channel="room",
                                      joining=lambda user: True)
            assert joining["joining"] == {"name": "Bob"}

            # What Laravel's pusher broadcaster sends: the event class name as the event.
            await call(server.trigger, "orders", "App\\Events\\OrderShipped", {"order": 7})
            got = await js.expect(ev="echo", id="ann", channel="orders",
                                  event="OrderShipped")
            assert got["data"] == {"order": 7}
            await call(server.trigger, "orders", "status.changed", {"status": "sent"})
            got = await js.expect(ev="echo", id="ann", channel="orders",
                                  event=".status.changed")
            assert got["data"] == {"status": "sent"}
            await call(server.trigger, "private-chat", "App\\Events\\Message", {"text": "hi"})
            for who in ("ann", "bob"):
                got = await js.expect(ev="echo", id=who, channel="chat", event="Message")
                assert got["data"] == {"text": "hi"}

            await js.send("echo", id="ann", kind="whisper", channel="chat", event="typing",
                          data={"typing": True})
            got = await js.expect(ev="echo", id="bob", channel="chat", whisper="typing")
            assert got["data"] == {"typing": True}
            assert js.all(ev="echo", id="ann", whisper="typing") == []

            await js.send("echo", id="bob", kind="leave", channel="room")
            leaving = await js.expect(ev="echo", id="ann", channel="room",
                                      leaving=lambda user: True)
            assert leaving["leaving"] == {"name": "Bob"}
