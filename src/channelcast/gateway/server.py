"""The gateway on uvicorn: bounded socket buffers, direct writes, ordered start and shutdown.

Start (:func:`serve`, what ``channelcast serve`` runs): bind the address first (a port in
use or a host that does not resolve is one :class:`~channelcast.errors.ListenFailed`
line, before anything else happens), connect the broker (SIGINT/SIGTERM meanwhile stop
the process at once: :data:`STOPPED_DURING_STARTUP`), then serve; the banner is printed
only once the socket accepts connections.

On SIGINT/SIGTERM: stop listening, tell every client (``closing`` frame / SSE event), flush
their send buffers, close them with 1001 and cut any connection still open, all within
``drain_s`` (:data:`DRAIN_S`); give in-flight HTTP requests what is left of it (at least
:data:`REQUESTS_MIN_S`); then stop the hub and close the broker (flushing pending
publishes). Only the connections' part is bounded by ``drain_s``; the node's close is
bounded by its parts (presence and Pusher tasks 5 s each, the Kafka flush
``kafka.timeout_s``; the memory broker has nothing to wait for). One INFO line at the end
says how long each part took. Plain uvicorn would close
WebSockets with 1012 before the app hears about it. A second SIGINT ends the process at
once (:meth:`GatewayServer.handle_exit`), one line saying what it skipped.

HTTP connections (Server-Sent Events) get the same bounded socket buffers through a subclass
of uvicorn's HTTP protocol (:func:`bounded_http_protocol`), which also closes a connection
whose request headers are not complete within :data:`HEADER_TIMEOUT_S` (slowloris).

uvicorn internals: the WebSocket protocol below subclasses uvicorn's sans-I/O protocol and
reads some of its attributes (:data:`DIRECT_PATH_ATTRIBUTES`) for the direct write path
(:data:`~channelcast.gateway.websocket.DIRECT_EXTENSION`) and the close frames of the
connection-end log line (:data:`~channelcast.gateway.websocket.CLOSE_EXTENSION`),
overrides some of its methods (:data:`UTF8_HOOKS`) to refuse a text message that is not
UTF-8 with 1007 instead of uvicorn's ERROR and traceback, and :class:`GatewayServer`
clears uvicorn's captured signals. These are not public APIs: pyproject.toml pins uvicorn
to :data:`TESTED_UVICORN`, ``build_server`` checks the installed version at start-up and
each connection checks the attributes at its handshake. Outside the range, or with an
attribute missing, a WARNING names the version and frames take the public ASGI path
(``websocket.send``): slower, same behaviour. Never a silent writer that delivers nothing.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.protocol import State

from channelcast.brokers import Broker
from channelcast.config import GatewaySettings, Settings
from channelcast.errors import ConfigError, ListenFailed
from channelcast.gateway.api import REQUEST_TIMEOUT
from channelcast.gateway.app import create_app
from channelcast.gateway.node import Authorizer, Gateway
from channelcast.gateway.protocol import error_frame
from channelcast.gateway.session import WireClose
from channelcast.gateway.websocket import (
    ABORT_EXTENSION,
    CLOSE_ABNORMAL,
    CLOSE_EXTENSION,
    CLOSE_INVALID_DATA,
    DIRECT_EXTENSION,
)

if TYPE_CHECKING:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger("channelcast.gateway")

TESTED_UVICORN = ((0, 53), (0, 55))
"""The uvicorn versions (from, before) the direct write path is tested with; keep in step
with pyproject.toml. Before 0.53 the protocol has no ``disconnected`` attribute."""
DIRECT_PATH_ATTRIBUTES = ("transport", "conn", "handshake_complete", "close_sent",
                          "disconnected", "writable")
"""What the direct path reads on uvicorn's WebSocket protocol instance."""
UTF8_HOOKS = ("handle_text", "handle_bytes", "handle_cont", "handle_parser_exception")
"""The methods of uvicorn's WebSocket protocol the UTF-8 check overrides or calls."""


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


DRAIN_S = 5.0
"""Seconds a graceful shutdown gives the open connections, from the signal: flushing their
send buffers, the close frame, then cutting what is still open; in-flight HTTP requests
get what is left of it (at least :data:`REQUESTS_MIN_S`)."""
REQUESTS_MIN_S = 0.5
"""In-flight HTTP requests get at least this long after the connections' drain."""
STOPPED_DURING_STARTUP = 0
"""Exit code of ``channelcast serve`` stopped by SIGINT/SIGTERM before it served: a
requested stop, like the graceful one after start-up."""


