"""Running the gateway on uvicorn, with a graceful shutdown that happens in the right order.

On SIGINT/SIGTERM: stop listening, tell every client (``closing`` frame / SSE event), flush
their send buffers (up to ``flush_s``), close them with 1001, then stop the hub and broker.
Plain uvicorn would close WebSockets with 1012 before the app hears about it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from channelcast.brokers import Broker
from channelcast.config import Settings
from channelcast.gateway.app import create_app
from channelcast.gateway.node import Authorizer, Gateway
from channelcast.gateway.websocket import ABORT_EXTENSION, DIRECT_EXTENSION

log = logging.getLogger("channelcast.gateway")


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway, flush_s: float = 5.0) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.flush_s = flush_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await self.gateway.drain("server shutting down", self.flush_s)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # We shut down gracefully on the signal; do not re-raise it afterwards (exit 0).
        self._captured_signals.clear()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("server is not listening yet")


_FRAME_CACHE_ITEMS = 1024
_FRAME_CACHE_TEXT = 16 * 1024
_frames: dict[str, bytes] = {}


def text_frame(text: str) -> bytes:
    """An unmasked, unfragmented, uncompressed WebSocket text frame (RFC 6455 5.2), as
    a server sends it. Every client of a channel gets the same message text, so the frame
    of a recent (small) text is built once and reused: the hub hands one ``str`` object to
    every session, and the lookup by that object is a hash the ``str`` already caches."""
    frame = _frames.get(text)
    if frame is not None:
        return frame
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes((0x81, n))
    elif n < 1 << 16:
        head = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + n.to_bytes(8, "big")
    frame = head + payload
    if n <= _FRAME_CACHE_TEXT:
        if len(_frames) >= _FRAME_CACHE_ITEMS:
            _frames.clear()
        _frames[text] = frame
    return frame


def bounded_websocket_protocol(send_buffer_bytes: int) -> type[WebSocketsSansIOProtocol]:
    """uvicorn's WebSocket protocol with a fixed kernel send buffer and transport high-water
    mark, so a client that stops reading fills *our* bounded send queue (and meets the
    slow-client policy) after about ``2 * send_buffer_bytes`` instead of megabytes of OS
    autotuned buffers. 0 keeps the OS defaults."""

    class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
        def connection_made(self, transport: Any) -> None:
            if send_buffer_bytes > 0:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
                transport.set_write_buffer_limits(high=send_buffer_bytes)
            super().connection_made(transport)

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            # Lets the app cut a connection whose close frame cannot get through.
            self.scope["extensions"][ABORT_EXTENSION] = {"abort": self.transport.abort}
            self.scope["extensions"][DIRECT_EXTENSION] = {"room": self.direct_room,
                                                          "write": self.direct_write}

        def direct_room(self) -> int:
            """Bytes that may be written before the transport pauses; 0 when it is paused
            or the connection is not open (the caller then uses the ASGI ``send``, which
            waits for ``resume_writing`` or raises, exactly as before)."""
            if (not self.handshake_complete or self.close_sent or self.disconnected
                    or not self.writable.is_set() or self.transport.is_closing()
                    or self.conn.state is not State.OPEN):
                return 0
            try:
                high = self.transport.get_write_buffer_limits()[1]
                return max(0, high - self.transport.get_write_buffer_size())
            except (AttributeError, NotImplementedError):  # a transport without limits
                return 0

        def direct_write(self, texts: list[str]) -> None:
            """Write these text frames in one ``transport.write``. Without extensions
            (compression), the frame bytes are the same for every client: built once."""
            if self.close_sent or self.disconnected or self.transport.is_closing():
                raise ClientDisconnected()
            conn = self.conn
            if conn.extensions:
                for text in texts:
                    conn.send_text(text.encode())
                self.transport.write(b"".join(conn.data_to_send()))
                return
            # Anything the protocol queued itself (a pong, say) goes first, as it would.
            self.transport.write(b"".join(conn.data_to_send() + [text_frame(t) for t in texts]))

    return BoundedWebSocketProtocol


def build_server(settings: Settings, *, host: str | None = None, port: int | None = None,
                 broker: Broker | None = None, authorizer: Authorizer | None = None,
                 log_level: str = "info") -> GatewayServer:
    app = create_app(settings, broker=broker, authorizer=authorizer)
    g = settings.gateway
    config = uvicorn.Config(
        app, host=host or g.host, port=g.port if port is None else port,
        ws=bounded_websocket_protocol(g.send_buffer_bytes),
        ws_max_size=max(4 * g.max_frame_bytes, 1 << 20),
        ws_ping_interval=20.0, ws_ping_timeout=20.0, lifespan="on",
        timeout_graceful_shutdown=10, log_level=log_level, access_log=False)
    return GatewayServer(config, app.state.gateway)


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Run until SIGINT/SIGTERM (the ``channelcast serve`` command)."""
    server = build_server(settings, host=host, port=port)

    async def run() -> None:
        # Connect first, so an unreachable broker is one clear ChannelcastError (the CLI
        # prints it in one line, exit 2) rather than a failed ASGI lifespan.
        await server.gateway.broker.start()
        await server.serve()

    asyncio.run(run())
