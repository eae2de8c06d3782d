"""The gateway on uvicorn: bounded socket buffers, direct writes, ordered graceful shutdown.

On SIGINT/SIGTERM: stop listening, tell every client (``closing`` frame / SSE event), flush
their send buffers (up to ``flush_s``), close them with 1001, then stop the hub and broker.
Plain uvicorn would close WebSockets with 1012 before the app hears about it.

HTTP connections (Server-Sent Events) get the same bounded socket buffers through a subclass
of uvicorn's HTTP protocol (:func:`bounded_http_protocol`).

uvicorn internals: the WebSocket protocol below subclasses uvicorn's sans-I/O protocol and
reads some of its attributes (:data:`DIRECT_PATH_ATTRIBUTES`) for the direct write path
(:data:`~channelcast.gateway.websocket.DIRECT_EXTENSION`), and :class:`GatewayServer`
clears uvicorn's captured signals. These are not public APIs: pyproject.toml pins uvicorn
to :data:`TESTED_UVICORN`, ``build_server`` checks the installed version at start-up and
each connection checks the attributes at its handshake. Outside the range, or with an
attribute missing, a WARNING names the version and frames take the public ASGI path
(``websocket.send``): slower, same behaviour. Never a silent writer that delivers nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import zlib
from typing import TYPE_CHECKING, Any

import uvicorn
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.protocol import State

from channelcast.brokers import Broker
from channelcast.config import GatewaySettings, Settings
from channelcast.errors import ConfigError
from channelcast.gateway.app import create_app
from channelcast.gateway.node import Authorizer, Gateway
from channelcast.gateway.websocket import ABORT_EXTENSION, DIRECT_EXTENSION

if TYPE_CHECKING:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("channelcast.gateway")

TESTED_UVICORN = ((0, 53), (0, 55))
"""The uvicorn versions (from, before) the direct write path is tested with; keep in step
with pyproject.toml. Before 0.53 the protocol has no ``disconnected`` attribute."""
DIRECT_PATH_ATTRIBUTES = ("transport", "conn", "handshake_complete", "close_sent",
                          "disconnected", "writable")
"""What the direct path reads on uvicorn's WebSocket protocol instance."""


def uvicorn_problem(version: str | None = None) -> str | None:
    """Why the direct path must not be used with this uvicorn (default: the installed one),
    or None when its version is in :data:`TESTED_UVICORN`."""
    version = uvicorn.__version__ if version is None else version
    (lo_major, lo_minor), (hi_major, hi_minor) = TESTED_UVICORN
    tested = f">={lo_major}.{lo_minor},<{hi_major}.{hi_minor}"
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or not ((lo_major, lo_minor) <= (int(match[1]), int(match[2]))
                             < (hi_major, hi_minor)):
        return f"uvicorn {version} is outside the tested range {tested}"
    return None


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway, flush_s: float = 5.0) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.flush_s = flush_s
        self._signals_kept = isinstance(getattr(self, "_captured_signals", None), list)
        if not self._signals_kept:
            log.warning("uvicorn %s has no Server._captured_signals: after a graceful "
                        "shutdown on a signal, uvicorn re-raises it (exit code not 0)",
                        uvicorn.__version__)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await self.gateway.drain("server shutting down", self.flush_s)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # We shut down gracefully on the signal; do not re-raise it afterwards (exit 0).
        if self._signals_kept:
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


DeflateParams = tuple[int, tuple[tuple[str, Any], ...]]
"""(window bits, zlib compress settings) of a connection's permessage-deflate."""
_deflated: dict[tuple[str, DeflateParams], bytes] = {}


def shared_deflate(extensions: list[Any]) -> DeflateParams | None:
    """The parameters of a negotiated permessage-deflate that compresses every message on
    its own (``server_no_context_takeover``), or None: then the compressed bytes depend on
    what the connection sent before, and cannot be shared."""
    if len(extensions) != 1 or not isinstance(extensions[0], PerMessageDeflate):
        return None
    ext = extensions[0]
    if not ext.local_no_context_takeover:
        return None
    return ext.local_max_window_bits, tuple(sorted(ext.compress_settings.items()))


def deflated_frame(text: str, params: DeflateParams) -> bytes:
    """A compressed, unfragmented text frame (RSV1 set, RFC 7692 7.2.1): the message
    deflated on its own with ``params``, the trailing ``00 00 ff ff`` removed, exactly what
    websockets' PerMessageDeflate writes without context takeover. Built once per message
    and parameters (a bounded cache, like :func:`text_frame`)."""
    key = (text, params)
    frame = _deflated.get(key)
    if frame is not None:
        return frame
    bits, settings = params
    encoder = zlib.compressobj(wbits=-bits, **dict(settings))
    payload = encoder.compress(text.encode()) + encoder.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]
    n = len(payload)
    if n < 126:
        head = bytes((0xC1, n))
    elif n < 1 << 16:
        head = bytes((0xC1, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0xC1, 127)) + n.to_bytes(8, "big")
    frame = head + payload
    if len(text) <= _FRAME_CACHE_TEXT:
        if len(_deflated) >= _FRAME_CACHE_ITEMS:
            _deflated.clear()
        _deflated[key] = frame
    return frame


