"""Cluster-wide Pusher state through the broker: subscription and user counts, connection
counts, occupied/vacated and member transitions, terminate requests.

Every node publishes its own state as operations on one internal channel,
:data:`STATE_CHANNEL` (one partition: a single, total order every node reads alike):

* ``update``: the node's new counts for the channels (and connection counts) that changed,
  at most every :data:`FLUSH_S`;
* ``heartbeat``: the node's whole state, every ``ttl/3`` seconds (in parts of
  :data:`HEARTBEAT_PART_CHANNELS` channels, applied once complete), and at once when
  another node asks with ``sync`` (which a node sends when it starts taking part);
* ``expire``: a node noticed another one silent for ``ttl`` seconds; ``bye``: a node leaves;
* ``terminate``: close an app user's connections (every node closes its own).

Each app's part of a node's state also says when the node last admitted a connection of
the app (``newest``, Unix ms): the connection quota uses it (below).

A node takes part (publishes) only once the protocol is used: on its first Pusher
connection or HTTP API request, when another node's operations appear in the log, or at
start when the recent log holds some (:meth:`Cluster.activate`). A deployment that never
uses the Pusher protocol sees no traffic from it.

:class:`OccupancyTable` (sans-I/O) applies them in log order. Since every node applies the
same operations in the same order, all agree on which operation *caused* a transition
(a channel's cluster-wide count going 0 -> n or n -> 0, a user appearing in or leaving a
presence channel): the node that published that operation (for ``expire``, the node that
noticed) is the one that reports it, so each transition is reported once. A node that has
just started knows only its own state until the others answer its ``sync`` (one broker
round trip); transitions its own operations cause in that window may be reported twice.

:class:`Cluster` is the asyncio side: it follows the channel with its own broker
subscription (not the hub's: it is no client), again from the last applied position
should that subscription fail; it publishes the operations, and answers the HTTP API's
questions from the table, with this node's own current counts in place of its last
published ones. Its queue of reports is bounded (:data:`REPORT_QUEUE`); when full,
reports are dropped and logged, as is a report the broker refused
:data:`REPORT_ATTEMPTS` times. This module never touches client connections: it calls
back (``report``, ``terminate``, ``shed``) and :mod:`.node` acts.

Connection quotas (an app's ``max_connections``): a node admits a connection when the
cluster count it knows (the table, with its own live count) is below the limit, so nodes
admitting at the same moment can go over it together. The excess is then corrected from
the table: when an app's published count has stayed above its limit for
:data:`QUOTA_SETTLE_S`, :meth:`OccupancyTable.quota_shares` splits the excess among the
nodes, the node that admitted most recently first (up to all of its connections of the
app), then the next; each node closes its share of its own newest connections of the app
(``shed``, close code 4100) and then waits until its lower count is back in the table.
Every node computes the same split from the same table, so the cluster ends at the limit
within about a second, never below it by more than departures not yet published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from channelcast.brokers.base import Broker, Subscription
from channelcast.errors import HistoryUnavailable
from channelcast.logs import RepeatFilter
from channelcast.message import INTERNAL, Envelope, Record
from channelcast.types import ChannelName, Position

log = logging.getLogger("channelcast.gateway.pusher")
retry_log = logging.getLogger("channelcast.gateway.pusher.cluster")
"""The state loop's retries (publishing, following the state channel) while the broker or
the state topic is unavailable: each distinct line once per 30 s, with a count of the
ones held back, rather than a line a second for the whole outage."""
retry_log.addFilter(RepeatFilter())

STATE_CHANNEL = ChannelName(";pusher;state")
STATE_EVENT = "pusher-state"
FLUSH_S = 0.05
HEARTBEAT_PART_CHANNELS = 500
MAX_HEARTBEAT_PARTS = 10_000
REPORT_QUEUE = 10_000
REPORT_ATTEMPTS = 10
QUOTA_SETTLE_S = 0.5
"""How long an app's published connection count must stay above its limit before the
excess is closed (more than a flush and a broker round trip, so that what the nodes
publish has settled and they all split the same excess)."""
QUOTA_WAIT_S = 5.0
"""How long a node that closed its share waits for its lower count to come back through
the log before it may close more."""
LEAVE_S = 5.0
LOOKBACK = 100
"""Records of the state channel's partition a starting node looks back at (to decide
whether the cluster uses the Pusher protocol)."""
"""How long a closing node tries to say goodbye (and hand over what that causes)."""
FEED_QUEUE = 10_000

OCCUPIED = "channel_occupied"
VACATED = "channel_vacated"
MEMBER_ADDED = "member_added"
MEMBER_REMOVED = "member_removed"


@dataclass(frozen=True, slots=True)
class ChannelStat:
    """One channel on one node (or summed over the cluster): connections subscribed, and
    for presence channels the distinct user ids."""

    count: int
    users: frozenset[str] | None = None


@dataclass(slots=True)
class AppState:
    connections: int = 0
    channels: dict[str, ChannelStat] = field(default_factory=dict)
    newest_ms: int = 0
    """When the node last admitted a connection of the app (Unix ms; 0: unknown)."""


NodeState = dict[str, AppState]
"""app id -> state, for one node."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A cluster-wide change to report as a webhook event."""

    app: str
    name: str
    channel: str
    user_id: str | None = None


