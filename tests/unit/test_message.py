"""Envelope encoding, ULID ids and positions: pure functions, strict on bad input."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from channelcast.errors import (
    InvalidChannel,
    InvalidPosition,
    MalformedMessage,
    MessageError,
    MessageTooLarge,
    SerializationError,
)
from channelcast.message import (
    INTERNAL,
    MAX_EVENT_NAME,
    RESERVED_EVENT_PREFIX,
    Envelope,
    Record,
    decode,
    encode,
    new_id,
    validate_event,
)
from channelcast.types import ChannelName, Position
from tests.conftest import has_float

ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def envelope(**fields: object) -> Envelope:
    base: dict[str, object] = {"channel": ChannelName("user.1"), "event": "greet",
                               "data": {"hello": "world"}}
    base.update(fields)
    return Envelope(**base)  # type: ignore[arg-type]


# --- encode / decode --------------------------------------------------------------------


@settings(deadline=None)
@given(data=json_values, event=st.text(min_size=1, max_size=30))
def test_decode_inverts_encode(data: object, event: str) -> None:
    env = envelope(data=data, event=event)
    assert decode(encode(env)) == env


def test_encoding_is_the_originals_compact_json_shape() -> None:
    env = envelope(id="01ARZ3NDEKTSV4RRFFQ69G5FAV", timestamp=1700000000000,
                   data={"text": "caf\u00e9"})
    raw = encode(env)
    assert json.loads(raw) == {"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "type": "message",
                               "channel": "user.1", "event": "greet",
                               "data": {"text": "caf\u00e9"}, "timestamp": 1700000000000}
    assert b" " not in raw
    assert "caf\u00e9".encode() in raw  # UTF-8, not \\u escapes


@pytest.mark.parametrize("data", [{1, 2}, object(), float("nan"), float("inf"), b"bytes",
                                  "\ud800"])
def test_unserializable_data_raises_serialization_error(data: object) -> None:
    with pytest.raises(SerializationError, match=r"user\.1"):
        encode(envelope(data=data))


@pytest.mark.parametrize("data", [10**400, -(10**309), {"n": [1, 2 * 10**308]}],
                         ids=["401-digits", "minus-310-digits", "nested-2e308"])
def test_an_integer_a_browser_would_read_as_infinity_is_refused(data: object) -> None:
    with pytest.raises(SerializationError, match=r"user\.1.*too large for a double"):
        encode(envelope(data=data))


@pytest.mark.parametrize("data", [{1: "int", "1": "str"}, {"a": [{True: 1, "true": 2}]},
                                  {None: 1, "null": 2}, {1.5: 0, "1.5": 1}],
                         ids=["int-and-str", "nested-bool", "none", "float"])
def test_keys_json_would_write_alike_are_refused(data: object) -> None:
    """tkafka3 finding 11: {1: "int", "1": "str"} was stored as {"1":"int","1":"str"}."""
    with pytest.raises(SerializationError, match=r"user\.1.*keys that JSON writes alike"):
        encode(envelope(data=data))


def test_non_str_keys_that_stay_distinct_still_encode_as_json_dumps_does() -> None:
    assert json.loads(encode(envelope(data={1: "a", 2: "b", "3": "c"})))["data"] == {
        "1": "a", "2": "b", "3": "c"}


@pytest.mark.parametrize("data", [2**64, 10**308, "9" * 400, {"x": "1" * 500}],
                         ids=["2**64", "1e308", "digit-string", "nested-digit-string"])
def test_big_integers_a_double_can_hold_and_long_digit_strings_still_encode(
        data: object) -> None:
    assert decode(encode(envelope(data=data))).data == data


def test_deeply_nested_data_raises_serialization_error() -> None:
    data: list[object] = []
    for _ in range(100_000):
        data = [data]
    with pytest.raises(SerializationError):
        encode(envelope(data=data))


def test_message_over_the_limit_raises_and_names_the_size() -> None:
    env = envelope(data="x" * 2000)
    assert len(encode(env, max_bytes=5000)) < 5000
    with pytest.raises(MessageTooLarge, match=r"the limit is 1024"):
        encode(env, max_bytes=1024)


@pytest.mark.parametrize(("fields", "name"), [
    ({"event": 3}, "event"), ({"event": ""}, "event"), ({"id": 7}, "id"),
    ({"type": ""}, "type"), ({"timestamp": "now"}, "timestamp"),
    ({"timestamp": True}, "timestamp"),
])
def test_encode_refuses_envelopes_decode_would_reject(fields: dict[str, object],
                                                      name: str) -> None:
    with pytest.raises(MessageError, match=repr(name)):
        encode(envelope(**fields))


@pytest.mark.parametrize("channel", [None, "", "bad channel", ".x", "private-"])
def test_encode_refuses_invalid_channels(channel: object) -> None:
    with pytest.raises(InvalidChannel):
        encode(envelope(channel=channel))


@pytest.mark.parametrize(("name", "rule"), [
    (None, "non-empty string"), (3, "non-empty string"), ("", "non-empty string"),
    ("x" * (MAX_EVENT_NAME + 1), f"at most {MAX_EVENT_NAME} characters, got 201"),
    ("channelcast:presence", "reserved"), ("channelcast:", "reserved"),
])
def test_validate_event_names_the_broken_rule(name: object, rule: str) -> None:
    with pytest.raises(MessageError, match=rule):
        validate_event(name)


def test_validate_event_accepts_the_limits_and_lifts_only_the_prefix_rule_for_internal() -> None:
    assert validate_event("x" * MAX_EVENT_NAME) == "x" * MAX_EVENT_NAME
    assert validate_event("Channelcast:x") == "Channelcast:x"  # the prefix is case-sensitive
    assert validate_event("app.channelcast:x") == "app.channelcast:x"
    assert validate_event("channelcast:presence", internal=True) == "channelcast:presence"
    with pytest.raises(MessageError, match="at most"):
        validate_event("channelcast:" + "x" * MAX_EVENT_NAME, internal=True)


def test_encode_applies_the_event_rules_to_every_envelope_but_internal_ones() -> None:
    reserved = f"{RESERVED_EVENT_PREFIX}presence"
    with pytest.raises(MessageError, match="reserved"):
        encode(envelope(event=reserved))
    with pytest.raises(MessageError, match="reserved"):
        encode(envelope(event=reserved, type="other"))
    with pytest.raises(MessageError, match="at most"):
        encode(envelope(event="e" * (MAX_EVENT_NAME + 1)))
    with pytest.raises(MessageError, match="at most"):
        encode(envelope(event="e" * (MAX_EVENT_NAME + 1), type=INTERNAL))
    internal = envelope(event=reserved, type=INTERNAL)
    assert decode(encode(internal)) == internal
    longest = envelope(event="e" * MAX_EVENT_NAME)
    assert decode(encode(longest)) == longest


def test_stored_messages_decode_and_copy_verbatim_whatever_their_event() -> None:
    # A presence operation of an older node: type "message" with the reserved event.
    old = good_wire(event="channelcast:presence")
    env = decode(old)
    assert env.event == "channelcast:presence"
    with pytest.raises(MessageError, match="reserved"):
        encode(env)
    assert encode(env, check_event=False) == old
    long_event = decode(good_wire(event="e" * 300))
    assert decode(encode(long_event, check_event=False)) == long_event
    with pytest.raises(MessageError, match="'event'"):  # field types are still checked
        encode(envelope(event=""), check_event=False)


@settings(deadline=None)
@given(channel=st.text(max_size=20), event=st.text(max_size=5), data=json_values)
def test_whatever_encodes_also_decodes(channel: str, event: str, data: object) -> None:
    env = envelope(channel=channel, event=event, data=data)
    try:
        raw = encode(env)
    except (InvalidChannel, MessageError):
        return
    assert decode(raw) == env


def good_wire(**changes: object) -> bytes:
    obj: dict[str, object] = {"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "type": "message",
                              "channel": "user.1", "event": "e", "data": 1, "timestamp": 5}
    obj.update(changes)
    return json.dumps({k: v for k, v in obj.items() if v is not ...},
                      separators=(",", ":")).encode()


def test_decode_accepts_a_well_formed_message_without_type() -> None:
    env = decode(good_wire(type=...))
    assert (env.channel, env.event, env.data, env.timestamp, env.type) == (
        "user.1", "e", 1, 5, "message")


@pytest.mark.parametrize(("raw", "reason"), [
    (None, "no value"),
    (b"", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"{", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"text"', "not a JSON object"),
    (good_wire(channel=...), "lacks field 'channel'"),
    (good_wire(timestamp=...), "lacks field 'timestamp'"),
    (good_wire(timestamp=True), "'timestamp' must be an integer"),
    (good_wire(timestamp=1.5), "'timestamp' must be an integer"),
    (good_wire(event=5), "'event' must be a non-empty string"),
    (good_wire(id=""), "'id' must be a non-empty string"),
    (good_wire(type={"a": 1}), "'type' must be a non-empty string"),
    (good_wire(channel="bad channel"), "channel is invalid"),
    (good_wire().replace(b'"data":1', b'"data":NaN'), "NaN"),
    (good_wire().replace(b'"data":1', b'"data":-Infinity'), "Infinity"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_decode_raises_only_malformed_message(raw: bytes | None, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=re.escape(reason)):
        decode(raw)


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_never_raises_anything_else(raw: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        decode(raw)


def test_record_dict_carries_the_position() -> None:
    env = envelope()
    record = Record(env, Position("realtime.user", 3, 17))
    assert record.channel == "user.1"
    assert record.to_dict()["position"] == "realtime.user:3:17"
    assert record.to_dict()["id"] == env.id


# --- ids --------------------------------------------------------------------------------


def test_ids_are_ulids_sorted_by_creation_even_within_one_millisecond() -> None:
    ids = [new_id(now_ms=1_700_000_000_000) for _ in range(1000)]
    ids += [new_id() for _ in range(1000)]
    assert all(ULID.fullmatch(i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_id_encodes_its_millisecond_timestamp() -> None:
    later = 4_000_000_000_000  # after any id made so far in this process
    ulid = new_id(now_ms=later)
    value = 0
    for c in ulid:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(c)
    assert value >> 80 == later


def test_id_stays_monotonic_when_the_clock_goes_back() -> None:
    first = new_id(now_ms=4_100_000_000_000)
    assert new_id(now_ms=1_000) > first


# --- positions --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("realtime.user:3:17", Position("realtime.user", 3, 17)),
    ("realtime_user_1:0:0", Position("realtime_user_1", 0, 0)),
    ("a-b:2147483647:9223372036854775807", Position("a-b", 2**31 - 1, 2**63 - 1)),
])
def test_position_round_trips_through_text(text: str, expected: Position) -> None:
    assert Position.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", [
    "", "topic", "topic:1", ":1:2", "topic::2", "topic:1:", "a:b:1:2", "topic:-1:5",
    "topic:1:-5", "topic:1_0:5", "topic:+1:5", " topic:1:2", "topic:1:2\n", "topic: 1:2",
    "topic:\u0661:2", "top ic:1:2", "t\u00f6pic:1:2", "x" * 250 + ":1:2",
    "topic:2147483648:0", "topic:0:9223372036854775808", "topic:1.0:2",
])
def test_position_parse_rejects_anything_else(text: str) -> None:
    with pytest.raises(InvalidPosition):
        Position.parse(text)


@pytest.mark.parametrize("value", [None, 5, b"t:1:2"])
def test_position_parse_rejects_non_strings(value: object) -> None:
    with pytest.raises(InvalidPosition):
        Position.parse(value)  # type: ignore[arg-type]


def test_positions_order_by_topic_partition_offset() -> None:
    ps = [Position("b", 0, 1), Position("a", 1, 0), Position("a", 0, 10), Position("a", 0, 2)]
    assert [str(p) for p in sorted(ps)] == ["a:0:2", "a:0:10", "a:1:0", "b:0:1"]


# --- the hot-path shortcuts give exactly the plain results -------------------------------


def dumps(env: Envelope) -> bytes:
    return json.dumps(env.to_dict(), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


class Text(str):
    pass


class Count(int):
    pass


@settings(deadline=None)
@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1), json_values)
@example("pusher:", "0", "0", None)  # a Pusher protocol event (found by a helper's run)
@example("channelcast:x", "0", "internal", None)
def test_template_encoding_is_exactly_json_dumps(event: str, mid: str, kind: str,
                                                 data: object) -> None:
    env = envelope(event=event, id=mid, type=kind, data=data)
    try:  # every event-name rule (length, channelcast:, pusher: and pusher_internal:)
        validate_event(event, internal=kind == INTERNAL)
    except MessageError:
        with pytest.raises(MessageError, match="event must"):
            encode(env)
        return
    try:
        expected = dumps(env)
    except UnicodeEncodeError:  # lone surrogates: not UTF-8
        with pytest.raises(SerializationError):
            encode(env)
        return
    if has_float(data):  # orjson may spell a float differently (1e-7 for 1e-07)
        assert json.loads(encode(env)) == json.loads(expected)
    else:
        assert encode(env) == expected


def nested(depth: int) -> list[object]:
    data: list[object] = []
    for _ in range(depth):
        data = [data]
    return data


@pytest.mark.parametrize("data", [
    2**64, -(2**63) - 1, 10**30, {1: "int key"}, {None: 1, True: 2, 1.5: 3}, None,
    {"a": None}, [1, None], {"deep": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
    nested(300), {"x": 1e-07, "y": 1e16, "z": -0.0},
])
def test_what_orjson_would_write_differently_takes_the_json_route(data: object) -> None:
    env = envelope(data=data)
    if has_float(data):
        assert json.loads(encode(env)) == json.loads(dumps(env))
    else:
        assert encode(env) == dumps(env)


def test_the_values_only_orjson_accepts_are_documented() -> None:
    import enum
    import uuid

    class Colour(enum.Enum):
        RED = "red"

    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert decode(encode(envelope(data=[uid, Colour.RED]))).data == [str(uid), "red"]


def test_str_and_int_subclasses_encode_like_json_dumps() -> None:
    env = envelope(channel=Text("user.1"), event=Text('a"b'), id=Text("x\\y"),
                   type=Text("t"), timestamp=Count(7))
    assert encode(env) == dumps(env)


def test_a_failed_encode_does_not_poison_the_next() -> None:
    # The C encoder's circular-reference check keeps the ids of the containers it is in;
    # an error midway must not leave them there.
    data: dict[str, object] = {"a": {"b": object()}}
    with pytest.raises(SerializationError):
        encode(envelope(data=data))
    data["a"] = {"b": 1}
    inner = data["a"]
    assert decode(encode(envelope(data=data))).data == {"a": {"b": 1}}
    assert decode(encode(envelope(data=inner))).data == {"b": 1}


def test_circular_data_is_a_serialization_error() -> None:
    data: list[object] = []
    data.append(data)
    with pytest.raises(SerializationError):
        encode(envelope(data=data))


def test_known_good_channels_are_still_checked_when_new() -> None:
    assert encode(envelope(channel="user.1"))
    with pytest.raises(InvalidChannel):
        encode(envelope(channel="user 1"))
    with pytest.raises(InvalidChannel):
        encode(envelope(channel=Text("user 1")))


def test_decode_takes_utf8_with_or_without_a_byte_order_mark() -> None:
    env = envelope(event="é")
    raw = json.dumps(env.to_dict(), ensure_ascii=False).encode("utf-8-sig")
    assert decode(raw) == env


@pytest.mark.parametrize("codec", ["utf-16", "utf-32"])
def test_decode_refuses_other_encodings_saying_utf8(codec: str) -> None:
    # JSON between systems is UTF-8 (RFC 8259 8.1); a guess at UTF-16 turned binary
    # garbage into "'utf-16-le' codec can't decode" errors.
    raw = json.dumps(envelope().to_dict()).encode(codec)  # starts with a BOM: ff fe
    with pytest.raises(MalformedMessage, match="not UTF-8: byte 0xff at position 0"):
        decode(raw)


def test_binary_garbage_is_reported_as_not_utf8() -> None:
    with pytest.raises(MalformedMessage, match="not UTF-8: byte 0x89 at position 0"):
        decode(b"\x89PNG\r\n\x1a\n\x00\x00")
    # UTF-16-LE text of ASCII is valid UTF-8 (with NULs): simply not JSON.
    with pytest.raises(MalformedMessage, match="not JSON"):
        decode(json.dumps(envelope().to_dict()).encode("utf-16-le"))


def test_decode_record_is_record_of_decode() -> None:
    from channelcast.message import decode_record

    raw = encode(envelope())
    record = decode_record(raw, "realtime.user", 3, 17)
    assert record == Record(decode(raw), Position("realtime.user", 3, 17))
    assert hash(record.position) == hash(Position("realtime.user", 3, 17))
    with pytest.raises(MalformedMessage):
        decode_record(b"{}", "t", 0, 0)


def test_default_id_and_timestamp_are_one_clock_reading() -> None:
    env = envelope()
    value = 0
    for c in env.id:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(c)
    assert value >> 80 >= env.timestamp  # the same ms, or later if the clock went back
    ids = [envelope().id for _ in range(100)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 100


def reference_ulid(ms: int, rand: int) -> str:
    value = (ms << 80) | rand
    return "".join("0123456789ABCDEFGHJKMNPQRSTVWXYZ"[(value >> s) & 31]
                   for s in range(125, -1, -5))


@pytest.mark.parametrize("rand", [0, 0xFFFFF - 1, (5 << 20) | 0xFFFFE, (1 << 80) - 3])
def test_ulid_caches_follow_carries_and_millisecond_changes(rand: int) -> None:
    from channelcast import message

    saved = message._ulid_state()
    try:
        ms = 4_200_000_000_000
        message._ulid_state(ms, rand)
        got = [message.new_id(ms) for _ in range(3)]
        assert got == [reference_ulid(ms, (rand + i) & ((1 << 80) - 1)) for i in (1, 2, 3)]
        later = message.new_id(ms + 1)
        assert later[:10] == reference_ulid(ms + 1, 0)[:10]
        assert later > got[-1]
    finally:
        message._ulid_state(*saved)


@pytest.mark.parametrize("raw", [b' {"a":1}', b'{"a":1} ', b'{"a":1}x', b'{"a":1}{}', b"",
                                 b"\xef\xbb\xbf[1]", b"[NaN]", b"[1,]"])
def test_parsing_accepts_and_refuses_exactly_what_json_loads_does(raw: bytes) -> None:
    from channelcast.message import _parse

    def reject(name: str) -> None:
        raise ValueError(name)

    try:
        expected = json.loads(raw, parse_constant=reject)
    except ValueError:
        with pytest.raises(ValueError):  # noqa: PT011 - the type json.loads raises
            _parse(raw)
    else:
        assert _parse(raw) == expected


def test_an_encoded_lone_surrogate_is_not_utf8() -> None:
    # json.loads takes it (it decodes with "surrogatepass"); the text could not be sent on.
    from channelcast.message import _parse

    with pytest.raises(ValueError, match="not UTF-8"):
        _parse(b'"\xed\xa0\x80"')


def test_new_position_is_a_position() -> None:
    from channelcast.message import new_position

    made = new_position("t", 1, 2)
    assert made == Position("t", 1, 2)
    assert hash(made) == hash(Position("t", 1, 2))
    assert made < Position("t", 1, 3)
    assert str(made) == "t:1:2"
