"""Shared bits of the brokers acceptance tests (tests/kafka/test_broker_*.py).

The helper processes those tests start live beside this module.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from channelcast.config import KafkaSettings

HELPERS = Path(__file__).resolve().parent
ROOT = Path(__file__).resolve().parents[3]
PYTHON = sys.executable


def settings_for(bootstrap: str, unique: str, partitions: int = 8,
                 **overrides: object) -> KafkaSettings:
    values: dict[str, object] = {
        "brokers": bootstrap,
        "default_topic": f"acc-{unique}",
        "default_partitions": partitions,
        "dead_letter_topic": f"acc-{unique}-dlq",
        "timeout_s": 10.0,
        "consumer": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
    }
    values.update(overrides)
    return KafkaSettings(**values)  # type: ignore[arg-type]


async def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.1)
