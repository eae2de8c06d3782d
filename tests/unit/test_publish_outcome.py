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
