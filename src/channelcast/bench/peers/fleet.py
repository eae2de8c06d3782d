"""Driving the fan-out client process (:mod:`channelcast.bench.fanout_client`) from a
scenario: start it against a server, wait for its ``ready`` / ``probed`` / ``received``
lines, read its result, and summarise what the servers negotiated.

The client process is always killed on exit (also on an error or a cancellation); its
stderr goes to a log file in the scenario's folder, quoted when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from channelcast.bench.peers.process import PeerFailed, open_log
from channelcast.bench.peers.wire import Mode


@dataclass
class Fleet:
    process: asyncio.subprocess.Process
    log_path: Path

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-600:].strip()
        except OSError:
            return ""

    async def wait_for(self, marker: str, timeout_s: float) -> None:
        """Read lines until ``marker``; PeerFailed if the clients exit first or it does not
        come within ``timeout_s`` seconds."""
        assert self.process.stdout is not None
        want = marker.encode() + b"\n"
        try:
            async with asyncio.timeout(timeout_s):
                while (line := await self.process.stdout.readline()) != want:
                    if not line:
                        await self.process.wait()
                        raise PeerFailed(f"the clients exited before {marker!r} "
                                         f"(code {self.process.returncode}): {self._tail()}")
        except TimeoutError:
            raise PeerFailed(f"the clients did not report {marker!r} within "
                             f"{timeout_s:.0f}s") from None

    async def result(self, timeout_s: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise PeerFailed(f"the clients exited without a result: {self._tail()}")
                if line.startswith(b"{"):
                    await self.process.wait()
                    data: dict[str, Any] = json.loads(line)
                    return data


@contextlib.asynccontextmanager
async def client_fleet(url: str, clients: int, channel: str, mode: Mode, expected: int,
                       workdir: Path, connect_s: float = 180.0) -> AsyncIterator[Fleet]:
    """``clients`` WebSocket clients of ``mode`` subscribed to ``channel`` at ``url`` in a
    process of their own; entered once all are subscribed (``ready``)."""
    log_path = workdir / f"clients-{mode}.log"
    with open_log(workdir, log_path.name) as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "channelcast.bench.fanout_client", url, str(clients),
            channel, mode, str(expected), stdout=asyncio.subprocess.PIPE, stderr=log,
            stdin=asyncio.subprocess.DEVNULL, limit=1 << 24)
    fleet = Fleet(process, log_path)
    try:
        await fleet.wait_for("ready", connect_s)
        yield fleet
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def negotiated(result: dict[str, Any]) -> str:
    """What the servers answered Chromium's permessage-deflate offer with, e.g.
    ``permessage-deflate; client_max_window_bits=15 (1000/1000)`` or ``none (20/20)``."""
    counts: dict[str, int] = result.get("extensions") or {}
    total = sum(counts.values())
    parts = [f"{value or 'none'} ({n}/{total})"
             for value, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return " | ".join(parts) if parts else "unknown"
