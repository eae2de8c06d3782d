"""Caller-supplied message ids (idempotency keys), against the memory broker and real Kafka.

A retry with the same id stores a record with the same id: the broker keeps both copies
(Kafka has no way to refuse the second), and consumers tell them apart by id.
"""

from __future__ import annotations

import pytest

from channelcast.brokers.base import Broker
from channelcast.errors import MessageError
from channelcast.message import MAX_MESSAGE_ID, Envelope, Record
from channelcast.types import ChannelName

GOOD_IDS = ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "order-42:attempt.1", "a", "x" * MAX_MESSAGE_ID,
            "A_b-c.d:e"]
BAD_IDS: list[tuple[object, str]] = [
    ("", "non-empty string"),
    (42, "non-empty string"),
    ("x" * (MAX_MESSAGE_ID + 1), f"at most {MAX_MESSAGE_ID} characters"),
    ("has space", "only hold the characters"),
    ("slash/no", "only hold the characters"),
    ("é", "only hold the characters"),
    ("line\n", "only hold the characters"),
]


async def test_publish_keeps_the_given_id_and_history_shows_it(broker: Broker) -> None:
    channel = "ids.keep"
    start = await broker.end_position(channel)
    for mid in GOOD_IDS:
        await broker.publish(channel, "e", {"id": mid}, id=mid)
    records = await broker.history(channel, start)
    assert [r.envelope.id for r in records] == GOOD_IDS
    assert [r.envelope.data for r in records] == [{"id": m} for m in GOOD_IDS]


async def test_without_an_id_each_publish_gets_a_new_ulid(broker: Broker) -> None:
    channel = "ids.fresh"
    start = await broker.end_position(channel)
    await broker.publish(channel, "e", 1)
    await broker.publish(channel, "e", 2, id=None)
    ids = [r.envelope.id for r in await broker.history(channel, start)]
    assert len(ids) == 2
    assert len(set(ids)) == 2
    assert all(len(i) == 26 for i in ids)


@pytest.mark.parametrize(("bad", "rule"), BAD_IDS, ids=lambda v: repr(v)[:20])
async def test_a_bad_id_is_refused_naming_the_rule_and_nothing_is_stored(
        broker: Broker, bad: object, rule: str) -> None:
    channel = "ids.bad"
    with pytest.raises(MessageError, match=rule):
        await broker.publish(channel, "e", 1, id=bad)  # type: ignore[arg-type]
    batch = [Envelope(ChannelName(channel), "e", 1),
             Envelope(ChannelName(channel), "e", 2, id=bad)]  # type: ignore[arg-type]
    with pytest.raises(MessageError, match=rule):
        await broker.publish_many(batch)
    assert (await broker.end_position(channel)).offset == -1  # the good half neither


async def test_a_retry_with_the_same_id_is_recognisable_by_id(broker: Broker) -> None:
    channel = "ids.retry"
    start = await broker.end_position(channel)
    first = await broker.publish(channel, "e", {"n": 1}, id="pay-7")
    again = await broker.publish(channel, "e", {"n": 1}, id="pay-7")
    batch = [Envelope(ChannelName(channel), "e", i, id=f"b-{i}") for i in range(3)]
    await broker.publish_many(batch)
    await broker.publish_many(batch)  # the whole batch retried as it was
    records = await broker.history(channel, start)
    assert again.offset > first.offset  # the broker does not dedupe: both are stored
    assert [r.envelope.id for r in records] == ["pay-7", "pay-7"] + ["b-0", "b-1", "b-2"] * 2
    # What a consumer does: keep the first record of each id.
    first_of_each: dict[str, Record] = {}
    for record in records:
        first_of_each.setdefault(record.envelope.id, record)
    assert [(r.envelope.id, r.envelope.data) for r in first_of_each.values()] == [
        ("pay-7", {"n": 1}), ("b-0", 0), ("b-1", 1), ("b-2", 2)]
