"""A worker stopped while its handler still runs: the WARNING says what becomes of the
message, by commit mode (tkafka2 finding 3: with auto-commit it said "will be handled
again", which auto-commit does not do)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from channelcast.brokers.kafka import KafkaBroker
from channelcast.message import Record
from tests.kafka.helpers.support import eventually, settings_for


@pytest.mark.parametrize("manual", [True, False], ids=["manual-commit", "auto-commit"])
async def test_the_cancelled_handlers_warning_says_what_happens_to_its_message(
        kafka_bootstrap: str, unique: str, manual: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    entered = asyncio.Event()

    async def handle(_record: Record) -> None:
        entered.set()
        await asyncio.Event().wait()  # never returns

    settings = settings_for(kafka_bootstrap, f"{unique}-{int(manual)}", partitions=1,
                            timeout_s=2.0)
    caplog.set_level(logging.WARNING, logger="channelcast")
    async with KafkaBroker(settings) as broker:
        worker = broker.worker(f"g-{unique}-{int(manual)}", channels={"orders.*": handle},
                               manual_commit=manual)
        task = asyncio.create_task(worker.run())
        await broker.publish("orders.1", "created", {"n": 1})
        await eventually(entered.is_set, 60, "the handler to start")
        await worker.stop()
        await asyncio.wait_for(task, 30)
    warnings = [r.getMessage() for r in caplog.records if "did not finish" in r.getMessage()]
    assert len(warnings) == 1, warnings
    if manual:
        assert "is not committed and will be handled again" in warnings[0]
    else:
        assert "manual_commit is off" in warnings[0]
        assert "will not be handled again" in warnings[0]


async def test_stop_during_a_retry_backoff_retries_no_more_and_leaves_the_message(
        kafka_bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    """tkafka3 finding 5: stop() during a retry's backoff kept retrying until the timeout
    and then blamed the handler ("did not finish")."""
    from channelcast.brokers.base import RetryPolicy
    from channelcast.brokers.kafka.admin import KafkaAdmin

    attempts: list[float] = []

    async def handle(_record: Record) -> None:
        attempts.append(asyncio.get_running_loop().time())
        raise RuntimeError("downstream is down")

    settings = settings_for(kafka_bootstrap, f"{unique}-b", partitions=1, timeout_s=10.0)
    group = f"g-{unique}-b"
    caplog.set_level(logging.INFO, logger="channelcast")
    async with KafkaBroker(settings) as broker:
        worker = broker.worker(group, channels={"orders.*": handle}, manual_commit=True,
                               retry=RetryPolicy(5, 3.0, 3.0))
        task = asyncio.create_task(worker.run())
        await broker.publish("orders.1", "created", {"n": 1})
        await eventually(lambda: len(attempts) == 1, 60, "the first attempt")
        await worker.stop()
        await asyncio.wait_for(task, 30)
        assert len(attempts) == 1, "no attempt after stop()"
        assert worker.stats.dead_lettered == 0
    lines = [r.getMessage() for r in caplog.records]
    assert not any("did not finish" in line for line in lines), lines
    assert any("stopped retrying" in line and "after attempt 1" in line
               and "will be handled again" in line for line in lines), lines
    committed = KafkaAdmin(kafka_bootstrap).group_offsets(group).committed
    assert all(offset <= 0 for offset in committed.values()), committed


async def test_a_pattern_with_no_topic_yet_is_not_a_raw_warning(
        kafka_bootstrap: str, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    """tkafka3 finding 10: a legacy-topic pattern with no match yet logged librdkafka's
    raw `KafkaError{code=UNKNOWN_TOPIC_OR_PART,...}` as a WARNING."""
    seen = asyncio.Event()

    async def handle(_record: Record) -> None:
        seen.set()

    settings = settings_for(kafka_bootstrap, f"{unique}-p", partitions=1, timeout_s=10.0)
    caplog.set_level(logging.INFO, logger="channelcast")
    async with KafkaBroker(settings) as broker:
        worker = broker.worker(f"g-{unique}-p", topics={rf"^nomatch\.{unique}\..*": handle})
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(6)  # librdkafka reports the unmatched pattern meanwhile
        await worker.stop()
        await asyncio.wait_for(task, 30)
    raw = [r.getMessage() for r in caplog.records
           if r.levelno >= logging.WARNING and "KafkaError{" in r.getMessage()]
    assert raw == []