_warned: set[tuple[str, ...]] = set()


def _missing_direct_attributes(protocol: object) -> list[str]:
    """The :data:`DIRECT_PATH_ATTRIBUTES` this protocol instance lacks (WARNING once)."""
    missing = [name for name in DIRECT_PATH_ATTRIBUTES if not hasattr(protocol, name)]
    if missing and tuple(missing) not in _warned:
        _warned.add(tuple(missing))
        log.warning("uvicorn %s: its WebSocket protocol has no %s; serving WebSocket frames "
                    "through the ASGI send instead of the direct write path",
                    uvicorn.__version__, ", ".join(missing))
    return missing


def bounded_websocket_protocol(send_buffer_bytes: int, *,
                               direct: bool = True) -> type[WebSocketsSansIOProtocol]:
    """uvicorn's WebSocket protocol with a fixed kernel send buffer and transport high-water
    mark, so a client that stops reading fills *our* bounded send queue (and meets the
    slow-client policy) after about ``2 * send_buffer_bytes`` instead of megabytes of OS
    autotuned buffers. 0 keeps the OS defaults. With ``direct``, each connection whose
    protocol has the :data:`DIRECT_PATH_ATTRIBUTES` offers the direct write path.
    Raises ImportError if this uvicorn has no sans-I/O WebSocket protocol."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if getattr(self.config, "ws_per_message_deflate", False) and hasattr(
                    self.conn, "available_extensions"):
                # Compress each message on its own (no context takeover, RFC 7692 7.1.1),
                # so one compressed frame per message serves every such connection.
                self.conn.available_extensions = [ServerPerMessageDeflateFactory(
                    server_no_context_takeover=True, server_max_window_bits=12,
                    client_max_window_bits=12, compress_settings={"memLevel": 5})]

        def connection_made(self, transport: Any) -> None:
            if send_buffer_bytes > 0:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
                transport.set_write_buffer_limits(high=send_buffer_bytes)
            super().connection_made(transport)

        # While the transport's write buffer is over the high-water mark (the client does
        # not read), read none of the client's data either: the protocol answers each
        # WebSocket ping it reads with a pong into that buffer, which a client flooding
        # pings without reading would otherwise grow without bound. TCP backpressure.
        def pause_writing(self) -> None:
            super().pause_writing()
            self.transport.pause_reading()

        def resume_writing(self) -> None:
            super().resume_writing()
            if not getattr(self, "read_paused", False):  # uvicorn's: a message is queued
                self.transport.resume_reading()

        async def receive(self) -> Any:
            message = await super().receive()  # resumes reading once its queue is empty
            writable = getattr(self, "writable", None)
            if writable is not None and not writable.is_set():
                self.transport.pause_reading()
            return message

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is None:  # the handshake was refused: there is no ASGI connection
                return
            # Lets the app cut a connection whose close frame cannot get through, and stop
            # writing to one that is closing or lost before uvicorn's connection_lost ran.
            scope["extensions"][ABORT_EXTENSION] = {"abort": self.transport.abort,
                                                    "closing": self.transport.is_closing}
            if direct and not _missing_direct_attributes(self):
                scope["extensions"][DIRECT_EXTENSION] = {"room": self.direct_room,
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
            """Write these text frames in one ``transport.write``. The frame bytes are the
            same for every client with the same framing, so they are built once per message
            and shared: uncompressed, or compressed without context takeover (see
            :func:`shared_deflate`). Only a connection whose compression keeps a context
            compresses per connection. Raises ConnectionResetError once the connection is
            closing."""
            if self.close_sent or self.disconnected or self.transport.is_closing():
                raise ConnectionResetError("the WebSocket connection is closing")
            conn = self.conn
            if conn.extensions:
                params = shared_deflate(conn.extensions)
                if params is None:
                    for text in texts:
                        conn.send_text(text.encode())
                    self.transport.write(b"".join(conn.data_to_send()))
                    return
                self.transport.write(b"".join(
                    conn.data_to_send() + [deflated_frame(t, params) for t in texts]))
                return
            # Anything the protocol queued itself (a pong, say) goes first, as it would.
            self.transport.write(b"".join(conn.data_to_send() + [text_frame(t) for t in texts]))

    return BoundedWebSocketProtocol


def websocket_protocol(send_buffer_bytes: int) -> type[WebSocketsSansIOProtocol] | str:
    """What ``build_server`` gives uvicorn as ``ws``, after checking the installed uvicorn
    (a WARNING for anything but the tested setup): the bounded protocol with the direct
    path; without it outside :data:`TESTED_UVICORN`; uvicorn's own choice if it has no
    sans-I/O protocol to subclass."""
    problem = uvicorn_problem()
    if problem is not None:
        log.warning("%s: serving WebSocket frames through the ASGI send instead of the "
                    "direct write path", problem)
    try:
        return bounded_websocket_protocol(send_buffer_bytes, direct=problem is None)
    except ImportError:
        log.warning("uvicorn %s has no sans-I/O WebSocket protocol: its default WebSockets, "
                    "without bounded socket buffers", uvicorn.__version__)
        return "auto"


def bounded_http_protocol(send_buffer_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (the one it picks itself) with the WebSocket protocol's fixed
    kernel send buffer and transport high-water mark, so that a Server-Sent Events client
    that stops reading holds about ``2 * send_buffer_bytes`` of unsent data (and meets the
    write timeout) instead of megabytes of OS autotuned buffers. 0 keeps the OS defaults.
    Raises ImportError if this uvicorn has no ``AutoHTTPProtocol``."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    # AutoHTTPProtocol is a variable (h11's or httptools' class, whichever is installed).
    class BoundedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        def connection_made(self, transport: Any) -> None:
            if send_buffer_bytes > 0:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
                transport.set_write_buffer_limits(high=send_buffer_bytes)
            super().connection_made(transport)

    return BoundedHTTPProtocol


def http_protocol(send_buffer_bytes: int) -> type[asyncio.Protocol] | str:
    """What ``build_server`` gives uvicorn as ``http``: the bounded protocol with the
    tested uvicorn (:data:`TESTED_UVICORN`), else uvicorn's own choice and a WARNING."""
    problem = uvicorn_problem()
    if problem is not None:
        log.warning("%s: HTTP connections (Server-Sent Events) keep the OS's socket buffers",
                    problem)
        return "auto"
    try:
        return bounded_http_protocol(send_buffer_bytes)
    except ImportError:
        log.warning("uvicorn %s has no AutoHTTPProtocol: HTTP connections (Server-Sent "
                    "Events) keep the OS's socket buffers", uvicorn.__version__)
        return "auto"


