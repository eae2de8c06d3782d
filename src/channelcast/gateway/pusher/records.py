"""How a Pusher event is stored in an envelope, and how a stored record reads as one.

An event triggered through the Pusher HTTP API is stored as an ordinary envelope:
``event`` is its name and ``data`` its data string, unchanged, so native clients of the
default app's channels see it like any message. Two Pusher attributes have no place in an
envelope; an event that has either is stored with ``data`` wrapped as
``{"channelcast:pusher": {"data": ..., "socket_id": ..., "user_id": ...}}``:

* ``socket_id``: the connection that must not receive it (the HTTP API's ``socket_id``,
  the sender of a client event);
* ``user_id``: who sent a client event on a presence channel.

Pusher frames carry ``data`` as a string: a string is sent as is, anything else (what a
native publisher stored, a client event's object) as its compact JSON. Pure functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from channelcast.types import JSONValue

WRAPPER_KEY = "channelcast:pusher"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    data: JSONValue
    socket_id: str | None = None
    user_id: str | None = None


def wrap(data: JSONValue, *, socket_id: str | None = None,
         user_id: str | None = None) -> JSONValue:
    """The envelope ``data`` for an event with these attributes."""
    if socket_id is None and user_id is None:
        return data
    inner: dict[str, Any] = {"data": data}
    if socket_id is not None:
        inner["socket_id"] = socket_id
    if user_id is not None:
        inner["user_id"] = user_id
    return {WRAPPER_KEY: inner}


def unwrap(data: JSONValue) -> StoredEvent:
    """A stored envelope's ``data`` as the event's data and attributes."""
    if type(data) is dict and len(data) == 1:
        inner = data.get(WRAPPER_KEY)
        if isinstance(inner, dict):
            socket_id, user_id = inner.get("socket_id"), inner.get("user_id")
            return StoredEvent(inner.get("data"),
                               socket_id if isinstance(socket_id, str) else None,
                               user_id if isinstance(user_id, str) else None)
    return StoredEvent(data)


def data_text(data: JSONValue) -> str:
    """``data`` as a Pusher frame carries it: a string."""
    if isinstance(data, str):
        return data
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
