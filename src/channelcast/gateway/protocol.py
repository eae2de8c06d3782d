"""The channelcast client protocol (JSON over WebSocket), sans-I/O.

:class:`ClientProtocol` turns received frames into *actions* (send this frame, subscribe,
unsubscribe) and owns the per-connection state (which channels, limits). It never awaits
and never touches a socket: :mod:`channelcast.gateway.session` moves the bytes and runs the
actions. A second wire protocol (e.g. Pusher Channels) is another class producing the same
actions. The frame builders below are shared by every transport (WebSocket and SSE).

Frames are strict JSON both ways (:mod:`.jsontext`): a client frame with NaN, Infinity or
a lone surrogate is refused (``bad_json``), so every frame rendered from client input can
be sent, and :func:`dumps` refuses to build one that a browser could not parse.

See docs/protocol.md for the frames and error codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from channelcast.channels import ChannelType, channel_type, validate_client_channel
from channelcast.errors import AuthError, InvalidChannel, InvalidPosition
from channelcast.gateway import jsontext
from channelcast.gateway.auth import verify_channel
from channelcast.gateway.presence import Member
from channelcast.message import Record
from channelcast.types import ChannelName, Position

PROTOCOL_VERSION = 1

# Error codes (``{"type": "error", "data": {"code": ..., "message": ...}}``).
BAD_JSON = "bad_json"
BAD_FRAME = "bad_frame"
UNKNOWN_TYPE = "unknown_type"
FRAME_TOO_LARGE = "frame_too_large"
INVALID_CHANNEL = "invalid_channel"
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
AUTH_REQUIRED = "auth_required"
AUTH_FAILED = "auth_failed"
INVALID_POSITION = "invalid_position"
ALREADY_SUBSCRIBED = "already_subscribed"
NOT_SUBSCRIBED = "not_subscribed"
RECOVERY_FAILED = "recovery_failed"
SUBSCRIBE_FAILED = "subscribe_failed"
SUBSCRIPTION_LOST = "subscription_lost"

# WebSocket close codes.
CLOSE_GOING_AWAY = 1001  # graceful server shutdown
CLOSE_INTERNAL_ERROR = 1011  # the server failed to write to this connection
CLOSE_TRY_AGAIN_LATER = 1013  # connected while the server is shutting down
CLOSE_SLOW_CLIENT = 4008  # send buffer full with slow_client_policy = "disconnect"


def dumps(frame: dict[str, Any]) -> str:
    """A frame -> compact strict JSON text; raises SerializationError (a ValueError) for
    NaN, Infinity or a lone surrogate anywhere in it (:func:`.jsontext.dumps`)."""
    return jsontext.dumps(frame)


def error_frame(code: str, message: str, channel: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "data": {"code": code, "message": message}}
    if channel is not None:
        frame["channel"] = channel
    return frame


def connected_frame(connection_id: str) -> dict[str, Any]:
    return {"type": "connected",
            "data": {"connection_id": connection_id, "protocol": PROTOCOL_VERSION}}


def subscribed_frame(channel: str, position: Position | None, *, recovered: bool | None,
                     members: list[Member] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"position": None if position is None else str(position)}
    if recovered is not None:
        data["recovered"] = recovered
    if members is not None:
        data["members"] = [m.to_dict() for m in members]
    return {"type": "subscribed", "channel": channel, "data": data}


def member_frame(kind: str, channel: str, member: Member) -> dict[str, Any]:
    return {"type": kind, "channel": channel, "data": member.to_dict()}


def dropped_frame(count: int, channels: list[str]) -> dict[str, Any]:
    return {"type": "dropped", "data": {"count": count, "channels": channels}}


def closing_frame(reason: str) -> dict[str, Any]:
    return {"type": "closing", "data": {"reason": reason}}


def parse_position(text: str) -> Position:
    """A client-sent position. Also accepts offset ``-1``: the position before the first
    message, which the gateway reports for a channel that has none yet."""
    if isinstance(text, str) and text.endswith(":-1"):
        start = Position.parse(text[:-2] + "0")
        return Position(start.topic, start.partition, -1)
    return Position.parse(text)


# --- actions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    frame: dict[str, Any]
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: ChannelName
    since: Position | None
    member: Member | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: ChannelName


Action = Send | Subscribe | Unsubscribe


def _frame_channel(obj: dict[str, Any]) -> ChannelName | Send:
    """The frame's ``channel``, validated, or the ``invalid_channel`` error to send."""
    raw = obj.get("channel")
    try:
        return validate_client_channel(raw)
    except InvalidChannel as exc:
        return _error_send(INVALID_CHANNEL, str(exc), raw if isinstance(raw, str) else None)


