"""Issue 13 case 1 on real Kafka: one SSE disconnect (or any broker subscription nobody
reads) can no longer stop other subscribers of the node.

The issue's reproduction: a gateway on Kafka (a topic of 3 partitions), an SSE client on
``leak.a`` that hangs up, a WebSocket client on ``other.b``, 12,000 messages to ``leak.a``
in batches of 1,000, then one to ``other.b``: it must arrive, and ``/metrics`` must show
nothing left behind.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from channelcast.brokers.kafka import KafkaBroker
from channelcast.config import Settings
from tests.gateway.conftest import running_gateway, ws_client
from tests.gateway.test_robustness import nothing_left, open_sse, scraped, until
from tests.kafka.helpers.support import settings_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


async def _publish_batches(gw_url: str, settings: Settings, channel: str, count: int) -> None:
    from tests.gateway.conftest import signed_post_args

    async with httpx.AsyncClient(base_url=gw_url, timeout=30) as http:
        for start in range(0, count, 1000):
            body = {"messages": [{"channel": channel, "event": "e", "data": {"i": i}}
                                 for i in range(start, start + 1000)]}
            r = await http.post("/api/publish", **signed_post_args(settings, body))
            assert r.status_code == 200, r.text


@pytest.mark.parametrize("leak", ["sse-hangup", "unread-subscription"])
async def test_one_leaked_subscription_never_stops_the_node(
        kafka_bootstrap: str, unique: str, leak: str) -> None:
    settings = Settings(kafka=settings_for(kafka_bootstrap, unique, partitions=3))
    broker = KafkaBroker(settings.kafka)
    async with running_gateway(settings, broker=broker) as gw:
        # The node's own standing subscriptions (the Pusher side follows its state channel).
        baseline = broker.subscription_count()
        unread = None
        if leak == "sse-hangup":
            _, writer = await open_sse(gw.server.port, "leak.a")
            writer.close()
            await until(lambda: nothing_left(gw), 10, "the SSE client released")
        else:  # a broker subscription that nobody will ever read, with a small queue
            unread = broker.subscribe(["leak.a"], max_queue=100)
            await unread.ready()
        async with ws_client(gw.ws_url) as client:
            await client.subscribe("other.b")
            await _publish_batches(gw.base_url, settings, "leak.a", 12_000)
            await _publish_batches(gw.base_url, settings, "other.b", 1000)
            first = await client.expect("message", 20)
            assert first["channel"] == "other.b"
            assert first["data"] == {"i": 0}
            metrics = await scraped(gw)
            open_subs = metrics["channelcast_broker_open_subscriptions"]
            assert open_subs == baseline + metrics["channelcast_broker_subscriptions"] + (
                1 if unread is not None else 0)
        if unread is not None:
            # The leaked one lost nothing: read now, it catches up from the log.
            got = 0
            async with asyncio.timeout(60):
                async for record in unread:
                    assert record.envelope.data == {"i": got}
                    got += 1
                    if got == 12_000:
                        break
            await unread.close()
        await until(lambda: nothing_left(gw), 10, "every subscription released")
        assert (await scraped(gw))["channelcast_broker_open_subscriptions"] == baseline
