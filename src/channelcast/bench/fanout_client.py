"""The fan-out benchmark's clients: N WebSocket connections in a process of their own.

Run as ``python -m channelcast.bench.fanout_client URL N CHANNEL MODE EXPECTED``. MODE is
the server's subscribe protocol (:mod:`channelcast.bench.peers.wire`): ``channelcast``
(the gateway), ``centrifugo``, ``pusher`` (sockudo) or ``plain`` (just connect). Every
connection makes a browser-like handshake: Chromium's permessage-deflate offer
(``permessage-deflate; client_max_window_bits``), an ``Origin`` of the server's own
address, Chromium's User-Agent and request headers; what each server answered is counted
in the result (``extensions``).

Each connection reads from the moment it is open (so application-level pings are
answered while the others still connect). The process prints ``ready`` once every client
is subscribed, ``probed`` once every client has seen a probe (phase tag 0: the server is
live, e.g. its Kafka consumer reads) and ``received`` when the readers are done (before it
closes the connections), then records, per phase tag (``data["r"]`` >= 1),
each delivery's latency from the intended send time in ``data["t"]`` and the frames that
carried them
(``time.monotonic_ns``: one clock for every process on the machine), and prints one JSON
line with counts, first/last receive times and the encoded histogram when each client has
``EXPECTED`` messages or no message came for 30 s.

Separate process so the clients do not share an event loop (or the GIL) with the server
they measure.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.typing import Origin

from channelcast.bench.hist import LatencyRecorder
from channelcast.bench.peers.wire import (
    BROWSER_HEADERS,
    CHROMIUM_EXTENSIONS,
    CHROMIUM_USER_AGENT,
    MODES,
    Handshake,
    Mode,
    keepalive_reply,
    stamps,
)

PROBE = 0


@dataclass
class PhaseStats:
    recorder: LatencyRecorder = field(default_factory=LatencyRecorder)
    count: int = 0
    frames: int = 0
    """WebSocket frames that carried messages of this phase (a server may put several
    messages in one frame)."""
    first_ns: int = 0
    last_ns: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "frames": self.frames, "first_ns": self.first_ns,
                "last_ns": self.last_ns,
                "histogram": self.recorder.encode() if self.count else ""}


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def origin_of(url: str) -> str:
    """The ``Origin`` a page served by this server would send (http for ws, https for wss)."""
    parts = urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}"


def chromium_deflate_offer() -> ClientPerMessageDeflateFactory:
    """permessage-deflate offered exactly as Chromium offers it (no parameter but
    ``client_max_window_bits``, zlib's default settings)."""
    return ClientPerMessageDeflateFactory(client_max_window_bits=True)


class _Progress:
    received = 0


@dataclass
class _Client:
    ws: ClientConnection
    mode: Mode
    expected: int
    phases: dict[int, PhaseStats]
    progress: _Progress
    probed: asyncio.Event = field(default_factory=asyncio.Event)
    got: int = 0

    async def read(self) -> None:
        clock = time.monotonic_ns
        mode = self.mode
        ws = self.ws
        phases = self.phases
        with contextlib.suppress(Exception):  # closed by the server or by the watchdog
            async for raw in ws:
                now = clock()
                text = raw if isinstance(raw, str) else raw.decode()
                if mode == "centrifugo" or mode == "pusher":
                    reply = keepalive_reply(mode, text)
                    if reply is not None:
                        await ws.send(reply)
                        continue
                # A regex, not json.loads: the client process must stay cheaper than the
                # server it measures (both share two cores).
                framed: PhaseStats | None = None
                for sent, tag in stamps(text):
                    if tag == PROBE:
                        self.probed.set()
                        continue
                    stats = phases.get(tag)
                    if stats is None:
                        stats = phases[tag] = PhaseStats()
                    if stats is not framed:
                        stats.frames += 1
                        framed = stats
                    stats.recorder.record_ns(now - sent)
                    if not stats.count:
                        stats.first_ns = now
                    stats.last_ns = now
                    stats.count += 1
                    self.progress.received += 1
                    self.got += 1
                if self.got >= self.expected:
                    return


async def _open(url: str, channel: str, mode: Mode) -> ClientConnection:
    ws = await connect(url, max_size=1 << 22, open_timeout=60, ping_interval=None,
                       compression=None, extensions=[chromium_deflate_offer()],
                       origin=Origin(origin_of(url)), user_agent_header=CHROMIUM_USER_AGENT,
                       additional_headers=list(BROWSER_HEADERS))
    shake = Handshake(mode, channel)
    try:
        for frame in shake.start():
            await ws.send(frame)
        while not shake.done:
            raw = await ws.recv()
            for frame in shake.receive(raw if isinstance(raw, str) else raw.decode()):
                await ws.send(frame)
    except BaseException:
        await ws.close()
        raise
    return ws


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


async def _announce_probed(clients: list[_Client]) -> None:
    await asyncio.gather(*(c.probed.wait() for c in clients))
    print("probed", flush=True)


async def run(url: str, clients: int, channel: str, mode: Mode, expected: int,
              idle_s: float = 30.0) -> dict[str, Any]:
    raise_fd_limit()
    phases: dict[int, PhaseStats] = {}
    progress = _Progress()
    opened: list[_Client] = []
    readers: list[asyncio.Task[None]] = []
    # Connect in modest waves: a 1,000-connection stampede only measures the accept queue.
    for first in range(0, clients, 50):
        batch = await asyncio.gather(*(_open(url, channel, mode)
                                       for _ in range(first, min(clients, first + 50))))
        for ws in batch:
            client = _Client(ws, mode, expected, phases, progress)
            opened.append(client)
            readers.append(asyncio.create_task(client.read()))
    print("ready", flush=True)
    announcer = asyncio.create_task(_announce_probed(opened))
    await _watchdog(readers, progress, idle_s)
    await asyncio.gather(*readers, return_exceptions=True)
    print("received", flush=True)  # before closing: the server's close work is not timed
    announcer.cancel()
    extensions = collections.Counter(
        c.ws.response.headers.get("Sec-WebSocket-Extensions", "") if c.ws.response else ""
        for c in opened)
    await asyncio.gather(*(c.ws.close() for c in opened), return_exceptions=True)
    return {"clients": clients, "offered": CHROMIUM_EXTENSIONS,
            "extensions": dict(extensions),
            "phases": {str(k): v.to_json() for k, v in phases.items()}}


def main(argv: list[str]) -> int:
    url, clients, channel, mode, expected = argv
    if mode not in MODES:
        print(f"unknown mode {mode!r}; known: {', '.join(MODES)}", file=sys.stderr)
        return 2
    result = asyncio.run(run(url, int(clients), channel, mode, int(expected)))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
