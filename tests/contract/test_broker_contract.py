"""The Broker contract, once, against the memory broker and real Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from channelcast.brokers.base import Broker, RetryPolicy, Subscription
from channelcast.errors import (
    BrokerClosed,
    HistoryUnavailable,
    InvalidChannel,
    InvalidPosition,
    MessageError,
    MessageTooLarge,
    SerializationError,
)
from channelcast.message import INTERNAL, MAX_EVENT_NAME, Envelope, Record
from channelcast.types import ChannelName, Position
from tests.contract.conftest import Names

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)


async def eventually(check: Callable[[], bool], within: float = 30.0,
                     what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def take(sub: Subscription, n: int, within: float = 20.0) -> list[Record]:
    out: list[Record] = []

    async def collect() -> None:
        async for record in sub:
            out.append(record)
            if len(out) == n:
                return

    await asyncio.wait_for(collect(), within)
    return out


async def nothing_more(sub: Subscription, wait: float = 0.5) -> bool:
    """True if no record arrives within ``wait`` seconds."""
    try:
        await asyncio.wait_for(sub.__anext__(), wait)
    except TimeoutError:
        return True
    return False


def same_partition_channels(broker: Broker, count: int) -> list[str]:
    """``count`` default-topic channels that share one partition."""
    by_partition: dict[int, list[str]] = {}
    i = 0
    while True:
        name = f"room.{i}"
        route = broker.strategy.route(ChannelName(name))
        group = by_partition.setdefault(route.partition, [])
        group.append(name)
        if len(group) == count:
            return group
        i += 1


def envelopes(channel: str, count: int, event: str = "e", start: int = 0) -> list[Envelope]:
    return [Envelope(channel=ChannelName(channel), event=event, data={"n": i})
            for i in range(start, start + count)]


# --- publishing ----------------------------------------------------------------------


async def test_publish_returns_positions_in_order(broker: Broker, names: Names) -> None:
    first = await broker.publish("room.1", "said", {"text": "hi"})
    second = await broker.publish("room.1", "said", {"text": "again"})
    assert first.topic == names.default
    assert (second.topic, second.partition) == (first.topic, first.partition)
    assert second.offset > first.offset
    assert await broker.end_position("room.1") == second


async def test_an_empty_batch_publishes_nothing(broker: Broker) -> None:
    """tkafka3 finding 4: Kafka's publish_many([]) raised IndexError."""
    assert await broker.publish_many([]) == []


async def test_since_must_name_subscribed_channels_and_hold_positions(broker: Broker) -> None:
    """tkafka3 finding 3: since={other channel: position} delivered that channel's
    backlog to a subscription that never asked for it; a string position gave an
    AttributeError."""
    [old] = await broker.publish_many(envelopes("room.other", 1))
    with pytest.raises(InvalidPosition, match=r"'room\.other', which is not subscribed"):
        broker.subscribe(["room.mine"], since={"room.other": old})
    with pytest.raises(InvalidPosition, match=r"since\['room.mine'\] must be a Position"):
        broker.subscribe(["room.mine"], since={"room.mine": str(old)})  # type: ignore[dict-item]
    with pytest.raises(InvalidPosition, match="since must be a mapping"):
        broker.subscribe(["room.mine"], since=[old])  # type: ignore[arg-type]


async def test_subscribe_to_a_single_str_is_refused_not_split_into_letters(
        broker: Broker) -> None:
    """tfin finding 6: subscribe("ab") subscribed to "a" and "b"."""
    with pytest.raises(InvalidChannel, match=r"not a single str \('room.a'\)"):
        broker.subscribe("room.a")


async def test_publish_many_keeps_input_order(broker: Broker) -> None:
    batch = envelopes("room.a", 30) + envelopes("room.b", 30)
    positions = await broker.publish_many(batch)
    assert len(positions) == 60
    for channel, chunk in (("room.a", positions[:30]), ("room.b", positions[30:])):
        assert [p.offset for p in chunk] == sorted(p.offset for p in chunk)
        assert len({(p.topic, p.partition) for p in chunk}) == 1
        end = await broker.end_position(channel)
        assert (end.topic, end.partition) == (chunk[-1].topic, chunk[-1].partition)
        assert end.offset >= chunk[-1].offset
    assert positions[-1] == await broker.end_position("room.b")