class GatewayServer(uvicorn.Server):
    """uvicorn's server with channelcast's ordered shutdown (see the module docstring).

    ``drain_s`` bounds the connections' part of a graceful shutdown. ``on_listening`` is
    called once the sockets accept connections (the CLI prints its banner there). A
    second SIGINT (Ctrl-C) while shutting down ends the process at once with exit code
    130, after one line on stderr saying what was skipped: the remaining drain and the
    broker's close (unacknowledged publishes are lost). A repeated SIGTERM does not: a
    supervisor or script that sends it again only asks for the same graceful shutdown
    (SIGKILL is the way to cut it short). That is only reachable through uvicorn's
    signal handlers, i.e. when ``serve()`` runs in the main thread.
    """

    def __init__(self, config: uvicorn.Config, gateway: Gateway, drain_s: float = DRAIN_S,
                 on_listening: Callable[[GatewayServer], None] | None = None) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.drain_s = drain_s
        self.on_listening = on_listening
        self._signals_kept = isinstance(getattr(self, "_captured_signals", None), list)
        if not self._signals_kept:
            log.warning("uvicorn %s has no Server._captured_signals: after a graceful "
                        "shutdown on a signal, uvicorn re-raises it (exit code not 0)",
                        uvicorn.__version__)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit and self.on_listening is not None:
            self.on_listening(self)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_s
        for server in self.servers:
            server.close()
        log.info("shutting down: closing %d connection(s) within %g s (a second Ctrl-C "
                 "exits at once)", len(self.gateway.sessions), self.drain_s)
        # Each connection is flushed, closed or cut within drain_s (Session.shutdown).
        await self.gateway.drain("server shutting down", self.drain_s)
        drained = loop.time()
        # uvicorn then waits for the requests still running (its graceful timeout), and
        # runs the app's lifespan shutdown: the node closes (hub, Pusher, broker).
        self.config.timeout_graceful_shutdown = max(REQUESTS_MIN_S,  # type: ignore[assignment]
                                                    deadline - drained)
        await super().shutdown(sockets)
        started = deadline - self.drain_s
        log.info("shut down in %.2f s: connections %.2f s, then requests and closing the "
                 "node (hub, Pusher tasks, broker) %.2f s", loop.time() - started,
                 drained - started, loop.time() - drained)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.should_exit and self.started and sig == signal.SIGINT:
            self._exit_now(sig)
        super().handle_exit(sig, frame)
        # We shut down gracefully on the signal; do not re-raise it afterwards (exit 0).
        if self._signals_kept:
            self._captured_signals.clear()

    def _exit_now(self, sig: int) -> None:
        """A second signal: the user wants out now. Say what is skipped, then leave
        without unwinding (cancelling the shutdown half-way would only print tracebacks
        from the app's lifespan)."""
        open_connections = len(self.gateway.sessions)
        name = signal.Signals(sig).name
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"channelcast: second {name}: exiting now, skipping the rest of the "
                f"graceful shutdown ({open_connections} connection(s) cut without a close "
                "frame; publishes the broker has not acknowledged are lost)\n")
            sys.stderr.flush()
            sys.stdout.flush()
        os._exit(128 + sig)

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
    frame = _frame_head(0x81, n) + payload
    if n <= _FRAME_CACHE_TEXT:
        if len(_frames) >= _FRAME_CACHE_ITEMS:
            _frames.clear()
        _frames[text] = frame
    return frame


def _frame_head(first: int, n: int) -> bytes:
    """A server frame's header (RFC 6455 5.2): ``first`` (FIN, RSV bits, opcode), then the
    unmasked payload length ``n`` in 7, 7+16 or 7+64 bits."""
    if n < 126:
        return bytes((first, n))
    if n < 1 << 16:
        return bytes((first, 126)) + n.to_bytes(2, "big")
    return bytes((first, 127)) + n.to_bytes(8, "big")


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
    frame = _frame_head(0xC1, len(payload)) + payload
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


