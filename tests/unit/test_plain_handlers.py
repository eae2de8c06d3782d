"""Plain (non-async) worker handlers: they run in a thread, and one that never returns
cannot keep the process alive after its worker stopped (tkafka2 finding 4)."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from channelcast.brokers.base import as_async
from channelcast.message import Envelope, Record, new_position
from channelcast.types import ChannelName

HANGS = textwrap.dedent("""
    import asyncio, logging, threading
    from channelcast.brokers.memory import MemoryBroker

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    entered = threading.Event()

    def handle(record):  # a plain handler that never returns (a hung network call)
        entered.set()
        threading.Event().wait()

    async def main():
        async with MemoryBroker() as broker:
            worker = broker.worker("billing", channels={"orders.*": handle})
            task = asyncio.create_task(worker.run())
            await broker.publish("orders.1", "created", {"n": 1})
            while not entered.is_set():
                await asyncio.sleep(0.01)
            await worker.stop()
            await task
        print("stopped", flush=True)

    asyncio.run(main())
""")


def test_a_plain_handler_that_never_returns_does_not_keep_the_process_alive(
        tmp_path: Path) -> None:
    script = tmp_path / "hangs.py"
    script.write_text(HANGS)
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True,
                              text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process was still alive 30 s after its worker stopped: {exc}")
    assert done.returncode == 0, done.stderr
    assert "stopped" in done.stdout
    assert "handler handle was still running" in done.stderr, done.stderr


def record() -> Record:
    envelope = Envelope(ChannelName("orders.1"), "created", {"n": 1})
    return Record(envelope, new_position("t", 0, 0))


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_a_plain_handler_sees_the_callers_context_and_its_errors_reach_the_caller(
        ) -> None:
    seen: list[str] = []

    def handle(_record: Record) -> None:
        seen.append(VAR.get())
        raise ValueError("boom")

    VAR.set("caller")
    with pytest.raises(ValueError, match="boom"):
        await as_async(handle)(record())
    assert seen == ["caller"]


async def test_an_awaitable_a_plain_handler_returns_is_awaited() -> None:
    ran: list[int] = []

    async def later() -> None:
        ran.append(1)

    def handle(_record: Record) -> object:
        return later()

    await as_async(handle)(record())  # type: ignore[arg-type]
    assert ran == [1]


async def test_async_handlers_are_returned_as_they_are() -> None:
    async def handle(_record: Record) -> None:
        return None

    assert as_async(handle) is handle
    await asyncio.sleep(0)
