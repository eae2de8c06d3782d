"""The pure parts of the gateway: signatures, presence state, protocol actions, send buffer."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channelcast.errors import AuthError
from channelcast.gateway.auth import (
    RequestVerifier,
    SignedRequest,
    channel_auth,
    sign_channel,
    sign_request,
    verify_channel,
)
from channelcast.gateway.presence import Member, PresenceState, heartbeat_op, join_op, sync_op
from channelcast.gateway.protocol import ClientProtocol, Credentials, Send, Subscribe, Unsubscribe
from channelcast.gateway.session import DISCONNECT, DROP_OLDEST, Outbox, Outgoing
from channelcast.message import Envelope, Record
from channelcast.types import ChannelName, Position

K, S = "key", "secret"


def test_channel_signature_is_bound_to_connection_channel_and_member() -> None:
    auth = sign_channel(K, S, "n.1", "private-a")
    verify_channel(K, S, "n.1", "private-a", auth)
    with pytest.raises(AuthError):
        verify_channel(K, S, "n.2", "private-a", auth)  # another connection
    with pytest.raises(AuthError):
        verify_channel(K, S, "n.1", "private-b", auth)  # another channel
    with pytest.raises(AuthError, match="unknown app key"):
        verify_channel(K, S, "n.1", "private-a", sign_channel("other", S, "n.1", "private-a"))
    with pytest.raises(AuthError, match="invalid signature"):
        verify_channel(K, S, "n.1", "private-a", sign_channel(K, "other", "n.1", "private-a"))
    signed = channel_auth(K, S, "n.1", "presence-r", user_id="ann", user_info={"x": 1})
    verify_channel(K, S, "n.1", "presence-r", signed["auth"], signed["channel_data"])
    with pytest.raises(AuthError):
        verify_channel(K, S, "n.1", "presence-r", signed["auth"], '{"user_id":"eve"}')
    with pytest.raises(AuthError, match="needs an auth"):
        verify_channel(K, S, "n.1", "private-a", None)
    with pytest.raises(AuthError):
        channel_auth(K, S, "n.1", "presence-r")  # presence needs a user


def test_the_timestamp_is_signed_as_sent() -> None:
    """tgw3 finding 7: "01796008248", signed as sent, was refused; signed without the
    zero, accepted. The signature covers the header's text, as docs/protocol.md says."""
    v = RequestVerifier(K, S, window_s=60)
    body = b'{"a":1}'
    sent = {"X-Channelcast-Key": K, "X-Channelcast-Timestamp": "01000",
            "X-Channelcast-Signature": hmac.new(S.encode(), b"01000." + body,
                                                hashlib.sha256).hexdigest()}
    assert v.verify(sent, body, now=1000).timestamp == 1000
    unpadded = sign_request(K, S, body, timestamp=1000)
    with pytest.raises(AuthError, match="invalid request signature"):
        v.verify({**unpadded, "X-Channelcast-Timestamp": "01000"}, body, now=1000)


def test_the_signature_may_be_upper_case_hex() -> None:
    """tgw4 finding 6: the docs say hex; upper-case hex was refused."""
    v = RequestVerifier(K, S, window_s=60)
    headers = sign_request(K, S, b"{}", timestamp=1000)
    upper = {**headers, "X-Channelcast-Signature": headers["X-Channelcast-Signature"].upper()}
    assert v.verify(upper, b"{}", now=1000) == v.verify(headers, b"{}", now=1000)
    with pytest.raises(AuthError, match="invalid request signature"):
        v.verify({**headers, "X-Channelcast-Signature": "\u00e9" * 64}, b"{}", now=1000)


def test_a_pusher_apps_key_on_the_publish_api_is_told_where_it_belongs() -> None:
    v = RequestVerifier(K, S, window_s=60)
    with pytest.raises(AuthError, match=r"unknown app key: .*gateway\.app_key.*Pusher HTTP"):
        v.verify(sign_request("shop-key", S, b"{}", timestamp=1000), b"{}", now=1000)