def _missing_utf8_hooks(protocol_class: type) -> list[str]:
    """The :data:`UTF8_HOOKS` uvicorn's WebSocket protocol class lacks (WARNING once)."""
    missing = [name for name in UTF8_HOOKS if not callable(getattr(protocol_class, name, None))]
    if missing and tuple(missing) not in _warned:
        _warned.add(tuple(missing))
        log.warning("uvicorn %s: its WebSocket protocol has no %s; a text message that is "
                    "not UTF-8 is left to uvicorn (close 1007, and an ERROR with a "
                    "traceback in the log)", uvicorn.__version__, ", ".join(missing))
    return missing


def bound_send_buffer(transport: Any, send_buffer_bytes: int) -> None:
    """A fixed kernel send buffer and a transport high-water mark of ``send_buffer_bytes``
    for a new connection (0: the OS defaults), so a client that stops reading holds about
    twice that of unsent data."""
    if send_buffer_bytes > 0:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
        transport.set_write_buffer_limits(high=send_buffer_bytes)


def bounded_websocket_protocol(send_buffer_bytes: int, *,
                               direct: bool = True) -> type[WebSocketsSansIOProtocol]:
    """uvicorn's WebSocket protocol with a fixed kernel send buffer and transport high-water
    mark, so a client that stops reading fills *our* bounded send queue (and meets the
    slow-client policy) after about ``2 * send_buffer_bytes`` instead of megabytes of OS
    autotuned buffers. 0 keeps the OS defaults. With ``direct``, each connection whose
    protocol has the :data:`DIRECT_PATH_ATTRIBUTES` offers the direct write path and the
    close frames (:data:`~channelcast.gateway.websocket.CLOSE_EXTENSION`), and text
    messages are checked for UTF-8 as they arrive (:data:`UTF8_HOOKS`; close 1007).
    Raises ImportError if this uvicorn has no sans-I/O WebSocket protocol."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    utf8_checks = direct and not _missing_utf8_hooks(WebSocketsSansIOProtocol)

    class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
        _utf8: codecs.IncrementalDecoder | None = None

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
            bound_send_buffer(transport, send_buffer_bytes)
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
                scope["extensions"][CLOSE_EXTENSION] = {"how": self.how_closed}

        def how_closed(self) -> WireClose | None:
            """How the closing handshake went, from the close frames the websockets
            protocol sent and received (its public ``close_sent``, ``close_rcvd``,
            ``close_rcvd_then_sent``): who sent the first one, its code and reason; 1006
            when the connection ended without either; None while it is open."""
            conn = self.conn
            sent, rcvd = conn.close_sent, conn.close_rcvd
            if sent is not None and (rcvd is None or conn.close_rcvd_then_sent is False):
                return WireClose(sent.code, sent.reason, "server")
            if rcvd is not None:
                return WireClose(rcvd.code, rcvd.reason, "client")
            if self.disconnected:
                return WireClose(CLOSE_ABNORMAL, "", None)
            return None

        # Text messages must be UTF-8 (RFC 6455 8.1). uvicorn finds out only when it
        # decodes a whole message, and logs an ERROR with a traceback for the client's
        # bytes. Check each fragment as it arrives instead (an incremental decoder keeps
        # a sequence split between fragments) and fail the connection with 1007 and the
        # reason; the node's close line is the one log line.
        if utf8_checks:
            def handle_text(self, event: Any) -> None:
                self._utf8 = codecs.getincrementaldecoder("utf-8")()
                if self._valid_utf8(event):
                    super().handle_text(event)

            def handle_bytes(self, event: Any) -> None:
                self._utf8 = None
                super().handle_bytes(event)

            def handle_cont(self, event: Any) -> None:
                if getattr(self, "_utf8", None) is None or self._valid_utf8(event):
                    super().handle_cont(event)

            def _valid_utf8(self, event: Any) -> bool:
                if self.close_sent:  # uvicorn discards what comes after its close frame
                    return True
                decoder = self._utf8
                assert decoder is not None
                try:
                    decoder.decode(event.data, event.fin)
                except UnicodeDecodeError as exc:
                    self._utf8 = None
                    self.conn.fail(CLOSE_INVALID_DATA,
                                   f"invalid UTF-8 in a text message: {exc.reason}")
                    self.handle_parser_exception()  # tells the app, writes, closes
                    return False
                if event.fin:
                    self._utf8 = None
                return True

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


HEADER_TIMEOUT_S = 10.0
"""Seconds a connection has to send a request's headers in full, from when it opens (or,
on a kept-alive connection, from the first byte of its next request), like the body's
:data:`~channelcast.gateway.api.BODY_TIMEOUT_S`: then it gets a 408 (when some of a
request came) and is closed. Nothing else bounds it in uvicorn: a client sending a header
byte now and then (slowloris) or nothing at all would hold the connection for ever."""


def _request_timeout_response(timeout_s: float) -> bytes:
    """The 408 a connection gets when its request headers did not arrive in time: the
    gateway's JSON error body, ``Connection: close``."""
    body = json.dumps(error_frame(REQUEST_TIMEOUT, "the request headers were not complete "
                                  f"within {timeout_s:g} s"), separators=(",", ":")).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


