"""Signed publishes are idempotent: a repeated signed request is a retry, not a new publish.

Same node: the first answer again and one record. Concurrent: the repeat waits for the
first. First attempt failed: the repeat tries again. Other nodes: a copy carries the same
message ids, derived from the signature. Body ids, when given, are the ids.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest

from channelcast.brokers.memory import MemoryBroker
from channelcast.errors import BrokerUnavailable, PublishOutcomeUnknown
from channelcast.gateway.auth import RequestVerifier, SignedRequest, sign_request
from channelcast.gateway.idempotency import AnswerMemory
from channelcast.message import Envelope, Record, ulid_from
from channelcast.types import ChannelName, Position
from tests.gateway.conftest import running_gateway

pytestmark = pytest.mark.timeout(60)

K, S = "key", "secret"


class GatedBroker(MemoryBroker):
    """A memory broker whose publish_many can be held (``gate``) or made to fail."""

    def __init__(self, failures: Sequence[Exception] = ()) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0
        self.called = asyncio.Event()
        self.failures = list(failures)

    async def publish_many(self, envelopes: Sequence[Envelope]) -> list[Position]:
        self.calls += 1
        self.called.set()
        await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        return await super().publish_many(envelopes)


def signed(settings_key: str, secret: str, body: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, sign_request(settings_key, secret, raw)


async def stored(broker: MemoryBroker, channel: str) -> list[Record]:
    route = broker.strategy.route(ChannelName(channel))
    return await broker.history(channel, Position(route.topic, route.partition, -1))


# --- the ids of a signed request ---------------------------------------------------------


def test_default_ids_derive_from_the_signature_and_sort_in_message_order() -> None:
    body = b'{"channel":"a","event":"e","data":1}'
    headers = sign_request(K, S, body, timestamp=1_800_000_000)
    one = RequestVerifier(K, S).verify(headers, body, now=1_800_000_000)
    other = RequestVerifier(K, S).verify(headers, body, now=1_800_000_100)  # another node
    ids = [one.message_id(i) for i in range(1000)]
    assert ids == [other.message_id(i) for i in range(1000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    sig = headers["X-Channelcast-Signature"]
    assert ids[5] == ulid_from(1_800_000_000_000, (int(sig[:16], 16) << 16) | 5)
    # Another body (or timestamp) signs differently, so its ids differ.
    again = sign_request(K, S, body + b" ", timestamp=1_800_000_000)
    assert SignedRequest(1_800_000_000, again["X-Channelcast-Signature"]).message_id(0) != ids[0]
    with pytest.raises(ValueError, match="outside"):
        one.message_id(1 << 16)


# --- the memory of answers ---------------------------------------------------------------


def counting(answer: bytes, calls: list[int], gate: asyncio.Event | None = None,
             fail: Exception | None = None) -> Callable[[], Awaitable[bytes]]:
    async def run() -> bytes:
        calls.append(1)
        if gate is not None:
            await gate.wait()
        if fail is not None:
            raise fail
        return answer

    return run


async def test_concurrent_identical_requests_run_once() -> None:
    memory = AnswerMemory(300)
    calls: list[int] = []
    gate = asyncio.Event()
    first = asyncio.create_task(memory.once("sig", 100, counting(b"A", calls, gate), now=100))
    await asyncio.sleep(0)
    second = asyncio.create_task(memory.once("sig", 100, counting(b"B", calls), now=100))
    await asyncio.sleep(0.01)
    assert not second.done()  # waiting for the first
    gate.set()
    assert await asyncio.gather(first, second) == [b"A", b"A"]
    assert len(calls) == 1
    assert await memory.once("sig", 100, counting(b"C", calls), now=101) == b"A"
    assert len(calls) == 1


async def test_a_failed_attempt_is_forgotten_and_its_waiters_try_themselves() -> None:
    memory = AnswerMemory(300)
    calls: list[int] = []
    gate = asyncio.Event()
    first = asyncio.create_task(memory.once(
        "sig", 100, counting(b"A", calls, gate, fail=BrokerUnavailable("down")), now=100))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(memory.once("sig", 100, counting(b"B", calls), now=100))
    await asyncio.sleep(0.01)
    gate.set()
    with pytest.raises(BrokerUnavailable):
        await first
    assert await waiter == b"B"  # it ran itself once the first failed
    assert len(calls) == 2
    assert await memory.once("sig", 100, counting(b"C", calls), now=100) == b"B"


async def test_a_cancelled_first_attempt_lets_the_waiter_run() -> None:
    memory = AnswerMemory(300)
    calls: list[int] = []
    first = asyncio.create_task(memory.once("sig", 1, counting(b"A", calls, asyncio.Event()),
                                            now=1))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(memory.once("sig", 1, counting(b"B", calls), now=1))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await waiter == b"B"
    assert first.cancelled()


async def test_the_memory_is_bounded_by_requests_bytes_and_window() -> None:
    memory = AnswerMemory(60, max_requests=10, max_bytes=1000)
    calls: list[int] = []
    for i in range(50):
        await memory.once(f"s{i}", 100, counting(b"x" * 10, calls), now=100)
    assert len(memory) == 10
    assert memory.remembered_bytes == 100
    for i in range(5):
        await memory.once(f"big{i}", 100, counting(b"y" * 400, calls), now=100)
    assert memory.remembered_bytes <= 1000
    await memory.once("late", 200, counting(b"z", calls), now=200)  # the rest left the window
    assert len(memory) == 1
    assert memory.remembered_bytes == 1
    # A forgotten request runs again.
    before = len(calls)
    await memory.once("s0", 200, counting(b"x", calls), now=200)
    assert len(calls) == before + 1


# --- over HTTP ---------------------------------------------------------------------------


async def test_two_identical_signed_requests_get_one_answer_and_store_once() -> None:
    broker = GatedBroker()
    async with running_gateway(broker=broker) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        g = gw.settings().gateway
        raw, headers = signed(g.app_key, g.app_secret, {"messages": [
            {"channel": "idem.a", "event": "e", "data": i} for i in range(3)]})
        first = await http.post("/api/publish", content=raw, headers=headers)
        second = await http.post("/api/publish", content=raw, headers=headers)
        assert (first.status_code, second.status_code) == (200, 200)
        assert second.json() == first.json()
        records = await stored(broker, "idem.a")
        assert [r.envelope.data for r in records] == [0, 1, 2]
        assert [r.envelope.id for r in records] == first.json()["ids"]
        sig = SignedRequest(int(headers["X-Channelcast-Timestamp"]),
                            headers["X-Channelcast-Signature"])
        assert first.json()["ids"] == [sig.message_id(i) for i in range(3)]
        assert broker.calls == 1


async def test_a_repeat_while_the_first_is_in_flight_waits_for_its_answer() -> None:
    broker = GatedBroker()
    async with running_gateway(broker=broker) as gw, \
            httpx.AsyncClient(base_url=gw.base_url, timeout=30) as http:
        g = gw.settings().gateway
        raw, headers = signed(g.app_key, g.app_secret,
                              {"channel": "idem.b", "event": "e", "data": "x"})
        verifier = gw.gateway.verifier
        verified: list[SignedRequest] = []
        both_verified = asyncio.Event()
        verify = verifier.verify

        def counting_verify(*args: Any, **kwargs: Any) -> SignedRequest:
            verified.append(verify(*args, **kwargs))
            if len(verified) == 2:
                both_verified.set()
            return verified[-1]

        verifier.verify = counting_verify  # type: ignore[method-assign]
        broker.gate.clear()
        first = asyncio.create_task(http.post("/api/publish", content=raw, headers=headers))
        await asyncio.wait_for(broker.called.wait(), 10)
        second = asyncio.create_task(http.post("/api/publish", content=raw, headers=headers))
        # The repeat reached the node while the first is held in the broker.
        await asyncio.wait_for(both_verified.wait(), 10)
        await asyncio.sleep(0.1)
        assert not second.done()
        broker.gate.set()
        a, b = await asyncio.gather(first, second)
        assert (a.status_code, b.status_code) == (200, 200)
        assert a.json() == b.json()
        assert broker.calls == 1
        assert len(await stored(broker, "idem.b")) == 1


@pytest.mark.parametrize(("failure", "status", "code"), [
    (BrokerUnavailable("Kafka is down"), 503, "broker_error"),
    (PublishOutcomeUnknown("no ack; may be stored"), 503, "outcome_unknown"),
], ids=["not-stored", "outcome-unknown"])
async def test_a_failed_first_attempt_lets_the_repeat_try_again(
        failure: Exception, status: int, code: str) -> None:
    broker = GatedBroker(failures=[failure])
    async with running_gateway(broker=broker) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        g = gw.settings().gateway
        raw, headers = signed(g.app_key, g.app_secret,
                              {"channel": "idem.c", "event": "e", "data": 1})
        first = await http.post("/api/publish", content=raw, headers=headers)
        assert first.status_code == status
        assert first.json()["data"]["code"] == code
        retry = await http.post("/api/publish", content=raw, headers=headers)
        assert retry.status_code == 200, retry.text
        again = await http.post("/api/publish", content=raw, headers=headers)
        assert again.json() == retry.json()
        assert broker.calls == 2
        records = await stored(broker, "idem.c")
        assert [r.envelope.id for r in records] == retry.json()["ids"]


async def test_two_nodes_over_one_broker_give_a_repeat_the_same_ids() -> None:
    shared = MemoryBroker()
    async with running_gateway(broker=shared) as one, running_gateway(broker=shared) as two, \
            httpx.AsyncClient() as http:
        g = one.settings().gateway
        raw, headers = signed(g.app_key, g.app_secret, {"messages": [
            {"channel": "idem.d", "event": "e", "data": i} for i in range(2)]})
        a = await http.post(one.base_url + "/api/publish", content=raw, headers=headers)
        b = await http.post(two.base_url + "/api/publish", content=raw, headers=headers)
        assert (a.status_code, b.status_code) == (200, 200)
        assert a.json()["ids"] == b.json()["ids"]
        assert a.json()["positions"] != b.json()["positions"]  # each node published
        records = await stored(shared, "idem.d")
        assert [r.envelope.id for r in records] == a.json()["ids"] * 2  # dedupe by id


async def test_ids_in_the_body_are_the_ids_and_are_checked() -> None:
    broker = GatedBroker()
    async with running_gateway(broker=broker) as gw, \
            httpx.AsyncClient(base_url=gw.base_url) as http:
        g = gw.settings().gateway
        raw, headers = signed(g.app_key, g.app_secret, {"messages": [
            {"channel": "idem.e", "event": "e", "data": 0, "id": "order-7:created"},
            {"channel": "idem.e", "event": "e", "data": 1}]})
        r = await http.post("/api/publish", content=raw, headers=headers)
        assert r.status_code == 200, r.text
        sig = SignedRequest(int(headers["X-Channelcast-Timestamp"]),
                            headers["X-Channelcast-Signature"])
        assert r.json()["ids"] == ["order-7:created", sig.message_id(1)]
        assert [x.envelope.id for x in await stored(broker, "idem.e")] == r.json()["ids"]

        for item, rule in [({"channel": "idem.e", "event": "e", "id": "no spaces"},
                            "message.id may only hold"),
                           ({"channel": "idem.e", "event": "e", "id": ""},
                            "message.id must be a non-empty string")]:
            raw, headers = signed(g.app_key, g.app_secret, item)
            bad = await http.post("/api/publish", content=raw, headers=headers)
            assert bad.status_code == 400
            assert bad.json()["data"]["code"] == "bad_message"
            assert rule in bad.json()["data"]["message"]
        # Unsigned demo publishes keep their own ids too.
        demo = await http.post("/demo/publish", json={"channel": "idem.e", "event": "e",
                                                      "id": "demo-1"})
        assert demo.json()["ids"] == ["demo-1"]
