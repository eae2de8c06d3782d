"""The plain ``websockets`` broadcast loop as a server process of its own, the fan-out
comparison's floor for the WebSocket part alone (no protocol, no broker).

Run as ``python -m channelcast.bench.peers.plain_server PORT``. A connection to
``/publish`` is the publisher: every text frame it sends is handed to
``websockets.broadcast()`` for every other connection (the subscribers). The server uses
the library's defaults (permessage-deflate included), as an application would; it runs
until SIGTERM. It must never do more per message than ``broadcast()`` and one yield.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

PUBLISH_PATH = "/publish"


async def main(port: int) -> None:
    subscribers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == PUBLISH_PATH:
            async for message in ws:
                broadcast(subscribers, message)
                await asyncio.sleep(0)  # a real loop yields: lets the buffers drain
            return
        subscribers.add(ws)
        try:
            await ws.wait_closed()
        finally:
            subscribers.discard(ws)

    async with serve(handler, "127.0.0.1", port, max_size=1 << 22):
        await asyncio.get_running_loop().create_future()  # until SIGTERM


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