async def test_bad_input_is_rejected_and_nothing_is_stored(broker: Broker) -> None:
    before = await broker.publish("room.x", "e", 1)
    with pytest.raises(InvalidChannel):
        await broker.publish("bad channel!", "e", 1)
    with pytest.raises(SerializationError):
        await broker.publish("room.x", "e", {"when": object()})
    with pytest.raises(MessageTooLarge):
        await broker.publish("room.x", "e", "x" * 20_000)
    # A batch with one bad message stores none of it.
    with pytest.raises(SerializationError):
        await broker.publish_many([*envelopes("room.x", 3),
                                   Envelope(channel=ChannelName("room.x"), event="e",
                                            data={1, 2})])
    assert await broker.end_position("room.x") == before
    after = await broker.publish("room.x", "e", 2)  # and the broker still works
    assert after.offset == before.offset + 1


async def test_reserved_and_overlong_events_are_refused_but_internal_ones_pass(
        broker: Broker) -> None:
    before = await broker.publish("room.r", "e", 0)
    with pytest.raises(MessageError, match="reserved"):
        await broker.publish("room.r", "channelcast:presence", {"op": "sync"})
    with pytest.raises(MessageError, match="reserved"):
        await broker.publish_many([*envelopes("room.r", 2), Envelope(
            channel=ChannelName("room.r"), event="channelcast:anything", data=1)])
    with pytest.raises(MessageError, match=f"at most {MAX_EVENT_NAME} characters"):
        await broker.publish("room.r", "e" * (MAX_EVENT_NAME + 1), 1)
    assert await broker.end_position("room.r") == before  # nothing stored
    # channelcast's own messages (the gateway's presence) go through as internal envelopes.
    internal = Envelope(channel=ChannelName("room.r"), event="channelcast:presence",
                        data={"op": "sync"}, type=INTERNAL)
    [position] = await broker.publish_many([internal])
    assert position.offset == before.offset + 1
    # Marked internal, and left out of history unless asked for.
    assert await broker.history("room.r", before) == []
    [stored] = await broker.history("room.r", before, include_internal=True)
    assert stored.envelope == internal
    assert stored.internal


async def test_use_after_close_raises_broker_closed(broker: Broker) -> None:
    await broker.close()
    with pytest.raises(BrokerClosed):
        await broker.publish("room.1", "e", 1)


# --- fan-out -----------------------------------------------------------------------


async def test_subscriber_gets_only_its_channels_in_order(broker: Broker) -> None:
    mine, other = same_partition_channels(broker, 2)
    async with broker.subscribe([mine]) as sub:
        await broker.publish_many(envelopes(other, 5) + envelopes(mine, 10))
        got = await take(sub, 10)
        assert [r.channel for r in got] == [mine] * 10
        assert [r.envelope.data["n"] for r in got] == list(range(10))
        assert await nothing_more(sub)


async def test_subscription_starts_at_the_end(broker: Broker) -> None:
    await broker.publish_many(envelopes("room.old", 5))
    async with broker.subscribe(["room.old"]) as sub:
        await broker.publish("room.old", "e", {"n": 99})
        (record,) = await take(sub, 1)
        assert record.envelope.data == {"n": 99}


async def test_every_subscription_gets_every_message(broker: Broker) -> None:
    a, b = same_partition_channels(broker, 2)
    async with broker.subscribe([a, b]) as one, broker.subscribe([a]) as two, \
            broker.subscribe([b]) as three:
        positions = await broker.publish_many(envelopes(a, 20) + envelopes(b, 20))
        got_one = await take(one, 40)
        got_two = await take(two, 20)
        got_three = await take(three, 20)
    assert sorted(r.position for r in got_one) == sorted(positions)
    assert [r.position for r in got_two] == positions[:20]
    assert [r.position for r in got_three] == positions[20:]


async def test_subscribe_since_replays_then_continues_live(broker: Broker) -> None:
    positions = await broker.publish_many(envelopes("room.r", 10))
    sub = broker.subscribe(["room.r"], since={"room.r": positions[3]})
    async with sub:
        await broker.publish_many(envelopes("room.r", 5, event="live"))
        got = await take(sub, 11)
        assert await nothing_more(sub)
    assert [r.envelope.data["n"] for r in got[:6]] == [4, 5, 6, 7, 8, 9]
    assert [r.envelope.event for r in got[6:]] == ["live"] * 5
    offsets = [r.position.offset for r in got]
    assert offsets == sorted(set(offsets))  # no duplicates, in order
    assert got[0].position.offset == positions[3].offset + 1


