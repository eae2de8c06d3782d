"""Acceptance: two subscriber processes on the same channels both receive everything.

The PHP original shared one consumer group between servers, so each message reached only
one of them; fan-out here uses partition assignment, not a group.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from channelcast.brokers.kafka import KafkaBroker
from channelcast.brokers.kafka.admin import KafkaAdmin
from channelcast.message import Envelope
from channelcast.types import ChannelName
from tests.kafka.helpers.support import HELPERS, PYTHON, ROOT, settings_for

CHANNELS = 20
PER_CHANNEL = 50


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_two_subscriber_processes_both_receive_everything(
        kafka_bootstrap: str, unique: str) -> None:
    settings = settings_for(kafka_bootstrap, unique, partitions=4)
    total = CHANNELS * PER_CHANNEL
    async with KafkaBroker(settings) as broker:  # creates the topic
        procs = [await asyncio.create_subprocess_exec(
            PYTHON, str(HELPERS / "subscriber.py"), kafka_bootstrap, settings.default_topic,
            str(CHANNELS), str(total), stdout=subprocess.PIPE, cwd=ROOT)
            for _ in range(2)]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                assert line.strip() == b"ready"
            batch = [Envelope(channel=ChannelName(f"chan.{c}"), event="n", data=s)
                     for s in range(PER_CHANNEL) for c in range(CHANNELS)]
            await broker.publish_many(batch)
            outputs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    expected = list(range(PER_CHANNEL))
    for (stdout, _stderr), proc in zip(outputs, procs, strict=True):
        assert proc.returncode == 0
        seen = json.loads(stdout.decode().strip().splitlines()[-1])
        assert sorted(seen) == sorted(f"chan.{c}" for c in range(CHANNELS))
        assert all(v == expected for v in seen.values())
    KafkaAdmin(kafka_bootstrap).delete_topics([settings.default_topic])
