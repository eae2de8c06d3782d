"""Presence bookkeeping for one presence channel on one node. Sans-I/O: no awaits, no clock.

Every gateway node publishes presence operations on the presence channel itself, as
envelopes of type ``internal`` with the reserved event :data:`PRESENCE_EVENT` (clients
never see them as messages; every other publisher is refused the ``channelcast:`` prefix,
see :func:`channelcast.message.validate_event`):

* ``join``/``leave``: one connection of this node entered or left the channel.
* ``heartbeat``: this node's full list of connections in the channel (replaces what others
  know of it), sent every ``ttl/3`` seconds while it has members there; in parts of
  :data:`HEARTBEAT_PART_SIZE` connections when it is long.
* ``sync``: a node that just started following the channel asks the others for a heartbeat.

A node whose heartbeat is older than ``ttl`` is considered dead and its members leave.
The state is a map ``(node, connection) -> Member``; the member list is the distinct
``user_id``\\ s in it, so one user with two tabs is one member.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from channelcast.errors import SerializationError
from channelcast.gateway import jsontext
from channelcast.message import RESERVED_EVENT_PREFIX
from channelcast.types import JSONValue

PRESENCE_EVENT = f"{RESERVED_EVENT_PREFIX}presence"
HEARTBEAT_PART_SIZE = 500
"""Connections per heartbeat message (about 100 bytes each with small user_info)."""
MAX_HEARTBEAT_PARTS = 10_000
MAX_USER_ID = 128
"""The longest ``user_id``, in characters."""
MAX_USER_INFO_BYTES = 1024
"""The largest ``user_info`` a client may join a presence channel with, as compact JSON in
UTF-8 (Pusher's limit too): it goes to every member of the channel in ``member_added`` and
in every newcomer's member list."""


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    user_info: JSONValue = None

    def to_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "user_info": self.user_info}

    @classmethod
    def parse(cls, obj: object, *, max_info_bytes: int | None = MAX_USER_INFO_BYTES) -> Member:
        """A Member from decoded JSON (a presence ``channel_data``); raises ValueError
        naming the broken rule: a JSON object whose ``user_id`` is a string of 1 to
        :data:`MAX_USER_ID` characters (an integer is taken as its digits: Pusher clients
        and Laravel send numeric ids) and whose optional ``user_info`` is strict JSON (no
        NaN/Infinity, no lone surrogate), nests at most :data:`.jsontext.MAX_DEPTH` deep
        and, unless ``max_info_bytes`` is None, is at most that many bytes as compact JSON.
        So every frame listing the member can be sent, to every member of the channel."""
        if not isinstance(obj, dict):
            raise ValueError("it must be a JSON object {user_id, user_info}")
        user_id = obj.get("user_id")
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if user_id is None:
            raise ValueError("it has no user_id")
        if not isinstance(user_id, str):
            raise ValueError("user_id must be a string (or an integer, taken as its digits)")
        if not 0 < len(user_id) <= MAX_USER_ID:
            raise ValueError(f"user_id has {len(user_id)} characters; it must have 1 to "
                             f"{MAX_USER_ID}")
        user_info = obj.get("user_info")
        if jsontext.too_deep(user_info):
            raise ValueError(f"user_info nests deeper than {jsontext.MAX_DEPTH} levels "
                             "(the depth limit)")
        try:
            jsontext.check_text(user_id)
            text = jsontext.dumps(user_info)
        except SerializationError as exc:
            raise ValueError(f"it is not strict JSON: {exc}") from None
        if max_info_bytes is not None:
            size = len(text) if text.isascii() else len(text.encode())
            if size > max_info_bytes:
                raise ValueError(f"user_info is {size} bytes as JSON; the limit is "
                                 f"{max_info_bytes} (it is sent to every member of the "
                                 "channel)")
        return cls(user_id, user_info)

    @classmethod
    def from_obj(cls, obj: object) -> Member | None:
        """A Member from decoded JSON, or None if it is not one (:meth:`parse`'s rules
        without the size bound): for members that already passed :meth:`parse` where they
        entered, on this node or another (presence operations read from the broker)."""
        try:
            return cls.parse(obj, max_info_bytes=None)
        except ValueError:
            return None


