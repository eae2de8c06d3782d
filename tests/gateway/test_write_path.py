"""The fan-out write path: batched direct writes, the shared frame bytes, per-batch metrics.

Session tests use a fake transport (no sockets); the others run the real uvicorn protocol
through the gateway and read the frames with a real WebSocket client, on the direct path
and on the fallback to the ASGI send (an untested uvicorn, a missing attribute)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from channelcast.brokers.memory import MemoryBroker
from channelcast.gateway import server as server_module
from channelcast.gateway.hub import Hub
from channelcast.gateway.metrics import GatewayMetrics
from channelcast.gateway.protocol import CLOSE_INTERNAL_ERROR, ClientProtocol, Credentials
from channelcast.gateway.server import TESTED_UVICORN, text_frame, uvicorn_problem
from channelcast.gateway.session import DROP_OLDEST, DirectTransport, Outbox, Outgoing, Session
from channelcast.gateway.websocket import WebSocketTransport
from channelcast.message import Envelope, Record
from channelcast.types import ChannelName, Position
from tests.gateway.conftest import Client, Running, running_gateway, settings_with, ws_client
from tests.gateway.logwatch import LogWatch

C = ChannelName("c")


class FakeDirect:
    """Writes go to lists; ``room()`` is the budget left, which writes use up (as a
    transport's buffer that the socket does not drain)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.batches: list[list[str]] = []
        self.sent: list[str] = []  # through the awaiting path

    async def send(self, item: Outgoing) -> None:
        self.sent.append(item.text)

    async def close(self, code: int, reason: str) -> None:
        pass

    def room(self) -> int:
        return max(0, self.budget)

    def send_now(self, items: list[Outgoing]) -> None:
        self.batches.append([i.text for i in items])
        self.budget -= sum(len(i.text) for i in items)


def record(i: int) -> Record:
    return Record(Envelope(channel=C, event="e", data=i), Position("t", 0, i))


def make_session(transport: FakeDirect, send_queue: int = 256) -> Session:
    hub = Hub(MemoryBroker())
    protocol = ClientProtocol("n.1", Credentials("k", "s"))
    return Session(hub, protocol, transport, send_queue=send_queue,
                   slow_client_policy=DROP_OLDEST, metrics=GatewayMetrics())


def test_fake_is_a_direct_transport() -> None:
    assert isinstance(FakeDirect(1), DirectTransport)


async def test_a_burst_queued_before_the_writer_runs_goes_out_in_one_write() -> None:
    transport = FakeDirect(budget=1 << 20)
    session = make_session(transport)
    session.start(greet=False)
    for i in range(50):
        session.deliver(C, record(i), f"m{i}")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert transport.batches == [[f"m{i}" for i in range(50)]]
    assert transport.sent == []
    assert session.metrics.delivered == 50
    assert session.metrics.registry.get_sample_value("channelcast_deliveries_total") == 50
    await session.aclose()


async def test_a_batch_stops_at_the_room_and_the_rest_stays_under_the_policy() -> None:
    transport = FakeDirect(budget=0)
    session = make_session(transport, send_queue=4)
    # Room for the dropped notice and 1.5 messages of 10 chars: the second one crosses it.
    transport.budget = len(session._render_dropped(6, ["c"]).text) + 15
    session.start(greet=False)
    for i in range(10):
        session.deliver(C, record(i), f"message{i:03d}")
    # Only four fit in the bounded buffer: six were dropped before the writer ran.
    assert session.outbox.dropped == 6
    for _ in range(10):
        await asyncio.sleep(0)
    first = transport.batches[0]
    assert first[0].startswith('{"type":"dropped"')
    assert '"count":6' in first[0]
    assert first[1:] == ["message006", "message007"]
    assert transport.sent == ["message008", "message009"]
    assert session.metrics.registry.get_sample_value("channelcast_drops_total") == 6
    await session.aclose()


async def test_without_room_every_frame_takes_the_awaiting_path() -> None:
    transport = FakeDirect(budget=0)
    session = make_session(transport)
    session.start(greet=False)
    for i in range(5):
        session.deliver(C, record(i), f"m{i}")
    for _ in range(10):
        await asyncio.sleep(0)
    assert transport.batches == []
    assert transport.sent == [f"m{i}" for i in range(5)]
    await session.aclose()


def test_get_nowait_gives_the_dropped_notice_first_and_none_when_empty() -> None:
    box = Outbox(1, DROP_OLDEST)
    assert box.get_nowait() is None
    box.put(Outgoing("a", record=record(1)))
    box.put(Outgoing("b", record=record(2)))
    notice = box.get_nowait()
    assert notice is not None
    assert json.loads(notice.text)["type"] == "dropped"
    item = box.get_nowait()
    assert item is not None
    assert item.text == "b"
    assert box.get_nowait() is None


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_parses_as_one_unmasked_text_frame(size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)  # multi-byte UTF-8 too
    data = text_frame(text)
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
    else:
        raise AssertionError("the frame was incomplete")
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data.decode() == text
    assert text_frame(text) == data  # cached or not, the same bytes


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("server", "offer"), [(False, None), (False, "deflate"),
                                               (True, None), (True, "deflate")])
