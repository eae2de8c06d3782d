"""Webhooks on the memory broker: channel_occupied/vacated, member_added/removed,
client_event and cache_miss, signed so that the SDK's ``validate_webhook`` accepts them,
and retried until the receiver takes them (at least once), for long enough to outlast a
receiver's restart, with ``time_ms`` the time of the event on every attempt. One app's
hung receiver never delays another app's webhooks. The cluster state behind them is
published only once the protocol is used."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import pytest

from channelcast.config import PusherSettings
from channelcast.gateway.pusher.cluster import STATE_CHANNEL
from channelcast.gateway.pusher.webhooks import retry_policy
from channelcast.types import Position
from tests.gateway.conftest import running_gateway, ws_client
from tests.pusher.conftest import (
    OTHER_APP,
    DeadReceiver,
    pusher_settings,
    raw_pusher,
    sdk,
    until_published,
    webhook_receiver,
)

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


async def test_one_apps_hung_receiver_never_delays_another_apps_webhooks() -> None:
    """App 42's receiver accepts connections and never answers; app 1's webhooks still
    arrive at once (before: they waited behind app 42's records, ~5 attempts x timeout
    each, or were dropped as too old)."""
    with webhook_receiver() as hooks, DeadReceiver() as dead:
        stuck = replace(OTHER_APP, webhook_url=dead.url)
        settings = pusher_settings(webhook_url=hooks.url, apps=(stuck,),
                                   webhook_timeout_s=5.0, webhook_max_age_s=20.0)
        async with running_gateway(settings) as gw:
            server = sdk(gw)
            loop = asyncio.get_running_loop()
            async with raw_pusher(gw, key=stuck.key) as shop:
                await shop.subscribe("shopchan")
                await until_published(gw, "shopchan", 1, app_id=stuck.id)
            deadline = loop.time() + 10
            while dead.requests == 0:  # app 42's first record is being sent, and hangs
                assert loop.time() < deadline, "app 42's webhook was never attempted"
                await asyncio.sleep(0.05)
            started = loop.time()
            async with raw_pusher(gw) as ann:
                await ann.subscribe("hol-app1")
                await until_published(gw, "hol-app1", 1)
            events = await hooks.wait_for(server, lambda e: len(e) >= 2, wait_s=15)
            took = loop.time() - started
            assert names(events) == [("channel_occupied", "hol-app1"),
                                     ("channel_vacated", "hol-app1")]
            assert took < 3.0, f"app 1's webhooks took {took:.1f} s"
            stats = gw.gateway.pusher.webhooks.stats()
            assert stats["42"].processed == 0  # still hanging on its first record


def test_the_default_retry_policy_outlasts_a_receiver_restart_of_a_minute() -> None:
    settings = PusherSettings()
    policy = retry_policy(settings)
    waits = [policy.backoff(n) for n in range(1, policy.max_attempts)]
    assert sum(waits) >= 60, waits
    # ...and gives up (dead-letters) before the SDKs would refuse the webhook as too old.
    assert sum(waits) + policy.max_attempts * settings.webhook_timeout_s \
        < settings.webhook_max_age_s


async def test_a_receiver_down_for_seconds_gets_the_webhook_with_the_events_time() -> None:
    """The receiver answers 500 for 3 s (before: retried for 1.5 s, then dead-lettered).
    Every attempt carries the same ``time_ms``: when the channel became occupied."""
    with webhook_receiver(fail_until=time.monotonic() + 3.0) as hooks:
        async with running_gateway(pusher_settings(webhook_url=hooks.url)) as gw, \
                raw_pusher(gw) as ann:
            server = sdk(gw)
            before = time.time() * 1000
            await ann.subscribe("news")
            after = time.time() * 1000
            events = await hooks.wait_for(server, lambda e: len(e) >= 1, wait_s=20)
            assert names(events) == [("channel_occupied", "news")]
            with hooks.lock:
                attempts = list(hooks.attempts)
            assert len(attempts) >= 3, attempts  # failed ones, then the delivered one
            assert attempts[-1][0] - attempts[0][0] >= 2.5
            (time_ms,) = {json.loads(body)["time_ms"] for _, body in attempts}
            assert before - 50 <= time_ms <= after + 500, (before, time_ms, after)


async def test_the_state_follower_restarts_from_the_end_when_its_log_is_gone(
        caplog: pytest.LogCaptureFixture) -> None:
    # Found by a tester: after the topic of ;pusher;state was deleted and recreated, the
    # follower re-followed from its old position forever (a WARNING 2-4 times a second).
    from channelcast.types import Position

    async with running_gateway(pusher_settings()) as gw:
        cluster = gw.gateway.pusher.cluster
        broker = gw.gateway.broker
        old = await broker.end_position(STATE_CHANNEL)
        # A position of another incarnation of the log (what a recreated topic leaves).
        stale = Position(old.topic, old.partition, old.offset, "another-run")
        assert cluster._pump_task is not None
        assert cluster._subscription is not None
        cluster._pump_task.cancel()  # stop the follower, then follow from the stale one
        await asyncio.gather(cluster._pump_task, return_exceptions=True)
        await cluster._subscription.close()
        cluster._position = stale
        await cluster._follow()
        for _ in range(100):
            if cluster._position is not None and cluster._position.epoch == old.epoch:
                break
            await asyncio.sleep(0.05)
        assert cluster._position is not None
        assert cluster._position.epoch == old.epoch  # followed again, from the new log
        await asyncio.sleep(0.5)
        lost = [r for r in caplog.records if "pusher cluster state: lost" in r.getMessage()]
        assert len(lost) == 1, [r.getMessage() for r in lost]
        assert "from its end" in lost[0].getMessage()
