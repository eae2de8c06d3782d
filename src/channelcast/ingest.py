"""What a stored record means as a channelcast message, whoever wrote it. Sans-I/O.

Every consumer of the log (fan-out subscriptions, history reads, workers) turns the
records it reads into :class:`~channelcast.message.Record` here, so all of them accept the
same shapes (docs/brokers.md, "Records from other producers"):

* **channelcast's own records** (headers ``channel``, ``event``, ``id`` first, in that
  order, and a value that starts like :func:`~channelcast.message.encode`'s output) pass
  through as bytes: nothing is decoded.
* **Records other producers wrote**: the channel is the ``channel`` header, else the
  ``channel`` of a value in the original envelope shape (a JSON object with ``channel``,
  ``event`` and ``data`` keys; optional ``id``, ``type``, ``timestamp``), else the record
  key (UTF-8). An envelope keeps its event, data and id; its timestamp is normalised to
  Unix milliseconds (seconds and fractional seconds, e.g. PHP's ``microtime(true)``, are
  scaled). Any other JSON value becomes the data of a
  message whose event is the ``event`` header, else :data:`DEFAULT_EVENT`; the id is the
  ``id`` header, else derived from the record's coordinates (a ULID of the record's
  timestamp, the same on every node), and the timestamp is the record's. The result is
  re-encoded once, canonically, so clients receive strict JSON.
* Anything else is **skipped** with a :class:`Skipped` reason: no value (a tombstone), a
  value that is not UTF-8 JSON (RFC 8259 8.1), holds NaN/Infinity, a lone surrogate or a
  number beyond a double's range, a reserved or overlong event, the reserved
  ``channelcast.internal`` header, no channel. The caller counts it and logs it with its
  topic:partition:offset (through ``SkipLog``: the first of each kind, then counts).

It never does I/O and never raises for bad input.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from channelcast.channels import validate_channel
from channelcast.errors import ChannelcastError, MessageError
from channelcast.message import (
    MESSAGE,
    Envelope,
    Record,
    encode,
    new_position,
    ulid_at,
    validate_message_id,
)
from channelcast.types import ChannelName

DEFAULT_EVENT = "message"
"""The event of a foreign record without an ``event`` header or envelope shape."""

HeaderPairs = Sequence[tuple[str, bytes | str | None]]
"""Record headers as Kafka clients return them: (name, value) pairs in order."""

_SECONDS_BELOW = 100_000_000_000
"""Timestamps below this are seconds (year 5138 in seconds; 1973 in milliseconds)."""
_OURS = b'{"id":"'


@dataclass(frozen=True, slots=True)
class Skipped:
    """Why a record is not a message (for the caller's log line and counter)."""

    reason: str


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def header_text(headers: HeaderPairs | None, name: str) -> str | None:
    """The first header called ``name``, as UTF-8 text (None if absent or not UTF-8)."""
    for key, value in headers or ():
        if key == name:
            return _text(value)
    return None


def channel_of(key: bytes | None, headers: HeaderPairs | None) -> ChannelName | None:
    """The channel a record belongs to: its ``channel`` header, else its key; None when
    neither is a valid channel name."""
    if headers:
        first = headers[0]
        name = _text(first[1]) if first[0] == "channel" else header_text(headers, "channel")
    else:
        name = None
    if name is None and key is not None:
        name = _text(key)
    if name is None:
        return None
    try:
        return validate_channel(name)
    except ChannelcastError:
        return None


def is_channel_name(name: str) -> bool:
    """Whether ``name`` follows the channel grammar."""
    return _valid(name) is not None


def has_our_headers(headers: HeaderPairs | None) -> bool:
    """Whether the headers start as channelcast's producer writes them: channel, event,
    id."""
    return (headers is not None and len(headers) >= 3 and headers[0][0] == "channel"
            and headers[1][0] == "event" and headers[2][0] == "id")


def is_ours(value: bytes | None, headers: HeaderPairs | None) -> bool:
    """Whether the record looks written by channelcast (see the module docstring)."""
    return value is not None and value.startswith(_OURS) and has_our_headers(headers)


def to_record(value: bytes | None, key: bytes | None, headers: HeaderPairs | None,
              topic: str, partition: int, offset: int, timestamp_ms: int,
              epoch: str | None = None, channel: ChannelName | None = None, *,
              keep_headers: bool = True) -> Record | Skipped:
    """The message a stored record carries, or why it carries none.

    ``channel`` may be given when the caller already found it (:func:`channel_of`).
    ``timestamp_ms`` is the record's own timestamp (Kafka's CreateTime/LogAppendTime).
    ``keep_headers=False`` leaves ``Record.headers`` empty for channelcast's own records
    (the fan-out path does not need them and saves building a dict per record).
    """
    if channel is None:
        name = header_text(headers, "channel")
        channel = _valid(name) if name is not None else None
    position = new_position(topic, partition, offset, epoch)
    if is_ours(value, headers):
        assert value is not None
        assert headers is not None
        event, mid = _text(headers[1][1]), _text(headers[2][1])
        if channel is not None and event and mid:
            internal = len(headers) > 3 and any(
                k == "channelcast.internal" for k, _v in headers[3:])
            return Record.from_value(value, channel, position, event, mid,
                                     internal=internal,
                                     headers=_as_text(headers) if keep_headers else None)
    return _foreign(value, channel, key, headers, topic, partition, offset, timestamp_ms,
                    position)


def _valid(name: object) -> ChannelName | None:
    try:
        return validate_channel(name)
    except ChannelcastError:
        return None


def _as_text(headers: HeaderPairs) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in headers:
        text = _text(value)
        if text is not None and key not in out:
            out[key] = text
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_strict(value: bytes) -> Any:
    """UTF-8 JSON -> Python value (exact ints); ValueError naming the problem for
    anything else (not UTF-8, NaN/Infinity, trailing data, nesting too deep, a lone
    surrogate, a number beyond a double's range: what a browser's reader refuses or
    reads as Infinity)."""
    if value.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark may be ignored
        value = value[3:]
    try:
        text = value.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 JSON: byte 0x{value[exc.start]:02x} at position "
                         f"{exc.start} is not UTF-8") from None
    try:
        obj = _DECODER.decode(text)
    except RecursionError:
        raise ValueError("not JSON: nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    try:  # what json takes and a client's reader may not: orjson reads as browsers do
        orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        problem = str(exc)
        if "surrogate" in problem:
            raise ValueError(f"not JSON a client can read: a string holds a lone surrogate "
                             f"({exc})") from None
        if "infinity" in problem:
            raise ValueError("not JSON a client can read: a number is beyond a double's "
                             "range (JavaScript's JSON.parse reads it as Infinity; RFC 8259 "
                             f"section 6) ({exc})") from None
        raise ValueError(f"not JSON a client can read: {exc}") from None
    return obj


def normalise_timestamp(ts: object, fallback_ms: int) -> int:
    """Unix milliseconds from what other producers write: seconds (also fractional, e.g.
    PHP's ``microtime(true)``) scaled up, milliseconds as they are, microseconds and
    nanoseconds scaled down; anything else (not a number, not positive, past the year
    5138 in milliseconds) -> ``fallback_ms``, the record's own timestamp."""
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return fallback_ms
    if isinstance(ts, float) and not math.isfinite(ts):
        return fallback_ms
    for below, scale in _TIMESTAMP_SCALES:
        if 0 < ts < below:
            return round(ts * scale)
    return fallback_ms


_TIMESTAMP_SCALES = ((_SECONDS_BELOW, 1000), (10**14, 1), (10**17, 1e-3), (10**20, 1e-6))
"""(below, to milliseconds) per unit: seconds, ms, us, ns (values below 10^11 are seconds:
10^11 ms is 1973, 10^11 s the year 5138)."""


def derived_id(topic: str, partition: int, offset: int, timestamp_ms: int) -> str:
    """A ULID for a record that has none: its time is the record's, its random part a
    hash of the record's coordinates, so every node derives the same id."""
    digest = hashlib.blake2b(f"{topic}:{partition}:{offset}".encode(), digest_size=10)
    return ulid_at(max(0, timestamp_ms), int.from_bytes(digest.digest(), "big"))


def _usable_id(mid: object) -> str | None:
    """A foreign record's id if publish() would accept it (the same rule), else None."""
    try:
        return validate_message_id(mid)
    except MessageError:
        return None


def _foreign(value: bytes | None, channel: ChannelName | None, key: bytes | None,
             headers: HeaderPairs | None, topic: str, partition: int, offset: int,
             timestamp_ms: int, position: Any) -> Record | Skipped:
    if value is None:
        return Skipped("no value")
    try:
        obj = parse_strict(value)
    except ValueError as exc:
        return Skipped(str(exc))
    if header_text(headers, "channelcast.internal") is not None:
        return Skipped("the header channelcast.internal is reserved for channelcast's own "
                       "records")
    event = header_text(headers, "event")
    mid = header_text(headers, "id")
    ts = timestamp_ms
    envelope = isinstance(obj, dict) and isinstance(obj.get("event"), str) \
        and "data" in obj and "channel" in obj
    if channel is None and envelope:
        channel = _valid(obj["channel"])  # an envelope names its own channel
    if channel is None:
        channel = channel_of(key, None)
    if channel is None:
        return Skipped("no channel: no 'channel' header, no envelope naming one, and no "
                       "key that is a channel name")
    if envelope:
        assert isinstance(obj, dict)
        event = obj["event"]
        data = obj["data"]
        if isinstance(obj.get("id"), str) and obj["id"]:
            mid = obj["id"]
        ts = normalise_timestamp(obj.get("timestamp"), timestamp_ms)
    else:
        data = obj
    # No id, or one publish() would refuse (validate_message_id): a derived one.
    mid = _usable_id(mid) or derived_id(topic, partition, offset, timestamp_ms)
    env = Envelope(channel=channel, event=event or DEFAULT_EVENT, data=data, id=mid,
                   timestamp=ts, type=MESSAGE)
    try:
        raw = encode(env, max_bytes=1 << 62)
    except MessageError as exc:
        return Skipped(str(exc))
    hdrs = _as_text(headers) if headers else {}
    return Record.from_value(raw, channel, position, env.event, mid, headers=hdrs)