@dataclass(slots=True)
class PresenceDiff:
    added: list[Member] = field(default_factory=list)
    removed: list[Member] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class PresenceState:
    """Who is in one presence channel, as seen by one node."""

    def __init__(self, local_node: str, ttl_s: float) -> None:
        self.local_node = local_node
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, str], Member] = {}
        self._seen: dict[str, float] = {}
        # A large heartbeat comes in parts: node -> (beat id, connections so far, parts seen)
        self._partial: dict[str, tuple[str, dict[str, Member], set[int]]] = {}

    # --- queries -------------------------------------------------------------------
    def members(self) -> list[Member]:
        by_user: dict[str, Member] = {}
        for key in sorted(self._entries):
            member = self._entries[key]
            by_user.setdefault(member.user_id, member)
        return [by_user[u] for u in sorted(by_user)]

    def local_connections(self) -> dict[str, Member]:
        return {conn: m for (node, conn), m in self._entries.items() if node == self.local_node}

    def nodes(self) -> set[str]:
        return {node for node, _ in self._entries}

    # --- transitions -----------------------------------------------------------------
    def _change(self, mutate: Iterable[tuple[tuple[str, str], Member | None]]) -> PresenceDiff:
        before = {m.user_id: m for m in self.members()}
        for key, member in mutate:
            if member is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = member
        after = {m.user_id: m for m in self.members()}
        return PresenceDiff(added=[after[u] for u in sorted(after.keys() - before.keys())],
                            removed=[before[u] for u in sorted(before.keys() - after.keys())])

    def join(self, node: str, conn: str, member: Member, now: float) -> PresenceDiff:
        self._seen[node] = now
        return self._change([((node, conn), member)])

    def leave(self, node: str, conn: str, now: float) -> PresenceDiff:
        return self._change([((node, conn), None)])

    def heartbeat(self, node: str, conns: Mapping[str, Member], now: float) -> PresenceDiff:
        self._seen[node] = now
        stale = [(key, None) for key in self._entries if key[0] == node and key[1] not in conns]
        fresh = [((node, c), m) for c, m in conns.items()]
        return self._change([*stale, *fresh])

    def expire(self, now: float) -> PresenceDiff:
        """Drop the members of nodes not heard from within ``ttl_s`` (never the local node)."""
        dead = {node for node in self.nodes() | set(self._seen) if node != self.local_node
                and now - self._seen.get(node, float("-inf")) > self.ttl_s}
        if not dead:
            return PresenceDiff()
        for node in dead:
            self._seen.pop(node, None)
            self._partial.pop(node, None)
        return self._change([(key, None) for key in self._entries if key[0] in dead])

    def apply(self, op: object, now: float) -> tuple[PresenceDiff, bool]:
        """Apply one decoded presence operation; returns the diff and whether a ``sync``
        from another node asks us for a heartbeat. Malformed operations change nothing."""
        if not isinstance(op, dict):
            return PresenceDiff(), False
        kind, node, conn = op.get("op"), op.get("node"), op.get("conn")
        if not isinstance(node, str):
            return PresenceDiff(), False
        if kind == "sync":
            return PresenceDiff(), node != self.local_node
        if kind == "join" and isinstance(conn, str):
            member = Member.from_obj(op.get("member"))
            if member is not None:
                return self.join(node, conn, member, now), False
        elif kind == "leave" and isinstance(conn, str):
            return self.leave(node, conn, now), False
        elif kind == "heartbeat" and isinstance(op.get("members"), dict):
            conns = {c: m for c, raw in op["members"].items()
                     if isinstance(c, str) and (m := Member.from_obj(raw)) is not None}
            parts, part, beat = op.get("parts", 1), op.get("part", 0), op.get("beat")
            if parts == 1:
                return self.heartbeat(node, conns, now), False
            if not (isinstance(parts, int) and isinstance(part, int) and isinstance(beat, str)
                    and 0 <= part < parts <= MAX_HEARTBEAT_PARTS):
                return PresenceDiff(), False
            self._seen[node] = now  # any part proves the node is alive
            current = self._partial.get(node)
            if current is None or current[0] != beat:
                current = (beat, {}, set())
                self._partial[node] = current
            current[1].update(conns)
            current[2].add(part)
            if len(current[2]) == parts:
                del self._partial[node]
                return self.heartbeat(node, current[1], now), False
        return PresenceDiff(), False


def join_op(node: str, conn: str, member: Member) -> dict[str, Any]:
    return {"op": "join", "node": node, "conn": conn, "member": member.to_dict()}


def leave_op(node: str, conn: str) -> dict[str, Any]:
    return {"op": "leave", "node": node, "conn": conn}


def heartbeat_op(node: str, conns: Mapping[str, Member]) -> dict[str, Any]:
    return {"op": "heartbeat", "node": node,
            "members": {c: m.to_dict() for c, m in conns.items()}}


def heartbeat_ops(node: str, conns: Mapping[str, Member], *,
                  per_part: int = HEARTBEAT_PART_SIZE) -> list[dict[str, Any]]:
    """A heartbeat split into parts of ``per_part`` connections, so a node with many
    members never publishes one message over the broker's size limit. Receivers apply the
    snapshot once every part of the same ``beat`` arrived (parts are published in order)."""
    items = list(conns.items())
    if len(items) <= per_part:
        return [heartbeat_op(node, conns)]
    chunks = [items[i:i + per_part] for i in range(0, len(items), per_part)]
    beat = uuid.uuid4().hex[:12]
    return [{"op": "heartbeat", "node": node, "beat": beat, "part": i, "parts": len(chunks),
             "members": {c: m.to_dict() for c, m in chunk}}
            for i, chunk in enumerate(chunks)]


def sync_op(node: str) -> dict[str, Any]:
    return {"op": "sync", "node": node}