async def test_many_messages_over_the_direct_path_arrive_complete_and_in_order(
        server: bool, offer: str | None) -> None:
    """Compression is off by default (a browser's offer is declined); with
    ``gateway.compression`` it is negotiated without server context takeover, so each
    message is compressed once and the same frame bytes go to every such connection."""
    async with running_gateway(settings_with(compression=server)) as gw, \
            ws_client(gw.ws_url, compression=offer) as client, \
            ws_client(gw.ws_url, compression=offer) as other:
        for c in (client, other):
            await c.send({"type": "subscribe", "channel": "order"})
            while (await c.recv())["type"] != "subscribed":
                pass
        # Published in one call: the pump hands them out back to back, so the writer
        # finds many queued and takes the direct, batched path.
        await gw.gateway.broker.publish_many(
            [Envelope(channel=ChannelName("order"), event="e", data={"seq": i, "pad": "y" * 300})
             for i in range(500)])
        for c in (client, other):
            seqs = []
            while len(seqs) < 500:
                frame = await asyncio.wait_for(c.recv(), 10)
                assert frame["type"] == "message", frame
                seqs.append(frame["data"]["seq"])
            assert seqs == list(range(500))
        negotiated = client.ws.protocol.extensions
        assert bool(negotiated) == (server and offer is not None)
        if negotiated:
            assert negotiated[0].remote_no_context_takeover  # the server's side, seen here
        session = next(iter(gw.gateway.sessions))
        assert isinstance(session.transport, DirectTransport)
        assert session.transport.room() > 0  # the server offers the direct path
        assert gw.gateway.metrics.delivered == 1000


@pytest.mark.parametrize("size", [5, 300, 70_000])
def test_a_shared_deflated_frame_is_what_websockets_writes_without_context_takeover(
        size: int) -> None:
    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.frames import Frame, Opcode

    from channelcast.gateway.server import deflated_frame, shared_deflate

    ext = PerMessageDeflate(False, True, 12, 12, {"memLevel": 5})
    text = json.dumps({"seq": size, "pad": "ab" * size})
    params = shared_deflate([ext])
    assert params is not None
    ours = deflated_frame(text, params)
    theirs = ext.encode(Frame(Opcode.TEXT, text.encode()))
    assert theirs.rsv1
    assert ours[0] == 0xC1  # FIN, RSV1, text
    assert ours.endswith(bytes(theirs.data))
    # Twice the same message: the same bytes, built once.
    assert deflated_frame(text, params) is ours or len(text) > 16 * 1024
    assert shared_deflate([PerMessageDeflate(False, False, 12, 12, {})]) is None


def test_take_stops_at_the_room_and_keeps_the_bound_on_what_is_left() -> None:
    box = Outbox(3, DROP_OLDEST)
    box.put(Outgoing("ctl", frame={"type": "subscribed"}))
    for i in range(3):
        box.put(Outgoing(f"m{i}", record=record(i)))
    assert box.take(0) == []
    assert [o.text for o in box.take(1)] == ["ctl"]  # at least one frame for any room
    assert [o.text for o in box.take(4)] == ["m0", "m1"]  # 2 + 2 chars reach the room
    # One message is left, so two more fit before the oldest is dropped.
    box.put(Outgoing("m3", record=record(3)))
    box.put(Outgoing("m4", record=record(4)))
    assert box.dropped == 0
    box.put(Outgoing("m5", record=record(5)))
    assert box.dropped == 1
    rest = box.take(1 << 20)
    assert json.loads(rest[0].text)["data"]["count"] == 1
    assert [o.text for o in rest[1:]] == ["m3", "m4", "m5"]
    assert box.take(1 << 20) == []


# --- uvicorn internals: the version/attribute guard and failing writers ---------------------


def test_the_installed_uvicorn_is_in_the_tested_range_and_others_are_named() -> None:
    assert uvicorn_problem() is None  # pyproject.toml pins the range the tests run on
    lo, hi = TESTED_UVICORN
    assert uvicorn_problem(f"{lo[0]}.{lo[1]}.0") is None
    assert uvicorn_problem(f"{hi[0]}.{hi[1] - 1}.9") is None
    for version in ("0.51.0", f"{hi[0]}.{hi[1]}.0", f"{hi[0]}.{hi[1]}.0rc1", "1.0", "dev"):
        problem = uvicorn_problem(version)
        assert problem is not None
        assert version in problem
        assert "outside the tested range" in problem


async def publish_and_receive(gw: Running, client: Client, count: int) -> list[int]:
    await client.send({"type": "subscribe", "channel": "guarded"})
    await client.expect("subscribed")
    await gw.gateway.broker.publish_many(
        [Envelope(channel=ChannelName("guarded"), event="e", data={"seq": i, "pad": "z" * 200})
         for i in range(count)])
    seqs = []
    while len(seqs) < count:
        frame = await asyncio.wait_for(client.recv(), 10)
        assert frame["type"] == "message", frame
        seqs.append(frame["data"]["seq"])
    return seqs


