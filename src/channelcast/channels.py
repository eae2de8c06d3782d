"""Channel grammar, in one place.

A channel name is 1..164 characters of ``A-Z a-z 0-9 _ - = @ , . ;``; it must not start
or end with ``.``. The prefix gives the type: ``private-`` and ``presence-`` channels need
a signature to subscribe; everything else is public. This module never touches I/O.

Reserved names: a name whose part after the type prefix starts with ``;`` (``;x``,
``private-;1;x``) belongs to channelcast itself: the namespaces of Pusher apps other than
the default one and the Pusher layer's own channels (docs/pusher.md). Brokers and workers
take them like any name; what clients name (the native protocol, SSE, the publish API)
goes through :func:`validate_client_channel`, which refuses them.
"""

from __future__ import annotations

import enum
import re
import string

from channelcast.errors import InvalidChannel
from channelcast.types import ChannelName

MAX_CHANNEL_LENGTH = 164
ALLOWED_CHARACTERS = "A-Z a-z 0-9 _ - = @ , . ;"
CHANNEL_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-=@,.;")
"""Every character a channel name may contain (the set ALLOWED_CHARACTERS describes)."""
_ALLOWED = re.compile(r"[A-Za-z0-9_\-=@,.;]+")
_BAD_CHAR = re.compile(r"[^A-Za-z0-9_\-=@,.;]")


class ChannelType(enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    PRESENCE = "presence"


PRIVATE_PREFIX = "private-"
PRESENCE_PREFIX = "presence-"
RESERVED_MARK = ";"
"""A name whose part after the type prefix starts with this is reserved (module docstring)."""


_BARE_PREFIXES = frozenset((
    PRIVATE_PREFIX, PRESENCE_PREFIX,
    # The Pusher protocol's type prefixes (docs/pusher.md): the default Pusher app's
    # channels are these channels, and a bare prefix is no channel there.
    "private-encrypted-", "cache-", "private-cache-", "presence-cache-",
    "private-encrypted-cache-"))
"""Names that are only a channel-type prefix, never a channel."""


def validate_channel(name: object) -> ChannelName:
    """Return ``name`` as a ChannelName, or raise InvalidChannel naming the broken rule."""
    if not isinstance(name, str):
        raise InvalidChannel(f"channel name must be a string, got {type(name).__name__}")
    if not name:
        raise InvalidChannel("channel name must not be empty")
    if len(name) > MAX_CHANNEL_LENGTH:
        raise InvalidChannel(
            f"channel name is {len(name)} characters; the maximum is {MAX_CHANNEL_LENGTH}")
    if not _ALLOWED.fullmatch(name):
        bad = _BAD_CHAR.search(name)
        assert bad is not None
        raise InvalidChannel(
            f"channel name {name[:40]!r} has character {bad.group()!r} at index {bad.start()};"
            f" allowed: {ALLOWED_CHARACTERS}")
    if name.startswith(".") or name.endswith("."):
        raise InvalidChannel(f"channel name {name!r} must not start or end with '.'")
    if name in _BARE_PREFIXES:
        raise InvalidChannel(f"channel name {name!r} is only a prefix; add a name after it")
    return ChannelName(name)


GLOB_CHARACTERS = frozenset("*?[]!^")
"""What a channel pattern (an fnmatch glob) may hold beside channel characters."""


def validate_pattern(pattern: object) -> str:
    """Return a channel glob (``user.*``), or raise InvalidChannel naming the character no
    channel name can contain."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidChannel(f"channel pattern must be a non-empty string, got {pattern!r}")
    for c in pattern:
        if c not in CHANNEL_CHARACTERS and c not in GLOB_CHARACTERS:
            raise InvalidChannel(f"channel pattern {pattern!r} has character {c!r}, which no "
                                 f"channel name can contain (channels use {ALLOWED_CHARACTERS})")
    return pattern


def channel_type(name: str) -> ChannelType:
    if name.startswith(PRESENCE_PREFIX):
        return ChannelType.PRESENCE
    if name.startswith(PRIVATE_PREFIX):
        return ChannelType.PRIVATE
    return ChannelType.PUBLIC


def needs_auth(name: str) -> bool:
    return channel_type(name) is not ChannelType.PUBLIC


def is_reserved(name: str) -> bool:
    """Whether ``name`` is one of channelcast's own (see the module docstring)."""
    for prefix in (PRESENCE_PREFIX, PRIVATE_PREFIX):
        if name.startswith(prefix):
            return name[len(prefix):].startswith(RESERVED_MARK)
    return name.startswith(RESERVED_MARK)


def validate_client_channel(name: object) -> ChannelName:
    """:func:`validate_channel`, and not a reserved name: for channels a client names."""
    channel = validate_channel(name)
    if is_reserved(channel):
        raise InvalidChannel(f"channel name {channel[:40]!r} is reserved: the part after the "
                             f"type prefix must not start with {RESERVED_MARK!r}")
    return channel
