"""Message ids as idempotency keys, and what a failed Kafka batch reports (no broker).

``publish_many`` raises the failure's own "not stored" error only when no message of the
batch can be stored; otherwise PublishOutcomeUnknown, so the caller retries the batch with
the same ids.
"""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError, KafkaException

from channelcast.brokers.kafka.producer import Outgoing, _Batch, _batch_error
from channelcast.errors import BrokerUnavailable, PublishError, PublishOutcomeUnknown
from channelcast.message import _ulid_state, new_id, ulid_from, validate_message_id

TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out")
NO_PARTITION = KafkaError(KafkaError._UNKNOWN_PARTITION, "Local: Unknown partition")


def _messages(count: int) -> list[Outgoing]:
    """A batch of ``count`` messages for topic 't' (errors name their topic)."""
    return [("t", 0, b"k", b"{}", {}) for _ in range(count)]


def test_ulid_from_spells_what_new_id_spells_for_the_same_bits() -> None:
    made = new_id()
    ms, rand = _ulid_state()
    assert ulid_from(ms, rand) == made
    assert ulid_from(0, 0) == "0" * 26
    assert ulid_from((1 << 48) - 1, (1 << 80) - 1) == "7" + "Z" * 25
    with pytest.raises(ValueError, match="48-bit"):
        ulid_from(1 << 48, 0)
    with pytest.raises(ValueError, match="80-bit"):
        ulid_from(0, 1 << 80)


def test_every_new_id_is_a_valid_message_id() -> None:
    for _ in range(1000):
        mid = new_id()
        assert validate_message_id(mid) == mid


async def _batch(size: int) -> _Batch:
    return _Batch(asyncio.get_running_loop(), size, [])


async def test_nothing_acknowledged_and_nothing_sent_is_the_plain_refusal() -> None:
    batch = await _batch(3)
    batch.delivered = 3
    batch.failed = {0: NO_PARTITION, 1: NO_PARTITION, 2: NO_PARTITION}
    error = _batch_error(batch, _messages(3))
    assert type(error) is PublishError
    assert "_UNKNOWN_PARTITION" in str(error)


async def test_a_lone_message_that_timed_out_is_outcome_unknown_with_its_own_text() -> None:
    batch = await _batch(1)
    batch.delivered = 1
    batch.failed = {0: TIMED_OUT}
    error = _batch_error(batch, _messages(1))
    assert type(error) is PublishOutcomeUnknown
    assert error.retriable
    assert "_MSG_TIMED_OUT" in str(error)


async def test_a_partly_acknowledged_batch_is_outcome_unknown() -> None:
    batch = await _batch(3)
    batch.delivered = 3
    batch.failed = {1: KafkaError(KafkaError.INVALID_RECORD)}  # two of three are stored
    error = _batch_error(batch, _messages(3))
    assert type(error) is PublishOutcomeUnknown
    assert "1 of 3 messages" in str(error)
    assert "2 were acknowledged" in str(error)
    assert not error.retriable  # the refused one would be refused again


async def test_a_refusal_midway_after_acknowledged_messages_is_outcome_unknown() -> None:
    refused = KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION, "no such partition"))
    batch = await _batch(4)
    batch.delivered = 2  # messages 0 and 1 were produced and acknowledged
    batch.refused = refused  # produce() refused message 2; 3 was never tried
    error = _batch_error(batch, _messages(4))
    assert type(error) is PublishOutcomeUnknown
    assert "2 of 4 messages" in str(error)

    first = await _batch(4)
    first.refused = refused  # refused at once: nothing was sent
    error = _batch_error(first, _messages(4))
    assert type(error) is PublishError
    assert not isinstance(error, PublishOutcomeUnknown)


async def test_a_refusal_by_produce_itself_is_never_outcome_unknown() -> None:
    batch = await _batch(1)
    batch.refused = KafkaException(TIMED_OUT)  # hypothetical: raised, not reported
    error = _batch_error(batch, _messages(1))
    assert type(error) is BrokerUnavailable


class _Report:
    """A delivery report as confluent-kafka hands it to the callback."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._coords = (topic, partition, offset)

    def topic(self) -> str:
        return self._coords[0]

    def partition(self) -> int:
        return self._coords[1]

    def offset(self) -> int:
        return self._coords[2]


async def test_ordered_reports_are_handed_to_messages_in_produce_order_per_partition() -> None:
    # Produced: t:0, t:1, t:0, t:1, t:0. Reports come in produce order per partition
    # only; across partitions in any order.
    messages: list[Outgoing] = [("t", p, b"k", b"{}", {}) for p in (0, 1, 0, 1, 0)]
    batch = await _batch(5)
    for partition, offset in ((1, 70), (0, 10), (0, 11), (1, 71), (0, 12)):
        batch.on_report(None, _Report("t", partition, offset))
    assert batch.sink == [batch.future]  # complete: handed to the poller's sink
    positions = batch.resolve(messages, {"t": "E1"})
    assert [(p.topic, p.partition, p.offset, p.epoch) for p in positions
            ] == [("t", 0, 10, "E1"), ("t", 1, 70, "E1"), ("t", 0, 11, "E1"),
                  ("t", 1, 71, "E1"), ("t", 0, 12, "E1")]
    assert batch.failed == {}


async def test_a_batch_over_several_topics_tells_partitions_of_each_topic_apart() -> None:
    messages: list[Outgoing] = [("a", 0, b"k", b"{}", {}), ("b", 0, b"k", b"{}", {}),
                                ("a", 0, b"k", b"{}", {})]
    batch = await _batch(3)
    batch.topics = True
    for topic, offset in (("b", 5), ("a", 1), ("a", 2)):
        batch.on_topic_report(None, _Report(topic, 0, offset))
    positions = batch.resolve(messages, {"b": "EB"})
    assert [(p.topic, p.offset, p.epoch) for p in positions
            ] == [("a", 1, None), ("b", 5, "EB"), ("a", 2, None)]


async def test_a_failed_report_fails_its_own_message_only() -> None:
    messages = _messages(3)
    batch = await _batch(3)
    batch.on_report(None, _Report("t", 0, 40))
    batch.on_report(TIMED_OUT, _Report("t", 0, -1001))
    batch.on_report(None, _Report("t", 0, 41))
    positions = batch.resolve(messages, {})
    assert [p.offset if p is not None else None for p in positions] == [40, None, 41]
    assert batch.failed == {1: TIMED_OUT}
    error = _batch_error(batch, messages)
    assert type(error) is PublishOutcomeUnknown
    assert "1 of 3 messages" in str(error)


async def test_a_message_produce_refused_takes_no_report_of_the_others() -> None:
    # publish() calls produced together (each=True): message 1 was refused by produce().
    messages = _messages(3)
    batch = await _batch(3)
    refused = KafkaException(NO_PARTITION)
    batch.not_produced(1, refused)
    batch.on_report(None, _Report("t", 0, 7))
    batch.on_report(None, _Report("t", 0, 8))
    positions = batch.resolve(messages, {})
    assert [p.offset if p is not None else None for p in positions] == [7, None, 8]
    assert batch.failed == {1: refused}


async def test_unordered_reports_are_matched_by_index() -> None:
    messages = _messages(3)
    batch = await _batch(3)
    batch.slots = [None] * 3
    for index, offset in ((2, 9), (0, 3), (1, 5)):
        batch.on_delivery(index, None, _Report("t", 0, offset))
    positions = batch.resolve(messages, {})
    assert [p.offset for p in positions] == [3, 5, 9]
    assert batch.delivered == 3
