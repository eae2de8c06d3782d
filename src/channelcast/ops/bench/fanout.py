"""Scenario 4: fan-out through the gateway against a plain ``websockets`` broadcast loop.

Not wired yet: it needs the gateway (``channelcast.gateway``).
"""

from __future__ import annotations

from channelcast.ops.bench.model import BenchConfig, ThroughputRow
from channelcast.ops.bench.targets import Target


def available() -> tuple[bool, str]:
    return False, "the gateway scenario is not wired yet"


async def fanout(target: Target, config: BenchConfig, log: object = None) -> list[ThroughputRow]:
    return []
