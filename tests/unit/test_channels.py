"""The channel grammar: allowed characters, length, prefixes; errors name the broken rule."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channelcast.channels import (
    CHANNEL_CHARACTERS,
    MAX_CHANNEL_LENGTH,
    ChannelType,
    channel_type,
    needs_auth,
    validate_channel,
)
from channelcast.errors import ChannelcastError, InvalidChannel

CHANNEL_CHARS = string.ascii_letters + string.digits + "_-=@,.;"


@pytest.mark.parametrize("name", [
    "user.1", "public.news", "private-orders.7", "presence-room.42", "a", "A-Z_0=9@x,y;z",
    "x" * MAX_CHANNEL_LENGTH, "private-a", "presence-b", "a.b", "a..b",
])
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert validate_channel(name) == name


@pytest.mark.parametrize(("name", "rule"), [
    ("", "must not be empty"),
    ("x" * (MAX_CHANNEL_LENGTH + 1), f"{MAX_CHANNEL_LENGTH + 1} characters; the maximum is"),
    ("user 1", "character ' ' at index 4"),
    ("user/1", "character '/' at index 4"),
    ("user.*", "character '*' at index 5"),
    ("chan\n", "character '\\n' at index 4"),
    ("caf\u00e9", "character '\u00e9' at index 3"),
    ("\u0661", "character"),  # a non-ASCII digit is not 0-9
    (".user", "must not start or end with '.'"),
    ("user.", "must not start or end with '.'"),
    ("private-", "only a prefix"),
    ("presence-", "only a prefix"),
    # tgw4 finding 4: the Pusher protocol's type prefixes alone, refused there, were
    # channels on the native side (the default Pusher app's channels are these)
    ("private-encrypted-", "only a prefix"),
    ("cache-", "only a prefix"),
    ("private-cache-", "only a prefix"),
    ("presence-cache-", "only a prefix"),
    ("private-encrypted-cache-", "only a prefix"),
])
def test_invalid_names_say_which_rule_broke(name: str, rule: str) -> None:
    with pytest.raises(InvalidChannel) as info:
        validate_channel(name)
    assert rule in str(info.value)


def test_the_character_set_and_the_grammar_agree() -> None:
    assert set(CHANNEL_CHARS) == CHANNEL_CHARACTERS
    for c in map(chr, range(0x250)):
        if c in CHANNEL_CHARACTERS:
            assert validate_channel(f"a{c}b") == f"a{c}b"
        else:
            with pytest.raises(InvalidChannel, match="has character"):
                validate_channel(f"a{c}b")


@pytest.mark.parametrize("value", [None, 5, b"user.1", ["user.1"]])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(InvalidChannel, match="must be a string"):
        validate_channel(value)


def test_invalid_channel_is_in_the_tree_and_a_value_error() -> None:
    with pytest.raises(ChannelcastError):
        validate_channel("")
    with pytest.raises(ValueError, match="empty"):
        validate_channel("")


@pytest.mark.parametrize(("name", "kind", "auth"), [
    ("user.1", ChannelType.PUBLIC, False),
    ("private-orders", ChannelType.PRIVATE, True),
    ("presence-room", ChannelType.PRESENCE, True),
    ("privateer", ChannelType.PUBLIC, False),
    ("presences-x", ChannelType.PUBLIC, False),
    ("x-private-y", ChannelType.PUBLIC, False),
])
def test_type_comes_from_the_prefix(name: str, kind: ChannelType, auth: bool) -> None:
    validate_channel(name)
    assert channel_type(name) is kind
    assert needs_auth(name) is auth


@settings(deadline=None)
@given(st.text(alphabet=CHANNEL_CHARS, min_size=1, max_size=MAX_CHANNEL_LENGTH))
def test_grammar_accepts_exactly_the_documented_language(name: str) -> None:
    ok = not name.startswith(".") and not name.endswith(".") and name not in (
        "private-", "presence-")
    try:
        validate_channel(name)
    except InvalidChannel:
        assert not ok
    else:
        assert ok


@settings(deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_text_is_accepted_or_rejected_with_invalid_channel(name: str) -> None:
    if set(name) <= set(CHANNEL_CHARS) and len(name) <= MAX_CHANNEL_LENGTH and not (
            name.startswith(".") or name.endswith(".") or name in ("private-", "presence-")):
        assert validate_channel(name) == name
    else:
        with pytest.raises(InvalidChannel, match=r"."):
            validate_channel(name)
