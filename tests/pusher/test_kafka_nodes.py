"""Two gateway nodes on real Kafka: pusher-js clients on either node, the SDK on either;
presence, member events, subscription and user counts, client events, termination, cache
channels and webhooks are cluster-wide, and each webhook event is sent once. A node that
is killed is expired by the other, which reports what that changes. An app's connection
quota holds across nodes that admit at the same moment (the excess is closed with 4100).
One app's hung webhook receiver is dead-lettered and never delays another app's, even
with every app's webhooks in one partition."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pusher
import pytest
from websockets.asyncio.client import connect

from channelcast.brokers import create_broker
from channelcast.brokers.kafka.admin import KafkaAdmin, ensure_topics
from channelcast.config import KafkaSettings, Settings, TopicMapping
from channelcast.strategies import TopicSpec
from channelcast.types import TopicName
from tests.e2e.conftest import serve_process
from tests.gateway.conftest import Running, running_gateway
from tests.pusher.conftest import (
    OTHER_APP,
    AuthServer,
    DeadReceiver,
    call,
    js_driver,
    port_of,
    pusher_settings,
    raw_pusher,
    sdk,
    until_published,
    webhook_receiver,
)
from tests.pusher.test_webhooks import names

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def kafka_settings(bootstrap: str, unique: str, webhook_url: str) -> Settings:
    kafka = replace(KafkaSettings(), brokers=bootstrap, default_topic=f"pz-{unique}",
                    default_partitions=4, dead_letter_topic=f"pz-{unique}-dlq",
                    max_attempts=3, retry_backoff_ms=100)
    return pusher_settings(broker=f"kafka://{bootstrap}", kafka=kafka,
                           webhook_url=webhook_url, webhook_group=f"pz-{unique}-hooks",
                           gateway={"presence_ttl_s": 3.0})


async def until(check: Any, wait_s: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"still {value!r}")
        await asyncio.sleep(0.1)


async def scenario(a: Running, b: Running, hooks: Any, close_b: Any) -> None:
    via_a, via_b = sdk(a), sdk(b)
    # Nodes publish nothing until the protocol is used: asking each takes it part; then
    # both know each other before clients come (each answered the other's sync).
    for client in (via_a, via_b):
        assert await call(client.channels_info) == {"channels": {}}
    for node in (a, b):
        await until(lambda n=node: _knows_both(n))
    async with js_driver() as js:
        with AuthServer(via_a) as auth:
            await js.connect("ann", a, auth=auth, user="ann")
            await js.connect("bob", b, auth=auth, user="bob")
            await js.send("subscribe", id="ann", channel="presence-room",
                          bind=["client-wave"])
            await js.expect(ev="event", id="ann", channel="presence-room",
                            event="pusher:subscription_succeeded", wait_s=30)
            await js.send("subscribe", id="bob", channel="presence-room",
                          bind=["client-wave"])
            joined = await js.expect(ev="event", id="bob", channel="presence-room",
                                     event="pusher:subscription_succeeded", wait_s=30)
            if [m["id"] for m in joined["data"]["members"]] != ["ann", "bob"]:
                # B had not heard A's heartbeat yet: ann comes as a member event.
                await js.expect(ev="event", id="bob", channel="presence-room",
                                event="pusher:member_added", data={"id": "ann",
                                                                   "info": {"name": "Ann"}})
            await js.expect(ev="event", id="ann", channel="presence-room",
                            event="pusher:member_added", wait_s=30,
                            data={"id": "bob", "info": {"name": "Bob"}})

            # Counts are cluster-wide, asked of either node.
            for client in (via_a, via_b):
                info = await until(lambda c=client: _info(c))
                assert info == {"occupied": True, "user_count": 2, "subscription_count": 2}
                assert await call(client.users_info, "presence-room") == {
                    "users": [{"id": "ann"}, {"id": "bob"}]}
                assert await call(client.channels_info, "presence-", ["user_count"]) == {
                    "channels": {"presence-room": {"user_count": 2}}}

            # Triggered through B, received on both nodes.
            await call(via_b.trigger, "presence-room", "news", "from B")
            for who in ("ann", "bob"):
                got = await js.expect(ev="event", id=who, channel="presence-room",
                                      event="news", wait_s=30)
                assert got["data"] == "from B"
            # A client event from A reaches B, with its user id.
            await js.send("trigger", id="ann", channel="presence-room", event="client-wave",
                          data={"hi": 1})
            got = await js.expect(ev="bound", id="bob", event="client-wave", wait_s=30)
            assert (got["data"], got["user_id"]) == ({"hi": 1}, "ann")

            # A cache channel's last event is the same on every node.
            await call(via_a.trigger, "cache-rate", "rate", "1.25")
            await js.send("subscribe", id="bob", channel="cache-rate")
            got = await js.expect(ev="event", id="bob", channel="cache-rate", event="rate",
                                  wait_s=30)
            assert got["data"] == 1.25

            events = await hooks.wait_for(via_a, lambda e: len(e) >= 5, wait_s=30)
            assert sorted(names(events)) == sorted([
                ("channel_occupied", "presence-room"),
                ("member_added", "presence-room", "ann"),
                ("member_added", "presence-room", "bob"),
                ("client_event", "presence-room", "ann", "client-wave"),
                ("channel_occupied", "cache-rate")])

            # Terminated through B: ann's connection on A closes with 4009.
            await js.send("signin", id="ann")
            await js.expect(ev="signed_in", id="ann", wait_s=30)
            await until(lambda: _user_channel_open(a, "ann"))
            await call(via_b.terminate_user_connections, "ann")
            await js.expect(ev="error", id="ann", wait_s=30,
                            error=lambda e: isinstance(e, dict) and e.get("code") == 4009)
            await js.expect(ev="event", id="bob", channel="presence-room",
                            event="pusher:member_removed", wait_s=30,
                            data={"id": "ann", "info": {"name": "Ann"}})
            info = await until(lambda: _info(via_a, users=1))
            assert info["subscription_count"] == 1

            # Node B leaves: its member and channels go at once, reported by B.
            await close_b()
            events = await hooks.wait_for(
                via_a, lambda e: ("channel_vacated", "presence-room") in names(e), wait_s=30)
            later = names(events)[5:]
            assert sorted(later) == sorted([
                ("member_removed", "presence-room", "ann"),
                ("member_removed", "presence-room", "bob"),
                ("channel_vacated", "presence-room"),
                ("channel_vacated", "cache-rate")])
            assert await call(via_a.channels_info) == {"channels": {}}


async def _knows_both(gw: Running) -> bool:
    return len(gw.gateway.pusher.cluster.table.nodes) == 2


async def _info(client: Any, users: int = 2) -> dict[str, Any] | None:
    info: dict[str, Any] = await call(client.channel_info, "presence-room",
                                      ["user_count", "subscription_count"])
    return info if info.get("user_count") == users else None


async def _user_channel_open(gw: Running, user: str) -> bool:
    from channelcast.gateway.pusher import names as channel_names
    node = gw.gateway.pusher
    app = node.apps.by_id(gw.settings().gateway.app_id)
    assert app is not None
    return channel_names.user_channel(app, user) in node.cluster.channels(app.id)


async def test_two_nodes_share_presence_counts_events_and_webhooks(kafka_bootstrap: str,
                                                                   unique: str) -> None:
    topic, dlq = f"pz-{unique}", f"pz-{unique}-dlq"
    await asyncio.to_thread(ensure_topics, kafka_bootstrap,
                            [TopicSpec(TopicName(topic), 4), TopicSpec(TopicName(dlq), 1)],
                            timeout_s=30)
    try:
        with webhook_receiver() as hooks:
            settings = kafka_settings(kafka_bootstrap, unique, hooks.url)
            async with contextlib.AsyncExitStack() as stack:
                a = await stack.enter_async_context(
                    running_gateway(settings, broker=create_broker(settings)))
                b_stack = contextlib.AsyncExitStack()
                await stack.enter_async_context(b_stack)
                b = await b_stack.enter_async_context(
                    running_gateway(settings, broker=create_broker(settings)))
                await scenario(a, b, hooks, b_stack.aclose)
    finally:
        await asyncio.to_thread(KafkaAdmin(kafka_bootstrap, timeout_s=30).delete_topics,
                                [topic, dlq])


async def test_a_crashed_nodes_channels_and_members_leave_and_are_reported(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    """Node A (a ``channelcast serve`` process) is killed; node B expires it after
    ``presence_ttl_s`` and reports what that changes, once."""
    topic, dlq = f"pz-{unique}", f"pz-{unique}-dlq"
    await asyncio.to_thread(ensure_topics, kafka_bootstrap,
                            [TopicSpec(TopicName(topic), 4), TopicSpec(TopicName(dlq), 1)],
                            timeout_s=30)
    try:
        with webhook_receiver() as hooks:
            settings = kafka_settings(kafka_bootstrap, unique, hooks.url)
            config = tmp_path / "channelcast.toml"
            config.write_text(
                f'broker = "kafka://{kafka_bootstrap}"\n'
                f'[kafka]\ndefault_topic = "{topic}"\ndefault_partitions = 4\n'
                f'dead_letter_topic = "{dlq}"\n'
                # a killed node leaves the webhook group after 6 s, not the default 45 s
                '[kafka.consumer]\n"session.timeout.ms" = 6000\n'
                f'[gateway]\npresence_ttl_s = 3.0\napp_webhook_url = "{hooks.url}"\n'
                f'[pusher]\nwebhook_group = "pz-{unique}-hooks"\n'
                f'[[apps]]\nid = 42\nkey = "other-key"\nsecret = "other-secret"\n')
            settings = replace(settings, kafka=replace(
                settings.kafka, consumer={"session.timeout.ms": 6000}))
            async with running_gateway(settings, broker=create_broker(settings)) as b:
                with serve_process(tmp_path, "--config", str(config), ready_s=60) as a:
                    server = sdk(b)
                    for port in (a.port, port_of(b)):
                        await call(on_port(settings, port).channels_info)
                    await until(lambda: _knows_both(b))
                    url = f"ws://127.0.0.1:{a.port}/app/{settings.gateway.app_key}?protocol=7"
                    async with connect(url) as ws:
                        hello = json.loads(await ws.recv())
                        socket_id = json.loads(hello["data"])["socket_id"]
                        signed = server.authenticate("presence-room", socket_id,
                                                     {"user_id": "ann"})
                        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {
                            "channel": "presence-room", **signed}}))
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        assert reply["event"] == "pusher_internal:subscription_succeeded"
                        await hooks.wait_for(server, lambda e: len(e) >= 2, wait_s=30)
                        info = await until(lambda: _info(server, users=1))
                        assert info["subscription_count"] == 1
                        a.proc.send_signal(signal.SIGKILL)
                        killed = time.monotonic()
                        await until(lambda: _vacated(server))
                        took = time.monotonic() - killed
                        assert took <= 3.0 * 1.1 + 2.0, took
                await hooks.wait_for(
                    server, lambda e: ("channel_vacated", "presence-room") in names(e),
                    wait_s=30)
                await asyncio.sleep(1)
                seen = names(hooks.events(server))
                # At least once: if A died before committing what it had sent, the group
                # sends that again from B. What B reported itself comes once.
                assert list(dict.fromkeys(seen)) == [
                    ("channel_occupied", "presence-room"),
                    ("member_added", "presence-room", "ann"),
                    ("member_removed", "presence-room", "ann"),
                    ("channel_vacated", "presence-room")], seen
                assert seen[-2:] == [("member_removed", "presence-room", "ann"),
                                     ("channel_vacated", "presence-room")], seen
                assert seen.count(("channel_vacated", "presence-room")) == 1, seen
                print(f"\nmember of the killed node reported gone after {took:.2f}s; "
                      f"webhooks: {seen}")
    finally:
        await asyncio.to_thread(KafkaAdmin(kafka_bootstrap, timeout_s=30).delete_topics,
                                [topic, dlq])


def on_port(settings: Settings, port: int) -> pusher.Pusher:
    g = settings.gateway
    return pusher.Pusher(app_id=g.app_id, key=g.app_key, secret=g.app_secret,
                         host="127.0.0.1", port=port, ssl=False)


async def _vacated(client: Any) -> bool:
    info = await call(client.channel_info, "presence-room")
    return info == {"occupied": False}


async def _open(gw: Running, key: str) -> tuple[Any, int | None]:
    """A raw Pusher connection: (the socket, None) once established, or (the socket, the
    pusher:error code) when it was refused at once."""
    ws = await connect(f"ws://127.0.0.1:{port_of(gw)}/app/{key}?protocol=7", open_timeout=20)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 20))
    if hello["event"] == "pusher:connection_established":
        return ws, None
    return ws, hello["data"]["code"]


async def test_the_connection_quota_holds_across_nodes_admitting_at_once(
        kafka_bootstrap: str, unique: str) -> None:
    """max_connections = 3 on two nodes. Each node admits by what it knows, so nodes that
    admit at the same moment can let more in (before: 6 of 8 opened at once stayed open);
    the excess is closed with 4100 within seconds, the most recent admitter's first, and
    no more than that."""
    topic, dlq = f"pz-{unique}", f"pz-{unique}-dlq"
    await asyncio.to_thread(ensure_topics, kafka_bootstrap,
                            [TopicSpec(TopicName(topic), 4), TopicSpec(TopicName(dlq), 1)],
                            timeout_s=30)
    limited = replace(OTHER_APP, max_connections=3)
    sockets: list[Any] = []
    try:
        settings = replace(kafka_settings(kafka_bootstrap, unique, "http://127.0.0.1:9/x"),
                           apps=(limited,))
        async with contextlib.AsyncExitStack() as stack:
            a = await stack.enter_async_context(
                running_gateway(settings, broker=create_broker(settings)))
            b = await stack.enter_async_context(
                running_gateway(settings, broker=create_broker(settings)))
            for node in (a, b):
                await call(sdk(node, limited).channels_info)
            for node in (a, b):
                await until(lambda n=node: _knows_both(n))

            async def settled(admitted: list[Any]) -> bool:
                return sum(ws.close_code is None for ws in admitted) == 3 and all(
                    n.gateway.pusher.cluster.connections(limited.id) == 3 for n in (a, b))

            # 8 at once, 4 on each node: however many got in, 3 stay.
            opened = await asyncio.gather(*[_open(node, limited.key)
                                            for node in (a, b) for _ in range(4)])
            sockets += [ws for ws, _ in opened]
            admitted = [ws for ws, refused in opened if refused is None]
            await until(lambda: settled(admitted), wait_s=15)
            assert {ws.close_code for ws in admitted} <= {None, 4100}
            for ws in sockets:
                await ws.close()
            for node in (a, b):
                await until(lambda n=node: _count_is(n, limited.id, 0))

            # Deterministically: A is full (3 admitted, the 4th refused at once, exact on
            # one node); B then admits 4 as if it had not heard of A's yet.
            on_a = await asyncio.gather(*[_open(a, limited.key) for _ in range(4)])
            sockets += [ws for ws, _ in on_a]
            assert sorted(code or 0 for _, code in on_a) == [0, 0, 0, 4100]
            for node in (a, b):
                await until(lambda n=node: _count_is(n, limited.id, 3))
            with patch.object(b.gateway.pusher, "over_quota", lambda app: False):
                on_b = await asyncio.gather(*[_open(b, limited.key) for _ in range(4)])
            sockets += [ws for ws, _ in on_b]
            assert [code for _, code in on_b] == [None] * 4
            kept = [ws for ws, code in on_a if code is None]
            await until(lambda: settled(kept + [ws for ws, _ in on_b]), wait_s=15)
            assert [ws.close_code for ws in kept] == [None] * 3
            assert [ws.close_code for ws, _ in on_b] == [4100] * 4, "B admitted last"
            await asyncio.sleep(2)  # nothing more is closed once the count is right
            assert [ws.close_code for ws in kept] == [None] * 3
            # A fourth connection is still refused; one slot freed lets one in.
            ws, refused = await _open(b, limited.key)
            sockets.append(ws)
            assert refused == 4100
            await kept[0].close()
            await until(lambda: _count_is(b, limited.id, 2))
            ws, refused = await _open(b, limited.key)
            sockets.append(ws)
            assert refused is None
    finally:
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        await asyncio.to_thread(KafkaAdmin(kafka_bootstrap, timeout_s=30).delete_topics,
                                [topic, dlq])


async def _count_is(gw: Running, app_id: str, count: int) -> bool:
    return gw.gateway.pusher.cluster.connections(app_id) == count


async def test_a_hung_receiver_is_dead_lettered_and_never_delays_another_app(
        kafka_bootstrap: str, unique: str) -> None:
    """Every app's webhooks in one partition (``;pusher;*`` mapped to a one-partition
    topic); app 42's receiver never answers. App 1's webhooks arrive at once; app 42's
    records are dead-lettered after their attempts, each by its own consumer group."""
    topic, dlq, internal = f"pz-{unique}", f"pz-{unique}-dlq", f"pz-{unique}-pusher"
    await asyncio.to_thread(ensure_topics, kafka_bootstrap,
                            [TopicSpec(TopicName(topic), 4), TopicSpec(TopicName(dlq), 1),
                             TopicSpec(TopicName(internal), 1)], timeout_s=30)
    try:
        with webhook_receiver() as hooks, DeadReceiver() as dead:
            stuck = replace(OTHER_APP, webhook_url=dead.url)
            settings = kafka_settings(kafka_bootstrap, unique, hooks.url)
            settings = replace(
                settings, apps=(stuck,),
                kafka=replace(settings.kafka, topic_mapping=(
                    TopicMapping(";pusher;*", TopicName(internal), 1),)),
                pusher=replace(settings.pusher, webhook_timeout_s=1.0, webhook_max_attempts=2,
                               webhook_retry_backoff_s=0.2))
            async with running_gateway(settings, broker=create_broker(settings)) as gw:
                server = sdk(gw)
                loop = asyncio.get_running_loop()
                async with raw_pusher(gw, key=stuck.key) as shop:
                    await shop.subscribe("shopchan")
                    await until_published(gw, "shopchan", 1, app_id=stuck.id)
                await until(lambda: _attempted(dead), wait_s=30)
                started = loop.time()
                async with raw_pusher(gw) as ann:
                    await ann.subscribe("hol-app1")
                    await until_published(gw, "hol-app1", 1)
                events = await hooks.wait_for(server, lambda e: len(e) >= 2, wait_s=30)
                took = loop.time() - started
                assert names(events) == [("channel_occupied", "hol-app1"),
                                         ("channel_vacated", "hol-app1")]
                assert took < 3.0, f"app 1's webhooks took {took:.1f} s"
                webhooks = gw.gateway.pusher.webhooks
                await until(lambda: _dead_lettered(webhooks, stuck.id, 2), wait_s=30)
                assert webhooks.stats()["1"].dead_lettered == 0
    finally:
        await asyncio.to_thread(KafkaAdmin(kafka_bootstrap, timeout_s=30).delete_topics,
                                [topic, dlq, internal])


async def _attempted(dead: DeadReceiver) -> bool:
    return dead.requests > 0


async def _dead_lettered(webhooks: Any, app_id: str, count: int) -> bool:
    return bool(webhooks.stats()[app_id].dead_lettered >= count)