async def test_request_verifier_window_and_idempotent_repeat() -> None:
    v = RequestVerifier(K, S, window_s=60)
    body = b'{"a":1}'
    headers = sign_request(K, S, body, timestamp=1000)
    first = v.verify(headers, body, now=1030)
    assert first == SignedRequest(1000, headers["X-Channelcast-Signature"])
    # The same signed request again is not refused: it is the same request.
    assert v.verify(headers, body, now=1031) == first
    with pytest.raises(AuthError, match="window"):
        v.verify(sign_request(K, S, body, timestamp=1000), body, now=1100)
    with pytest.raises(AuthError, match="signature"):
        v.verify(sign_request(K, S, body, timestamp=1040), body + b" ", now=1040)
    with pytest.raises(AuthError, match="missing"):
        v.verify({}, body, now=1040)
    # Answers are forgotten once their request leaves the window: memory stays bounded.
    for t in range(2000, 2100):
        signed = v.verify(sign_request(K, S, body, timestamp=t), body, now=t)
        assert await v.once(signed, _answer(b"ok"), now=t) == b"ok"
    assert len(v.answers) <= 61


def _answer(value: bytes) -> Callable[[], Awaitable[bytes]]:
    async def run() -> bytes:
        return value

    return run


def test_presence_members_are_distinct_users_and_heartbeats_replace() -> None:
    p = PresenceState("me", ttl_s=10)
    d = p.join("me", "c1", Member("ann"), now=0)
    assert [m.user_id for m in d.added] == ["ann"]
    assert not p.join("me", "c2", Member("ann"), now=0)  # a second tab: no change
    d = p.heartbeat("other", {"x1": Member("bob"), "x2": Member("ann")}, now=1)
    assert [m.user_id for m in d.added] == ["bob"]
    d = p.heartbeat("other", {"x2": Member("ann")}, now=2)  # bob left other, silently
    assert [m.user_id for m in d.removed] == ["bob"]
    assert not p.leave("me", "c1", now=3)  # ann still has c2 and x2
    assert not p.expire(now=11)  # other was seen at 2
    d = p.expire(now=12.5)
    assert d.removed == []  # ann is still local on c2
    assert p.nodes() == {"me"}
    assert [m.user_id for m in p.leave("me", "c2", now=13).removed] == ["ann"]
    assert not p.expire(now=1e9)  # the local node never expires


def test_presence_apply_ignores_garbage_and_answers_sync() -> None:
    p = PresenceState("me", ttl_s=10)
    for op in [None, 1, [], {"op": "join"}, {"op": "join", "node": "n", "conn": "c"},
               {"op": "join", "node": "n", "conn": "c", "member": {"user_id": ""}},
               {"op": "heartbeat", "node": "n", "members": [1]}, {"op": "zap", "node": "n"}]:
        diff, sync = p.apply(op, now=0)
        assert not diff
        assert not sync
    assert p.apply(sync_op("other"), now=0)[1] is True
    assert p.apply(sync_op("me"), now=0)[1] is False
    diff, _ = p.apply(join_op("n", "c", Member("zed", {"a": 1})), now=0)
    assert diff.added == [Member("zed", {"a": 1})]
    diff, _ = p.apply(heartbeat_op("n", {}), now=1)
    assert diff.removed == [Member("zed", {"a": 1})]


def test_protocol_turns_frames_into_actions() -> None:
    proto = ClientProtocol("n.1", Credentials(K, S), max_subscriptions=2)
    assert proto.receive('{"type":"subscribe","channel":"a","since":"t:1:5"}') == [
        Subscribe(ChannelName("a"), Position("t", 1, 5), None)]
    signed = channel_auth(K, S, "n.1", "presence-p", user_id="u1", user_info=[1])
    actions = proto.receive(json.dumps({"type": "subscribe", "channel": "presence-p", **signed}))
    assert actions == [Subscribe(ChannelName("presence-p"), None, Member("u1", [1]))]
    actions = proto.receive('{"type":"unsubscribe","channel":"a"}')
    assert actions[0] == Unsubscribe(ChannelName("a"))
    assert isinstance(actions[1], Send)
    assert actions[1].frame == {"type": "unsubscribed", "channel": "a"}
    assert proto.channels == {"presence-p"}


