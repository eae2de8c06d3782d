"""The Pusher Channels protocol v7, sans-I/O: :class:`PusherProtocol` is a
:class:`~channelcast.gateway.protocol.WireProtocol`.

Client frames become the same actions as the native protocol's (send a frame, subscribe,
unsubscribe), which the session runs against the hub; server events become Pusher frames.
What only Pusher has (client events, user sign-in) becomes :class:`ClientEvent` and
:class:`SignedIn`, queued on the protocol for :class:`~.session.PusherSession` to run
(:meth:`PusherProtocol.take_pending`). Nothing here awaits, touches a socket or reads the
clock except through the ``clock`` it is given.

Frames: ``{"event", "channel"?, "data", ...}``; ``data`` of server events is a JSON
string where pusher-js expects one. Client frames are strict JSON, as in the native
protocol (:mod:`channelcast.gateway.jsontext`: no NaN/Infinity, no lone surrogate); others
are answered ``pusher:error``. Beyond Pusher, every event frame carries a top-level
``"position"``, non-presence ``subscription_succeeded`` data carries ``{"position"}``, and
``pusher:subscribe`` may carry ``since`` (recovery, as in the native protocol) and
``previous_socket_ids`` (the client's earlier connections: events addressed away from
them are left out for this one too).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from channelcast.errors import AuthError, InvalidChannel, InvalidPosition
from channelcast.gateway import jsontext
from channelcast.gateway.presence import MAX_USER_ID, Member
from channelcast.gateway.protocol import (
    RECOVERY_FAILED,
    SUBSCRIBE_FAILED,
    SUBSCRIPTION_LOST,
    Action,
    Send,
    Subscribe,
    Unsubscribe,
    dumps,
    parse_position,
)
from channelcast.gateway.pusher import names, signatures
from channelcast.gateway.pusher.apps import PusherApp
from channelcast.gateway.pusher.names import Kind, PusherChannel
from channelcast.gateway.pusher.records import StoredEvent, data_text, unwrap
from channelcast.message import MAX_EVENT_NAME, Record
from channelcast.types import ChannelName, JSONValue, Position

PROTOCOL_VERSION = 7

# Close codes and pusher:error codes, from Pusher's ranges (4000-4099: do not reconnect,
# 4100-4199: reconnect after a back-off, 4200-4299: reconnect now, 4300-4399: not closed).
CLOSE_UNKNOWN_APP = 4001
CLOSE_BAD_VERSION = 4006
CLOSE_UNSUPPORTED_PROTOCOL = 4007
CLOSE_NO_PROTOCOL = 4008
CLOSE_TERMINATED = 4009
CLOSE_OVER_QUOTA = 4100
CLOSE_RECONNECT = 4200
CLOSE_PONG_TIMEOUT = 4201
CLIENT_EVENT_REJECTED = 4301
SIGNIN_FAILED = 4009
"""A bad ``pusher:signin`` gets ``pusher:error`` with this code; the connection stays."""

CLIENT_EVENT_PREFIX = "client-"
MAX_PREVIOUS_SOCKET_IDS = 10
"""Earlier socket ids one connection may name (``previous_socket_ids``)."""
SOCKET_ID = re.compile(r"[0-9]+\.[0-9]+")
_VERSION = re.compile(r"-?[0-9]{1,30}")


def protocol_version(text: str) -> int | None:
    """The ``protocol`` query parameter as a number (negative ones too), or None when it
    is not one. Versions from 7 up are served as 7 (pusher-js sends 7)."""
    if not text.isascii() or not _VERSION.fullmatch(text):
        return None
    return int(text)


# --- Pusher-only actions (run by PusherSession) ----------------------------------------


@dataclass(frozen=True, slots=True)
class ClientEvent:
    """Publish a client event on ``channel`` (from this connection, not echoed to it)."""

    channel: PusherChannel
    event: str
    data: JSONValue
    user_id: str | None


@dataclass(frozen=True, slots=True)
class SignedIn:
    """This connection is now the user ``user_id`` (for terminate_connections)."""

    user_id: str


PusherAction = ClientEvent | SignedIn


# --- frames ----------------------------------------------------------------------------


def event_frame(event: str, data: Any, channel: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"event": event}
    if channel is not None:
        frame["channel"] = channel
    frame["data"] = data
    return frame


def error_frame(code: int | None, message: str) -> dict[str, Any]:
    """``pusher:error``; ``code`` None for protocol errors that close nothing."""
    return event_frame("pusher:error", {"code": code, "message": message})


def subscription_error_frame(channel: str, kind: str, message: str,
                             status: int) -> dict[str, Any]:
    return event_frame("pusher:subscription_error",
                       {"type": kind, "error": message, "status": status}, channel)


def connection_established(socket_id: str, activity_timeout: int) -> dict[str, Any]:
    return event_frame("pusher:connection_established",
                       dumps({"socket_id": socket_id, "activity_timeout": activity_timeout}))


class _Rendered:
    """The last message frame built, by record and app: the hub hands one record to every
    listener of a channel in turn, so all of an app's connections share one text."""

    record: Record | None = None
    app: PusherApp | None = None
    text: str = ""
    event: StoredEvent | None = None