def bounded_http_protocol(send_buffer_bytes: int, header_timeout_s: float = HEADER_TIMEOUT_S,
                          on_header_timeout: Callable[[], None] | None = None
                          ) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (the one it picks itself) with the WebSocket protocol's fixed
    kernel send buffer and transport high-water mark, so that a Server-Sent Events client
    that stops reading holds about ``2 * send_buffer_bytes`` of unsent data (and meets the
    write timeout) instead of megabytes of OS autotuned buffers. 0 keeps the OS defaults.

    With uvicorn's h11 protocol, a connection that has not sent a request's headers in
    full within ``header_timeout_s`` (:data:`HEADER_TIMEOUT_S`; 0: no limit) is closed,
    after a 408 if some of the request came, with one log line (INFO; DEBUG for a
    connection that sent nothing) and a call to ``on_header_timeout`` (the metric). What
    follows the headers (a body, a WebSocket, an event stream, keep-alive) is not timed
    here. It reads uvicorn's ``conn`` (an ``h11.Connection``: its public ``their_state``
    and ``our_state``), checked per connection (a WARNING once and no limit without it).
    Raises ImportError if this uvicorn has no ``AutoHTTPProtocol``."""
    import h11
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    timed = header_timeout_s > 0 and issubclass(AutoHTTPProtocol, H11Protocol)
    if header_timeout_s > 0 and not timed:
        log.warning("uvicorn %s serves HTTP with %s, not h11: no request-header timeout "
                    "(a client that never completes its headers keeps its connection)",
                    uvicorn.__version__, AutoHTTPProtocol.__name__)

    # AutoHTTPProtocol is a variable (h11's or httptools' class, whichever is installed).
    class BoundedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _timed = False

        def connection_made(self, transport: Any) -> None:
            bound_send_buffer(transport, send_buffer_bytes)
            super().connection_made(transport)
            self._timed = timed and self._has_h11()
            if self._timed:
                self._header_timer = asyncio.get_running_loop().call_later(
                    header_timeout_s, self._headers_late)

        def _offer_abort(self) -> None:
            """Offer the request being served a way to cut its connection (the
            :data:`~channelcast.gateway.websocket.ABORT_EXTENSION`, as WebSockets have):
            an event stream whose client stopped reading is stuck in a write no timeout
            ends. Reads uvicorn's ``scope`` attribute (the scope handed to the app, built
            just now by ``super().data_received``); without it, nothing is offered."""
            scope = getattr(self, "scope", None)
            if isinstance(scope, dict) and scope.get("type") == "http":
                extensions = scope.setdefault("extensions", {})
                if ABORT_EXTENSION not in extensions:
                    extensions[ABORT_EXTENSION] = {"abort": self.transport.abort}

        def _has_h11(self) -> bool:
            if isinstance(getattr(self, "conn", None), h11.Connection):
                return True
            if ("conn",) not in _warned:
                _warned.add(("conn",))
                log.warning("uvicorn %s: its HTTP protocol has no h11 connection: no "
                            "request-header timeout", uvicorn.__version__)
            return False

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._offer_abort()
            if not self._timed:
                return
            if (self.transport.is_closing() or self.transport.get_protocol() is not self
                    or self.conn.their_state is not h11.IDLE):
                # Headers complete (or a WebSocket now): what follows is timed elsewhere.
                self._stop_header_timer()
                return
            # Still reading a request's headers: the deadline runs from the first byte
            # of this request (or the connection's start) and never moves with more.
            self._header_bytes += len(data)
            if self._header_timer is None:
                self._header_timer = asyncio.get_running_loop().call_later(
                    header_timeout_s, self._headers_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def _stop_header_timer(self) -> None:
            self._header_bytes = 0
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            transport = self.transport
            if (transport.is_closing() or transport.get_protocol() is not self
                    or self.conn.their_state is not h11.IDLE):
                return
            peer = transport.get_extra_info("peername")
            who = display_address(*peer[:2]) if isinstance(peer, tuple) else "a client"
            if self._header_bytes and self.conn.our_state is h11.IDLE:
                log.info("HTTP connection from %s: the request headers were not complete "
                         "after %g s (%d bytes); answered 408 and closed", who,
                         header_timeout_s, self._header_bytes)
                transport.write(_request_timeout_response(header_timeout_s))
            else:
                log.debug("HTTP connection from %s: no request within %g s; closed", who,
                          header_timeout_s)
            transport.close()
            if on_header_timeout is not None:
                on_header_timeout()

    return BoundedHTTPProtocol


def http_protocol(send_buffer_bytes: int, header_timeout_s: float = HEADER_TIMEOUT_S,
                  on_header_timeout: Callable[[], None] | None = None
                  ) -> type[asyncio.Protocol] | str:
    """What ``build_server`` gives uvicorn as ``http``: the bounded protocol with the
    tested uvicorn (:data:`TESTED_UVICORN`), else uvicorn's own choice and a WARNING."""
    problem = uvicorn_problem()
    if problem is not None:
        log.warning("%s: HTTP connections (Server-Sent Events) keep the OS's socket buffers, "
                    "and request headers have no timeout", problem)
        return "auto"
    try:
        return bounded_http_protocol(send_buffer_bytes, header_timeout_s, on_header_timeout)
    except ImportError:
        log.warning("uvicorn %s has no AutoHTTPProtocol: HTTP connections (Server-Sent "
                    "Events) keep the OS's socket buffers, and request headers have no "
                    "timeout", uvicorn.__version__)
        return "auto"