@pytest.mark.timeout(60)
async def test_an_untested_uvicorn_version_falls_back_to_the_asgi_send_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(uvicorn, "__version__", "0.51.0")
    with caplog.at_level(logging.WARNING, logger="channelcast.gateway"):
        async with running_gateway(settings_with()) as gw, ws_client(gw.ws_url) as client:
            assert await publish_and_receive(gw, client, 300) == list(range(300))
            session = next(iter(gw.gateway.sessions))
            assert isinstance(session.transport, WebSocketTransport)
            assert session.transport.room() == 0  # no direct path offered
            assert session.transport._write is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("uvicorn 0.51.0 is outside the tested range" in w and "ASGI send" in w
               for w in warnings), warnings


@pytest.mark.timeout(60)
async def test_a_protocol_without_the_attributes_falls_back_per_connection_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(server_module, "DIRECT_PATH_ATTRIBUTES",
                        (*server_module.DIRECT_PATH_ATTRIBUTES, "not_in_any_uvicorn"))
    monkeypatch.setattr(server_module, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="channelcast.gateway"):
        async with running_gateway(settings_with()) as gw, ws_client(gw.ws_url) as client:
            assert await publish_and_receive(gw, client, 300) == list(range(300))
            session = next(iter(gw.gateway.sessions))
            assert session.transport.room() == 0  # type: ignore[attr-defined]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"uvicorn {uvicorn.__version__}" in w and "not_in_any_uvicorn" in w
               for w in warnings), warnings


@pytest.mark.timeout(60)
async def test_the_tested_uvicorn_offers_the_direct_path_without_warnings(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="channelcast.gateway"):
        async with running_gateway(settings_with()) as gw, ws_client(gw.ws_url) as client:
            assert await publish_and_receive(gw, client, 300) == list(range(300))
            session = next(iter(gw.gateway.sessions))
            assert session.transport.room() > 0  # type: ignore[attr-defined]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def read_until_closed(client: Client) -> None:
    while True:
        await client.recv(10)


@pytest.mark.timeout(60)
async def test_a_failing_writer_warns_with_the_connection_id_and_closes_1011(
        caplog: pytest.LogCaptureFixture, server_log: LogWatch) -> None:
    """What uvicorn 0.51 did to the direct path (an attribute error in the writer), made
    visible: a WARNING and a closed connection instead of a client that hears nothing."""
    server_log.expect(r"writer of \S+ failed \(AttributeError")
    def broken_room() -> int:
        raise AttributeError("'Protocol' object has no attribute 'disconnected'")

    with caplog.at_level(logging.WARNING, logger="channelcast.gateway"):
        async with running_gateway(settings_with()) as gw, ws_client(gw.ws_url) as client:
            await client.send({"type": "subscribe", "channel": "broken"})
            await client.expect("subscribed")
            session = next(iter(gw.gateway.sessions))
            session.transport._room = broken_room  # type: ignore[attr-defined]
            await gw.gateway.broker.publish("broken", "e", 1)
            with pytest.raises(ConnectionClosed):
                await read_until_closed(client)
            assert client.ws.close_code == CLOSE_INTERNAL_ERROR
            await asyncio.wait_for(session.closed.wait(), 5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(session.connection_id in w and "AttributeError" in w and "1011" in w
               for w in warnings), warnings


class FailingDirect(FakeDirect):
    def __init__(self, error: Exception) -> None:
        super().__init__(budget=1 << 20)
        self.error = error
        self.closed_with: list[int] = []

    def send_now(self, items: list[Outgoing]) -> None:
        raise self.error

    async def close(self, code: int, reason: str) -> None:
        self.closed_with.append(code)


async def test_a_client_that_went_away_stops_the_writer_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    transport = FailingDirect(ConnectionResetError("gone"))
    session = make_session(transport)
    with caplog.at_level(logging.DEBUG, logger="channelcast.gateway"):
        session.start(greet=False)
        session.deliver(C, record(1), "m1")
        await asyncio.wait_for(session.closed.wait(), 5)
    assert transport.closed_with == []  # the endpoint notices the disconnect itself
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("went away" in r.getMessage() for r in caplog.records)
    await session.aclose()


async def test_any_other_writer_failure_is_a_warning_and_a_1011_close(
        caplog: pytest.LogCaptureFixture, server_log: LogWatch) -> None:
    server_log.expect(r"writer of n\.1 failed \(RuntimeError")
    transport = FailingDirect(RuntimeError("unexpected ASGI message"))
    session = make_session(transport)
    with caplog.at_level(logging.WARNING, logger="channelcast.gateway"):
        session.start(greet=False)
        session.deliver(C, record(1), "m1")
        await asyncio.wait_for(session.closed.wait(), 5)
    assert transport.closed_with == [CLOSE_INTERNAL_ERROR]
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert session.connection_id in warning.getMessage()
    assert "RuntimeError: unexpected ASGI message" in warning.getMessage()
    assert session.outbox_closed
    session.deliver(C, record(2), "m2")  # ignored from now on
    assert len(session.outbox) == 0
    await session.aclose()
