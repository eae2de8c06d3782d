"""Recovery through the Pusher protocol, frame by frame: ``since`` in ``pusher:subscribe``
replays exactly what was missed, in order, then goes live; when the history is gone the
client is told (``recovered: false`` and ``pusher:recovery_failed``)."""

from __future__ import annotations

import json

import pytest

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
