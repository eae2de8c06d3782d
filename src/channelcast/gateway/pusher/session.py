"""Pusher connections: the ``/app/{key}`` WebSocket endpoint, :class:`PusherSession` and
its transport.

:class:`PusherSession` is the native :class:`~channelcast.gateway.session.Session` (send
buffer, slow-client policy, hub listener) with a :class:`~.protocol.PusherProtocol`, plus
what only Pusher has: it runs client events and sign-ins, leaves out events addressed
away from its socket id (and from the client's earlier socket ids, which the recovery
wrapper sends), serves cache channels (also when a recovery fails), keeps the node's
subscription counts, and can be terminated with a close code. :class:`PusherTransport`
maps the native close codes to Pusher's (1001 -> 4200, or the code the session was
terminated with; 4008 -> 4100).
This module never parses a frame (:mod:`.protocol` does) and never builds one of its own
beyond the refusals of the handshake.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from channelcast.errors import ChannelcastError
from channelcast.gateway.hub import AttachResult, Hub
from channelcast.gateway.metrics import GatewayMetrics
from channelcast.gateway.node import gateway_of, peer_of
from channelcast.gateway.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_SLOW_CLIENT,
    Subscribe,
    dumps,
)
from channelcast.gateway.pusher.names import PusherChannel
from channelcast.gateway.pusher.node import PusherNode
from channelcast.gateway.pusher.protocol import (
    CLOSE_BAD_VERSION,
    CLOSE_NO_PROTOCOL,
    CLOSE_OVER_QUOTA,
    CLOSE_RECONNECT,
    CLOSE_UNKNOWN_APP,
    CLOSE_UNSUPPORTED_PROTOCOL,
    PROTOCOL_VERSION,
    ClientEvent,
    PusherProtocol,
    SignedIn,
    error_frame,
    event_frame,
    protocol_version,
    stored_event,
)
from channelcast.gateway.session import Outgoing, Session
from channelcast.gateway.websocket import WebSocketTransport, run_session
from channelcast.message import Record
from channelcast.types import ChannelName

log = logging.getLogger("channelcast.gateway.pusher")

TRANSPORT_LABEL = "pusher"
"""The ``transport`` label of ``channelcast_connections`` for Pusher connections."""


class PusherTransport(WebSocketTransport):
    """The WebSocket transport with Pusher's close codes (see the module docstring)."""

    going_away_code = CLOSE_RECONNECT

    async def close(self, code: int, reason: str) -> None:
        if code == CLOSE_GOING_AWAY:
            code = self.going_away_code
        elif code == CLOSE_SLOW_CLIENT:
            code = CLOSE_OVER_QUOTA
        await super().close(code, reason)


