"""``/readyz`` names why the node is not ready: the error's type and message."""

from __future__ import annotations

import asyncio

import httpx

from channelcast.brokers.memory import MemoryBroker
from channelcast.errors import BrokerUnavailable
from tests.gateway.conftest import running_gateway


class UnreachableBroker(MemoryBroker):
    """Starts (so the gateway serves), then fails every ping like an unreachable Kafka."""

    async def ping(self) -> None:
        raise BrokerUnavailable("Kafka is unreachable (_TRANSPORT: Failed to get metadata)")


class SilentBroker(MemoryBroker):
    """A ping that never answers."""

    async def ping(self) -> None:
        await asyncio.sleep(60)


async def test_readyz_names_the_error_type_and_message() -> None:
    async with running_gateway(broker=UnreachableBroker()) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "broker unreachable",
            "error": "BrokerUnavailable: Kafka is unreachable (_TRANSPORT: Failed to get "
                     "metadata)"}


async def test_readyz_says_a_ping_went_unanswered_rather_than_nothing() -> None:
    async with running_gateway(broker=SilentBroker()) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "broker unreachable",
            "error": "TimeoutError: the broker did not answer a ping within 3 s"}