async def test_closed_subscription_stops_iterating(broker: Broker) -> None:
    sub = broker.subscribe(["room.c"])
    await sub.ready()
    await sub.close()
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()


# --- history ---------------------------------------------------------------------------


async def test_history_after_a_position(broker: Broker) -> None:
    a, b = same_partition_channels(broker, 2)
    positions = await broker.publish_many(envelopes(a, 5) + envelopes(b, 5) + envelopes(a, 2))
    history = await broker.history(a, positions[1])
    assert [r.position for r in history] == positions[2:5] + positions[10:]
    assert all(r.channel == a for r in history)
    assert await broker.history(a, positions[-1]) == []


async def test_history_from_a_foreign_partition_is_unavailable(broker: Broker) -> None:
    a, = same_partition_channels(broker, 1)
    position = await broker.publish(a, "e", 1)
    foreign = Position(position.topic, (position.partition + 1) % 4, 0)
    with pytest.raises(HistoryUnavailable):
        await broker.history(a, foreign)


@pytest.mark.parametrize("ahead", [1, 3, 100])
async def test_a_position_ahead_of_the_log_raises_once_then_every_live_message_comes(
        broker: Broker, ahead: int) -> None:
    """tfin finding 1: on Kafka, after the HistoryUnavailable, live messages up to the
    unusable position's offset were dropped (it stayed the subscription's floor)."""
    a, = same_partition_channels(broker, 1)
    last = await broker.publish(a, "e", "old")
    bogus = Position(last.topic, last.partition, last.offset + ahead, last.epoch)
    async with broker.subscribe([a], since={a: bogus}) as sub:
        await asyncio.sleep(0.5)  # live
        await broker.publish_many(envelopes(a, 5))
        with pytest.raises(HistoryUnavailable):
            await asyncio.wait_for(sub.__anext__(), 20)
        got = [(await asyncio.wait_for(sub.__anext__(), 20)).envelope.data
               for _ in range(5)]
    assert got == [{"n": i} for i in range(5)]


# --- workers -----------------------------------------------------------------------------


def recorder(into: list[Record]) -> Callable[[Record], Awaitable[None]]:
    async def handle(record: Record) -> None:
        into.append(record)
    return handle


async def run_until(broker: Broker, worker_done: Callable[[], bool], *workers: object,
                    within: float = 40.0) -> None:
    tasks = [asyncio.create_task(w.run()) for w in workers]  # type: ignore[attr-defined]
    try:
        await eventually(worker_done, within, "workers to finish")
    finally:
        for w in workers:
            await w.stop()  # type: ignore[attr-defined]
        await asyncio.gather(*tasks)


@pytest.mark.parametrize("manual", [True, False], ids=["manual-commit", "auto-commit"])
async def test_worker_processes_every_message_in_partition_order(
        broker: Broker, unique: str, manual: bool) -> None:
    channels = [f"job.{i}" for i in range(8)]
    batch = [e for i in range(25) for e in
             (Envelope(channel=ChannelName(c), event="e", data={"n": i}) for c in channels)]
    positions = await broker.publish_many(batch)
    seen: list[Record] = []
    worker = broker.worker(f"g-{unique}", channels={"job.*": recorder(seen)},
                           manual_commit=manual)
    await run_until(broker, lambda: len(seen) >= len(batch), worker)
    assert {r.position for r in seen} == set(positions)
    for c in channels:
        assert [r.envelope.data["n"] for r in seen if r.channel == c] == list(range(25))
    if manual:
        ends: dict[tuple[str, int], int] = {}
        for p in positions:
            ends[(p.topic, p.partition)] = max(ends.get((p.topic, p.partition), 0), p.offset + 1)
        await eventually(lambda: all(worker.stats.committed.get(tp) == end
                                     for tp, end in ends.items()), 10, "commits")


async def test_group_members_share_the_work(broker: Broker, unique: str) -> None:
    batch = [Envelope(channel=ChannelName(f"job.{i % 16}"), event="e", data=i)
             for i in range(400)]
    positions = await broker.publish_many(batch)
    one: list[Record] = []
    two: list[Record] = []
    w1 = broker.worker(f"g-{unique}", channels={"*": recorder(one)}, manual_commit=True)
    w2 = broker.worker(f"g-{unique}", channels={"*": recorder(two)}, manual_commit=True)
    await run_until(broker, lambda: {r.position for r in one + two} >= set(positions), w1, w2)
    assert {r.position for r in one + two} == set(positions)