class PusherSession(Session):
    """One Pusher connection (see the module docstring)."""

    protocol: PusherProtocol

    def __init__(self, node: PusherNode, hub: Hub, protocol: PusherProtocol,
                 transport: PusherTransport, *, send_queue: int = 256,
                 slow_client_policy: str = "drop-oldest",
                 write_timeout_s: float | None = None,
                 metrics: GatewayMetrics | None = None) -> None:
        super().__init__(hub, protocol, transport, send_queue=send_queue,
                         slow_client_policy=slow_client_policy,
                         write_timeout_s=write_timeout_s, metrics=metrics)
        self.node = node
        self.pusher_transport = transport
        self._counted: dict[ChannelName, str | None] = {}
        self._cache: dict[ChannelName, PusherChannel] = {}
        """Cache channels subscribed from just before their last event."""
        self._cache_fallback: dict[ChannelName, tuple[PusherChannel, Record | None]] = {}
        """Cache channels subscribed with ``since``: their last event, for a failed
        recovery."""
        self._terminating = False

    # --- frames from the client -------------------------------------------------------
    async def handle(self, frame: str | bytes) -> None:
        await super().handle(frame)
        for action in self.protocol.take_pending():
            if isinstance(action, ClientEvent):
                try:
                    await self.node.client_event(self, action)
                except ChannelcastError as exc:
                    self.send_frame(error_frame(None, f"client event not published: {exc}"))
            elif isinstance(action, SignedIn):
                self.node.signed_in(self, action.user_id)
        self._count()

    async def subscribe(self, action: Subscribe) -> None:
        channel = self.protocol.subscriptions.get(action.channel)
        if channel is not None and channel.cache:
            try:
                since, last = await self.node.cache_lookup(action.channel)
            except ChannelcastError as exc:
                log.warning("cache lookup of %s failed: %s", action.channel, exc)
            else:
                if action.since is None:
                    self._cache[action.channel] = channel
                    action = Subscribe(action.channel, since, action.member)
                else:  # the client recovers; should that fail, it still gets the cache
                    self._cache_fallback[action.channel] = (channel, last)
        try:
            await super().subscribe(action)
        finally:
            self._cache.pop(action.channel, None)
            self._cache_fallback.pop(action.channel, None)
        self._count()

    def excluded(self, record: Record) -> bool:
        """Whether ``record`` was addressed away from this client: triggered with its
        socket id (or one of its earlier ones), or a client event it sent itself."""
        socket_id = stored_event(record).socket_id
        return socket_id is not None and (socket_id == self.connection_id
                                          or socket_id in self.protocol.previous_socket_ids)

    # --- hub listener -----------------------------------------------------------------
    def attached(self, channel: ChannelName, result: AttachResult) -> None:
        result.replay = [item for item in result.replay if not self.excluded(item[0])]
        cache = self._cache.pop(channel, None)
        if cache is not None:
            result.recovered = None  # a cache lookup is not the client's recovery
        fallback = self._cache_fallback.pop(channel, None)
        if fallback is not None and result.recovered is False:
            # Recovery failed: serve the cache as to a new subscriber (unless events
            # published meanwhile already are in the replay: the newest of them is it).
            cache, last = fallback
            if not result.replay and last is not None and not self.excluded(last):
                result.replay = [(last, "")]
        super().attached(channel, result)
        if cache is not None and not result.replay:
            self.send_frame(event_frame("pusher:cache_miss", {}, cache.name))
            self.node.spawn(self.node.cache_miss(self.protocol.app, cache.name))
        self._count()

    def deliver(self, channel: ChannelName, record: Record, text: str) -> None:
        if self.excluded(record):
            return  # triggered with our socket_id, or our own client event
        super().deliver(channel, record, text)

    def subscription_lost(self, channel: ChannelName, reason: str) -> None:
        super().subscription_lost(channel, reason)
        self._count()
        # pusher-js cannot resubscribe by itself: it reconnects on 4200 and resubscribes
        # (with positions, through the recovery wrapper).
        self.node.spawn(self.terminate(CLOSE_RECONNECT, "subscription lost; reconnect"))

    # --- lifecycle --------------------------------------------------------------------
    async def _release_all(self) -> None:
        # Runs once, in the release task (which a cancelled caller cannot cut short).
        try:
            await super()._release_all()
        finally:
            self._count()
            self.node.unregister(self)

    def send_frame(self, frame: dict[str, Any]) -> None:
        """Queue a control frame (never dropped)."""
        if not self.outbox_closed:
            self.outbox.put(Outgoing(self.protocol.encode(frame), frame=frame))

    async def terminate(self, code: int, reason: str) -> None:
        """Close with ``code`` after a ``pusher:error`` carrying it, flushing briefly."""
        if self._terminating:
            return
        self._terminating = True
        self.protocol.going_away_code = code
        self.pusher_transport.going_away_code = code
        await self.shutdown(reason, flush_s=1.0)

    def _count(self) -> None:
        """Report channels this connection joined or left since the last call."""
        now = self.attached_channels
        for channel in now - self._counted.keys():
            member = self.protocol.members.get(channel)
            user = None if member is None else member.user_id
            self._counted[channel] = user
            self.node.subscription_changed(self, channel, user, +1)
        for channel in self._counted.keys() - now:
            self.node.subscription_changed(self, channel, self._counted.pop(channel), -1)


def _refusal(websocket: WebSocket, node: PusherNode, accepting: bool) -> tuple[int, str] | None:
    """Why this connection is refused (close code, message), or None."""
    if not accepting:
        return CLOSE_RECONNECT, "server shutting down"
    app = node.apps.by_key(websocket.path_params.get("key", ""))
    if app is None:
        return CLOSE_UNKNOWN_APP, "unknown app key"
    version = websocket.query_params.get("protocol")
    if version is None:
        return CLOSE_NO_PROTOCOL, "no protocol version given"
    number = protocol_version(version)
    if number is None:
        return CLOSE_BAD_VERSION, f"invalid protocol version {version[:20]!r}"
    if number < PROTOCOL_VERSION:
        return CLOSE_UNSUPPORTED_PROTOCOL, (f"protocol {version[:20]} is not supported "
                                            f"(use {PROTOCOL_VERSION})")
    if node.over_quota(app):
        return CLOSE_OVER_QUOTA, f"app {app.id} is over its connection quota"
    return None


async def pusher_websocket_endpoint(websocket: WebSocket) -> None:
    """``WS /app/{key}?protocol=7``: one Pusher session per connection."""
    gw = gateway_of(websocket)
    node = gw.pusher
    await websocket.accept()
    refusal = _refusal(websocket, node, gw.accepting and node.enabled)
    if refusal is not None:
        code, why = refusal
        # Never silent: an operator must see why a client (a wrong key, an old library)
        # cannot connect. INFO, as every connection's open and close lines.
        log.info("pusher connection from %s (app key %r) refused: code %d: %s",
                 peer_of(websocket), websocket.path_params.get("key", "")[:40], code, why)
        try:
            await websocket.send_text(dumps(error_frame(code, why)))
            await websocket.close(code, why)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        return
    app = node.apps.by_key(websocket.path_params["key"])
    assert app is not None
    g, p = gw.settings.gateway, node.settings
    protocol = PusherProtocol(app, gw.new_socket_id(), max_subscriptions=g.max_subscriptions,
                              max_frame_bytes=g.max_frame_bytes,
                              activity_timeout=p.activity_timeout,
                              pong_timeout_s=p.pong_timeout_s,
                              max_user_info_bytes=p.max_user_info_bytes)
    session = PusherSession(node, gw.hub, protocol, PusherTransport(websocket),
                            send_queue=g.send_queue, slow_client_policy=g.slow_client_policy,
                            write_timeout_s=g.write_timeout_s, metrics=gw.metrics)
    gw.register(session, TRANSPORT_LABEL, peer=peer_of(websocket))
    node.register(session)
    await run_session(websocket, gw, session)
