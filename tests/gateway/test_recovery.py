"""Acceptance: a client reconnects with its positions and gets exactly what it missed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.gateway.conftest import (
    Client,
    running_gateway,
    settings_with,
    signed_post_args,
    ws_client,
)

pytestmark = pytest.mark.timeout(90)


async def publish_batch(http: httpx.AsyncClient, settings: Any, channel: str,
                        values: list[int]) -> list[str]:
    body = {"messages": [{"channel": channel, "event": "n", "data": v} for v in values]}
    r = await http.post("/api/publish", **signed_post_args(settings, body))
    assert r.status_code == 200, r.text
    positions: list[str] = r.json()["positions"]
    return positions


async def drain_until_pong(client: Client) -> list[dict[str, Any]]:
    """Every frame before the pong: proves nothing more was queued."""
    await client.send({"type": "ping", "data": "end"})
    frames = []
    while True:
        frame = await client.recv()
        if frame["type"] == "pong":
            return frames
        frames.append(frame)


async def test_reconnect_receives_exactly_the_missed_500_in_order() -> None:
    # A second client (the bystander) keeps the channel's feed busy, as on a real node.
    async with running_gateway(settings_with(history_size=10_000)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http, \
            ws_client(gw.ws_url) as bystander:
        await bystander.subscribe("rec")
        async with ws_client(gw.ws_url) as client:
            reply = await client.subscribe("rec")
            last = reply["data"]["position"]
            await publish_batch(http, gw.settings(), "rec", [-2, -1])
            for _ in range(2):
                last = (await client.expect("message"))["position"]
        missed = await publish_batch(http, gw.settings(), "rec", list(range(500)))
        await publish_batch(http, gw.settings(), "other", list(range(50)))  # noise
        async with ws_client(gw.ws_url) as client:
            reply = await client.subscribe("rec", since=last)
            assert reply["type"] == "subscribed"
            assert reply["data"]["recovered"] is True
            frames = await drain_until_pong(client)
            messages = [f for f in frames if f["type"] == "message"]
            assert [m["data"] for m in messages] == list(range(500))
            assert [m["position"] for m in messages] == missed
            # Where the client stands before the replay (the replay follows the reply): a
            # client that drops mid-replay and resubscribes from it misses nothing.
            assert reply["data"]["position"] == last
            assert [f for f in frames if f["type"] != "message"] == []
            # And it is live again afterwards.
            await publish_batch(http, gw.settings(), "rec", [500])
            assert (await client.expect("message"))["data"] == 500
        # The bystander saw everything live, in order.
        seen = [f["data"] for f in await drain_until_pong(bystander)
                if f["type"] == "message"]
        assert seen == [-2, -1, *range(501)]


async def test_reconnect_after_history_is_gone_is_told_recovery_failed() -> None:
    async with running_gateway(settings_with(history_size=100)) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        async with ws_client(gw.ws_url) as client:
            await client.subscribe("short")
            await publish_batch(http, gw.settings(), "short", [0])
            last = (await client.expect("message"))["position"]
        await publish_batch(http, gw.settings(), "short", list(range(1, 501)))
        async with ws_client(gw.ws_url) as client:
            reply = await client.subscribe("short", since=last)
            assert reply["type"] == "subscribed"
            assert reply["data"]["recovered"] is False
            error = await client.recv()
            assert error["type"] == "error"
            assert error["data"]["code"] == "recovery_failed"
            assert error["channel"] == "short"
            # Nothing of the partial history is passed off as a recovery.
            assert [f for f in await drain_until_pong(client) if f["type"] == "message"] == []


async def test_recovery_after_a_gateway_restart_fails_instead_of_replaying_a_gap() -> None:
    # Issue 12 case 3 on the memory broker: a restarted gateway is a new log. A position
    # from the old run must give recovered: false and recovery_failed, never a replay of
    # whatever the new run stored at those offsets.
    settings = settings_with()
    async with running_gateway(settings) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http, ws_client(gw.ws_url) as client:
        await client.subscribe("news.r")
        await publish_batch(http, settings, "news.r", [1, 2, 3, 4, 5])
        frames = [await client.expect("message") for _ in range(5)]
    kept = frames[3]["position"]
    assert "@" in kept  # it carries the run's epoch
    async with running_gateway(settings) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        await publish_batch(http, settings, "news.r", list(range(8)))
        async with ws_client(gw.ws_url) as client:
            reply = await client.subscribe("news.r", since=kept)
            assert reply["data"]["recovered"] is False
            error = await client.expect("error")
            assert error["data"]["code"] == "recovery_failed"
            assert "another run" in error["data"]["message"]
            assert [f for f in await drain_until_pong(client) if f["type"] == "message"] == []
            # A position of this run still recovers.
            await publish_batch(http, settings, "news.r", [99])
            frame = await client.expect("message")
            assert frame["data"] == 99