DEFAULT_APP_SECRET = GatewaySettings().app_secret
"""The secret every fresh install has: fine on loopback, refused anywhere else."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the gateway on this machine (127.0.0.0/8, ::1,
    ``localhost``). Any other name, and ``""`` or ``0.0.0.0`` (every interface), is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def startup_check(settings: Settings, host: str) -> list[str]:
    """What ``channelcast serve`` must say before it binds ``host``: the WARNINGs to print
    (demo mode, the default secret). Raises ConfigError (one line, exit 2 in the CLI) for
    the default secret on an address that is not loopback."""
    g = settings.gateway
    default_secret = g.app_secret == DEFAULT_APP_SECRET
    if default_secret and not is_loopback(host):
        raise ConfigError("gateway.app_secret", f"the default secret is refused when binding "
                          f"{host or 'every interface'!r} (not a loopback address): anyone "
                          "could sign; set gateway.app_secret in the config file")
    warnings = []
    if g.demo:
        warnings.append("DEMO MODE: unsigned publishes to any channel (POST /demo/publish) "
                        "and an /auth that signs any channel for anyone; never in production")
    if default_secret:
        warnings.append("the default gateway.app_secret is in use: anyone can sign "
                        "publishes and channel subscriptions; set your own before this is "
                        "reachable from elsewhere")
    return warnings


def build_server(settings: Settings, *, host: str | None = None, port: int | None = None,
                 broker: Broker | None = None, authorizer: Authorizer | None = None,
                 log_level: str = "info", access_log: bool = False) -> GatewayServer:
    """The configured uvicorn server (not started): bounded socket buffers, the direct write
    path when this uvicorn is the tested one, the ordered graceful shutdown. ``log_level``
    is uvicorn's (its per-connection lines are INFO); ``access_log`` one line per HTTP
    request."""
    app = create_app(settings, broker=broker, authorizer=authorizer)
    g = settings.gateway
    config = uvicorn.Config(
        app, host=host or g.host, port=g.port if port is None else port,
        http=http_protocol(g.send_buffer_bytes), ws=websocket_protocol(g.send_buffer_bytes),
        ws_max_size=max(4 * g.max_frame_bytes, 1 << 20),
        # Off by default: small realtime messages gain little, and compressing them cost
        # most of the gateway's CPU per delivery (docs/benchmarks.md, "Peers").
        ws_per_message_deflate=g.compression,
        ws_ping_interval=20.0, ws_ping_timeout=20.0, lifespan="on",
        timeout_graceful_shutdown=10, log_level=log_level, access_log=access_log)
    return GatewayServer(config, app.state.gateway)


def serve(settings: Settings, *, host: str | None = None, port: int | None = None,
          log_level: str = "info", access_log: bool = False) -> None:
    """Run until SIGINT/SIGTERM (the ``channelcast serve`` command)."""
    server = build_server(settings, host=host, port=port, log_level=log_level,
                          access_log=access_log)

    async def run() -> None:
        # Connect first, so an unreachable broker is one clear ChannelcastError (the CLI
        # prints it in one line, exit 2) rather than a failed ASGI lifespan.
        await server.gateway.broker.start()
        await server.serve()

    asyncio.run(run())
