"""Finding 3: Server-Sent Events ids on a stream of several channels (in-process uvicorn,
memory broker). Every id is in the combined ``channel:position`` form, never goes
backwards, and resumes; an id the gateway cannot use starts a live stream that says so
instead of a 400 (which makes a browser's EventSource stop for good)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from channelcast.gateway.sse import parse_cursor
from channelcast.types import ChannelName, Position
from tests.gateway.conftest import Running, running_gateway, signed_post_args

pytestmark = pytest.mark.timeout(120)

Event = dict[str, str]


async def sse_events(http: httpx.AsyncClient, channels: list[str], last_id: str | None,
                     done: Callable[[list[Event]], bool], wait_s: float = 5.0) -> list[Event]:
    """The stream's events (``id``, ``event``, ``data``) until ``done`` says so."""
    headers = {} if last_id is None else {"Last-Event-ID": last_id}
    events: list[Event] = []
    async with http.stream("GET", "/sse", params={"channels": ",".join(channels)},
                           headers=headers) as resp:
        assert resp.status_code == 200, await resp.aread()
        current: Event = {}
        async with asyncio.timeout(wait_s):
            async for line in resp.aiter_lines():
                if line == "":
                    if current:
                        events.append(current)
                        current = {}
                        if done(events):
                            return events
                    continue
                key, _, value = line.partition(": ")
                current[key] = value
    return events


def count(kind: str, n: int) -> Callable[[list[Event]], bool]:
    return lambda events: sum(e.get("event") == kind for e in events) >= n


def check_ids(events: list[Event], channels: list[str]) -> list[str]:
    """Every id is the combined form, readable for these channels, and never goes back."""
    ids = [e["id"] for e in events if "id" in e]
    seen: dict[ChannelName, Position] = {}
    for event_id in ids:
        entries = event_id.split()
        assert all(e.split(":", 1)[0] in channels for e in entries), event_id
        for channel, pos in parse_cursor(event_id, [ChannelName(c) for c in channels]).items():
            before = seen.get(channel)
            if before is not None and (before.topic, before.partition) == (
                    pos.topic, pos.partition):
                assert pos.offset >= before.offset, f"{event_id} went back from {before}"
            seen[channel] = pos
    return ids


async def publish(gw: Running, http: httpx.AsyncClient, channel: str,
                  values: list[int]) -> list[str]:
    body = {"messages": [{"channel": channel, "event": "e", "data": v} for v in values]}
    r = await http.post("/api/publish", **signed_post_args(gw.settings(), body))
    positions: list[str] = r.json()["positions"]
    return positions


async def test_every_id_of_a_multi_channel_stream_is_combined_resumable_and_monotonic(
        ) -> None:
    a, b = "cur.a", "cur.b"
    channels = [a, b]
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        await publish(gw, http, a, [0])  # history before the stream
        published: dict[str, list[tuple[Position, int]]] = {a: [], b: []}
        first = asyncio.create_task(sse_events(http, channels, None, count("message", 4)))
        await asyncio.sleep(0.3)  # subscribed
        for channel, value in ((a, 1), (b, 2), (a, 3), (a, 4)):
            [pos] = await publish(gw, http, channel, [value])
            published[channel].append((Position.parse(pos), value))
        events = await first
        assert events[0]["event"] == "connected"
        assert events[1]["event"] == "subscribed"
        assert events[1]["id"].startswith(f"{a}:")
        ids = check_ids(events, channels)
        assert all(" " in i for i in ids[2:]), ids  # both channels named once known
        for channel, value in ((a, 5), (b, 6)):  # while disconnected
            [pos] = await publish(gw, http, channel, [value])
            published[channel].append((Position.parse(pos), value))

        for event_id in ids:  # each one resumes, with exactly what came after it
            since = parse_cursor(event_id, [ChannelName(c) for c in channels])
            want = {c: [v for p, v in published[c] if c in since and p.offset > since[c].offset]
                    for c in channels}
            total = sum(len(v) for v in want.values())
            resumed = await sse_events(http, channels, event_id,
                                       lambda e, n=total: count("message", n)(e)
                                       and count("subscribed", 2)(e))
            got: dict[str, list[Any]] = {a: [], b: []}
            for event in resumed:
                assert event["event"] != "error", (event_id, event)
                if event["event"] == "message":
                    message = json.loads(event["data"])
                    got[message["channel"]].append(message["data"])
            assert got == want, event_id
            check_ids(resumed, channels)
            assert resumed[1]["id"].startswith(f"{a}:")


@pytest.mark.parametrize("last_id", [
    "realtime:0:3",  # a bare position: one channel's, but which?
    "garbage",
    "cur.a:not-a-position",
    "cur.a:realtime:0:1 no-colon-here",
])
async def test_an_id_that_cannot_be_used_starts_live_and_says_so(last_id: str) -> None:
    channels = ["cur.a", "cur.b"]
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        await publish(gw, http, "cur.a", [1, 2])
        events = await sse_events(http, channels, last_id, count("error", 2))
        kinds = [(e["event"], json.loads(e["data"]).get("channel")) for e in events[1:]]
        assert kinds == [("subscribed", "cur.a"), ("error", "cur.a"),
                         ("subscribed", "cur.b"), ("error", "cur.b")]
        for event in events:
            if event["event"] == "error":
                data = json.loads(event["data"])["data"]
                assert data["code"] == "recovery_failed"
                assert "Last-Event-ID cannot be used" in data["message"]
        check_ids(events, channels)


async def test_entries_for_other_channels_are_ignored_and_unnamed_channels_start_live(
        ) -> None:
    async with running_gateway() as gw, httpx.AsyncClient(base_url=gw.base_url) as http:
        [first, second] = await publish(gw, http, "cur.a", [1, 2])
        last_id = f"cur.a:{first} gone.c:{first}"
        events = await sse_events(http, ["cur.a", "cur.b"], last_id,
                                  lambda e: count("message", 1)(e) and count("subscribed", 2)(e))
        assert not [e for e in events if e["event"] == "error"], events
        [message] = [json.loads(e["data"]) for e in events if e["event"] == "message"]
        assert message["position"] == second