def _error_send(code: str, message: str, channel: str | None = None) -> Send:
    return Send(error_frame(code, message, channel), code)


@dataclass(frozen=True, slots=True)
class Credentials:
    app_key: str
    app_secret: str


class WireProtocol(Protocol):
    """What a session needs from a wire protocol: client frames -> actions, and server
    events -> frames. :class:`ClientProtocol` is channelcast's own; an adapter for another
    protocol (e.g. Pusher Channels) implements the same methods. No method may await."""

    connection_id: str
    channels: set[ChannelName]

    def receive(self, frame: str | bytes) -> list[Action]: ...

    def subscription_failed(self, channel: ChannelName) -> None: ...

    def encode(self, frame: dict[str, Any]) -> str: ...

    def render_message(self, record: Record, text: str) -> str:
        """The frame for one message; ``text`` is its channelcast encoding (shared by all
        channelcast clients, so the default protocol returns it unchanged)."""
        ...

    def render_connected(self) -> dict[str, Any]: ...

    def render_subscribed(self, channel: str, position: Position | None, *,
                          recovered: bool | None,
                          members: list[Member] | None) -> dict[str, Any]: ...

    def render_member(self, kind: str, channel: str, member: Member) -> dict[str, Any]: ...

    def render_error(self, code: str, message: str,
                     channel: str | None = None) -> dict[str, Any]: ...

    def render_dropped(self, count: int, channels: list[str]) -> dict[str, Any]: ...

    def render_closing(self, reason: str) -> dict[str, Any]: ...