async def test_uncommitted_messages_are_redelivered_when_a_worker_goes_away(
        broker: Broker, unique: str) -> None:
    a, = same_partition_channels(broker, 1)
    positions = await broker.publish_many(envelopes(a, 10))
    seen_first: list[Record] = []
    stuck = asyncio.Event()

    async def stalls_on_five(record: Record) -> None:
        seen_first.append(record)
        if record.envelope.data["n"] == 5:
            stuck.set()
            await asyncio.Event().wait()  # never finishes: #5 is never acknowledged

    first = broker.worker(f"g-{unique}", channels={"room.*": stalls_on_five},
                          manual_commit=True)
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(stuck.wait(), 40)
    await first.stop()
    await asyncio.wait_for(task, 20)

    seen_second: list[Record] = []
    second = broker.worker(f"g-{unique}", channels={"room.*": recorder(seen_second)},
                           manual_commit=True)
    await run_until(broker, lambda: len(seen_second) >= 5, second)
    # Everything from the unacknowledged message on comes again; nothing before it does.
    assert [r.position for r in seen_second] == positions[5:]


async def test_poison_message_goes_to_the_dead_letter_topic(
        broker: Broker, unique: str, names: Names) -> None:
    a, = same_partition_channels(broker, 1)
    batch = envelopes(a, 10)
    positions = await broker.publish_many(batch)
    attempts: dict[int, int] = {}
    done: list[Record] = []

    async def fails_on_three(record: Record) -> None:
        n = record.envelope.data["n"]
        attempts[n] = attempts.get(n, 0) + 1
        if n == 3:
            raise ValueError("cannot handle #3")
        done.append(record)

    worker = broker.worker(f"g-{unique}", channels={"room.*": fails_on_three},
                           manual_commit=True, retry=FAST_RETRY)
    await run_until(broker, lambda: len(done) >= 9, worker)
    assert attempts[3] == 3
    assert [r.envelope.data["n"] for r in done] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert worker.stats.dead_lettered == 1
    assert worker.stats.failed_attempts == 3
    assert worker.stats.committed[(positions[0].topic, positions[0].partition)] \
        == positions[-1].offset + 1

    # The dead letter is readable with the legacy one-callback-per-topic API.
    dead: list[Record] = []
    reader = broker.worker(f"dlq-{unique}", topics={names.dlq: recorder(dead)})
    await run_until(broker, lambda: len(dead) >= 1, reader)
    assert dead[0].envelope.data == {"n": 3}
    assert dead[0].envelope.id == batch[3].id


async def test_topic_callbacks_work_beside_channel_callbacks(
        broker: Broker, unique: str, names: Names) -> None:
    await broker.publish_many(envelopes("orders.1", 5) + envelopes("room.1", 5))
    by_topic: list[Record] = []
    by_channel: list[Record] = []
    worker = broker.worker(f"g-{unique}", topics={names.default: recorder(by_topic)},
                           channels={"orders.*": recorder(by_channel)})
    await run_until(broker, lambda: len(by_topic) >= 5 and len(by_channel) >= 5, worker)
    assert {r.channel for r in by_topic} == {"room.1"}
    assert {r.position.topic for r in by_topic} == {names.default}
    assert {r.channel for r in by_channel} == {"orders.1"}
    assert {r.position.topic for r in by_channel} == {names.orders}


async def test_a_full_subscription_loses_nothing_and_blocks_no_one(broker: Broker) -> None:
    a, b = same_partition_channels(broker, 2)
    full = broker.subscribe([a], max_queue=2)
    await full.ready()
    # Memory: publish waits while the queue is full; Kafka: the consumer thread waits.
    publishing = asyncio.create_task(broker.publish_many(envelopes(a, 30)))
    await asyncio.sleep(0.5)
    # Meanwhile other subscriptions can still be opened, served and closed.
    async with broker.subscribe([b]) as other:
        await asyncio.wait_for(other.ready(), 10)
    got = await take(full, 30)
    await asyncio.wait_for(publishing, 10)
    assert [r.envelope.data["n"] for r in got] == list(range(30))
    await full.close()


