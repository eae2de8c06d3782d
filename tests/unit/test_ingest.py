"""What a stored record means as a message, whoever wrote it (channelcast.ingest)."""

from __future__ import annotations

import json

import pytest

from channelcast.ingest import DEFAULT_EVENT, Skipped, normalise_timestamp, to_record
from channelcast.message import Envelope, Record, encode
from channelcast.types import ChannelName

TS = 1_764_201_600_123  # the record's own timestamp (ms)


def _foreign(value: bytes, key: bytes | None = b"orders.1",
             headers: list[tuple[str, bytes | str | None]] | None = None,
             offset: int = 7) -> Record | Skipped:
    return to_record(value, key, headers, "orders", 2, offset, TS, "ep0ch")


def test_our_records_pass_through_as_bytes() -> None:
    env = Envelope(ChannelName("user.1"), "greet", {"text": "hi"})
    raw = encode(env)
    headers = [("channel", b"user.1"), ("event", b"greet"), ("id", env.id.encode())]
    record = to_record(raw, b"user.1", headers, "realtime", 3, 41, TS, "ep0ch")
    assert isinstance(record, Record)
    assert record.value is raw  # not decoded, not copied
    assert (record.channel, record.event, record.id) == ("user.1", "greet", env.id)
    assert str(record.position) == "realtime:3:41@ep0ch"
    assert record.envelope == env
    assert not record.internal
    internal = to_record(raw, b"user.1", [*headers, ("channelcast.internal", b"1")],
                         "realtime", 3, 42, TS)
    assert isinstance(internal, Record)
    assert internal.internal


def test_any_json_value_keyed_by_channel_is_a_message() -> None:
    record = _foreign(b'{"total":12.5}')
    assert isinstance(record, Record)
    env = record.envelope
    assert (env.channel, env.event, env.data, env.timestamp) == (
        "orders.1", DEFAULT_EVENT, {"total": 12.5}, TS)
    assert len(env.id) == 26
    # The id is derived from the record, so every reader (every gateway node) agrees.
    again = _foreign(b'{"total":12.5}')
    assert isinstance(again, Record)
    assert again.id == env.id
    other = _foreign(b'{"total":12.5}', offset=8)
    assert isinstance(other, Record)
    assert other.id != env.id
    assert json.loads(record.frame())["position"] == "orders:2:7@ep0ch"


def test_headers_give_channel_event_and_id() -> None:
    record = _foreign(b'"shipped"', key=b"user-42",
                      headers=[("channel", b"orders.9"), ("event", b"status"),
                               ("id", b"ext-1")])
    assert isinstance(record, Record)
    assert (record.channel, record.event, record.id, record.envelope.data) == (
        "orders.9", "status", "ext-1", "shipped")


@pytest.mark.parametrize(("stamp", "ms"), [
    (1764201600.25, 1764201600250),  # PHP microtime(true)
    (1764201600, 1764201600000),     # seconds
    (1764201600123, 1764201600123),  # already milliseconds
    ("yesterday", TS), (None, TS), (True, TS), (-5, TS), (float("nan"), TS),
])
def test_original_envelopes_are_normalised(stamp: object, ms: int) -> None:
    value = json.dumps({"id": "php-1", "type": "message", "channel": "orders.1",
                        "event": "created", "data": {"n": 1}, "timestamp": stamp})
    if isinstance(stamp, float) and stamp != stamp:
        value = value.replace("NaN", "1e999")  # NaN itself is not JSON: overflow instead
        ms = TS
    record = _foreign(value.encode())
    if isinstance(record, Skipped):  # 1e999 is infinity: refused as not JSON
        assert "infinity" in record.reason.lower() or "JSON" in record.reason
        return
    assert (record.id, record.event, record.envelope.data, record.envelope.timestamp) == (
        "php-1", "created", {"n": 1}, ms)


def test_an_envelope_names_its_own_channel_when_there_is_no_header() -> None:
    raw = b'{"channel":"room.a","event":"e","data":1}'
    for key in (b"room.b", None):
        record = _foreign(raw, key=key)
        assert isinstance(record, Record)
        assert record.channel == "room.a"


@pytest.mark.parametrize(("value", "key", "reason"), [
    (b"\x89PNG\r\n\x1a\n", b"orders.1", "not UTF-8 JSON: byte 0x89 at position 0"),
    (b'{"x":NaN}', b"orders.1", "NaN is not valid JSON"),
    (b'{"name":"\\ud800"}', b"orders.1", "lone surrogate"),
    (b'{"n":1' + b"0" * 400 + b'}', b"orders.1", "a number is beyond a double's range"),
    (b'[-1e400]', b"orders.1", "not JSON"),
    (b'{"a":1} trailing', b"orders.1", "not JSON"),
    (b'{"a":1}', b"not a channel!", "no channel"),
    (b'{"a":1}', None, "no channel"),
    (b'{"channel":"c","event":"channelcast:presence","data":1}', None, "reserved"),
])
def test_what_cannot_be_a_message_is_skipped_with_a_reason(
        value: bytes, key: bytes | None, reason: str) -> None:
    skipped = _foreign(value, key=key)
    assert isinstance(skipped, Skipped)
    assert reason in skipped.reason


def test_normalise_timestamp_bounds() -> None:
    assert normalise_timestamp(99_999_999_999, 1) == 99_999_999_999_000
    assert normalise_timestamp(100_000_000_000, 1) == 100_000_000_000


@pytest.mark.parametrize(("stamp", "ms"), [
    (1764201600123456, 1764201600123),        # microseconds
    (1764201600123456789, 1764201600123),     # nanoseconds
    (1e300, TS), (10**25, TS),                # absurd: the record's own
])
def test_timestamps_in_other_units_are_scaled_and_absurd_ones_replaced(
        stamp: object, ms: int) -> None:
    assert normalise_timestamp(stamp, TS) == ms


@pytest.mark.parametrize("mid", ["bad id with spaces", "x" * 65, 12345, ""])
def test_a_foreign_id_publish_would_refuse_is_replaced_by_a_derived_one(mid: object) -> None:
    value = json.dumps({"id": mid, "channel": "orders.1", "event": "e", "data": 1})
    record = _foreign(value.encode())
    assert isinstance(record, Record)
    assert len(record.id) == 26
    assert record.id != mid
    if isinstance(mid, str):  # the same id in an `id` header
        header = _foreign(b"1", headers=[("id", mid.encode())])
        assert isinstance(header, Record)
        assert len(header.id) == 26


def test_the_internal_header_is_reserved_for_channelcasts_own_records() -> None:
    skipped = _foreign(b'{"op":"join"}', headers=[("channelcast.internal", b"1")])
    assert isinstance(skipped, Skipped)
    assert "reserved" in skipped.reason
