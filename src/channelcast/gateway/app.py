"""Builds the gateway's ASGI app (Starlette): routes, lifespan, and the one error map.

Routes::

    GET  /                 demo page (when gateway.demo is on)       api.index
    GET  /static/...       channelcast.js and the demo's files
    WS   /ws               the client protocol (docs/protocol.md)    websocket.websocket_endpoint
    GET  /sse?channels=a,b Server-Sent Events (public channels)      sse.sse_endpoint
    POST /api/publish      publish one message or a batch (signed)   api.publish_endpoint
    POST /auth             channel signatures from the authorizer    api.auth_endpoint
    POST /demo/publish     unsigned publish (only when gateway.demo) api.demo_publish_endpoint
    GET  /healthz /readyz /metrics                                   api
    WS   /app/{key}, /apps/{id}/...  the Pusher protocol (pusher.enabled; docs/pusher.md)

Endpoints raise channelcast errors; :data:`ERROR_STATUS` turns each into its HTTP status
and the JSON error body ``{"type": "error", "data": {"code", "message"}}``, here and
nowhere else. This module does nothing else: the node is :mod:`.node`, the transports
:mod:`.websocket` and :mod:`.sse`, the HTTP API :mod:`.api`. The names below stay
importable from here for code written against the single-module gateway.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from channelcast.brokers import Broker, create_broker
from channelcast.config import Settings
from channelcast.errors import (
    AuthError,
    BrokerError,
    ChannelcastError,
    InvalidChannel,
    InvalidPosition,
    MessageError,
    PublishOutcomeUnknown,
    RequestRefused,
)
from channelcast.gateway.api import (
    BAD_MESSAGE,
    BROKER_ERROR,
    OUTCOME_UNKNOWN,
    STATIC_DIR,
    auth_endpoint,
    demo_publish_endpoint,
    healthz,
    index,
    metrics_endpoint,
    parse_publish,
    publish_endpoint,
    readyz,
)
from channelcast.gateway.node import AuthGrant, Authorizer, AuthRequest, Gateway, demo_authorizer
from channelcast.gateway.protocol import AUTH_FAILED, INVALID_CHANNEL, INVALID_POSITION, error_frame
from channelcast.gateway.pusher.http import pusher_routes
from channelcast.gateway.sse import format_cursor, parse_cursor, sse_endpoint
from channelcast.gateway.websocket import websocket_endpoint

__all__ = [
    "ERROR_STATUS",
    "AuthGrant",
    "AuthRequest",
    "Authorizer",
    "Gateway",
    "create_app",
    "demo_authorizer",
    "error_response",
    "format_cursor",
    "parse_cursor",
    "parse_publish",
]

ERROR_STATUS: tuple[tuple[type[ChannelcastError], int, str], ...] = (
    (InvalidChannel, 400, INVALID_CHANNEL),
    (InvalidPosition, 400, INVALID_POSITION),
    (MessageError, 400, BAD_MESSAGE),
    (AuthError, 401, AUTH_FAILED),
    (PublishOutcomeUnknown, 503, OUTCOME_UNKNOWN),
    (BrokerError, 503, BROKER_ERROR),
)
"""Error class -> (HTTP status, error code); the first class the error is an instance of
wins. :class:`~channelcast.errors.RequestRefused` carries its own status and code. Any
other error is not handled here: a 500, as a bug should be."""


def status_of(exc: ChannelcastError) -> tuple[int, str]:
    """(HTTP status, error code) for an error raised by an endpoint."""
    if isinstance(exc, RequestRefused):
        return exc.status, exc.code
    for cls, status, code in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


async def error_response(conn: HTTPConnection, exc: Exception) -> Response:
    """The Starlette exception handler for every class in :data:`ERROR_STATUS`."""
    if conn.scope["type"] != "http" or not isinstance(exc, ChannelcastError):
        raise exc  # a WebSocket has no HTTP response: the server closes it, as before
    status, code = status_of(exc)
    # 408: the rest of the body may never come; close rather than wait for it.
    headers = {"Connection": "close"} if status == 408 else None
    return JSONResponse(error_frame(code, str(exc)), status_code=status, headers=headers)


def create_app(settings: Settings | None = None, *, broker: Broker | None = None,
               authorizer: Authorizer | None = None) -> Starlette:
    """The gateway app. ``broker`` defaults to ``create_broker(settings)``; the node is
    ``app.state.gateway``, started and closed by the app's lifespan."""
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
    if settings.pusher.enabled:
        routes.extend(pusher_routes())
    handlers = {cls: error_response for cls, _, _ in ERROR_STATUS}
    handlers[RequestRefused] = error_response
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.gateway = gateway
    return app