async def test_a_subscription_nobody_reads_stalls_no_other_channel(broker: Broker) -> None:
    # Issue 13 case 1, at the broker: a leaked subscription (nobody reads it) whose queue
    # is full must not stop delivery to any other channel, even in the same partition.
    a, b = same_partition_channels(broker, 2)
    leaked = broker.subscribe([a], max_queue=5)
    live = broker.subscribe([b], max_queue=5)
    await leaked.ready()
    await live.ready()
    for i in range(0, 600, 100):
        await asyncio.wait_for(broker.publish_many(envelopes(a, 100, start=i)), 10)
    await broker.publish(b, "e", {"n": "after"})
    got = await asyncio.wait_for(live.__anext__(), 10)
    assert got.envelope.data == {"n": "after"}
    # The leaked one lost nothing: what it missed it reads from the log, in order.
    assert [r.envelope.data["n"] for r in await take(leaked, 600)] == list(range(600))
    await broker.publish(a, "e", {"n": "live again"})
    assert (await asyncio.wait_for(leaked.__anext__(), 10)).envelope.data == {
        "n": "live again"}
    await leaked.close()
    await live.close()


async def test_a_slow_partition_does_not_hold_up_the_others(broker: Broker, unique: str) -> None:
    slow, = same_partition_channels(broker, 1)
    slow_partition = broker.strategy.route(ChannelName(slow)).partition
    fast = next(c for c in (f"room.f{i}" for i in range(1000))
                if broker.strategy.route(ChannelName(c)).partition != slow_partition)
    await broker.publish_many(envelopes(slow, 3) + envelopes(fast, 20))
    release = asyncio.Event()
    order: list[tuple[str, int]] = []

    async def handle(record: Record) -> None:
        if record.channel == slow:
            await release.wait()
        order.append((record.channel, record.envelope.data["n"]))

    worker = broker.worker(f"g-{unique}", channels={"room.*": handle}, manual_commit=True)
    task = asyncio.create_task(worker.run())
    try:
        # The fast partition finishes while the slow one is stuck on its first message.
        await eventually(lambda: len(order) == 20, 40, "the fast partition")
        assert order == [(fast, n) for n in range(20)]
        release.set()
        await eventually(lambda: len(order) == 23, 20, "the slow partition")
        assert order[20:] == [(slow, n) for n in range(3)]
    finally:
        release.set()
        await worker.stop()
        await task


async def test_a_plain_function_handler_runs_once_per_message(broker: Broker,
                                                               unique: str) -> None:
    # A plain (not async) function is a handler too: it runs in a worker thread, once per
    # message. (It used to be called, fail to be awaited, and be retried then dead-lettered.)
    import threading

    seen: list[tuple[int, bool]] = []

    def handle(record: Record) -> None:
        seen.append((record.envelope.data["n"],
                     threading.current_thread() is threading.main_thread()))

    await broker.publish_many(envelopes("jobs.1", 3))
    worker = broker.worker(f"g-{unique}", channels={"jobs.*": handle}, manual_commit=True)
    task = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: len(seen) >= 3, 40, "the plain handler")
        await asyncio.sleep(0.3)
        assert [n for n, _ in seen] == [0, 1, 2]
        assert not any(on_main for _, on_main in seen)  # never blocks the event loop
        assert worker.stats.failed_attempts == 0
        assert worker.stats.dead_lettered == 0
    finally:
        await worker.stop()
        await asyncio.wait_for(task, 30)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"group": "", "channels": {"a.*": print}}, "group must be a non-empty string"),
    ({"group": "g", "channels": {}}, "at least one handler"),
    ({"group": "g", "channels": {"user .*": print}}, "has character ' '"),
    ({"group": "g", "channels": {"a.*": "not callable"}}, r"channels\['a.\*'\] must be a "),
    ({"group": "g", "topics": {"t": 3}}, r"topics\['t'\] must be a function"),
])
async def test_bad_worker_arguments_are_refused_naming_what(
        broker: Broker, kwargs: dict[str, Any], error: str) -> None:
    from channelcast.errors import ChannelcastError

    kwargs = dict(kwargs)  # the parameter is shared by both backends
    group = kwargs.pop("group")
    with pytest.raises(ChannelcastError, match=error):
        broker.worker(group, **kwargs)
