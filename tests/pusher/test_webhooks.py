"""Webhooks on the memory broker: channel_occupied/vacated, member_added/removed,
client_event and cache_miss, signed so that the SDK's ``validate_webhook`` accepts them,
and retried until the receiver takes them (at least once). The cluster state behind them
is published only once the protocol is used."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from channelcast.gateway.pusher.cluster import STATE_CHANNEL
from channelcast.types import Position
from tests.gateway.conftest import running_gateway, ws_client
from tests.pusher.conftest import pusher_settings, raw_pusher, sdk, webhook_receiver

pytestmark = pytest.mark.timeout(60)


def names(events: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [tuple(str(e[k]) for k in ("name", "channel", "user_id", "event") if k in e)
            for e in events]


async def test_every_webhook_kind_is_signed_and_validated_by_the_sdk() -> None:
    with webhook_receiver() as hooks:
        async with running_gateway(pusher_settings(webhook_url=hooks.url)) as gw:
            server = sdk(gw)
            async with raw_pusher(gw) as ann:
                async with raw_pusher(gw) as bob:
                    for client in (ann, bob):
                        user = "ann" if client is ann else "bob"
                        auth = server.authenticate("presence-room", client.socket_id,
                                                   {"user_id": user})
                        frame = await client.subscribe("presence-room", **auth)
                        assert frame["event"] == "pusher_internal:subscription_succeeded"
                    events = await hooks.wait_for(server, lambda e: len(e) >= 3)
                    assert names(events) == [
                        ("channel_occupied", "presence-room"),
                        ("member_added", "presence-room", "ann"),
                        ("member_added", "presence-room", "bob")]
                    await ann.send("client-wave", {"hand": "left"}, "presence-room")
                    await bob.expect("client-wave")
                    events = await hooks.wait_for(server, lambda e: len(e) >= 4)
                    assert events[3] == {"name": "client_event", "channel": "presence-room",
                                         "event": "client-wave", "data": '{"hand":"left"}',
                                         "socket_id": ann.socket_id, "user_id": "ann"}
                    frame = await bob.subscribe("cache-quotes")
                    assert (await bob.expect("pusher:cache_miss"))["channel"] == "cache-quotes"
                    events = await hooks.wait_for(server, lambda e: len(e) >= 6)
                    assert sorted(names(events[4:])) == [
                        ("cache_miss", "cache-quotes"), ("channel_occupied", "cache-quotes")]
                events = await hooks.wait_for(server, lambda e: len(e) >= 8)
                assert sorted(names(events[6:])) == [
                    ("channel_vacated", "cache-quotes"), ("member_removed", "presence-room", "bob")]
            events = await hooks.wait_for(server, lambda e: len(e) >= 10)
            assert names(events[8:]) == [("member_removed", "presence-room", "ann"),
                                         ("channel_vacated", "presence-room")]
            await asyncio.sleep(0.3)
            assert len(hooks.events(server)) == 10, "no duplicates on a quiet single node"


async def test_a_failing_receiver_gets_the_webhook_again() -> None:
    with webhook_receiver(fail_first=2) as hooks:
        async with running_gateway(pusher_settings(webhook_url=hooks.url)) as gw, \
                raw_pusher(gw) as ann:
            server = sdk(gw)
            await ann.subscribe("news")
            events = await hooks.wait_for(server, lambda e: len(e) >= 1)
            assert names(events) == [("channel_occupied", "news")]
            assert hooks.failures == 2


async def test_apps_without_a_webhook_url_send_none() -> None:
    with webhook_receiver() as hooks:
        async with running_gateway(pusher_settings()) as gw, raw_pusher(gw) as ann:
            await ann.subscribe("news")
            await asyncio.sleep(0.5)
            assert hooks.hooks == []
            assert gw.gateway.pusher.webhooks.sent == 0


async def test_a_node_publishes_no_pusher_state_until_the_protocol_is_used() -> None:
    async with running_gateway(pusher_settings()) as gw:
        broker = gw.gateway.broker

        async def state_records() -> int:
            end = await broker.end_position(STATE_CHANNEL)
            return len(await broker.history(
                STATE_CHANNEL, Position(end.topic, end.partition, -1), include_internal=True))

        async with ws_client(gw.ws_url) as native:
            await native.subscribe("news")
            await asyncio.sleep(0.3)
        assert await state_records() == 0
        assert not gw.gateway.pusher.cluster.active
        async with raw_pusher(gw) as ann:
            await ann.subscribe("news")
            await asyncio.sleep(0.3)
        assert gw.gateway.pusher.cluster.active
        assert await state_records() > 0
        # Internal records: invisible to everyone else's reads of the channel.
        end = await broker.end_position(STATE_CHANNEL)
        assert await broker.history(STATE_CHANNEL, Position(end.topic, end.partition, -1)) \
            == []
