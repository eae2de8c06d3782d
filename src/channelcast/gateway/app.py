"""The gateway as an ASGI app (Starlette): WebSocket, SSE, the HTTP publish API, channel
auth, health, metrics and the demo page. This layer only moves bytes; the protocol is in
:mod:`channelcast.gateway.protocol`, fan-out in :mod:`channelcast.gateway.hub`.

Routes::

    GET  /                 demo page (when gateway.demo is on)
    GET  /static/...       channelcast.js and the demo's files
    WS   /ws               the client protocol (docs/protocol.md)
    GET  /sse?channels=a,b Server-Sent Events (public channels); Last-Event-ID resumes
    POST /api/publish      publish one message or a batch (HMAC-signed, docs/gateway.md)
    POST /auth             channel signatures from the application's authorizer hook
    POST /demo/publish     unsigned publish for the demo page (only when gateway.demo)
    GET  /healthz /readyz /metrics
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from channelcast.brokers import Broker, create_broker
from channelcast.channels import needs_auth, validate_channel
from channelcast.config import Settings
from channelcast.errors import (
    AuthError,
    BrokerError,
    ChannelcastError,
    InvalidChannel,
    InvalidPosition,
    MessageError,
)
from channelcast.gateway.auth import RequestVerifier, channel_auth
from channelcast.gateway.hub import Hub
from channelcast.gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from channelcast.gateway.presence import RESERVED_EVENT_PREFIX
from channelcast.gateway.protocol import (
    AUTH_REQUIRED,
    CLOSE_TRY_AGAIN_LATER,
    INVALID_CHANNEL,
    INVALID_POSITION,
    TOO_MANY_SUBSCRIPTIONS,
    ClientProtocol,
    Credentials,
    Subscribe,
    error_frame,
    parse_position,
)
from channelcast.gateway.session import Outgoing, Session
from channelcast.message import Envelope
from channelcast.types import ChannelName, Position

log = logging.getLogger("channelcast.gateway")

STATIC_DIR = Path(__file__).parent / "static"
MAX_PUBLISH_BODY = 10 * 1024 * 1024
MAX_BATCH = 1000
MAX_EVENT_NAME = 200
SSE_KEEPALIVE_S = 15.0
CLOSE_GRACE_S = 5.0
"""How long a close frame may wait behind unread data before the connection is aborted."""
ABORT_EXTENSION = "channelcast.abort"
"""ASGI scope extension our uvicorn protocol adds: ``{"abort": callable}``."""
DIRECT_EXTENSION = "channelcast.direct"
"""ASGI scope extension our uvicorn protocol adds: ``{"room": () -> int, "write":
(list[str]) -> None}``, a synchronous way to write text frames past the ASGI send stack
(which cost more per frame than the socket write in the fan-out profile)."""


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What the authorizer hook is asked: may this connection subscribe to this channel?"""

    connection_id: str
    channel: ChannelName
    params: dict[str, Any]
    request: Request


@dataclass(frozen=True, slots=True)
class AuthGrant:
    """A yes from the authorizer; presence channels need a ``user_id``."""

    user_id: str | None = None
    user_info: Any = None


Authorizer = Callable[[AuthRequest], Awaitable[AuthGrant | None]]


async def demo_authorizer(req: AuthRequest) -> AuthGrant | None:
    """Allows everything; the user is whatever the page says. For the demo only."""
    name = req.params.get("user_id")
    user_id = name if isinstance(name, str) and name.strip() else req.connection_id
    return AuthGrant(user_id=user_id[:64], user_info={"name": user_id[:64]})


