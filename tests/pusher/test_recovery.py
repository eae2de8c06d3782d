"""Recovery through the Pusher protocol, frame by frame: ``since`` in ``pusher:subscribe``
replays exactly what was missed, in order, then goes live; when the history is gone the
client is told (``recovered: false`` and ``pusher:recovery_failed``), and a cache channel
still gets its last event. ``previous_socket_ids`` keeps what was addressed away from the
client's earlier connections out of the replay and of live delivery."""

from __future__ import annotations

import json
from typing import Any

import pytest

from channelcast.types import Position
from tests.gateway.conftest import running_gateway
from tests.pusher.conftest import call, pusher_settings, raw_pusher, sdk

pytestmark = pytest.mark.timeout(60)


async def test_since_replays_exactly_the_200_missed_events_in_order() -> None:
    async with running_gateway(pusher_settings()) as gw:
        server = sdk(gw)
        async with raw_pusher(gw) as first:
            ok = await first.subscribe("feed")
            position = json.loads(ok["data"])["position"]
            await call(server.trigger, "feed", "n", "-1")
            position = (await first.expect("n"))["position"]
        published = []
        for start in range(0, 200, 10):
            result = await call(server.trigger_batch, [
                {"channel": "feed", "name": "n", "data": str(i)}
                for i in range(start, start + 10)])
            published.extend(p["feed"] for p in result["positions"])
        async with raw_pusher(gw) as again:
            ok = await again.subscribe("feed", since=position)
            assert ok["event"] == "pusher_internal:subscription_succeeded"
            data = json.loads(ok["data"])
            assert data["recovered"] is True
            assert data["position"] == position  # where it stands before the replay
            replay = [await again.expect("n") for _ in range(200)]
            assert [f["data"] for f in replay] == [str(i) for i in range(200)]
            assert [f["position"] for f in replay] == published
            await call(server.trigger, "feed", "n", "live")
            live = await again.expect("n")
            assert live["data"] == "live"


async def test_history_gone_is_recovery_failed() -> None:
    async with running_gateway(pusher_settings(gateway={"history_size": 10})) as gw:
        server = sdk(gw)
        async with raw_pusher(gw) as first:
            await first.subscribe("feed")
            await call(server.trigger, "feed", "n", "0")
            position = (await first.expect("n"))["position"]
        for start in range(0, 30, 10):
            await call(server.trigger_batch, [{"channel": "feed", "name": "n", "data": str(i)}
                                              for i in range(start, start + 10)])
        async with raw_pusher(gw) as again:
            ok = await again.subscribe("feed", since=position)
            assert json.loads(ok["data"])["recovered"] is False
            failed = await again.expect("pusher:recovery_failed")
            assert failed["channel"] == "feed"
            assert "gone" in failed["data"]["message"]
            await call(server.trigger, "feed", "n", "live")
            assert (await again.expect("n"))["data"] == "live"
            bad = await again.subscribe("other", since="not a position")
            assert bad["event"] == "pusher:subscription_error"
            assert bad["data"]["type"] == "InvalidPosition"
            assert bad["data"]["status"] == 400


async def test_previous_socket_ids_keep_excluded_events_out_of_the_replay() -> None:
    async with running_gateway(pusher_settings()) as gw:
        server = sdk(gw)
        async with raw_pusher(gw) as first:
            ok = await first.subscribe("toothers")
            position = json.loads(ok["data"])["position"]
            old = first.socket_id
        await call(server.trigger, "toothers", "excluded-for-first", "a", old)
        await call(server.trigger, "toothers", "for-all", "b")
        # Without previous_socket_ids (pusher-js without the wrapper): as before.
        async with raw_pusher(gw) as plain:
            await plain.subscribe("toothers", since=position)
            assert [(await plain.expect("excluded-for-first"))["data"],
                    (await plain.expect("for-all"))["data"]] == ["a", "b"]
        async with raw_pusher(gw) as again:
            ok = await again.subscribe("toothers", since=position, previous_socket_ids=[old])
            assert json.loads(ok["data"])["recovered"] is True
            await call(server.trigger, "toothers", "excluded-for-first", "c", old)
            await call(server.trigger, "toothers", "last", "d")
            await again.expect("last")
            got = [f["event"] for f in again.frames if f.get("channel") == "toothers"
                   and not f["event"].startswith("pusher")]
            assert got == ["for-all", "last"]


async def test_a_cache_channel_whose_recovery_fails_still_gets_its_last_event() -> None:
    async with running_gateway(pusher_settings()) as gw:
        server = sdk(gw)
        result = await call(server.trigger, "cache-since", "state", "last")
        position = Position.parse(result["positions"]["cache-since"])
        wrong = str(Position(position.topic, position.partition, 0, "WRONG"))
        async with raw_pusher(gw) as late:
            ok = await late.subscribe("cache-since", since=wrong)
            assert json.loads(ok["data"])["recovered"] is False
            await late.expect("pusher:recovery_failed")
            got = await late.expect("state")
            assert (got["channel"], got["data"]) == ("cache-since", "last")
            # An empty cache channel: recovery_failed, then cache_miss.
            empty = await late.subscribe("cache-empty", since=wrong)
            assert json.loads(empty["data"])["recovered"] is False
            await late.expect("pusher:recovery_failed")
            miss = await late.expect("pusher:cache_miss")
            assert miss["channel"] == "cache-empty"
            # A recovery that works replays what was missed, not the cache on top.
            ok = await late.subscribe("cache-ok", since=ok_position(
                await call(server.trigger, "cache-ok", "state", "1"), "cache-ok"))
            assert json.loads(ok["data"])["recovered"] is True
            await call(server.trigger, "cache-ok", "state", "2")
            assert (await late.expect("state", where=lambda f: f["channel"] == "cache-ok")
                    )["data"] == "2"
            assert [f["data"] for f in late.frames if f.get("channel") == "cache-ok"
                    and f["event"] == "state"] == ["2"]


def ok_position(result: dict[str, Any], channel: str) -> str:
    """The position an event was stored at (``since`` for what comes after it)."""
    return str(result["positions"][channel])
