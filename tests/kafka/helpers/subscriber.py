"""A fan-out subscriber process for the acceptance tests.

    python subscriber.py BOOTSTRAP TOPIC CHANNEL_COUNT EXPECTED

Subscribes to ``chan.0 .. chan.{N-1}`` on the default topic ``TOPIC``, prints ``ready``
once live, then prints one JSON line ``{channel: [seq, ...]}`` after EXPECTED records.
"""

from __future__ import annotations

import asyncio
import json
import sys

from channelcast.brokers.kafka import KafkaBroker
from channelcast.config import KafkaSettings


async def main(bootstrap: str, topic: str, channel_count: int, expected: int) -> None:
    settings = KafkaSettings(brokers=bootstrap, default_topic=topic, default_partitions=4)
    channels = [f"chan.{i}" for i in range(channel_count)]
    seen: dict[str, list[int]] = {}
    async with KafkaBroker(settings) as broker, broker.subscribe(channels) as sub:
        print("ready", flush=True)
        count = 0
        async for record in sub:
            seen.setdefault(record.channel, []).append(record.envelope.data)
            count += 1
            if count == expected:
                break
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