# --- wire form ------------------------------------------------------------------------


def _stat_obj(stat: ChannelStat) -> list[Any]:
    return [stat.count] if stat.users is None else [stat.count, sorted(stat.users)]


def _stat_of(obj: object) -> ChannelStat | None:
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], int) or obj[0] < 0:
        return None
    users = obj[1] if len(obj) > 1 else None
    if users is not None and not (isinstance(users, list)
                                  and all(isinstance(u, str) for u in users)):
        return None
    return ChannelStat(obj[0], None if users is None else frozenset(users))


def _apps_obj(apps: Mapping[str, AppState]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a, s in apps.items():
        app: dict[str, Any] = {"conns": s.connections,
                               "channels": {c: _stat_obj(v) for c, v in s.channels.items()}}
        if s.newest_ms:
            app["newest"] = s.newest_ms
        out[a] = app
    return out


@dataclass(frozen=True, slots=True)
class _AppPart:
    """One app's part of an operation: connections and ``newest`` (None: not given) and
    channel -> stat (None: malformed, dropped)."""

    conns: int | None
    newest_ms: int | None
    channels: dict[str, ChannelStat | None]


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def _apps_of(obj: object) -> dict[str, _AppPart]:
    """Decoded ``apps`` of an operation (malformed parts left out)."""
    out: dict[str, _AppPart] = {}
    if not isinstance(obj, dict):
        return out
    for app, raw in obj.items():
        if not isinstance(app, str) or not isinstance(raw, dict):
            continue
        channels = raw.get("channels")
        out[app] = _AppPart(_count(raw.get("conns")), _count(raw.get("newest")),
                            {c: _stat_of(v) for c, v in channels.items() if isinstance(c, str)}
                            if isinstance(channels, dict) else {})
    return out


def update_op(node: str, apps: Mapping[str, AppState]) -> dict[str, Any]:
    """The changed part of a node's state: a channel with count 0 is gone."""
    return {"op": "update", "node": node, "apps": _apps_obj(apps)}


def heartbeat_ops(node: str, state: Mapping[str, AppState], *,
                  per_part: int = HEARTBEAT_PART_CHANNELS) -> list[dict[str, Any]]:
    """The node's whole state, in parts of at most ``per_part`` channels."""
    items = [(a, c, s) for a, st in state.items() for c, s in st.channels.items()]
    chunks = [items[i:i + per_part] for i in range(0, len(items), per_part)] or [[]]
    beat = uuid.uuid4().hex[:12]
    ops = []
    for i, chunk in enumerate(chunks):
        apps = {a: AppState(st.connections, newest_ms=st.newest_ms) for a, st in state.items()}
        for a, c, s in chunk:
            apps[a].channels[c] = s
        ops.append({"op": "heartbeat", "node": node, "beat": beat, "part": i,
                    "parts": len(chunks), "apps": _apps_obj(apps)})
    return ops


# --- the table (sans-I/O) ----------------------------------------------------------------


def _sum(stats: Iterable[ChannelStat]) -> ChannelStat:
    count, users, presence = 0, set[str](), False
    for s in stats:
        count += s.count
        if s.users is not None:
            presence = True
            users |= s.users
    return ChannelStat(count, frozenset(users) if presence else None)


class OccupancyTable:
    """Every node's state as the log tells it, and the transitions each operation causes."""

    def __init__(self, local_node: str, ttl_s: float) -> None:
        self.local_node = local_node
        self.ttl_s = ttl_s
        self.nodes: dict[str, NodeState] = {}
        self.seen: dict[str, float] = {}
        self._partial: dict[str, tuple[str, NodeState, set[int]]] = {}

    def cluster(self, app: str, overlay: NodeState | None = None) -> dict[str, ChannelStat]:
        """Channel -> cluster-wide stat for one app; ``overlay`` replaces the local node's
        entry (its current state rather than its last published one)."""
        stats: dict[str, list[ChannelStat]] = {}
        for _node, state in self._states(overlay):
            st = state.get(app)
            if st is not None:
                for c, s in st.channels.items():
                    stats.setdefault(c, []).append(s)
        return {c: agg for c, v in stats.items() if (agg := _sum(v)).count > 0}

    def connections(self, app: str, overlay: NodeState | None = None) -> int:
        return sum(st.connections for _, state in self._states(overlay)
                   if (st := state.get(app)) is not None)

    def quota_shares(self, app: str, limit: int) -> dict[str, int]:
        """How many connections of ``app`` each node must close so that the cluster has
        ``limit``: the excess goes to the node that admitted most recently (``newest``;
        ties: the greater node id) up to all of its connections, then to the next. Empty
        when the app is within its limit. A function of the table alone, so every node
        that has applied the same operations splits the excess alike."""
        excess = self.connections(app) - limit
        shares: dict[str, int] = {}
        if excess <= 0:
            return shares
        nodes = sorted(((st.newest_ms, node, st.connections) for node, state in
                        self.nodes.items() if (st := state.get(app)) is not None
                        and st.connections > 0), reverse=True)
        for _newest, node, conns in nodes:
            share = min(excess, conns)
            shares[node] = share
            excess -= share
            if excess == 0:
                break
        return shares

    def _states(self, overlay: NodeState | None) -> list[tuple[str, NodeState]]:
        out = [(n, s) for n, s in self.nodes.items()
               if overlay is None or n != self.local_node]
        if overlay is not None:
            out.append((self.local_node, overlay))
        return out

    def silent(self, now: float) -> list[str]:
        """Other nodes not heard from within ``ttl_s``."""
        return [n for n in self.nodes if n != self.local_node
                and now - self.seen.get(n, float("-inf")) > self.ttl_s]

    def apply(self, op: object, now: float) -> tuple[list[Transition], str | None, bool]:
        """Apply one operation: (transitions it caused, the node that reports them,
        whether another node asked for a heartbeat). Malformed operations change nothing."""
        if not isinstance(op, dict) or not isinstance(op.get("node"), str):
            return [], None, False
        kind, node = op.get("op"), op["node"]
        if kind == "sync":
            return [], None, node != self.local_node
        if kind in ("expire", "bye"):
            gone = op.get("gone", node) if kind == "expire" else node
            if not isinstance(gone, str) or gone not in self.nodes:
                return [], None, False
            # Even our own expiry (we were too slow): every node applies every operation
            # alike; our next heartbeat brings our state back.
            return self._replace(gone, None), node, gone == self.local_node
        self.seen[node] = now
        if kind == "update":
            state = {a: AppState(st.connections, dict(st.channels), st.newest_ms)
                     for a, st in self.nodes.get(node, {}).items()}
            for app, given in _apps_of(op.get("apps")).items():
                st = state.setdefault(app, AppState())
                if given.conns is not None:
                    st.connections = given.conns
                if given.newest_ms is not None:
                    st.newest_ms = given.newest_ms
                for c, s in given.channels.items():
                    if s is None or s.count == 0:
                        st.channels.pop(c, None)
                    else:
                        st.channels[c] = s
            return self._replace(node, state), node, False
        if kind == "heartbeat":
            full = self._heartbeat(node, op)
            if full is None:
                return [], None, False
            return self._replace(node, full), node, False
        return [], None, False

    def _heartbeat(self, node: str, op: dict[str, Any]) -> NodeState | None:
        parts, part, beat = op.get("parts", 1), op.get("part", 0), op.get("beat", "")
        if not (isinstance(parts, int) and isinstance(part, int) and isinstance(beat, str)
                and 0 <= part < parts <= MAX_HEARTBEAT_PARTS):
            return None
        current = self._partial.get(node)
        if current is None or current[0] != beat:
            current = (beat, {}, set())
            self._partial[node] = current
        state, seen_parts = current[1], current[2]
        for app, given in _apps_of(op.get("apps")).items():
            st = state.setdefault(app, AppState())
            if given.conns is not None:
                st.connections = given.conns
            if given.newest_ms is not None:
                st.newest_ms = given.newest_ms
            st.channels.update({c: s for c, s in given.channels.items()
                                if s is not None and s.count > 0})
        seen_parts.add(part)
        if len(seen_parts) < parts:
            return None
        del self._partial[node]
        return state

    def _replace(self, node: str, state: NodeState | None) -> list[Transition]:
        before = self.nodes.get(node, {})
        apps = set(before) | set(state or {})
        touched = {(a, c) for a in apps for c in
                   set(before.get(a, AppState()).channels)
                   | set((state or {}).get(a, AppState()).channels)}
        old = {(a, c): self._channel(a, c) for a, c in touched}
        if state is None:
            self.nodes.pop(node, None)
            self.seen.pop(node, None)
            self._partial.pop(node, None)
        else:
            self.nodes[node] = state
        out: list[Transition] = []
        for (a, c), was in sorted(old.items()):
            now = self._channel(a, c)
            if was.count == 0 and now.count > 0:
                out.append(Transition(a, OCCUPIED, c))
            for user in sorted((now.users or frozenset()) - (was.users or frozenset())):
                out.append(Transition(a, MEMBER_ADDED, c, user))
            for user in sorted((was.users or frozenset()) - (now.users or frozenset())):
                out.append(Transition(a, MEMBER_REMOVED, c, user))
            if was.count > 0 and now.count == 0:
                out.append(Transition(a, VACATED, c))
        return out

    def _channel(self, app: str, channel: str) -> ChannelStat:
        return _sum(st.channels[channel] for state in self.nodes.values()
                    if (st := state.get(app)) is not None and channel in st.channels)


# --- the service ------------------------------------------------------------------------


@dataclass(slots=True)
class _LocalApp:
    connections: int = 0
    newest_ms: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    users: dict[str, Counter[str]] = field(default_factory=dict)
    """presence channel -> user id -> local connections of that user there"""

    def stat(self, channel: str) -> ChannelStat:
        users = self.users.get(channel)
        return ChannelStat(self.counts[channel],
                           None if users is None else frozenset(u for u, n in users.items()
                                                                if n > 0))


Reporter = Callable[[list[Transition], int], Awaitable[None]]
"""Reports transitions (and when they happened, Unix ms) as webhooks."""
Terminator = Callable[[str, str], None]
Shedder = Callable[[str, int], None]
"""Closes this many of this node's newest connections of the app (over its quota)."""


class Cluster:
    """This node's part in the cluster-wide Pusher state (see the module docstring)."""

    def __init__(self, broker: Broker, node_id: str, *, ttl_s: float, report: Reporter,
                 terminate: Terminator, limits: Mapping[str, int] | None = None,
                 shed: Shedder | None = None) -> None:
        """``limits``: app id -> its ``max_connections`` (0 or absent: none); ``shed``
        closes connections over a limit (see the module docstring)."""
        self.broker = broker
        self.node_id = node_id
        self.ttl_s = ttl_s
        self.table = OccupancyTable(self.node_id, ttl_s)
        self._report = report
        self._terminate = terminate
        self.limits = {a: n for a, n in (limits or {}).items() if n > 0}
        self._shed = shed
        self._over_since: dict[str, float] = {}
        self._shed_wait: dict[str, tuple[int, float]] = {}
        """app -> (our count after closing our share, when): until the table shows it."""
        self._local: dict[str, _LocalApp] = {}
        self._dirty: dict[str, set[str]] = {}
        self._wake = asyncio.Event()
        self._beat_now = False
        self._expiring: set[str] = set()
        self._reports: asyncio.Queue[tuple[list[Transition], int]] = asyncio.Queue(
            REPORT_QUEUE)
        self._position: Position | None = None
        self._subscription: Subscription | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._left = asyncio.Event()
        self.active = False
        """Whether this node takes part (publishes); see :meth:`activate`."""
        self._sync_now = False

    # --- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Follow the state channel from its end; take part at once if the recent log shows
        that the cluster uses the Pusher protocol (else on first use, :meth:`activate`)."""
        end = await self.broker.end_position(STATE_CHANNEL)
        self._position = end
        await self._follow()
        recent = max(end.offset - LOOKBACK, -1)
        if recent < end.offset:
            try:
                used = bool(await self.broker.history(
                    STATE_CHANNEL, Position(end.topic, end.partition, recent, end.epoch),
                    include_internal=True))
            except HistoryUnavailable:
                used = False  # trimmed by retention: the others' heartbeats will tell
            if used:
                self.activate()
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._reporter())]

    def activate(self) -> None:
        """Take part: ask the others for their state and publish ours from now on. Until
        then a node only reads the log (so a cluster that never uses the Pusher protocol
        sees no traffic from it). Called on the node's first Pusher connection or HTTP API
        request, and when another node's state appears in the log."""
        if self.active or self._closed:
            return
        self.active = True
        self._sync_now = self._beat_now = True
        self._wake.set()

    async def _follow(self) -> None:
        assert self._position is not None
        self._subscription = self.broker.subscribe(
            [STATE_CHANNEL], since={STATE_CHANNEL: self._position}, max_queue=FEED_QUEUE,
            include_internal=True)
        await self._subscription.ready()
        self._pump_task = asyncio.create_task(self._pump(self._subscription))

    async def close(self) -> None:
        """Tell the others this node left (its channels and members go now, not after
        ``ttl``), report what that causes, stop."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks[:1]:
            task.cancel()
        await asyncio.gather(*self._tasks[:1], return_exceptions=True)
        # Bounded: with the broker down, a node still shuts down (the others expire it).
        if self.active:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._leave(), LEAVE_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reports.join(), LEAVE_S)
        tasks = [*self._tasks[1:], *([self._pump_task] if self._pump_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.close()

    async def _leave(self) -> None:
        await self._flush()
        await self._publish({"op": "bye", "node": self.node_id})
        await self._left.wait()  # our own bye, back through the log, and its reports

    async def _pump(self, subscription: Subscription) -> None:
        """Apply the log in order; if the subscription fails, follow again from the last
        applied position (nothing skipped, nothing applied twice)."""
        try:
            async for record in subscription:
                pos, last = record.position, self._position
                if record.channel != STATE_CHANNEL or (
                        last is not None and (pos.topic, pos.partition) ==
                        (last.topic, last.partition) and pos.offset <= last.offset):
                    continue
                self._position = pos
                self._apply(record)
            reason = "the subscription ended"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            gone = isinstance(exc, HistoryUnavailable)
        else:
            gone = False
        if self._closed:
            return
        log.warning("pusher cluster state: lost %s (%s); following it again%s", STATE_CHANNEL,
                    reason, " from its end (the log before is gone: the others' heartbeats "
                    "rebuild the state)" if gone else "")
        with contextlib.suppress(Exception):
            await subscription.close()
        delay = 0.1
        while not self._closed:
            try:
                if gone:  # the old position means nothing in the new log: start at its end
                    self._position = await self.broker.end_position(STATE_CHANNEL)
                    gone = False
                    if self.active:
                        self._sync_now = self._beat_now = True
                        self._wake.set()
                await self._follow()
                return
            except Exception as exc:
                retry_log.warning("pusher cluster state: cannot follow %s: %s", STATE_CHANNEL,
                                  exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- local changes (from sessions) -----------------------------------------------
    def _app(self, app: str) -> _LocalApp:
        return self._local.setdefault(app, _LocalApp())

    def connected(self, app: str, delta: int) -> None:
        self.activate()
        local = self._app(app)
        local.connections += delta
        if delta > 0:
            local.newest_ms = int(time.time() * 1000)
        self._touch(app, None)

    def subscribed(self, app: str, channel: str, user_id: str | None, presence: bool,
                   delta: int) -> None:
        """A local connection joined (+1) or left (-1) ``channel``."""
        self.activate()
        local = self._app(app)
        local.counts[channel] += delta
        if local.counts[channel] <= 0:
            del local.counts[channel]
        if presence:
            users = local.users.setdefault(channel, Counter())
            if user_id is not None:
                users[user_id] += delta
                if users[user_id] <= 0:
                    del users[user_id]
            if channel not in local.counts:
                local.users.pop(channel, None)
        self._touch(app, channel)

    def _touch(self, app: str, channel: str | None) -> None:
        dirty = self._dirty.setdefault(app, set())
        if channel is not None:
            dirty.add(channel)
        self._wake.set()

    def local_state(self) -> NodeState:
        return {a: AppState(loc.connections, {c: loc.stat(c) for c in loc.counts},
                            loc.newest_ms)
                for a, loc in self._local.items()}

    # --- queries (HTTP API) -------------------------------------------------------------
    def channels(self, app: str) -> dict[str, ChannelStat]:
        self.activate()
        return self.table.cluster(app, self.local_state())

    def connections(self, app: str) -> int:
        self.activate()
        return self.table.connections(app, self.local_state())

    async def request_terminate(self, app: str, user_id: str) -> None:
        self.activate()
        await self._publish({"op": "terminate", "node": self.node_id, "app": app,
                             "user": user_id})

    # --- the log ------------------------------------------------------------------------
    def _apply(self, record: Record) -> None:
        op = record.envelope.data
        if isinstance(op, dict) and op.get("op") == "terminate":
            app, user = op.get("app"), op.get("user")
            if isinstance(app, str) and isinstance(user, str):
                self._terminate(app, user)
            return
        if isinstance(op, dict) and op.get("node") != self.node_id:
            self.activate()  # another node uses the protocol: take part
        transitions, author, wants_sync = self.table.apply(op, time.monotonic())
        if self._closed and self.node_id not in self.table.nodes:
            self._left.set()
        if isinstance(op, dict) and op.get("op") == "expire":
            self._expiring.discard(str(op.get("gone")))
        if wants_sync:
            self._beat_now = True
            self._wake.set()
        if transitions and author == self.node_id:
            try:
                self._reports.put_nowait((transitions, record.envelope.timestamp))
            except asyncio.QueueFull:
                log.warning("pusher webhooks: report queue full, dropped %d events",
                            len(transitions))

    async def _publish(self, *ops: dict[str, Any]) -> None:
        # Internal records: no subscriber, history read or worker of anyone else sees them.
        await self.broker.publish_many([Envelope(STATE_CHANNEL, STATE_EVENT, op, type=INTERNAL)
                                        for op in ops])

    async def _flush(self) -> None:
        if not self.active:
            return
        if self._sync_now:
            self._sync_now = False
            await self._publish({"op": "sync", "node": self.node_id})
        if self._beat_now:
            self._beat_now = False
            self._dirty.clear()
            await self._publish(*heartbeat_ops(self.node_id, self.local_state()))
            return
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        apps = {}
        for app, channels in dirty.items():
            loc = self._app(app)
            apps[app] = AppState(loc.connections, {c: loc.stat(c) for c in channels},
                                 loc.newest_ms)
        await self._publish(update_op(self.node_id, apps))

    async def _run(self) -> None:
        """Flush changes (at most every FLUSH_S), heartbeat every ttl/3, expire others."""
        last_beat = time.monotonic()
        tick = min(FLUSH_S * 4, self.ttl_s / 10)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick)
            self._wake.clear()
            now = time.monotonic()
            if now - last_beat >= self.ttl_s / 3:
                self._beat_now, last_beat = True, now
            try:
                await self._flush()
                for node in self.table.silent(now) if self.active else ():
                    if node not in self._expiring:
                        self._expiring.add(node)
                        await self._publish({"op": "expire", "node": self.node_id,
                                             "gone": node})
                self.enforce_quotas(now)
            except Exception as exc:
                retry_log.warning("pusher cluster state: publish failed (retried every second; "
                                  "the next heartbeat restores what was lost): %s", exc)
                self._beat_now = True  # the next heartbeat restores what was lost
                await asyncio.sleep(min(1.0, self.ttl_s / 10))
            await asyncio.sleep(FLUSH_S)

    def enforce_quotas(self, now: float) -> None:
        """Close this node's share of the connections over an app's limit once the excess
        has lasted :data:`QUOTA_SETTLE_S` (see the module docstring). ``now``: monotonic."""
        if not self.active or self._shed is None:
            return
        for app, limit in self.limits.items():
            mine = self.table.nodes.get(self.node_id, {}).get(app)
            waiting = self._shed_wait.get(app)
            if waiting is not None:
                if (mine is not None and mine.connections <= waiting[0]) \
                        or now - waiting[1] >= QUOTA_WAIT_S:
                    del self._shed_wait[app]
                else:
                    continue
            if self.table.connections(app) <= limit:
                self._over_since.pop(app, None)
                continue
            since = self._over_since.setdefault(app, now)
            if now - since < QUOTA_SETTLE_S:
                continue
            share = self.table.quota_shares(app, limit).get(self.node_id, 0)
            if share <= 0:
                continue
            self._over_since.pop(app, None)
            local = self._app(app).connections
            self._shed_wait[app] = (max(0, local - share), now)
            log.info("app %s has %d connections across the cluster (limit %d): closing %d "
                     "of this node's newest", app, self.table.connections(app), limit, share)
            self._shed(app, share)

    async def _reporter(self) -> None:
        """Hand reports over (to the webhook channel), retrying a failing broker with
        back-off for about half a minute before a report is dropped with a WARNING."""
        while True:
            transitions, time_ms = await self._reports.get()
            try:
                for attempt in range(REPORT_ATTEMPTS):
                    try:
                        await self._report(transitions, time_ms)
                        break
                    except Exception as exc:
                        if attempt + 1 == REPORT_ATTEMPTS or self._closed:
                            log.warning("pusher webhooks: dropped %d events: %s",
                                        len(transitions), exc)
                            break
                        await asyncio.sleep(min(0.1 * 2 ** attempt, 5.0))
            finally:
                self._reports.task_done()