@dataclass(eq=False)
class Gateway:
    """One node: broker, hub, sessions. ``drain()`` is the graceful half of shutdown."""

    settings: Settings
    broker: Broker
    authorizer: Authorizer | None = None
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    hub: Hub = field(init=False)
    sessions: set[Session] = field(default_factory=set)
    accepting: bool = True

    def __post_init__(self) -> None:
        g = self.settings.gateway
        self.hub = Hub(self.broker, presence_ttl_s=g.presence_ttl_s, metrics=self.metrics)
        self.credentials = Credentials(g.app_key, g.app_secret)
        self.verifier = RequestVerifier(g.app_key, g.app_secret)
        if self.authorizer is None and g.demo:
            self.authorizer = demo_authorizer

    async def start(self) -> None:
        await self.broker.start()
        await self.hub.start()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def drain(self, reason: str = "server shutting down", flush_s: float = 5.0) -> None:
        """Stop accepting, tell every client, flush their buffers, close them (1001)."""
        self.accepting = False
        await asyncio.gather(*(s.shutdown(reason, flush_s) for s in list(self.sessions)),
                             return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self.hub.close()
        await self.broker.close()

    def new_session(self, transport: WebSocketTransport | SSETransport) -> Session:
        g = self.settings.gateway
        protocol = ClientProtocol(Session.new_connection_id(self.hub.node_id), self.credentials,
                                  max_subscriptions=g.max_subscriptions,
                                  max_frame_bytes=g.max_frame_bytes)
        return Session(self.hub, protocol, transport, send_queue=g.send_queue,
                       slow_client_policy=g.slow_client_policy, metrics=self.metrics)


def _gateway(request: Request | WebSocket) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_frame(code, message), status_code=status)


# --- WebSocket ----------------------------------------------------------------------------


def _no_room() -> int:
    return 0


class WebSocketTransport:
    """Frames go through Starlette's ``send_text``, or, when the server offers the
    :data:`DIRECT_EXTENSION`, straight into the connection (see ``room``/``send_now``)."""

    def __init__(self, websocket: WebSocket, grace_s: float = CLOSE_GRACE_S) -> None:
        self.websocket = websocket
        self.grace_s = grace_s
        direct = websocket.scope.get("extensions", {}).get(DIRECT_EXTENSION)
        self._room: Callable[[], int] = direct["room"] if direct else _no_room
        self._write: Callable[[list[str]], None] | None = direct["write"] if direct else None

    async def send(self, item: Outgoing) -> None:
        await self.websocket.send_text(item.text)

    def room(self) -> int:
        return self._room()

    def send_now(self, items: list[Outgoing]) -> None:
        assert self._write is not None, "send_now without room"
        self._write([item.text for item in items])

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame; if a client that does not read keeps it stuck behind
        unread data for ``grace_s``, abort the TCP connection instead."""
        try:
            await asyncio.wait_for(self.websocket.close(code, reason), self.grace_s)
        except Exception:
            abort = self.websocket.scope.get("extensions", {}).get(ABORT_EXTENSION, {})
            if "abort" in abort:
                abort["abort"]()


async def websocket_endpoint(websocket: WebSocket) -> None:
    gw = _gateway(websocket)
    await websocket.accept()
    if not gw.accepting:
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "server shutting down")
        return
    session = gw.new_session(WebSocketTransport(websocket))
    gw.sessions.add(session)
    gw.metrics.connections.labels("ws").inc()
    session.start()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is not None and not session.outbox_closed:
                await session.handle(data)
    except WebSocketDisconnect:
        pass
    finally:
        gw.sessions.discard(session)
        gw.metrics.connections.labels("ws").dec()
        await session.aclose()


# --- SSE ------------------------------------------------------------------------------------


_CLOSE = Outgoing("")


class SSETransport:
    """Hands the session's frames to the streaming response, one at a time (backpressure)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Outgoing] = asyncio.Queue(1)

    async def send(self, item: Outgoing) -> None:
        await self.queue.put(item)

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_CLOSE)


def parse_cursor(text: str, channels: list[ChannelName]) -> dict[ChannelName, Position]:
    """An SSE event id -> positions per channel. A bare ``topic:partition:offset`` is the
    position of a single-channel stream; otherwise ``channel:topic:partition:offset`` entries
    separated by spaces."""
    text = text.strip()
    if not text:
        return {}
    parts = text.split()
    if len(parts) == 1 and parts[0].count(":") == 2:
        if len(channels) != 1:
            raise InvalidPosition("a bare position resumes only a single-channel stream")
        return {channels[0]: parse_position(parts[0])}
    out: dict[ChannelName, Position] = {}
    for part in parts:
        name, sep, pos = part.partition(":")
        if not sep:
            raise InvalidPosition(f"not a channel:position entry: {part!r}")
        out[validate_channel(name)] = parse_position(pos)
    return out


def format_cursor(positions: dict[ChannelName, Position]) -> str:
    if len(positions) == 1:
        return str(next(iter(positions.values())))
    return " ".join(f"{c}:{p}" for c, p in sorted(positions.items()))


