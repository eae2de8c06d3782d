"""The Pusher side of one gateway node: its apps, its Pusher connections (oldest first;
the newest are the ones closed when the cluster is over an app's connection quota), the
cluster state, webhooks, idle-connection pings, client events and cache lookups.

The node (:class:`channelcast.gateway.node.Gateway`) starts and closes it; the WebSocket
endpoint (:mod:`.session`) and the HTTP API (:mod:`.http`) use it. It never reads a frame
or a request itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from channelcast.errors import HistoryUnavailable
from channelcast.gateway.hub import is_internal
from channelcast.gateway.pusher import names
from channelcast.gateway.pusher.apps import AppRegistry, PusherApp
from channelcast.gateway.pusher.cluster import Cluster, Transition
from channelcast.gateway.pusher.protocol import (
    CLOSE_OVER_QUOTA,
    CLOSE_PONG_TIMEOUT,
    CLOSE_TERMINATED,
    ClientEvent,
    PusherProtocol,
    event_frame,
)
from channelcast.gateway.pusher.records import data_text, wrap
from channelcast.gateway.pusher.webhooks import Webhooks
from channelcast.message import Envelope, Record
from channelcast.types import ChannelName, Position

if TYPE_CHECKING:
    from channelcast.gateway.node import Gateway

log = logging.getLogger("channelcast.gateway.pusher")


class PusherConnection(Protocol):
    """What the node needs from a Pusher session (:class:`.session.PusherSession`)."""

    connection_id: str
    protocol: PusherProtocol

    def send_frame(self, frame: dict[str, Any]) -> None: ...

    async def terminate(self, code: int, reason: str) -> None: ...


class PusherNode:
    """See the module docstring. ``enabled`` False (``pusher.enabled``) serves nothing."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        settings = gateway.settings
        self.settings = settings.pusher
        self.enabled = settings.pusher.enabled
        self.apps = AppRegistry.from_settings(settings)
        self.webhooks = Webhooks(gateway.broker, self.apps, self.settings)
        self.cluster = Cluster(gateway.broker, gateway.hub.node_id,
                               ttl_s=settings.gateway.presence_ttl_s, report=self._report,
                               terminate=self._terminate_local,
                               limits={app.id: app.max_connections for app in self.apps},
                               shed=self._shed)
        self.connections: dict[PusherConnection, None] = {}
        """This node's Pusher connections, oldest first."""
        self._users: dict[tuple[str, str], set[PusherConnection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._started = False

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        if not self.enabled:
            return
        await self.cluster.start()
        await self.webhooks.start()
        self._sweeper = asyncio.create_task(self._sweep())
        self._started = True

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.cluster.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.webhooks.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- connections ------------------------------------------------------------------
    def over_quota(self, app: PusherApp) -> bool:
        """Whether one more connection would exceed the app's cluster-wide limit."""
        return bool(app.max_connections) and \
            self.cluster.connections(app.id) >= app.max_connections

    def register(self, conn: PusherConnection) -> None:
        self.connections[conn] = None
        self.cluster.connected(conn.protocol.app.id, +1)

    def unregister(self, conn: PusherConnection) -> None:
        if conn not in self.connections:
            return
        del self.connections[conn]
        self.cluster.connected(conn.protocol.app.id, -1)
        user = conn.protocol.user_id
        if user is not None:
            key = (conn.protocol.app.id, user)
            users = self._users.get(key)
            if users is not None:
                users.discard(conn)
                if not users:
                    del self._users[key]

    def signed_in(self, conn: PusherConnection, user_id: str) -> None:
        self._users.setdefault((conn.protocol.app.id, user_id), set()).add(conn)

    def subscription_changed(self, conn: PusherConnection, channel: ChannelName,
                             user_id: str | None, delta: int) -> None:
        """A local connection joined (+1) or left (-1) ``channel``: counts, webhooks."""
        self.cluster.subscribed(conn.protocol.app.id, channel, user_id,
                                channel.startswith("presence-"), delta)

    def _shed(self, app_id: str, count: int) -> None:
        """Close ``count`` of this node's newest connections of the app (over its
        cluster-wide quota) with 4100; they stop counting at once."""
        newest = [conn for conn in reversed(self.connections)
                  if conn.protocol.app.id == app_id][:count]
        for conn in newest:
            self.unregister(conn)
            self.spawn(conn.terminate(CLOSE_OVER_QUOTA,
                                      f"app {app_id} is over its connection quota"))

    def _terminate_local(self, app_id: str, user_id: str) -> None:
        for conn in list(self._users.get((app_id, user_id), ())):
            self.spawn(conn.terminate(CLOSE_TERMINATED, "connection terminated by the app"))

    async def terminate_user(self, app: PusherApp, user_id: str) -> None:
        """Close every connection of the app's user, on every node (4009)."""
        await self.cluster.request_terminate(app.id, user_id)

    async def _sweep(self) -> None:
        """Ping connections silent for ``activity_timeout``; close them (4201) when the
        ping stays unanswered for ``pong_timeout_s``."""
        tick = max(0.1, min(1.0, self.settings.activity_timeout / 4,
                            self.settings.pong_timeout_s / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for conn in list(self.connections):
                action = conn.protocol.idle(now)
                if action == "ping":
                    conn.send_frame(event_frame("pusher:ping", {}))
                elif action == "close":
                    self.spawn(conn.terminate(CLOSE_PONG_TIMEOUT, "pong reply not received"))

    # --- events -----------------------------------------------------------------------
    async def client_event(self, conn: PusherConnection, event: ClientEvent) -> None:
        """Publish a client event (not to its sender) and report it as a webhook."""
        data = wrap(event.data, socket_id=conn.connection_id, user_id=event.user_id)
        await self.gateway.broker.publish_many([Envelope(event.channel.channel, event.event,
                                                         data)])
        app = conn.protocol.app
        if app.webhook_url:
            hook: dict[str, Any] = {"name": "client_event", "channel": event.channel.name,
                                    "event": event.event, "data": data_text(event.data),
                                    "socket_id": conn.connection_id}
            if event.user_id is not None:
                hook["user_id"] = event.user_id
            await self.webhooks.publish(app, [hook])

    async def cache_miss(self, app: PusherApp, name: str) -> None:
        await self.webhooks.publish(app, [{"name": "cache_miss", "channel": name}])

    async def _report(self, transitions: list[Transition], time_ms: int) -> None:
        by_app: dict[str, list[dict[str, Any]]] = {}
        for t in transitions:
            app = self.apps.by_id(t.app)
            if app is None or not app.webhook_url:
                continue
            name = names.pusher_name(app, t.channel)
            if name is None or name.startswith(names.USER_CHANNEL_PREFIX):
                continue
            event: dict[str, Any] = {"name": t.name, "channel": name}
            if t.user_id is not None:
                event["user_id"] = t.user_id
            by_app.setdefault(app.id, []).append(event)
        for app_id, events in by_app.items():
            app = self.apps.by_id(app_id)
            assert app is not None
            await self.webhooks.publish(app, events, time_ms=time_ms)

    async def cache_lookup(self, channel: ChannelName) -> tuple[Position, Record | None]:
        """A cache channel's last event (searched in the last ``pusher.cache_lookback``
        records of its partition; None when it has none) and where a subscription that
        serves it starts: just before it, or the partition's end when there is none (then
        the replay holds only what is published meanwhile, and an empty one is a cache
        miss)."""
        broker = self.gateway.broker
        end = await broker.end_position(channel)
        start = max(end.offset - self.settings.cache_lookback, -1)
        low = await _low_watermark(broker, end.topic, end.partition)
        if low is not None:
            start = max(start, low - 1)
        if start >= end.offset:
            return end, None
        try:
            records = await broker.history(channel, Position(end.topic, end.partition, start,
                                                                  end.epoch))
        except HistoryUnavailable:
            return end, None
        last = next((r for r in reversed(records) if not is_internal(r)), None)
        if last is None:
            return end, None
        return Position(last.position.topic, last.position.partition, last.position.offset - 1,
                        last.position.epoch), last


async def _low_watermark(broker: object, topic: str, partition: int) -> int | None:
    """The oldest kept offset, from a broker that offers ``watermarks(topic, partition)``
    (both of channelcast's do, outside the Broker protocol); None otherwise."""
    watermarks = getattr(broker, "watermarks", None)
    if watermarks is None:
        return None
    with contextlib.suppress(Exception):
        result = watermarks(topic, partition)
        if inspect.isawaitable(result):
            result = await result
        low = result[0]
        if isinstance(low, int):
            return low
    return None