def stored_event(record: Record) -> StoredEvent:
    """The Pusher view of a record (cached for the record being fanned out)."""
    if _Rendered.record is record and _Rendered.event is not None:
        return _Rendered.event
    return unwrap(record.envelope.data)


class PusherProtocol:
    """One Pusher connection's state. Feed frames to :meth:`receive`; run the actions."""

    def __init__(self, app: PusherApp, socket_id: str, *, max_subscriptions: int = 100,
                 max_frame_bytes: int = 65536, activity_timeout: int = 30,
                 pong_timeout_s: float = 30.0, max_user_info_bytes: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.connection_id = socket_id
        self.max_subscriptions = max_subscriptions
        self.max_frame_bytes = max_frame_bytes
        self.max_user_info_bytes = max_user_info_bytes
        self.previous_socket_ids: dict[str, None] = {}
        """The client's earlier socket ids it named (``previous_socket_ids``), oldest first,
        at most :data:`MAX_PREVIOUS_SOCKET_IDS`."""
        self.activity_timeout = activity_timeout
        self.pong_timeout_s = pong_timeout_s
        self.clock = clock
        self.channels: set[ChannelName] = set()
        self.subscriptions: dict[ChannelName, PusherChannel] = {}
        self.members: dict[ChannelName, Member] = {}
        self.user_id: str | None = None
        self.going_away_code = CLOSE_RECONNECT
        """The close code (and ``pusher:error`` code) of a graceful close."""
        self._recovering: set[ChannelName] = set()
        self._pending: list[PusherAction] = []
        self._tokens = float(app.client_event_rate)
        self._tokens_at = clock()
        self.last_seen = clock()
        self.pinged_at: float | None = None

    # --- client -> server -------------------------------------------------------------
    def receive(self, frame: str | bytes) -> list[Action]:
        """Parse one frame; never raises for bad input (it becomes a ``pusher:error``)."""
        self.last_seen = self.clock()
        self.pinged_at = None
        size = len(frame.encode() if isinstance(frame, str) else frame)
        if size > self.max_frame_bytes:
            return [_error(None, f"frame is {size} bytes; the limit is {self.max_frame_bytes}")]
        try:
            obj = jsontext.loads(frame)
        except ValueError as exc:
            return [_error(None, f"frame is not strict JSON: {exc}"[:200])]
        if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
            return [_error(None, "a frame is a JSON object with a string 'event'")]
        event: str = obj["event"]
        data = obj.get("data")
        if isinstance(data, str) and event.startswith("pusher:"):
            # some clients send the data of pusher:* events as a JSON string
            with contextlib.suppress(ValueError):
                data = jsontext.loads(data)
        if event == "pusher:ping":
            return [Send(event_frame("pusher:pong", {}))]
        if event == "pusher:pong":
            return []
        if event == "pusher:subscribe":
            return self._subscribe(data if isinstance(data, dict) else {})
        if event == "pusher:unsubscribe":
            return self._unsubscribe(data if isinstance(data, dict) else {})
        if event == "pusher:signin":
            return self._signin(data if isinstance(data, dict) else {})
        if event.startswith(CLIENT_EVENT_PREFIX):
            return self._client_event(event, obj.get("channel"), data)
        return [_error(None, f"unknown event {event[:60]!r}")]

    def _subscribe(self, data: dict[str, Any]) -> list[Action]:
        raw = data.get("channel")
        try:
            channel = names.parse(self.app, raw)
        except InvalidChannel as exc:
            return [_sub_error(raw if isinstance(raw, str) else "", "InvalidChannel", str(exc),
                               400)]
        name = channel.name
        if channel.channel in self.channels:
            return [_error(None, f"already subscribed to {name!r}")]
        if len(self.channels) >= self.max_subscriptions:
            return [_sub_error(name, "LimitReached", "this connection already has "
                               f"{self.max_subscriptions} subscriptions (the limit)", 400)]
        member: Member | None = None
        if channel.kind is Kind.USER:
            if self.user_id != channel.user_id:
                return [_sub_error(name, "AuthError", "only the signed-in user "
                                   f"{channel.user_id!r} may subscribe to {name!r}", 401)]
        elif channel.signed:
            channel_data = data.get("channel_data") if channel.presence else None
            if channel.presence and not isinstance(channel_data, str):
                return [_sub_error(name, "AuthError", "a presence channel needs "
                                   "channel_data: a JSON object string with a user_id", 401)]
            try:
                signatures.verify_channel_auth(self.app, self.connection_id, name,
                                               data.get("auth"),
                                               channel_data if channel.presence else None)
            except AuthError as exc:
                return [_sub_error(name, "AuthError", str(exc), 401)]
            if channel.presence:
                assert isinstance(channel_data, str)
                found = presence_member(channel_data, self.max_user_info_bytes)
                if isinstance(found, str):
                    return [_sub_error(name, "InvalidChannelData", found, 400)]
                member = found
        previous = data.get("previous_socket_ids")
        if previous is not None:
            if not (isinstance(previous, list) and len(previous) <= MAX_PREVIOUS_SOCKET_IDS
                    and all(isinstance(s, str) and SOCKET_ID.fullmatch(s) for s in previous)):
                return [_sub_error(name, "InvalidRequest", "previous_socket_ids must be a list "
                                   f"of at most {MAX_PREVIOUS_SOCKET_IDS} socket ids "
                                   "(digits.digits)", 400)]
            self._remember_socket_ids(previous)
        since: Position | None = None
        raw_since = data.get("since")
        if raw_since is not None:
            try:
                if not isinstance(raw_since, str):
                    raise InvalidPosition("'since' must be a string topic:partition:offset")
                since = parse_position(raw_since)
            except InvalidPosition as exc:
                return [_sub_error(name, "InvalidPosition", str(exc), 400)]
            self._recovering.add(channel.channel)
        self.channels.add(channel.channel)
        self.subscriptions[channel.channel] = channel
        if member is not None:
            self.members[channel.channel] = member
        return [Subscribe(channel.channel, since, member)]

    def _remember_socket_ids(self, socket_ids: list[str]) -> None:
        known = self.previous_socket_ids
        for socket_id in socket_ids:
            if socket_id != self.connection_id:
                known.pop(socket_id, None)
                known[socket_id] = None
        while len(known) > MAX_PREVIOUS_SOCKET_IDS:
            del known[next(iter(known))]

    def _unsubscribe(self, data: dict[str, Any]) -> list[Action]:
        try:
            channel = names.parse(self.app, data.get("channel"))
        except InvalidChannel:
            return []  # never subscribed: nothing to do, as Pusher does
        if channel.channel not in self.channels:
            return []
        self.subscription_failed(channel.channel)
        return [Unsubscribe(channel.channel)]

    def _signin(self, data: dict[str, Any]) -> list[Action]:
        user_data = data.get("user_data")
        if not isinstance(user_data, str):
            return [_error(SIGNIN_FAILED, "pusher:signin needs user_data (a JSON string)")]
        try:
            signatures.verify_user(self.app, self.connection_id, data.get("auth"), user_data)
            user = jsontext.loads(user_data)
        except AuthError as exc:
            return [_error(SIGNIN_FAILED, f"sign-in refused: {exc}")]
        except ValueError as exc:
            return [_error(SIGNIN_FAILED, f"user_data is not strict JSON: {exc}"[:200])]
        user_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(user_id, str) or not user_id:
            return [_error(SIGNIN_FAILED, "user_data needs a non-empty string 'id'")]
        if self.user_id is not None and self.user_id != user_id:
            # One connection, one user: its user channel and terminate_connections name it.
            return [_error(SIGNIN_FAILED, f"this connection is signed in as {self.user_id!r}; "
                           "connect again to sign in as another user")]
        if self.user_id == user_id:
            return [Send(event_frame("pusher:signin_success", {"user_data": user_data}))]
        self.user_id = user_id
        self._pending.append(SignedIn(user_id))
        return [Send(event_frame("pusher:signin_success", {"user_data": user_data}))]

    def _client_event(self, event: str, raw_channel: object, data: JSONValue) -> list[Action]:
        def reject(why: str) -> list[Action]:
            return [_error(CLIENT_EVENT_REJECTED, f"client event {event[:60]!r} rejected: "
                                                  f"{why}")]

        if not self.app.client_events:
            return reject("client events are not enabled for this app")
        try:
            channel = names.parse(self.app, raw_channel)
        except InvalidChannel as exc:
            return reject(str(exc))
        if channel.kind not in (Kind.PRIVATE, Kind.ENCRYPTED, Kind.PRESENCE):
            return reject("only private and presence channels take client events")
        if channel.channel not in self.channels:
            return reject(f"not subscribed to {channel.name!r}")
        if len(event) > MAX_EVENT_NAME:
            return reject(f"event names are at most {MAX_EVENT_NAME} characters")
        size = len(data_text(data).encode())
        if size > self.app.max_event_bytes:
            return reject(f"data is {size} bytes; the limit is {self.app.max_event_bytes}")
        if not self._take_token():
            return reject(f"over {self.app.client_event_rate} client events per second")
        member = self.members.get(channel.channel)
        self._pending.append(ClientEvent(channel, event, data,
                                         None if member is None else member.user_id))
        return []

    def _take_token(self) -> bool:
        """A token bucket: ``client_event_rate`` per second, bursts up to that many."""
        now = self.clock()
        rate = self.app.client_event_rate
        self._tokens = min(float(rate), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def take_pending(self) -> list[PusherAction]:
        """The Pusher-only actions queued by :meth:`receive` since the last call."""
        pending, self._pending = self._pending, []
        return pending

    def subscription_failed(self, channel: ChannelName) -> None:
        """Forget a subscription (failed, lost or unsubscribed)."""
        self.channels.discard(channel)
        self.subscriptions.pop(channel, None)
        self.members.pop(channel, None)
        self._recovering.discard(channel)

    def idle(self, now: float) -> str | None:
        """``"ping"`` when the client has been silent for ``activity_timeout`` (the
        ping is then counted as sent), ``"close"`` when it stayed silent
        ``pong_timeout_s`` after that, else None."""
        if self.pinged_at is None:
            if now - self.last_seen >= self.activity_timeout:
                self.pinged_at = now
                return "ping"
            return None
        return "close" if now - self.pinged_at >= self.pong_timeout_s else None

    # --- server -> client -------------------------------------------------------------
    def name_of(self, channel: str) -> str:
        sub = self.subscriptions.get(ChannelName(channel))
        if sub is not None:
            return sub.name
        return names.pusher_name(self.app, channel) or channel

    def encode(self, frame: dict[str, Any]) -> str:
        return dumps(frame)

    def render_message(self, record: Record, text: str) -> str:
        cache = _Rendered
        if cache.record is record and cache.app is self.app:
            return cache.text
        stored = unwrap(record.envelope.data)
        frame = {"event": record.envelope.event, "channel": self.name_of(record.channel),
                 "data": data_text(stored.data)}
        if stored.user_id is not None:
            frame["user_id"] = stored.user_id
        frame["position"] = str(record.position)
        cache.record, cache.app, cache.event = record, self.app, stored
        cache.text = dumps(frame)
        return cache.text

    def render_connected(self) -> dict[str, Any]:
        return connection_established(self.connection_id, self.activity_timeout)

    def render_subscribed(self, channel: str, position: Position | None, *,
                          recovered: bool | None,
                          members: list[Member] | None) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if members is not None:
            data["presence"] = {"ids": [m.user_id for m in members],
                                "hash": {m.user_id: pusher_user_info(m) for m in members},
                                "count": len(members)}
        data["position"] = None if position is None else str(position)
        if ChannelName(channel) in self._recovering:
            self._recovering.discard(ChannelName(channel))
            if recovered is not None:
                data["recovered"] = recovered
        return event_frame("pusher_internal:subscription_succeeded", dumps(data),
                           self.name_of(channel))

    def render_member(self, kind: str, channel: str, member: Member) -> dict[str, Any]:
        data = ({"user_id": member.user_id, "user_info": pusher_user_info(member)}
                if kind == "member_added" else {"user_id": member.user_id})
        return event_frame(f"pusher_internal:{kind}", dumps(data), self.name_of(channel))

    def render_error(self, code: str, message: str,
                     channel: str | None = None) -> dict[str, Any]:
        name = None if channel is None else self.name_of(channel)
        if code == RECOVERY_FAILED and name is not None:
            return event_frame("pusher:recovery_failed", {"message": message}, name)
        if code == SUBSCRIBE_FAILED and name is not None:
            return subscription_error_frame(name, "SubscribeFailed", message, 503)
        if code == SUBSCRIPTION_LOST:
            return error_frame(CLOSE_RECONNECT, message)
        return error_frame(None, message)

    def render_dropped(self, count: int, channels: list[str]) -> dict[str, Any]:
        return event_frame("pusher:dropped",
                           {"count": count, "channels": [self.name_of(c) for c in channels]})

    def render_closing(self, reason: str) -> dict[str, Any]:
        return error_frame(self.going_away_code, reason)


def _error(code: int | None, message: str) -> Send:
    return Send(error_frame(code, message), "pusher_error" if code is None else f"pusher_{code}")


def _sub_error(channel: str, kind: str, message: str, status: int) -> Send:
    return Send(subscription_error_frame(channel, kind, message, status),
                f"pusher_subscription_{status}")


def pusher_user_info(member: Member) -> Any:
    """A member's ``user_info`` as Pusher clients get it: an object, or null. The Pusher
    protocol's member info is an object (pusher-js and Laravel Echo read its fields); the
    native protocol allows any JSON value, so a native member whose info is an array, a
    string or a number appears to Pusher clients with null (docs/pusher.md)."""
    info = member.user_info
    return info if isinstance(info, dict) else None


def presence_member(channel_data: str, max_user_info_bytes: int) -> Member | str:
    """The member a presence subscription's ``channel_data`` names, or why it names none:
    a JSON object with ``user_id`` (a string of 1 to :data:`MAX_USER_ID` characters, or an
    integer, taken as its digits) and optionally ``user_info`` (a JSON object of at most
    ``max_user_info_bytes`` bytes as compact JSON, or null)."""
    try:
        obj = jsontext.loads(channel_data)
    except ValueError as exc:
        return f"channel_data is not strict JSON: {exc}"[:200]
    if not isinstance(obj, dict):
        return f"channel_data must be a JSON object, not {_json_type(obj)}"
    user_id = obj.get("user_id")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if user_id is None:
        return "channel_data has no user_id"
    if not isinstance(user_id, str):
        return f"user_id must be a string or an integer, not {_json_type(user_id)}"
    if not 0 < len(user_id) <= MAX_USER_ID:
        return (f"user_id is {len(user_id)} characters; it must have 1 to {MAX_USER_ID}")
    info = obj.get("user_info")
    if info is not None:
        if not isinstance(info, dict):
            return f"user_info must be a JSON object, not {_json_type(info)}"
        size = len(jsontext.dumps(info).encode())
        if size > max_user_info_bytes:
            return (f"user_info is {size} bytes as JSON; the limit is {max_user_info_bytes} "
                    "(it is sent to every member of the channel)")
    member = Member.from_obj(obj)
    if member is None:  # the checks above are Member's, stricter: a bug if reached
        return "channel_data is not a valid member"
    return member


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "an integer",
            float: "a floating-point number", type(None): "null"}.get(type(value),
                                                                      type(value).__name__)
