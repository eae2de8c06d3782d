"""Property-based fuzz: >= 10,000 client frames through the real session, protocol, hub and
memory broker. The server never crashes and never delivers to an unauthorized subscriber."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channelcast.brokers.memory import MemoryBroker
from channelcast.gateway.auth import channel_auth
from channelcast.gateway.hub import Hub
from channelcast.gateway.protocol import ClientProtocol, Credentials
from channelcast.gateway.session import Outgoing, Session
from tests.gateway.conftest import running_gateway, settings_with, ws_client

KEY, SECRET = "fuzz-key", "fuzz-secret"
CONN = "node.1"
# The fuzzer may be given valid signatures only for these two; never for the secret ones.
GRANTED = {"private-ok": channel_auth(KEY, SECRET, CONN, "private-ok"),
           "presence-ok": channel_auth(KEY, SECRET, CONN, "presence-ok", user_id="fuzzer")}
FORBIDDEN = ("private-secret", "presence-secret")
STOLEN = channel_auth(KEY, SECRET, "node.2", "private-secret")  # someone else's
PUBLIC = ("pub", "pub.x")
ALL_TARGETS = (*PUBLIC, *GRANTED, *FORBIDDEN)


class RecordingTransport:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send(self, item: Outgoing) -> None:
        self.frames.append(json.loads(item.text))

    async def close(self, code: int, reason: str) -> None:
        pass


channels = st.one_of(
    st.sampled_from(ALL_TARGETS),
    st.text(max_size=20),
    st.sampled_from(["", ".x", "x.", "private-", "a" * 200, "bad name", "pub\n"]),
    st.integers(), st.none(), st.lists(st.integers(), max_size=2),
)
auths = st.one_of(
    st.none(), st.text(max_size=30), st.integers(),
    st.sampled_from([GRANTED["private-ok"]["auth"], GRANTED["presence-ok"]["auth"],
                     STOLEN["auth"], f"{KEY}:", f"{KEY}:00", ":", "x:y:z"]),
)
channel_datas = st.one_of(
    st.none(), st.text(max_size=30), st.integers(),
    st.sampled_from([GRANTED["presence-ok"]["channel_data"], '{"user_id": "root"}', "{}",
                     "[]", "null"]),
)
positions = st.one_of(st.none(), st.text(max_size=20), st.integers(),
                      st.sampled_from(["realtime:0:0", "realtime:1:-1", "other:0:5",
                                       "realtime:9:999999", "a:b:c", "realtime:-1:0"]))
json_frames = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping"]),
                       st.text(max_size=10), st.integers(), st.none())},
    optional={"channel": channels, "auth": auths, "channel_data": channel_datas,
              "since": positions, "data": st.recursive(
                  st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                  lambda c: st.lists(c, max_size=3) | st.dictionaries(
                      st.text(max_size=5), c, max_size=3), max_leaves=8)},
).map(json.dumps)
# Plausible subscribe/unsubscribe frames, so the signature checks are hit often.
targeted = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "subscribe", "unsubscribe"]),
     "channel": st.one_of(st.sampled_from(ALL_TARGETS), channels)},
    optional={"auth": auths, "channel_data": channel_datas, "since": positions},
).map(json.dumps)
# Valid subscriptions (so authorized delivery is exercised) and near-misses.
known = st.sampled_from([
    json.dumps({"type": "subscribe", "channel": "private-ok", **GRANTED["private-ok"]}),
    json.dumps({"type": "subscribe", "channel": "presence-ok", **GRANTED["presence-ok"]}),
    json.dumps({"type": "subscribe", "channel": "private-secret", **STOLEN}),
    json.dumps({"type": "subscribe", "channel": "private-secret", **GRANTED["private-ok"]}),
    json.dumps({"type": "subscribe", "channel": "presence-secret", **GRANTED["presence-ok"]}),
    json.dumps({"type": "subscribe", "channel": "presence-ok",
                "auth": GRANTED["presence-ok"]["auth"], "channel_data": '{"user_id":"root"}'}),
    json.dumps({"type": "unsubscribe", "channel": "private-ok"}),
    json.dumps({"type": "unsubscribe", "channel": "presence-ok"}),
])
frames = st.one_of(
    known, targeted, targeted, json_frames,
    st.text(max_size=60),
    st.binary(max_size=60),
    st.sampled_from(["{", "[]", "null", "1e999", '"\\ud800"', "{}" * 3, "[" * 2000,
                     json.dumps({"type": "ping", "data": "x" * 3000})]),
)

FRAMES_SEEN = [0]
AUTHORIZED_DELIVERIES = [0]


async def run_session(batch: list[str | bytes]) -> None:
    async with MemoryBroker(history_size=50) as broker, Hub(broker, presence_ttl_s=5) as hub:
        transport = RecordingTransport()
        protocol = ClientProtocol(CONN, Credentials(KEY, SECRET), max_subscriptions=4,
                                  max_frame_bytes=2048)
        session = Session(hub, protocol, transport, send_queue=64)
        session.start()
        valid_subscriptions: set[str] = set()
        for i, frame in enumerate(batch):
            before = set(session.attached_channels)
            await session.handle(frame)  # must never raise
            valid_subscriptions |= session.attached_channels - before
            FRAMES_SEEN[0] += 1
            if i % 5 == 0:
                for channel in ALL_TARGETS:
                    await broker.publish(channel, "tick", i)
        for _ in range(20):
            await asyncio.sleep(0)
        await session.aclose()
        # Everything the client got is a well-formed frame; messages only where authorized.
        for frame in transport.frames:
            assert isinstance(frame.get("type"), str)
            if frame["type"] == "message":
                assert frame["channel"] not in FORBIDDEN
                assert frame["channel"] in valid_subscriptions
                if frame["channel"] in GRANTED:
                    AUTHORIZED_DELIVERIES[0] += 1
            if frame["type"] == "subscribed":
                assert frame["channel"] not in FORBIDDEN
        assert not (valid_subscriptions & set(FORBIDDEN))


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(frames, min_size=25, max_size=30))
def fuzz(batch: list[str | bytes]) -> None:
    asyncio.run(run_session(batch))


def test_fuzz_ten_thousand_frames_never_crash_or_leak() -> None:
    FRAMES_SEEN[0] = 0
    AUTHORIZED_DELIVERIES[0] = 0
    fuzz()
    assert FRAMES_SEEN[0] >= 10_000
    assert AUTHORIZED_DELIVERIES[0] > 0  # the fuzz did reach authorized private delivery


COLLECTED: list[str | bytes] = []


@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(frames, min_size=25, max_size=25))
def collect(batch: list[str | bytes]) -> None:
    COLLECTED.extend(batch)


@pytest.mark.timeout(120)
async def test_fuzzed_frames_over_a_real_socket_leave_the_server_up() -> None:
    """2,000 of the same frames over one real WebSocket: the connection and the server
    survive, and a second client is served normally afterwards."""
    COLLECTED.clear()
    collect()
    assert len(COLLECTED) >= 2000
    async with running_gateway(settings_with(app_key=KEY, app_secret=SECRET,
                                             max_frame_bytes=2048)) as gw:
        async with ws_client(gw.ws_url) as client:
            for frame in COLLECTED:
                await client.ws.send(frame)
            await client.send({"type": "ping", "data": "still here"})
            pong = await client.expect("pong", wait_s=60,
                                       where=lambda f: f.get("data") == "still here")
            assert pong == {"type": "pong", "data": "still here"}
            assert client.ws.close_code is None
        async with ws_client(gw.ws_url) as other:
            assert (await other.subscribe("after"))["type"] == "subscribed"