class ClientProtocol:
    """One connection's protocol state. Feed frames to :meth:`receive`; run the actions."""

    def __init__(self, connection_id: str, credentials: Credentials, *,
                 max_subscriptions: int = 100, max_frame_bytes: int = 65536) -> None:
        self.connection_id = connection_id
        self.credentials = credentials
        self.max_subscriptions = max_subscriptions
        self.max_frame_bytes = max_frame_bytes
        self.channels: set[ChannelName] = set()

    def receive(self, frame: str | bytes) -> list[Action]:
        """Parse one frame; never raises for bad input (it becomes an error frame)."""
        size = len(frame.encode() if isinstance(frame, str) else frame)
        if size > self.max_frame_bytes:
            return [_error_send(FRAME_TOO_LARGE, f"frame is {size} bytes; the limit is "
                                     f"{self.max_frame_bytes}")]
        if not isinstance(frame, str):
            try:
                frame = frame.decode()
            except UnicodeDecodeError:
                return [_error_send(BAD_JSON, "binary frame is not UTF-8 text")]
        try:
            obj = jsontext.loads(frame)
        except ValueError as exc:
            return [_error_send(BAD_JSON, f"frame is not strict JSON: {exc}"[:200])]
        if not isinstance(obj, dict):
            return [_error_send(BAD_FRAME, "frame must be a JSON object")]
        kind = obj.get("type")
        if kind == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if "data" in obj:
                pong["data"] = obj["data"]
            return [Send(pong)]
        if kind == "subscribe":
            return self._subscribe(obj)
        if kind == "unsubscribe":
            return self._unsubscribe(obj)
        if not isinstance(kind, str):
            return [_error_send(BAD_FRAME, "frame needs a string field 'type'")]
        return [_error_send(UNKNOWN_TYPE, f"unknown frame type {kind[:40]!r} "
                                 "(known: subscribe, unsubscribe, ping)")]

    def _subscribe(self, obj: dict[str, Any]) -> list[Action]:
        channel = _frame_channel(obj)
        if isinstance(channel, Send):
            return [channel]
        if channel in self.channels:
            return [_error_send(ALREADY_SUBSCRIBED, f"already subscribed to {channel!r}",
                                     channel)]
        if len(self.channels) >= self.max_subscriptions:
            return [_error_send(TOO_MANY_SUBSCRIPTIONS, "this connection already has "
                                     f"{self.max_subscriptions} subscriptions (the limit)",
                                     channel)]
        member: Member | None = None
        kind = channel_type(channel)
        if kind is not ChannelType.PUBLIC:
            channel_data = obj.get("channel_data")
            auth = obj.get("auth")
            if auth is None or auth == "":
                return [_error_send(AUTH_REQUIRED, f"channel {channel!r} needs an 'auth' "
                                         "signature from the application", channel)]
            if kind is ChannelType.PRESENCE:
                if not isinstance(channel_data, str):
                    return [_error_send(AUTH_FAILED, "a presence channel needs "
                                             "'channel_data' (a JSON string)", channel)]
                try:
                    data = jsontext.loads(channel_data)
                except ValueError as exc:
                    return [_error_send(AUTH_FAILED, "channel_data is not strict JSON: "
                                        f"{exc}"[:200], channel)]
                try:
                    member = Member.parse(data)
                except ValueError as exc:
                    return [_error_send(AUTH_FAILED, f"channel_data: {exc}"[:200], channel)]
            else:
                channel_data = None
            try:
                verify_channel(self.credentials.app_key, self.credentials.app_secret,
                               self.connection_id, channel, auth, channel_data)
            except AuthError as exc:
                return [_error_send(AUTH_FAILED, str(exc), channel)]
        since: Position | None = None
        raw_since = obj.get("since")
        if raw_since is not None:
            if not isinstance(raw_since, str):
                return [_error_send(INVALID_POSITION, "'since' must be a string "
                                         "topic:partition:offset", channel)]
            try:
                since = parse_position(raw_since)
            except InvalidPosition as exc:
                return [_error_send(INVALID_POSITION, str(exc), channel)]
        self.channels.add(channel)
        return [Subscribe(channel, since, member)]

    def _unsubscribe(self, obj: dict[str, Any]) -> list[Action]:
        channel = _frame_channel(obj)
        if isinstance(channel, Send):
            return [channel]
        if channel not in self.channels:
            return [_error_send(NOT_SUBSCRIBED, f"not subscribed to {channel!r}", channel)]
        self.channels.discard(channel)
        return [Unsubscribe(channel), Send({"type": "unsubscribed", "channel": channel})]

    def subscription_failed(self, channel: ChannelName) -> None:
        """The session could not attach the channel: forget it."""
        self.channels.discard(channel)

    # --- rendering (server -> client) ---------------------------------------------------
    def encode(self, frame: dict[str, Any]) -> str:
        return dumps(frame)

    def render_message(self, record: Record, text: str) -> str:
        return text

    def render_connected(self) -> dict[str, Any]:
        return connected_frame(self.connection_id)

    def render_subscribed(self, channel: str, position: Position | None, *,
                          recovered: bool | None,
                          members: list[Member] | None) -> dict[str, Any]:
        return subscribed_frame(channel, position, recovered=recovered, members=members)

    def render_member(self, kind: str, channel: str, member: Member) -> dict[str, Any]:
        return member_frame(kind, channel, member)

    def render_error(self, code: str, message: str,
                     channel: str | None = None) -> dict[str, Any]:
        return error_frame(code, message, channel)

    def render_dropped(self, count: int, channels: list[str]) -> dict[str, Any]:
        return dropped_frame(count, channels)

    def render_closing(self, reason: str) -> dict[str, Any]:
        return closing_frame(reason)
