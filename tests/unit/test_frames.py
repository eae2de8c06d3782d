"""The fan-out path's frames: the stored bytes with the position spliced in are exactly
what decoding and re-encoding the envelope (the old path) produced."""

from __future__ import annotations

import json
import random
from typing import Any

from channelcast.message import Envelope, Record, decode, encode, new_position
from channelcast.types import ChannelName

ALPHABET = ("abcXYZ019 _-\"\\/\n\t\u00e9\u00fc\u00df\u65e5\u672c\u8a9e\u20ac"
            "\U0001f600\u0000\u001f\u2028")


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randint(0, 7 if depth < 6 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:  # ints of every size, far past 64 bits
        return rng.choice([-1, 1]) * rng.randint(0, 10 ** rng.randint(0, 40))
    if kind in (3, 4):
        return _text(rng)
    if kind == 5:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _old_frame(raw: bytes, position: str) -> str:
    """What the hub sent before: decode, add the position, json.dumps it again."""
    d = decode(raw).to_dict()
    d["position"] = position
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


def test_spliced_frames_equal_the_re_encoded_ones_for_10000_envelopes() -> None:
    rng = random.Random(20261129)
    for i in range(10_000):
        channel = ChannelName(f"c.{i % 97}")
        env = Envelope(channel=channel, event=_text(rng) or "e", data=_value(rng))
        raw = encode(env)
        position = new_position("realtime", i % 10, i, "AbC-_9xyz01" if i % 2 else None)
        record = Record.from_value(raw, channel, position, env.event, env.id)
        assert record.frame() == _old_frame(raw, str(position)), env
        assert json.loads(record.frame())["data"] == env.data


def test_frames_of_records_built_from_envelopes_match_too() -> None:
    env = Envelope(channel=ChannelName("news"), event="flash", data={"n": 10 ** 30})
    record = Record(env, new_position("t", 1, 2, "ep0ch"))
    assert record.frame() == _old_frame(encode(env), "t:1:2@ep0ch")
    assert record.value == encode(env)
