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
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from channelcast.brokers import Broker
from channelcast.config import Settings
from channelcast.gateway.app import ABORT_EXTENSION, Authorizer, Gateway, create_app

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
