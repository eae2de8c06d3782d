"""One gateway node: its broker, hub, sessions and authorizer hook, started and drained together.

This module composes the parts and owns their lifecycle (``start``, ``drain``, ``close``),
the sessions' included: a transport registers each new session (:meth:`Gateway.open_session`)
and ends it with :meth:`Gateway.end_session`, whose release runs as a task the node owns and
awaits on close, so no cancellation of the transport's task can leave a subscription behind.
It never reads a request or writes a frame: the transports (:mod:`.websocket`, :mod:`.sse`)
and the HTTP API (:mod:`.api`) do, and find their node with :func:`gateway_of`.
The node logs one INFO line per connection opened and one per connection ended.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from channelcast.brokers import Broker
from channelcast.config import Settings
from channelcast.gateway.auth import RequestVerifier
from channelcast.gateway.hub import Hub
from channelcast.gateway.metrics import GatewayMetrics
from channelcast.gateway.protocol import ClientProtocol, Credentials
from channelcast.gateway.pusher.node import PusherNode
from channelcast.gateway.session import Session, Transport
from channelcast.types import ChannelName

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection, Request

log = logging.getLogger("channelcast.gateway")


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What the authorizer hook is asked: may this connection subscribe to this channel?
    ``params`` is the JSON body posted to ``/auth``; ``request`` the HTTP request itself."""

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
"""The application's hook behind ``POST /auth``: a grant, or None for no (403)."""


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
    _releases: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)
    _kinds: dict[Session, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        g = self.settings.gateway
        self.hub = Hub(self.broker, presence_ttl_s=g.presence_ttl_s, metrics=self.metrics)
        self.metrics.watch_broker(self.broker)
        # Socket ids "<node>.<n>", digits only (the Pusher SDKs accept no other shape).
        self.node_number = secrets.randbelow(9 * 10**9) + 10**9
        self._socket_ids = itertools.count(1)
        self.pusher = PusherNode(self)
        self.credentials = Credentials(g.app_key, g.app_secret)
        self.verifier = RequestVerifier(g.app_key, g.app_secret)
        if self.authorizer is None and g.demo:
            self.authorizer = demo_authorizer

    async def start(self) -> None:
        await self.broker.start()
        await self.hub.start()
        await self.pusher.start()

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
        if self._releases:  # sessions that ended: their channels are being left
            await asyncio.gather(*list(self._releases), return_exceptions=True)
        await self.pusher.close()
        await self.hub.close()
        await self.broker.close()

    def new_session(self, transport: Transport) -> Session:
        """A session for one new connection over ``transport``, with this node's limits."""
        g = self.settings.gateway
        protocol = ClientProtocol(self.new_socket_id(), self.credentials,
                                  max_subscriptions=g.max_subscriptions,
                                  max_frame_bytes=g.max_frame_bytes)
        return Session(self.hub, protocol, transport, send_queue=g.send_queue,
                       slow_client_policy=g.slow_client_policy,
                       write_timeout_s=g.write_timeout_s, metrics=self.metrics)

    def open_session(self, transport: Transport, kind: str, *,
                     peer: str | None = None) -> Session:
        """A new session over ``transport``, registered (:meth:`register`). Not started."""
        session = self.new_session(transport)
        self.register(session, kind, peer=peer)
        return session

    def register(self, session: Session, kind: str, *, peer: str | None = None) -> None:
        """Count ``session`` as an open connection of ``kind`` (``"ws"``, ``"sse"``) until
        :meth:`end_session`; :meth:`drain` tells it when the node shuts down. Logs one INFO
        line with the connection id (and ``peer``, the client's address)."""
        self.sessions.add(session)
        self._kinds[session] = kind
        self.metrics.connections.labels(kind).inc()
        log.info("connection %s (%s) open%s", session.connection_id, kind,
                 f" from {peer}" if peer else "")

    async def end_session(self, session: Session) -> None:
        """The connection ended: uncount it and release the session (leave its channels,
        stop its writer). The release is a task this node owns and awaits on close; if the
        caller is cancelled it stops waiting, the release goes on. Safe to call twice;
        the first call logs the one INFO line of the connection's end (its id, the close
        code and why: :meth:`Session.end_summary`)."""
        kind = self._kinds.pop(session, None)
        if kind is not None:
            self.sessions.discard(session)
            self.metrics.connections.labels(kind).dec()
            log.info("connection %s (%s) closed: %s", session.connection_id, kind,
                     session.end_summary())
        release = session.release()
        if not release.done():
            self._releases.add(release)
            release.add_done_callback(self._releases.discard)
        await asyncio.shield(release)


    def new_socket_id(self) -> str:
        """A connection id unique in the cluster: ``<node number>.<n>``, digits only."""
        return f"{self.node_number}.{next(self._socket_ids)}"


def gateway_of(conn: HTTPConnection) -> Gateway:
    """The node serving this request or WebSocket (``create_app`` puts it in the app state)."""
    gw: Gateway = conn.app.state.gateway
    return gw


def peer_of(conn: HTTPConnection) -> str | None:
    """The client's ``host:port`` as the server saw it (for the log), if it is known."""
    client = conn.client
    return None if client is None else f"{client.host}:{client.port}"
