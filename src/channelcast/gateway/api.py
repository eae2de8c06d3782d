"""The HTTP API: publish (signed, and the demo's unsigned one), channel auth, health, metrics.

Endpoints validate and raise channelcast errors; they never build an error response:
:mod:`.app` maps every error to its status and JSON body in one table. The body shapes are
in docs/protocol.md (publish) and docs/gateway.md (auth, health, metrics).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from channelcast.channels import validate_client_channel
from channelcast.errors import (
    AuthError,
    ChannelcastError,
    InvalidChannel,
    MessageError,
    RequestRefused,
)
from channelcast.gateway.auth import channel_auth
from channelcast.gateway.jsontext import loads as strict_loads
from channelcast.gateway.metrics import CONTENT_TYPE_LATEST
from channelcast.gateway.node import AuthRequest, Gateway, gateway_of
from channelcast.gateway.protocol import AUTH_FAILED
from channelcast.message import Envelope, validate_event, validate_message_id
from channelcast.types import ChannelName

log = logging.getLogger("channelcast.gateway")

STATIC_DIR = Path(__file__).parent / "static"
MAX_PUBLISH_BODY = 10 * 1024 * 1024
"""Bytes; a larger request body is refused (413) before it is read to the end."""
MAX_BATCH = 1000
"""Messages per publish request."""
BODY_TIMEOUT_S = 10.0
"""Seconds a request body (publish, ``/auth``) may take to arrive in full; then 408 and
the connection is closed."""

# Error codes of the HTTP API (besides the client protocol's, which it shares).
BAD_MESSAGE = "bad_message"
BAD_REQUEST = "bad_request"
BODY_TOO_LARGE = "body_too_large"
BROKER_ERROR = "broker_error"
NO_AUTHORIZER = "no_authorizer"
REQUEST_TIMEOUT = "request_timeout"
OUTCOME_UNKNOWN = "outcome_unknown"
"""503: the broker did not acknowledge, but may have stored the messages: retry the
request as it was (the same signed request, or the same ids)."""


READY_PING_S = 3.0
"""``/readyz``: how long the broker may take to answer its ping."""


_MESSAGE_KEYS = frozenset(("channel", "event", "data", "id"))


def parse_publish(body: bytes,
                  default_id: Callable[[int], str] | None = None) -> list[Envelope]:
    """The publish API body -> envelopes; raises MessageError/InvalidChannel naming the item
    (``message`` or ``messages[i]``, e.g. ``messages[3].event must ...``).

    The body is strict JSON (:func:`.jsontext.loads`, the parser of every JSON the gateway
    takes): one message ``{channel, event, data, id}`` (``data`` optional: null; no other
    key, so a misspelt one is an error, not a message without data), or
    ``{"messages": [...]}`` and no other key. An item's optional ``"id"`` is its message id
    (an idempotency key: :func:`~channelcast.message.validate_message_id`'s rules), unique
    in the batch; without one, message ``i`` gets ``default_id(i)``, or a new ULID when
    there is no ``default_id``."""
    try:
        obj = strict_loads(body)
    except ValueError as exc:
        raise MessageError(f"body is not strict JSON: {exc}"[:300]) from None
    batch = isinstance(obj, dict) and "messages" in obj
    if batch:
        others = sorted(k for k in obj if k != "messages")
        if others:
            raise MessageError("a body with 'messages' holds nothing else; found "
                               + ", ".join(repr(k[:40]) for k in others[:5]))
        items = obj["messages"]
        if not isinstance(items, list) or not items:
            raise MessageError("'messages' must be a non-empty list")
        if len(items) > MAX_BATCH:
            raise MessageError(f"a batch holds at most {MAX_BATCH} messages")
    else:
        items = [obj]
    out = []
    explicit: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"messages[{i}]" if batch else "message"
        if not isinstance(item, dict):
            raise MessageError(f"{where} must be an object {{channel, event, data}}")
        unknown = sorted(k for k in item if k not in _MESSAGE_KEYS)
        if unknown:  # a misspelt "data" would otherwise publish null, silently
            raise MessageError(f"{where} has unknown key(s) "
                               + ", ".join(repr(k[:40]) for k in unknown[:5])
                               + "; a message has channel, event, data and id")
        if "channel" not in item:
            raise InvalidChannel(f"{where}.channel is missing")
        if "event" not in item:
            raise MessageError(f"{where}.event is missing")
        try:
            channel = validate_client_channel(item.get("channel"))
        except InvalidChannel as exc:
            raise InvalidChannel(f"{where}: {exc}") from None
        try:
            event = validate_event(item.get("event"))
            mid = (validate_message_id(item["id"]) if "id" in item
                   else None if default_id is None else default_id(i))
        except MessageError as exc:
            raise MessageError(f"{where}.{exc}") from None
        if "id" in item:
            assert mid is not None
            first = explicit.setdefault(mid, i)
            if first != i:
                raise MessageError(f"{where}.id repeats messages[{first}].id {mid!r}: one "
                                   "id names one message")
        out.append(Envelope(channel=channel, event=event, data=item.get("data"), id=mid))
    return out


async def read_body(request: Request) -> bytes:
    """The request body; raises RequestRefused: 413 once it is over MAX_PUBLISH_BODY, 408
    when it is not complete within :data:`BODY_TIMEOUT_S`, 400 when the client hangs up
    before the body is complete."""
    # The HTTP server has checked that Content-Length is digits; never int() a long run.
    declared = (request.headers.get("content-length") or "").strip().lstrip("0")
    if declared.isascii() and declared.isdigit() and (
            len(declared) > len(str(MAX_PUBLISH_BODY)) or int(declared) > MAX_PUBLISH_BODY):
        raise _too_large()
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                received += len(chunk)
                if received > MAX_PUBLISH_BODY:
                    raise _too_large()
                chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; one quiet line, not an "Exception in ASGI application".
        log.debug("%s %s: the client hung up before the body was complete",
                  request.method, request.url.path)
        raise RequestRefused(400, BAD_REQUEST, "the client hung up before the body was "
                             "complete") from None
    except TimeoutError:
        log.info("%s %s: the body was not complete after %s s (%d bytes); answered 408",
                 request.method, request.url.path, BODY_TIMEOUT_S, received)
        raise RequestRefused(408, REQUEST_TIMEOUT, f"the body was not complete within "
                             f"{BODY_TIMEOUT_S:g} s") from None
    return b"".join(chunks)


def _too_large() -> RequestRefused:
    return RequestRefused(413, BODY_TOO_LARGE, f"body over {MAX_PUBLISH_BODY} bytes")


async def _publish(gw: Gateway, body: bytes,
                   default_id: Callable[[int], str] | None = None) -> bytes:
    """Publish the body's messages; the JSON answer ``{"positions", "ids"}``."""
    envelopes = parse_publish(body, default_id)
    started = time.perf_counter()
    positions = await gw.broker.publish_many(envelopes)
    gw.metrics.publish_latency.observe(time.perf_counter() - started)
    gw.metrics.publishes.inc(len(positions))
    return json.dumps({"positions": [str(p) for p in positions],
                       "ids": [e.id for e in envelopes]},
                      ensure_ascii=False, separators=(",", ":")).encode()


async def publish_endpoint(request: Request) -> Response:
    """``POST /api/publish``: ``{"positions": [...], "ids": [...]}`` once acknowledged.
    Raises AuthError (signature), MessageError, InvalidChannel, BrokerError, RequestRefused.

    Idempotent within the replay window: a request with the signature of one already
    answered gets that answer again (nothing is published), one identical to a request
    in flight waits for its answer, and one whose first attempt failed tries again. The
    default message ids derive from the signature, so copies on other nodes match.
    """
    gw = gateway_of(request)
    body = await read_body(request)
    signed = gw.verifier.verify(request.headers, body)
    answer = await gw.verifier.once(signed, lambda: _publish(gw, body, signed.message_id))
    return Response(answer, media_type="application/json")


async def demo_publish_endpoint(request: Request) -> Response:
    """``POST /demo/publish``: the same without a signature (only with ``gateway.demo``),
    hence without the idempotency a signature gives."""
    answer = await _publish(gateway_of(request), await read_body(request))
    return Response(answer, media_type="application/json")


def _auth_params(body: bytes) -> tuple[str, ChannelName, dict[str, Any]]:
    """``/auth``'s JSON body -> (connection_id, channel, all params); raises
    RequestRefused (400 bad_request) or InvalidChannel."""
    try:
        params = strict_loads(body)  # what the grant is signed into must be strict JSON
        if not isinstance(params, dict):
            raise ValueError("not an object")
        connection_id = params.get("connection_id")
        if connection_id is None or connection_id == "":
            raise ValueError("connection_id is missing")
        if not isinstance(connection_id, str):
            raise ValueError("connection_id must be a string")
    except ValueError as exc:
        raise RequestRefused(400, BAD_REQUEST,
                             f"want JSON {{connection_id, channel}}: {exc}") from exc
    return connection_id, validate_client_channel(params.get("channel")), params


async def auth_endpoint(request: Request) -> Response:
    """``POST /auth``: the application's authorizer decides, the gateway signs
    (``{"auth": ..., "channel_data": ...}``). A no is RequestRefused (403 auth_failed)."""
    gw = gateway_of(request)
    if gw.authorizer is None:
        raise RequestRefused(404, NO_AUTHORIZER, "this gateway has no authorizer hook")
    connection_id, channel, params = _auth_params(await read_body(request))
    grant = await gw.authorizer(AuthRequest(connection_id, channel, params, request))
    if grant is None:
        raise RequestRefused(403, AUTH_FAILED, f"not allowed to subscribe to {channel!r}")
    g = gw.settings.gateway
    try:
        signed = channel_auth(g.app_key, g.app_secret, connection_id, channel,
                              user_id=grant.user_id, user_info=grant.user_info)
    except AuthError as exc:  # the grant cannot be signed (presence without user_id)
        raise RequestRefused(403, AUTH_FAILED, str(exc)) from exc
    return JSONResponse(signed)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when accepting and the broker answers a ping within 3 s, else 503 with
    ``{"status": ..., "error": "<error type>: <message>"}``."""
    gw = gateway_of(request)
    if not gw.accepting:
        return JSONResponse({"status": "shutting down"}, status_code=503)
    try:
        await asyncio.wait_for(gw.broker.ping(), READY_PING_S)
    except TimeoutError:
        return JSONResponse({"status": "broker unreachable", "error": (
            f"TimeoutError: the broker did not answer a ping within {READY_PING_S:g} s")},
            status_code=503)
    except (ChannelcastError, OSError) as exc:
        return JSONResponse({"status": "broker unreachable",
                             "error": f"{type(exc).__name__}: {exc}"}, status_code=503)
    return JSONResponse({"status": "ready", "broker": gw.settings.broker_kind})


async def metrics_endpoint(request: Request) -> Response:
    return Response(gateway_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def index(request: Request) -> Response:
    if not gateway_of(request).settings.gateway.demo:
        return JSONResponse({"service": "channelcast gateway", "demo": "disabled"})
    return FileResponse(STATIC_DIR / "index.html")