def _msg(i: int) -> Outgoing:
    record = Record(Envelope(channel=ChannelName("c"), event="e", data=i), Position("t", 0, i))
    return Outgoing(str(i), record=record)


async def test_outbox_drop_oldest_keeps_control_frames_and_reports_drops() -> None:
    box = Outbox(3, DROP_OLDEST)
    box.put(Outgoing("control", frame={"type": "subscribed"}))
    for i in range(6):
        assert box.put(_msg(i))
    got = [await box.get() for _ in range(5)]
    texts = [g.text if g is not None else None for g in got]
    assert texts[0].startswith('{"type":"dropped"')  # type: ignore[union-attr]
    assert '"count":3' in texts[0]  # type: ignore[operator]
    assert texts[1:] == ["control", "3", "4", "5"]


async def test_outbox_disconnect_policy_reports_overflow_and_replay_is_unbounded() -> None:
    box = Outbox(2, DISCONNECT)
    for i in range(50):
        assert box.put(Outgoing(str(i), record=_msg(i).record, replay=True))
    assert box.put(_msg(100))
    assert box.put(_msg(101))
    assert not box.put(_msg(102))
    assert len(box) == 52


def test_large_heartbeats_go_in_parts_and_apply_once_complete() -> None:
    from channelcast.gateway.presence import heartbeat_ops

    conns = {f"c{i}": Member(f"user{i}", {"name": "x" * 50}) for i in range(1234)}
    ops = heartbeat_ops("big", conns, per_part=500)
    assert [len(op["members"]) for op in ops] == [500, 500, 234]
    assert len({op["beat"] for op in ops}) == 1
    assert all(len(json.dumps(op)) < 100_000 for op in ops)
    p = PresenceState("me", ttl_s=10)
    assert not p.apply(ops[0], now=1)[0]  # incomplete: nothing yet...
    assert not p.expire(now=10.5)  # ...but the node is alive
    assert not p.apply(ops[1], now=2)[0]
    diff, _ = p.apply(ops[2], now=3)
    assert len(diff.added) == 1234
    # A newer beat without some connections replaces the old snapshot when complete.
    del conns["c0"], conns["c1"]
    newer = heartbeat_ops("big", conns, per_part=500)
    for op in newer[:-1]:
        assert not p.apply(op, now=4)[0]
    diff, _ = p.apply(newer[-1], now=5)
    assert sorted(m.user_id for m in diff.removed) == ["user0", "user1"]
    # Parts of an abandoned beat are dropped when a new beat starts.
    third = heartbeat_ops("big", conns, per_part=500)
    p.apply(third[0], now=6)
    fourth = heartbeat_ops("big", {"only": Member("solo")}, per_part=500)
    diff, _ = p.apply(fourth[0], now=7)
    assert [m.user_id for m in p.members()] == ["solo"]


@settings(max_examples=2000, deadline=None, database=None)
@given(st.text(max_size=80))
def test_sse_cursor_parsing_fails_only_with_position_or_channel_errors(text: str) -> None:
    from channelcast.errors import InvalidChannel, InvalidPosition
    from channelcast.gateway.sse import format_cursor, parse_cursor

    channels = [ChannelName("a"), ChannelName("b")]
    try:
        parsed = parse_cursor(text, channels)
    except (InvalidPosition, InvalidChannel):
        return
    if parsed and len(parsed) > 1:
        assert parse_cursor(format_cursor(parsed), channels) == parsed


def test_sse_cursor_round_trip() -> None:
    from channelcast.gateway.sse import format_cursor, parse_cursor

    one = {ChannelName("a"): Position("t", 1, 5)}
    assert format_cursor(one) == "t:1:5"
    assert parse_cursor("t:1:5", [ChannelName("a")]) == one
    two = {ChannelName("a"): Position("t", 1, 5), ChannelName("b"): Position("t", 2, -1)}
    assert parse_cursor(format_cursor(two), [ChannelName("a"), ChannelName("b")]) == two