async def sse_endpoint(request: Request) -> Response:
    gw = _gateway(request)
    if not gw.accepting:
        return _error(503, "shutting_down", "server shutting down")
    raw = request.query_params.get("channels", "")
    names = [c for c in raw.split(",") if c]
    if not names:
        return _error(400, INVALID_CHANNEL, "give channels: /sse?channels=a,b")
    try:
        channels = list(dict.fromkeys(validate_channel(c) for c in names))
    except InvalidChannel as exc:
        return _error(400, INVALID_CHANNEL, str(exc))
    private = [c for c in channels if needs_auth(c)]
    if private:
        return _error(403, AUTH_REQUIRED, f"SSE serves public channels only; {private[0]!r} "
                      "needs the WebSocket protocol with a signature")
    if len(channels) > gw.settings.gateway.max_subscriptions:
        return _error(400, TOO_MANY_SUBSCRIPTIONS, f"at most "
                      f"{gw.settings.gateway.max_subscriptions} channels per stream")
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        since = parse_cursor(last, channels) if last else {}
    except (InvalidPosition, InvalidChannel) as exc:
        return _error(400, INVALID_POSITION, f"bad Last-Event-ID: {exc}")

    transport = SSETransport()
    session = gw.new_session(transport)
    positions: dict[ChannelName, Position] = {}

    async def stream() -> AsyncIterator[str]:
        gw.sessions.add(session)
        gw.metrics.connections.labels("sse").inc()
        session.start(greet=False)
        try:
            yield f"retry: 1000\nevent: connected\ndata: {json.dumps(session.connection_id)}\n\n"
            for channel in channels:
                session.protocol.channels.add(channel)
                await session.subscribe(Subscribe(channel, since.get(channel), None))
            while True:
                try:
                    item = await asyncio.wait_for(transport.queue.get(), SSE_KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if item is _CLOSE:
                    return
                yield _sse_event(item, positions)
                if item.frame is not None and item.frame.get("type") == "closing":
                    return
        finally:
            gw.sessions.discard(session)
            gw.metrics.connections.labels("sse").dec()
            await session.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse_event(item: Outgoing, positions: dict[ChannelName, Position]) -> str:
    event_id = ""
    if item.record is not None:
        kind = "message"
        positions[item.record.channel] = item.record.position
        event_id = format_cursor(positions)
    else:
        assert item.frame is not None
        kind = str(item.frame.get("type"))
        if kind == "subscribed":
            pos = item.frame["data"].get("position")
            if pos:
                positions[ChannelName(item.frame["channel"])] = parse_position(pos)
                event_id = format_cursor(positions)
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {item.text}\n\n"


# --- HTTP publish API -----------------------------------------------------------------------


def parse_publish(body: bytes) -> list[Envelope]:
    """The publish API body -> envelopes; raises MessageError/InvalidChannel naming the item."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MessageError(f"body is not JSON: {exc}") from exc
    if isinstance(obj, dict) and "messages" in obj:
        items = obj["messages"]
        if not isinstance(items, list) or not items:
            raise MessageError("'messages' must be a non-empty list")
        if len(items) > MAX_BATCH:
            raise MessageError(f"a batch holds at most {MAX_BATCH} messages")
    else:
        items = [obj]
    batch = isinstance(obj, dict) and "messages" in obj
    out = []
    for i, item in enumerate(items):
        where = f"messages[{i}]" if batch else "message"
        if not isinstance(item, dict):
            raise MessageError(f"{where} must be an object {{channel, event, data}}")
        try:
            channel = validate_channel(item.get("channel"))
        except InvalidChannel as exc:
            raise InvalidChannel(f"{where}: {exc}") from None
        event = item.get("event")
        if not isinstance(event, str) or not event or len(event) > MAX_EVENT_NAME:
            raise MessageError(f"{where}.event must be a string of 1..{MAX_EVENT_NAME} chars")
        if event.startswith(RESERVED_EVENT_PREFIX):
            raise MessageError(f"{where}.event: the prefix {RESERVED_EVENT_PREFIX!r} is reserved")
        out.append(Envelope(channel=channel, event=event, data=item.get("data")))
    return out


async def _publish(gw: Gateway, body: bytes) -> Response:
    try:
        envelopes = parse_publish(body)
    except InvalidChannel as exc:
        return _error(400, INVALID_CHANNEL, str(exc))
    except MessageError as exc:
        return _error(400, "bad_message", str(exc))
    started = time.perf_counter()
    try:
        positions = await gw.broker.publish_many(envelopes)
    except MessageError as exc:
        return _error(400, "bad_message", str(exc))
    except BrokerError as exc:
        return _error(503, "broker_error", str(exc))
    gw.metrics.publish_latency.observe(time.perf_counter() - started)
    gw.metrics.publishes.inc(len(positions))
    return JSONResponse({"positions": [str(p) for p in positions],
                         "ids": [e.id for e in envelopes]})


async def _read_body(request: Request) -> bytes | None:
    try:
        size = int(request.headers.get("content-length") or 0)
    except ValueError:
        size = 0
    if size > MAX_PUBLISH_BODY:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_PUBLISH_BODY:
            return None
    return body


async def publish_endpoint(request: Request) -> Response:
    gw = _gateway(request)
    body = await _read_body(request)
    if body is None:
        return _error(413, "body_too_large", f"body over {MAX_PUBLISH_BODY} bytes")
    try:
        gw.verifier.verify(request.headers, body)
    except AuthError as exc:
        return _error(401, "auth_failed", str(exc))
    return await _publish(gw, body)


async def demo_publish_endpoint(request: Request) -> Response:
    gw = _gateway(request)
    body = await _read_body(request)
    if body is None:
        return _error(413, "body_too_large", f"body over {MAX_PUBLISH_BODY} bytes")
    return await _publish(gw, body)


async def auth_endpoint(request: Request) -> Response:
    gw = _gateway(request)
    if gw.authorizer is None:
        return _error(404, "no_authorizer", "this gateway has no authorizer hook")
    body = await _read_body(request)
    if body is None:
        return _error(413, "body_too_large", f"body over {MAX_PUBLISH_BODY} bytes")
    try:
        params = json.loads(body)
        if not isinstance(params, dict):
            raise ValueError("not an object")
        connection_id, raw_channel = params.get("connection_id"), params.get("channel")
        if not isinstance(connection_id, str) or not connection_id:
            raise ValueError("connection_id is missing")
        channel = validate_channel(raw_channel)
    except InvalidChannel as exc:
        return _error(400, INVALID_CHANNEL, str(exc))
    except ValueError as exc:
        return _error(400, "bad_request", f"want JSON {{connection_id, channel}}: {exc}")
    grant = await gw.authorizer(AuthRequest(connection_id, channel, params, request))
    if grant is None:
        return _error(403, "auth_failed", f"not allowed to subscribe to {channel!r}")
    g = gw.settings.gateway
    try:
        signed = channel_auth(g.app_key, g.app_secret, connection_id, channel,
                              user_id=grant.user_id, user_info=grant.user_info)
    except AuthError as exc:
        return _error(403, "auth_failed", str(exc))
    return JSONResponse(signed)


# --- health, metrics, demo ------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gw = _gateway(request)
    if not gw.accepting:
        return JSONResponse({"status": "shutting down"}, status_code=503)
    try:
        await asyncio.wait_for(gw.broker.ping(), 3.0)
    except (ChannelcastError, TimeoutError, OSError) as exc:
        return JSONResponse({"status": "broker unreachable", "error": str(exc)},
                            status_code=503)
    return JSONResponse({"status": "ready", "broker": gw.settings.broker_kind})


async def metrics_endpoint(request: Request) -> Response:
    return Response(_gateway(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def index(request: Request) -> Response:
    if not _gateway(request).settings.gateway.demo:
        return JSONResponse({"service": "channelcast gateway", "demo": "disabled"})
    return FileResponse(STATIC_DIR / "index.html")


def create_app(settings: Settings | None = None, *, broker: Broker | None = None,
               authorizer: Authorizer | None = None) -> Starlette:
    """The gateway app. ``broker`` defaults to ``create_broker(settings)``."""
    settings = settings or Settings()
    gateway = Gateway(settings, broker or create_broker(settings), authorizer)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.close()

    routes: list[Route | WebSocketRoute | Mount] = [
        Route("/", index),
        WebSocketRoute("/ws", websocket_endpoint),
        Route("/sse", sse_endpoint),
        Route("/api/publish", publish_endpoint, methods=["POST"]),
        Route("/auth", auth_endpoint, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    if settings.gateway.demo:
        routes.append(Route("/demo/publish", demo_publish_endpoint, methods=["POST"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app
