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
