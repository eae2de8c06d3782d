"""Pusher channel names <-> channelcast channel names, per app. Pure functions.

Pusher names use the same characters as channelcast's (``A-Z a-z 0-9 _ - = @ , . ;``),
plus the server-to-user channels ``#server-to-user-{user_id}``. The mapping:

* the default app: the name itself, so its channels are the native protocol's;
* app ``42``: the type prefix, then ``;42;``, then the rest: ``presence-room`` ->
  ``presence-;42;room``, ``news`` -> ``;42;news``. The type prefix stays first, so the hub
  still sees a presence channel as one, and topic mappings can route an app's channels
  (``";42;*"``, ``"presence-;42;*"``);
* ``#server-to-user-{id}`` of app ``A`` -> ``private-;A;;{id}``.

Names whose part after the type prefix starts with ``;`` are reserved for this
(:func:`channelcast.channels.is_reserved`): no client may name them, in either protocol.
So two apps never share a channel, and the default app shares only with native clients.
The mapped name must also be a channelcast name: at most 164 characters, not starting or
ending with ``.``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from channelcast.channels import (
    PRESENCE_PREFIX,
    PRIVATE_PREFIX,
    RESERVED_MARK,
    validate_channel,
)
from channelcast.errors import InvalidChannel
from channelcast.gateway.pusher.apps import PusherApp
from channelcast.types import ChannelName

USER_CHANNEL_PREFIX = "#server-to-user-"
ENCRYPTED_PREFIX = "private-encrypted-"
CACHE_PREFIXES = ("cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-")
MAX_NAME = 164
"""Pusher's own limit on channel names."""
_PUSHER_CHARS = re.compile(r"[-a-zA-Z0-9_=@,.;]+")
_USER_NS = ";"  # after the app namespace: ``private-;A;;{user}``
_BARE_PREFIXES = frozenset((PRIVATE_PREFIX, PRESENCE_PREFIX, ENCRYPTED_PREFIX, *CACHE_PREFIXES))
"""Type prefixes with nothing after them: not channels, for any app (the default app's
``private-`` was refused by channelcast's own rule, app 42's was not)."""


class Kind(enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "private-encrypted"
    PRESENCE = "presence"
    USER = "server-to-user"


@dataclass(frozen=True, slots=True)
class PusherChannel:
    """One app's channel: the ``name`` its clients use, channelcast's ``channel``."""

    name: str
    channel: ChannelName
    kind: Kind
    cache: bool = False
    user_id: str | None = None
    """The user of a server-to-user channel."""

    @property
    def signed(self) -> bool:
        """Subscribing needs an ``auth`` signature."""
        return self.kind in (Kind.PRIVATE, Kind.ENCRYPTED, Kind.PRESENCE)

    @property
    def presence(self) -> bool:
        return self.kind is Kind.PRESENCE


def user_channel(app: PusherApp, user_id: str) -> ChannelName:
    """channelcast's name of the app's ``#server-to-user-{user_id}``."""
    return validate_channel(f"{PRIVATE_PREFIX}{RESERVED_MARK}{app.id}{RESERVED_MARK}"
                            f"{_USER_NS}{user_id}")


def _kind(name: str) -> Kind:
    if name.startswith(PRESENCE_PREFIX):
        return Kind.PRESENCE
    if name.startswith(ENCRYPTED_PREFIX):
        return Kind.ENCRYPTED
    if name.startswith(PRIVATE_PREFIX):
        return Kind.PRIVATE
    return Kind.PUBLIC


def _type_prefix(name: str) -> str:
    for prefix in (PRESENCE_PREFIX, PRIVATE_PREFIX):
        if name.startswith(prefix):
            return prefix
    return ""


def parse(app: PusherApp, name: object) -> PusherChannel:
    """The app's channel called ``name``; raises InvalidChannel naming the broken rule."""
    if not isinstance(name, str) or not name:
        raise InvalidChannel("channel must be a non-empty string")
    if len(name) > MAX_NAME + len(USER_CHANNEL_PREFIX):
        raise InvalidChannel(f"channel name is {len(name)} characters; the maximum is "
                             f"{MAX_NAME}")
    if name.startswith(USER_CHANNEL_PREFIX):
        user_id = name[len(USER_CHANNEL_PREFIX):]
        if not _PUSHER_CHARS.fullmatch(user_id):
            raise InvalidChannel(f"{name[:60]!r}: a user id of A-Z a-z 0-9 _ - = @ , . ;")
        try:
            return PusherChannel(name, user_channel(app, user_id), Kind.USER, user_id=user_id)
        except InvalidChannel as exc:
            raise InvalidChannel(f"{name[:60]!r}: {exc}") from None
    if len(name) > MAX_NAME:
        raise InvalidChannel(f"channel name is {len(name)} characters; the maximum is "
                             f"{MAX_NAME}")
    if not _PUSHER_CHARS.fullmatch(name):
        bad = next(c for c in name if not _PUSHER_CHARS.fullmatch(c))
        raise InvalidChannel(f"channel name {name[:40]!r} has character {bad!r}; allowed: "
                             "A-Z a-z 0-9 _ - = @ , . ;")
    if name in _BARE_PREFIXES:
        raise InvalidChannel(f"channel name {name!r} is only a prefix; add a name after it")
    prefix = _type_prefix(name)
    rest = name[len(prefix):]
    if rest.startswith(RESERVED_MARK):
        raise InvalidChannel(f"channel name {name[:40]!r} is reserved: the part after the "
                             f"type prefix must not start with {RESERVED_MARK!r}")
    channel = validate_channel(f"{prefix}{app.namespace}{rest}")
    return PusherChannel(name, channel, _kind(name), cache=name.startswith(CACHE_PREFIXES))


def pusher_name(app: PusherApp, channel: str) -> str | None:
    """The name the app's clients use for channelcast's ``channel``; None when it is not
    one of the app's channels."""
    prefix = _type_prefix(channel)
    rest = channel[len(prefix):]
    own = f"{RESERVED_MARK}{app.id}{RESERVED_MARK}"
    if prefix == PRIVATE_PREFIX and rest.startswith(own + _USER_NS):
        return USER_CHANNEL_PREFIX + rest[len(own) + len(_USER_NS):]
    if app.default:
        return None if rest.startswith(RESERVED_MARK) else channel
    if not rest.startswith(own) or rest[len(own):].startswith(RESERVED_MARK):
        return None
    return prefix + rest[len(own):]
