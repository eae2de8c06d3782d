"""Hub fan-out, recovery and presence against the memory broker (no sockets).

Two Hubs on one MemoryBroker are two gateway nodes sharing a broker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from channelcast.brokers.memory import MemoryBroker
from channelcast.gateway.hub import AttachResult, Hub
from channelcast.gateway.presence import Member, PresenceDiff
from channelcast.message import Record
from channelcast.types import ChannelName, Position


@dataclass(eq=False)
class FakeListener:
    connection_id: str
    events: list[tuple[str, Any]] = field(default_factory=list)

    def attached(self, channel: ChannelName, result: AttachResult) -> None:
        self.events.append(("attached", result))
        for record, _ in result.replay:
            self.events.append(("message", record))

    def deliver(self, channel: ChannelName, record: Record, text: str) -> None:
        self.events.append(("message", record))

    def presence_changed(self, channel: ChannelName, diff: PresenceDiff) -> None:
        self.events.extend(("added", m.user_id) for m in diff.added)
        self.events.extend(("removed", m.user_id) for m in diff.removed)

    def subscription_lost(self, channel: ChannelName, reason: str) -> None:
        self.events.append(("lost", reason))

    def messages(self) -> list[Record]:
        return [e[1] for e in self.events if e[0] == "message"]

    def result(self) -> AttachResult:
        return next(e[1] for e in self.events if e[0] == "attached")


C = ChannelName


async def until(predicate: Any, seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_one_broker_subscription_per_channel_started_and_stopped() -> None:
    broker = MemoryBroker()
    opened: list[frozenset[str]] = []
    real_subscribe = broker.subscribe

    def counting_subscribe(channels: Any, **kw: Any) -> Any:
        sub = real_subscribe(channels, **kw)
        opened.append(sub.channels)
        return sub

    broker.subscribe = counting_subscribe  # type: ignore[method-assign]
    async with broker, Hub(broker) as hub:
        listeners = [FakeListener(f"c{i}") for i in range(50)]
        await asyncio.gather(*(hub.attach(C("room"), x) for x in listeners))
        assert opened == [frozenset({"room"})]
        assert hub.feed_count() == 1
        await broker.publish("room", "e", 1)
        await until(lambda: all(x.messages() for x in listeners))
        assert all(len(x.messages()) == 1 for x in listeners)
        for x in listeners[:-1]:
            await hub.detach(C("room"), x)
        assert hub.feed_count() == 1
        await hub.detach(C("room"), listeners[-1])
        assert hub.feed_count() == 0
        # The broker subscription is closed by a task the hub owns (detach cannot be
        # cancelled half-way): promptly, not necessarily before detach returns.
        await until(lambda: not broker._subs)
        await hub.attach(C("room"), listeners[0])
        assert len(opened) == 2


async def test_recovery_replays_exactly_the_missed_500_in_order() -> None:
    async with MemoryBroker() as broker, Hub(broker) as hub:
        first = FakeListener("a")
        await hub.attach(C("rec"), first)
        await broker.publish("rec", "e", -1)
        await until(lambda: first.messages())
        last_seen = first.messages()[-1].position
        await hub.detach(C("rec"), first)
        # Someone else keeps the feed alive and the partition busy with other channels.
        other = FakeListener("o")
        await hub.attach(C("rec"), other)
        for i in range(500):
            await broker.publish("rec", "e", i)
            await broker.publish("noise", "e", i)
        again = FakeListener("a2")
        await hub.attach(C("rec"), again, since=last_seen)
        assert again.result().recovered is True
        got = again.messages()
        assert [r.envelope.data for r in got] == list(range(500))
        offsets = [r.position.offset for r in got]
        assert offsets == sorted(offsets)
        await broker.publish("rec", "e", "live")
        await until(lambda: len(again.messages()) == 501)
        assert again.messages()[-1].envelope.data == "live"


async def test_recovery_during_live_traffic_has_no_gap_and_no_duplicate() -> None:
    async with MemoryBroker() as broker, Hub(broker) as hub:
        keeper = FakeListener("k")
        await hub.attach(C("busy"), keeper)
        since = (await broker.end_position("busy"))
        stop = asyncio.Event()

        async def produce() -> None:
            i = 0
            while not stop.is_set():
                await broker.publish("busy", "e", i)
                i += 1
                await asyncio.sleep(0)

        producer = asyncio.create_task(produce())
        await until(lambda: len(keeper.messages()) > 50)
        late = FakeListener("late")
        await hub.attach(C("busy"), late, since=since)
        await until(lambda: len(late.messages()) > len(keeper.messages()) // 2 + 50)
        stop.set()
        await producer
        await until(lambda: len(late.messages()) == len(keeper.messages()))
        assert [r.envelope.data for r in late.messages()] == \
            [r.envelope.data for r in keeper.messages()]


async def test_recovery_failure_is_reported_when_history_is_gone() -> None:
    async with MemoryBroker(history_size=10) as broker, Hub(broker) as hub:
        pos = await broker.publish("gone", "e", 0)
        for i in range(50):
            await broker.publish("gone", "e", i)
        x = FakeListener("x")
        await hub.attach(C("gone"), x, since=pos)
        result = x.result()
        assert result.recovered is False
        assert result.recovery_error is not None
        assert "gone" in result.recovery_error
        assert x.messages() == []  # nothing silently skipped-and-pretended
        await broker.publish("gone", "e", "after")
        await until(lambda: x.messages())
        assert x.messages()[0].envelope.data == "after"


async def test_presence_across_two_nodes_join_leave() -> None:
    async with MemoryBroker() as broker, Hub(broker, presence_ttl_s=5) as a, \
            Hub(broker, presence_ttl_s=5) as b:
        ann = FakeListener("a.1")
        await a.attach(C("presence-x"), ann, member=Member("ann"))
        bob = FakeListener("b.1")
        await b.attach(C("presence-x"), bob, member=Member("bob"))
        # B learns about ann from A's heartbeat answering B's sync.
        await until(lambda: ("added", "ann") in bob.events)
        await until(lambda: ("added", "bob") in ann.events)
        assert [m.user_id for m in b.members("presence-x")] == ["ann", "bob"]
        # A second tab of ann on B: still one member named ann.
        ann2 = FakeListener("b.2")
        await b.attach(C("presence-x"), ann2, member=Member("ann"))
        assert [m.user_id for m in ann2.result().members or []] == ["ann", "bob"]
        await a.detach(C("presence-x"), ann)
        await asyncio.sleep(0.2)
        assert ("removed", "ann") not in bob.events  # ann is still there on B
        await b.detach(C("presence-x"), ann2)
        await until(lambda: ("removed", "ann") in bob.events)


@pytest.mark.timeout(30)
async def test_members_of_a_crashed_node_disappear_within_the_ttl() -> None:
    ttl = 0.6
    async with MemoryBroker() as broker, Hub(broker, presence_ttl_s=ttl) as b:
        a = Hub(broker, presence_ttl_s=ttl)
        await a.start()
        await a.attach(C("presence-c"), FakeListener("a.1"), member=Member("crashy"))
        watcher = FakeListener("b.1")
        await b.attach(C("presence-c"), watcher, member=Member("w"))
        await until(lambda: ("added", "crashy") in watcher.events)
        # Crash: node A stops heartbeating and never says goodbye.
        assert a._presence_task is not None
        a._presence_task.cancel()
        for feed in a._feeds.values():
            assert feed.task is not None
            feed.task.cancel()
        loop = asyncio.get_running_loop()
        crashed_at = loop.time()
        await until(lambda: ("removed", "crashy") in watcher.events, seconds=5)
        took = loop.time() - crashed_at
        assert took <= ttl * 1.1 + 0.5, took  # documented bound: 1.1 x ttl (+ scheduling)
        assert [m.user_id for m in b.members("presence-c")] == ["w"]


async def test_feed_failure_is_told_to_listeners() -> None:
    async with MemoryBroker() as broker, Hub(broker) as hub:
        x = FakeListener("x")
        await hub.attach(C("f"), x)
        feed = hub._feeds[C("f")]
        await feed.subscription.close()  # the broker side ends
        await until(lambda: any(e[0] == "lost" for e in x.events))
        assert hub.feed_count() == 0


def test_position_minus_one_round_trips_through_the_protocol() -> None:
    from channelcast.gateway.protocol import parse_position
    assert parse_position("realtime:3:-1") == Position("realtime", 3, -1)
    assert parse_position("realtime:3:7") == Position("realtime", 3, 7)


@pytest.mark.parametrize("bad_since", ["other-partition", "ahead"])
async def test_unusable_positions_fail_recovery_plainly_and_stay_live(bad_since: str) -> None:
    async with MemoryBroker() as broker, Hub(broker) as hub:
        end = await broker.publish("p", "e", 0)
        since = Position(end.topic, end.partition + 1, 0) if bad_since == "other-partition" \
            else Position(end.topic, end.partition, end.offset + 1000)
        x = FakeListener("x")
        await hub.attach(C("p"), x, since=since)
        assert x.result().recovered is False
        assert x.result().recovery_error
        await broker.publish("p", "e", "live")
        await until(lambda: x.messages())
        assert [r.envelope.data for r in x.messages()] == ["live"]


async def test_no_state_is_kept_for_channels_without_subscribers() -> None:
    async with MemoryBroker() as broker, Hub(broker) as hub:
        x = FakeListener("x")
        for i in range(300):
            await hub.attach(C(f"user.{i}"), x)
        assert hub.feed_count() == 300
        for i in range(300):
            await hub.detach(C(f"user.{i}"), x)
        assert hub.feed_count() == 0
        assert hub._opening == {}
        await until(lambda: not broker._subs)


async def test_a_failed_feed_opening_fails_its_callers_and_the_next_attach_retries() -> None:
    from channelcast.errors import BrokerUnavailable

    async with MemoryBroker() as broker, Hub(broker) as hub:
        real_end = broker.end_position
        calls = [0]

        async def flaky_end(channel: str) -> Position:
            calls[0] += 1
            await asyncio.sleep(0.01)
            if calls[0] == 1:
                raise BrokerUnavailable("down for a moment")
            return await real_end(channel)

        broker.end_position = flaky_end  # type: ignore[method-assign]
        listeners = [FakeListener(f"c{i}") for i in range(5)]
        results = await asyncio.gather(*(hub.attach(C("flaky"), x) for x in listeners),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BrokerUnavailable)]
        assert len(failed) == 1  # the opener failed; the waiters opened it again
        assert hub.feed_count() == 1
        await broker.publish("flaky", "e", 1)
        ok = [x for x, r in zip(listeners, results, strict=True) if r is None]
        await until(lambda: all(x.messages() for x in ok))
        assert len(ok) == 4


async def test_a_late_node_learns_a_large_presence_from_a_heartbeat_in_parts() -> None:
    async with MemoryBroker() as broker, Hub(broker, presence_ttl_s=30) as a, \
            Hub(broker, presence_ttl_s=30) as b:
        for i in range(1200):
            await a.attach(C("presence-big"), FakeListener(f"a.{i}"), member=Member(f"u{i}"))
        await until(lambda: not a._tasks)  # every join is published before b starts following
        late = FakeListener("b.1")
        await b.attach(C("presence-big"), late, member=Member("late"))
        await until(lambda: len(b.members("presence-big")) == 1201)
        heartbeats = [r.envelope.data for r in await broker.history(
            "presence-big", Position(*_route(broker, "presence-big"), -1),
            include_internal=True) if r.envelope.data.get("op") == "heartbeat"]
        from_a = [h for h in heartbeats if h["node"] == a.node_id]
        assert [(h["part"], h["parts"]) for h in from_a] == [(0, 3), (1, 3), (2, 3)]


def _route(broker: MemoryBroker, channel: str) -> tuple[str, int]:
    route = broker.strategy.route(C(channel))
    return route.topic, route.partition
