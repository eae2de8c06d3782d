"""The Pusher HTTP API: trigger events, query channels, terminate a user's connections.

Routes (each request signed with Pusher's query-string signature, see
:mod:`.signatures`)::

    POST /apps/{id}/events                       {name, data, channels | channel, socket_id?, info?}
    POST /apps/{id}/batch_events                 {batch: [{name, data, channel, ...}]}, at most 10
    GET  /apps/{id}/channels                     ?filter_by_prefix=&info=user_count
    GET  /apps/{id}/channels/{name}              ?info=user_count,subscription_count
    GET  /apps/{id}/channels/{name}/users        presence channels only
    POST /apps/{id}/users/{user}/terminate_connections
    POST /users/{user}/terminate_connections     the path the Python SDK 3.3 uses (app by auth_key)

Bodies are strict JSON (:mod:`channelcast.gateway.jsontext`: no NaN/Infinity, no lone
surrogate), as everywhere in the gateway. ``info`` on a trigger is per channel, as in
Pusher's API: ``subscription_count`` for every channel, ``user_count`` for the presence
channels among them (left out for the others). Answers are JSON; channelcast adds
``positions`` (where each event was stored). Errors are plain text, as the SDKs expect:
400 (bad request), 401 (signature), 403 (a key of another app), 404 (no such app), 413
(data over the app's ``max_event_bytes``), 503 (broker). This module maps errors to those
statuses in :func:`_text_errors`, for its own routes only (the native API's JSON error
table in :mod:`..app` stays as it is). Counts are cluster-wide (:mod:`.cluster`). This
module never touches a WebSocket: triggers go through the broker, terminations through
the cluster state.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from channelcast.errors import (
    AuthError,
    BrokerError,
    InvalidChannel,
    MessageError,
    RequestRefused,
)
from channelcast.gateway import jsontext
from channelcast.gateway.api import read_body
from channelcast.gateway.node import gateway_of
from channelcast.gateway.pusher import names
from channelcast.gateway.pusher.apps import PusherApp
from channelcast.gateway.pusher.cluster import ChannelStat
from channelcast.gateway.pusher.names import Kind, PusherChannel
from channelcast.gateway.pusher.node import PusherNode
from channelcast.gateway.pusher.records import wrap
from channelcast.gateway.pusher.session import pusher_websocket_endpoint
from channelcast.gateway.pusher.signatures import verify_query
from channelcast.message import Envelope, validate_event

MAX_CHANNELS = 100
"""Channels one event may be triggered on."""
MAX_BATCH = 10
"""Events in one batch_events request."""
RESERVED_EVENT_PREFIXES = ("pusher:", "pusher_internal:")
_SOCKET_ID = re.compile(r"[0-9]+\.[0-9]+")

Endpoint = Callable[[Request], Awaitable[Response]]


def _text_errors(endpoint: Endpoint) -> Endpoint:
    """Errors as the Pusher SDKs expect them: a status and a plain-text body."""

    @wraps(endpoint)
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except AuthError as exc:
            return PlainTextResponse(str(exc), 401)
        except RequestRefused as exc:
            return PlainTextResponse(str(exc), exc.status)
        except (InvalidChannel, MessageError) as exc:
            return PlainTextResponse(str(exc), 400)
        except BrokerError as exc:
            return PlainTextResponse(f"broker error: {exc}", 503)

    return run


def _bad(message: str) -> RequestRefused:
    return RequestRefused(400, "bad_request", message)


async def _authenticated(request: Request) -> tuple[PusherNode, PusherApp, bytes]:
    """The app a request is signed for, and its body; raises AuthError/RequestRefused."""
    node = gateway_of(request).pusher
    params = dict(request.query_params)
    app_id = request.path_params.get("app_id")
    by_key = node.apps.by_key(params.get("auth_key", ""))
    if app_id is None:
        if by_key is None:
            raise AuthError("unknown auth_key")
        app = by_key
    else:
        found = node.apps.by_id(app_id)
        if found is None:
            raise RequestRefused(404, "unknown_app", f"unknown app {app_id[:20]!r}")
        if by_key is not None and by_key is not found:
            raise RequestRefused(403, "forbidden", "auth_key belongs to another app")
        app = found
    body = await read_body(request)
    verify_query(app, request.method, request.scope["path"], params, body)
    return node, app, body


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        obj = jsontext.loads(body)
    except ValueError as exc:
        raise _bad(f"body is not strict JSON: {exc}"[:300]) from exc
    if not isinstance(obj, dict):
        raise _bad("body must be a JSON object")
    return obj


def _info(value: object) -> set[str]:
    if value is None:
        return set()
    if not isinstance(value, str):
        raise _bad("info must be a comma-separated string")
    return {part for part in value.split(",") if part}


@dataclass(frozen=True, slots=True)
class _Event:
    channels: list[PusherChannel]
    name: str
    data: str
    socket_id: str | None
    info: set[str]


def _event(app: PusherApp, item: dict[str, Any], where: str, many: bool) -> _Event:
    """One event of a request; raises RequestRefused (400/413) or InvalidChannel naming
    the field. ``many``: ``channels`` (a list) is accepted besides ``channel``."""
    name = item.get("name")
    try:
        validate_event(name)
    except MessageError as exc:
        raise _bad(f"{where}name: {exc}") from None
    assert isinstance(name, str)
    if name.startswith(RESERVED_EVENT_PREFIXES):
        raise _bad(f"{where}name: events starting with 'pusher:' or 'pusher_internal:' are "
                   "the protocol's own")
    data = item.get("data")
    if not isinstance(data, str):
        raise _bad(f"{where}data must be a string")
    size = len(data.encode())
    if size > app.max_event_bytes:
        raise RequestRefused(413, "too_large", f"{where}data is {size} bytes; the limit is "
                             f"{app.max_event_bytes}")
    if "channels" in item and "channel" in item:
        raise _bad(f"{where}give either channels or channel, not both")
    if "channels" in item:
        if not many:
            raise _bad(f"{where}channels: a batch event has one 'channel'")
        raw = item["channels"]
        if not isinstance(raw, list) or not raw:
            raise _bad(f"{where}channels must be a non-empty list")
    elif "channel" in item:
        raw = [item["channel"]]
    else:
        raise _bad(f"{where}channel{'s' if many else ''} is missing")
    if len(raw) > MAX_CHANNELS:
        raise _bad(f"{where}channels: at most {MAX_CHANNELS}, got {len(raw)}")
    channels = []
    for i, ch in enumerate(raw):
        try:
            channels.append(names.parse(app, ch))
        except InvalidChannel as exc:
            raise InvalidChannel(f"{where}channels[{i}]: {exc}") from None
    socket_id = item.get("socket_id")
    if socket_id is not None and (not isinstance(socket_id, str)
                                  or not _SOCKET_ID.fullmatch(socket_id)):
        raise _bad(f"{where}socket_id must look like 123.456")
    info = _info(item.get("info"))
    if info - {"user_count", "subscription_count"}:
        raise _bad(f"{where}info takes user_count and subscription_count")
    return _Event(channels, name, data, socket_id, info)


def _channel_info(stats: dict[str, ChannelStat], channel: PusherChannel,
                  info: set[str], *, per_channel: bool = False) -> dict[str, Any]:
    """The asked ``info`` of one channel. ``user_count`` exists for presence channels
    only: asked of another channel it is left out (``per_channel``: a trigger's channels,
    as Pusher does) or refused with 400 (a query about that one channel)."""
    stat = stats.get(channel.channel, ChannelStat(0))
    out: dict[str, Any] = {}
    if "subscription_count" in info:
        out["subscription_count"] = stat.count
    if "user_count" in info:
        if channel.kind is Kind.PRESENCE:
            out["user_count"] = len(stat.users or ())
        elif not per_channel:
            raise _bad(f"user_count is only for presence channels, not {channel.name!r}")
    return out


async def _trigger(node: PusherNode, app: PusherApp,
                   items: list[dict[str, Any]], batch: bool) -> dict[str, Any]:
    """Validate every event, then publish them all in one batch (all or nothing)."""
    events = [_event(app, item, f"batch[{i}]." if batch else "", not batch)
              for i, item in enumerate(items)]
    positions = await node.gateway.broker.publish_many(
        [Envelope(c.channel, e.name, wrap(e.data, socket_id=e.socket_id))
         for e in events for c in e.channels])
    stats = node.cluster.channels(app.id) if any(e.info for e in events) else {}
    at = iter(positions)
    answers: list[dict[str, Any]] = []
    for e in events:
        answer: dict[str, Any] = {}
        if e.info:
            answer["channels"] = {c.name: _channel_info(stats, c, e.info, per_channel=True)
                                  for c in e.channels}
        answer["positions"] = {c.name: str(next(at)) for c in e.channels}
        answers.append(answer)
    if batch:
        return {"batch": [{k: v for k, v in a.items() if k != "positions"} for a in answers],
                "positions": [a["positions"] for a in answers]}
    return answers[0]


@_text_errors
async def events_endpoint(request: Request) -> Response:
    node, app, body = await _authenticated(request)
    return JSONResponse(await _trigger(node, app, [_json_object(body)], batch=False))


@_text_errors
async def batch_events_endpoint(request: Request) -> Response:
    node, app, body = await _authenticated(request)
    batch = _json_object(body).get("batch")
    if not isinstance(batch, list) or not batch:
        raise _bad("batch must be a non-empty list")
    if len(batch) > MAX_BATCH:
        raise _bad(f"batch: at most {MAX_BATCH} events, got {len(batch)}")
    if not all(isinstance(item, dict) for item in batch):
        raise _bad("batch items must be objects")
    return JSONResponse(await _trigger(node, app, batch, batch=True))


@_text_errors
async def channels_endpoint(request: Request) -> Response:
    node, app, _ = await _authenticated(request)
    prefix = request.query_params.get("filter_by_prefix", "")
    info = _info(request.query_params.get("info"))
    if info - {"user_count"}:
        raise _bad(f"unknown info {sorted(info - {'user_count'})}; known: user_count")
    if "user_count" in info and not prefix.startswith("presence-"):
        raise _bad("info=user_count needs filter_by_prefix=presence-")
    out: dict[str, Any] = {}
    for cc, stat in node.cluster.channels(app.id).items():
        name = names.pusher_name(app, cc)
        if name is None or name.startswith(names.USER_CHANNEL_PREFIX) \
                or not name.startswith(prefix):
            continue
        out[name] = {"user_count": len(stat.users or ())} if info else {}
    return JSONResponse({"channels": dict(sorted(out.items()))})


@_text_errors
async def channel_endpoint(request: Request) -> Response:
    node, app, _ = await _authenticated(request)
    channel = names.parse(app, request.path_params["channel_name"])
    info = _info(request.query_params.get("info"))
    if info - {"user_count", "subscription_count"}:
        raise _bad("info takes user_count and subscription_count")
    stats = node.cluster.channels(app.id)
    stat = stats.get(channel.channel)
    return JSONResponse({"occupied": stat is not None and stat.count > 0,
                         **_channel_info(stats, channel, info)})


@_text_errors
async def users_endpoint(request: Request) -> Response:
    node, app, _ = await _authenticated(request)
    channel = names.parse(app, request.path_params["channel_name"])
    if channel.kind is not Kind.PRESENCE:
        raise _bad(f"{channel.name!r} is not a presence channel")
    stat = node.cluster.channels(app.id).get(channel.channel)
    users = sorted(stat.users or ()) if stat is not None else []
    return JSONResponse({"users": [{"id": u} for u in users]})


@_text_errors
async def terminate_endpoint(request: Request) -> Response:
    node, app, _ = await _authenticated(request)
    user_id = request.path_params["user_id"]
    if not user_id:
        raise _bad("user id is missing")
    await node.terminate_user(app, user_id)
    return JSONResponse({})


def pusher_routes() -> list[Route | WebSocketRoute]:
    """The Pusher protocol's routes, for :func:`channelcast.gateway.app.create_app`."""
    return [
        WebSocketRoute("/app/{key}", pusher_websocket_endpoint),
        Route("/apps/{app_id}/events", events_endpoint, methods=["POST"]),
        Route("/apps/{app_id}/batch_events", batch_events_endpoint, methods=["POST"]),
        Route("/apps/{app_id}/channels", channels_endpoint, methods=["GET"]),
        Route("/apps/{app_id}/channels/{channel_name}", channel_endpoint, methods=["GET"]),
        Route("/apps/{app_id}/channels/{channel_name}/users", users_endpoint,
              methods=["GET"]),
        Route("/apps/{app_id}/users/{user_id}/terminate_connections", terminate_endpoint,
              methods=["POST"]),
        Route("/users/{user_id}/terminate_connections", terminate_endpoint,
              methods=["POST"]),
    ]
