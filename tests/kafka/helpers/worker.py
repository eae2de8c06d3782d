"""A worker process for the crash acceptance test.

    python worker.py BOOTSTRAP TOPIC GROUP MANUAL(0|1) OUTFILE

Appends each handled message's id (one line, one write(2), so a SIGKILL loses nothing
already handled) to OUTFILE. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from channelcast.brokers.kafka import KafkaBroker
from channelcast.config import KafkaSettings
from channelcast.message import Record


async def main(bootstrap: str, topic: str, group: str, manual: bool, outfile: str) -> None:
    settings = KafkaSettings(
        brokers=bootstrap, default_topic=topic, default_partitions=4,
        dead_letter_topic=f"{topic}-dlq",
        consumer={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    fd = os.open(outfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def handle(record: Record) -> None:
        os.write(fd, record.envelope.id.encode() + b"\n")

    async with KafkaBroker(settings) as broker:
        worker = broker.worker(group, channels={"*": handle}, manual_commit=manual)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(worker.stop()))
        print("running", flush=True)
        await worker.run()
    os.close(fd)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5]))