DEFAULT_APP_SECRET = GatewaySettings().app_secret
"""The secret every fresh install has: fine on loopback, refused anywhere else."""
MIN_SECRET_LENGTH = 16
"""Shortest ``gateway.app_secret`` accepted off loopback: the HMAC secret of every
signature, so a short one can be guessed offline from one signed request."""
SECRET_HOW = "set gateway.app_secret in the config file or CHANNELCAST_APP_SECRET"


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
    (demo mode, the default or a short secret). Raises ConfigError (one line, exit 2 in
    the CLI) for the default secret, or one shorter than :data:`MIN_SECRET_LENGTH`
    characters, on an address that is not loopback."""
    g = settings.gateway
    default_secret = g.app_secret == DEFAULT_APP_SECRET
    short_secret = not default_secret and len(g.app_secret) < MIN_SECRET_LENGTH
    length = f"{len(g.app_secret)} character{'' if len(g.app_secret) == 1 else 's'}"
    where = f"binding {host or 'every interface'!r} (not a loopback address)"
    if default_secret and not is_loopback(host):
        raise ConfigError("gateway.app_secret", f"the default secret is refused when {where}: "
                          f"anyone could sign; {SECRET_HOW}")
    if short_secret and not is_loopback(host):
        raise ConfigError("gateway.app_secret", f"a secret of {length} "
                          f"is refused when {where}: it signs every request and could be "
                          f"guessed; use at least {MIN_SECRET_LENGTH} random characters "
                          f"({SECRET_HOW})")
    warnings = []
    if g.demo:
        warnings.append("DEMO MODE: unsigned publishes to any channel (POST /demo/publish) "
                        "and an /auth that signs any channel for anyone; never in production")
    if default_secret:
        warnings.append("the default gateway.app_secret is in use: anyone can sign "
                        "publishes and channel subscriptions; set your own before this is "
                        f"reachable from elsewhere ({SECRET_HOW})")
    elif short_secret:
        warnings.append(f"gateway.app_secret has only {length}: fine "
                        f"on loopback, refused on any other address (at least "
                        f"{MIN_SECRET_LENGTH})")
    return warnings


def build_server(settings: Settings, *, host: str | None = None, port: int | None = None,
                 broker: Broker | None = None, authorizer: Authorizer | None = None,
                 log_level: str = "info", access_log: bool = False,
                 on_listening: Callable[[GatewayServer], None] | None = None,
                 header_timeout_s: float = HEADER_TIMEOUT_S) -> GatewayServer:
    """The configured uvicorn server (not started): bounded socket buffers, the direct write
    path when this uvicorn is the tested one, a request-header timeout
    (:data:`HEADER_TIMEOUT_S`), the ordered graceful shutdown. ``log_level`` is uvicorn's
    (its per-connection lines are INFO); ``access_log`` one line per HTTP request;
    ``on_listening`` as for :class:`GatewayServer`."""
    app = create_app(settings, broker=broker, authorizer=authorizer)
    g = settings.gateway
    metrics = app.state.gateway.metrics
    config = uvicorn.Config(
        app, host=host or g.host, port=g.port if port is None else port,
        http=http_protocol(g.send_buffer_bytes, header_timeout_s,
                           metrics.header_timeouts.inc),
        ws=websocket_protocol(g.send_buffer_bytes),
        ws_max_size=max(4 * g.max_frame_bytes, 1 << 20),
        # Off by default: small realtime messages gain little, and compressing them cost
        # most of the gateway's CPU per delivery (docs/benchmarks.md, "Peers").
        ws_per_message_deflate=g.compression,
        ws_ping_interval=20.0, ws_ping_timeout=20.0, lifespan="on",
        timeout_graceful_shutdown=10, log_level=log_level, access_log=access_log)
    return GatewayServer(config, app.state.gateway, on_listening=on_listening)


def display_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address (``[::1]:8000``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address ``host`` resolves to, on ``port`` (0: a free one),
    the way asyncio's ``create_server`` binds them (``SO_REUSEADDR``; IPv6 sockets
    IPv6-only); the server starts listening on them later. Raises ListenFailed naming the
    address when the name does not resolve or an address cannot be bound (in use, not
    local, not permitted)."""
    address = display_address(host, port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenFailed(f"cannot listen on {address}: the host name does not resolve "
                           f"({exc.strerror})") from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = (exc.strerror or str(exc)).lower()
        if exc.errno == errno.EADDRINUSE:
            reason += " (another process listens there: pick another port, or stop it)"
        raise ListenFailed(f"cannot listen on {address}: {reason}") from exc
    return sockets


@contextlib.contextmanager
def _exit_on_signals(say: Callable[[str], None], doing: str) -> Iterator[None]:
    """While start-up runs: SIGINT/SIGTERM end the process at once, with one line, and
    :data:`STOPPED_DURING_STARTUP` (else SIGINT would wait for a connection attempt in a
    worker thread to time out, and SIGTERM would kill the process without a word).
    Nothing needs cleaning up yet: nothing was served and nothing published. Only in
    the main thread, where signals arrive."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()

    def stop(sig: int) -> None:
        say(f"stopped by {signal.Signals(sig).name} while starting ({doing}); nothing was "
            "served")
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(STOPPED_DURING_STARTUP)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def serve(settings: Settings, *, host: str | None = None, port: int | None = None,
          log_level: str = "info", access_log: bool = False,
          say: Callable[[str], None] = _say,
          on_listening: Callable[[GatewayServer], None] | None = None) -> int:
    """Run until SIGINT/SIGTERM (the ``channelcast serve`` command); returns the exit code
    (0 after a graceful shutdown).

    Binds first (ListenFailed), then connects the broker (a ChannelcastError such as
    BrokerUnavailable when it cannot), then serves. ``say`` gets the progress lines
    ("connecting to ..."; default: stderr); ``on_listening`` is called once the server
    accepts connections. A signal during start-up ends the process at once (see
    :func:`_exit_on_signals`)."""
    server = build_server(settings, host=host, port=port, log_level=log_level,
                          access_log=access_log, on_listening=on_listening)
    sockets = listen_sockets(server.config.host, server.config.port)

    async def run() -> None:
        # Connect first, so an unreachable broker is one clear ChannelcastError (the CLI
        # prints it in one line, exit 2) rather than a failed ASGI lifespan.
        if settings.broker_kind != "memory":
            say(f"connecting to {settings.broker} (up to {settings.kafka.timeout_s:g} s; "
                "Ctrl-C stops)")
        with _exit_on_signals(say, f"connecting to {settings.broker}"):
            await server.gateway.broker.start()
        await server.serve(sockets=sockets)

    try:
        asyncio.run(run())
    finally:
        for sock in sockets:  # uvicorn closes them on shutdown; not if start-up failed
            sock.close()
    return 0
