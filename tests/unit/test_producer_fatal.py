"""A fatal producer error while serving delivery reports (tkafka3 finding 2).

confluent-kafka's ``Producer.poll`` raises ``KafkaException`` for a fatal error (seen on a
real cluster: OUT_OF_ORDER_SEQUENCE_NUMBER after the cluster was wiped under a producer
id). That killed the publisher's poll thread and every publish waited for ever. Making
Kafka itself reach that state takes a wiped cluster and luck, so this test raises the
exception poll() raises, from a real librdkafka producer (no broker needed: nothing is
ever delivered), and checks what channelcast does with it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from channelcast.brokers.kafka.producer import KafkaPublisher
from channelcast.errors import PublishError


class PollRaisesOnce:
    """The real producer, whose next poll() raises the fatal error confluent-kafka raises."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.raised = False

    def poll(self, timeout: float = -1) -> int:
        if not self.raised:
            self.raised = True
            raise KafkaException(KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
                                            "Broker received an out of order sequence "
                                            "number", fatal=True))
        return int(self._producer.poll(timeout))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


async def test_a_fatal_error_raised_by_poll_fails_publishes_instead_of_hanging(
        caplog: pytest.LogCaptureFixture) -> None:
    publisher = KafkaPublisher({"bootstrap.servers": "127.0.0.1:9", "enable.idempotence": True,
                                "message.timeout.ms": 120_000}, flush_timeout=1.0)
    fake = PollRaisesOnce(publisher.producer)
    try:
        with caplog.at_level(logging.ERROR, logger="channelcast"):
            pending = asyncio.ensure_future(
                publisher.send([("t", 0, b"k", b'{"v":1}', None)]))
            publisher.producer = fake  # type: ignore[assignment]
            with pytest.raises(PublishError):
                await asyncio.wait_for(pending, 10)  # not the 120 s delivery timeout
            assert fake.raised
            with pytest.raises(PublishError, match=r"OUT_OF_ORDER_SEQUENCE_NUMBER|out of order") \
                    as later:
                await asyncio.wait_for(publisher.send([("t", 0, b"k", b"{}", None)]), 10)
            assert later.value.retriable is False
        fatal = [r for r in caplog.records if "fatal error" in r.getMessage()]
        assert len(fatal) == 1, [r.getMessage() for r in caplog.records]
        assert publisher._thread.is_alive(), "the poll thread must survive"
    finally:
        publisher.producer = fake._producer  # type: ignore[assignment]
        await publisher.close()
