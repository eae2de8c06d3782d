"""Acceptance: a worker SIGKILLed midway through 100,000 messages, then restarted.

With ``manual_commit=True`` every message is processed at least once; the test reports the
duplicates. The same run with auto-commit reports what it lost or duplicated (a figure,
not an assertion: auto-commit commits what was *fetched*, not what was handled).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest

from channelcast.brokers.kafka import KafkaBroker
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.message import Envelope
from channelcast.types import ChannelName
from tests.kafka.helpers.support import HELPERS, PYTHON, ROOT, eventually, settings_for

TOTAL = 100_000
KILL_AT = 30_000
LINE = 27  # a ULID and a newline


async def start_worker(bootstrap: str, topic: str, group: str, manual: bool,
                       out: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        PYTHON, str(HELPERS / "worker.py"), bootstrap, topic, group, "1" if manual else "0",
        str(out), stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"running"
    return proc


def handled(out: Path) -> int:
    return out.stat().st_size // LINE if out.exists() else 0


async def crash_and_recover(bootstrap: str, topic: str, group: str, manual: bool,
                            out: Path, ids: set[str]) -> dict[str, int]:
    admin = KafkaAdmin(bootstrap)
    ends = {(w.topic, w.partition): w.high for w in admin.watermarks([topic])}
    proc = await start_worker(bootstrap, topic, group, manual, out)
    try:
        await eventually(lambda: handled(out) >= KILL_AT, 120, f"{KILL_AT} handled")
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        at_kill = handled(out)
        proc = await start_worker(bootstrap, topic, group, manual, out)

        def caught_up() -> bool:
            committed = admin.group_offsets(group).committed
            return all(committed.get(tp, -1) >= end for tp, end in ends.items())

        await eventually(caught_up, 120, "the group to commit the end of every partition")
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = (await asyncio.to_thread(out.read_text)).split()
    unique = set(lines)
    assert unique <= ids
    return {"handled_before_kill": at_kill, "lines": len(lines),
            "duplicates": len(lines) - len(unique), "lost": len(ids - unique)}


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_killed_worker_loses_nothing_with_manual_commit(
        kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    settings = settings_for(kafka_bootstrap, unique, partitions=4)
    topic = settings.default_topic
    async with KafkaBroker(settings) as broker:
        batch = [Envelope(channel=ChannelName(f"job.{i % 100}"), event="j", data=i)
                 for i in range(TOTAL)]
        for start in range(0, TOTAL, 20_000):
            await broker.publish_many(batch[start:start + 20_000])
    ids = {e.id for e in batch}

    manual = await crash_and_recover(kafka_bootstrap, topic, f"manual-{unique}", True,
                                     tmp_path / "manual.txt", ids)
    auto = await crash_and_recover(kafka_bootstrap, topic, f"auto-{unique}", False,
                                   tmp_path / "auto.txt", ids)
    print(f"\nmanual_commit=true:  {manual}\nmanual_commit=false: {auto}")
    assert manual["lost"] == 0
    assert manual["lines"] >= TOTAL
    KafkaAdmin(kafka_bootstrap).delete_topics([topic, settings.dead_letter_topic])
