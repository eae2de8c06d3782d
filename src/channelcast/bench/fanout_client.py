"""The fan-out benchmark's clients: N WebSocket connections in a process of their own.

Run as ``python -m channelcast.bench.fanout_client URL N CHANNEL MODE EXPECTED``. MODE
``channelcast`` speaks the gateway protocol (wait for ``connected``, subscribe, wait for
``subscribed``); ``plain`` just connects. It prints ``ready`` once every client is in,
then records, per phase tag (``data["r"]``), each delivery's latency from the intended send
time in ``data["t"]`` (``time.monotonic_ns``: one clock for every process on the machine),
and prints one JSON line with counts, first/last receive times and the encoded histogram
when each client has ``EXPECTED`` messages or no message came for 30 s.

Separate process so the clients do not share an event loop (or the GIL) with the server
they measure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from channelcast.bench.hist import LatencyRecorder


@dataclass
class PhaseStats:
    recorder: LatencyRecorder = field(default_factory=LatencyRecorder)
    count: int = 0
    first_ns: int = 0
    last_ns: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "first_ns": self.first_ns, "last_ns": self.last_ns,
                "histogram": self.recorder.encode() if self.count else ""}


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _open(url: str, channel: str, mode: str) -> ClientConnection:
    ws = await connect(url, max_size=1 << 22, open_timeout=60, ping_interval=None,
                       compression=None)
    if mode == "channelcast":
        while json.loads(await ws.recv()).get("type") != "connected":
            pass
        await ws.send(json.dumps({"type": "subscribe", "channel": channel}))
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("type") == "subscribed":
                break
            if frame.get("type") == "error":
                raise RuntimeError(f"subscribe failed: {frame}")
    return ws


_STAMP = re.compile(r'"t":(\d+),"r":(\d+)')


class _Progress:
    received = 0


async def _read(ws: ClientConnection, phases: dict[int, PhaseStats], expected: int,
                progress: _Progress) -> None:
    got = 0
    clock = time.monotonic_ns
    search = _STAMP.search
    with contextlib.suppress(Exception):  # closed by the server or by the idle watchdog
        async for raw in ws:
            now = clock()
            # A regex, not json.loads: the client process must stay cheaper than the
            # server it measures (both share two cores).
            m = search(raw if isinstance(raw, str) else raw.decode())
            if m is None:
                continue
            stats = phases.get(int(m.group(2)))
            if stats is None:
                stats = phases[int(m.group(2))] = PhaseStats()
            stats.recorder.record_ns(now - int(m.group(1)))
            if not stats.count:
                stats.first_ns = now
            stats.last_ns = now
            stats.count += 1
            progress.received += 1
            got += 1
            if got >= expected:
                return


async def _watchdog(tasks: list[asyncio.Task[None]], progress: _Progress,
                    idle_s: float) -> None:
    """Stop every reader once nothing has arrived for ``idle_s`` seconds."""
    last, idle = -1, 0.0
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0.5)
        if progress.received == last:
            idle += 0.5
            if idle >= idle_s:
                for t in tasks:
                    t.cancel()
                return
        else:
            last, idle = progress.received, 0.0


async def run(url: str, clients: int, channel: str, mode: str, expected: int,
              idle_s: float = 30.0) -> dict[str, Any]:
    raise_fd_limit()
    connections: list[ClientConnection] = []
    # Connect in modest waves: a 1,000-connection stampede only measures the accept queue.
    for first in range(0, clients, 50):
        connections += await asyncio.gather(*(_open(url, channel, mode)
                                              for _ in range(first, min(clients, first + 50))))
    print("ready", flush=True)
    phases: dict[int, PhaseStats] = {}
    progress = _Progress()
    readers = [asyncio.create_task(_read(ws, phases, expected, progress))
               for ws in connections]
    await _watchdog(readers, progress, idle_s)
    await asyncio.gather(*readers, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)
    return {"clients": clients, "phases": {str(k): v.to_json() for k, v in phases.items()}}


def main(argv: list[str]) -> int:
    url, clients, channel, mode, expected = argv
    result = asyncio.run(run(url, int(clients), channel, mode, int(expected)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
