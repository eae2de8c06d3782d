"""Signatures for channel subscriptions and for the HTTP publish API. No I/O.

Channel auth (``private-*`` and ``presence-*``): the application's backend signs
``"{connection_id}:{channel}"`` (for presence ``"{connection_id}:{channel}:{channel_data}"``,
where ``channel_data`` is the exact JSON string the client sends) with HMAC-SHA256 under the
app secret. The client sends ``auth = "{app_key}:{hex signature}"``.

Publish API: the caller sends ``X-Channelcast-Key``, ``X-Channelcast-Timestamp`` (Unix
seconds) and ``X-Channelcast-Signature`` = hex HMAC-SHA256 over ``"{timestamp}.{body}"``.
A request outside the replay window is refused. A request whose signature was already
seen inside the window is an idempotent retry (:class:`RequestVerifier` hands it the
first one's answer through :mod:`.idempotency`), and the default message ids of a signed
request derive from its signature (:meth:`SignedRequest.message_id`), so a copy that
reaches another node still carries the same ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from channelcast.channels import validate_client_channel
from channelcast.errors import AuthError
from channelcast.gateway.idempotency import DEFAULT_MAX_BYTES, DEFAULT_MAX_REQUESTS, AnswerMemory
from channelcast.gateway.jsontext import check_text
from channelcast.gateway.jsontext import loads as strict_loads
from channelcast.gateway.presence import Member
from channelcast.message import ulid_from
from channelcast.types import JSONValue

HEADER_KEY = "X-Channelcast-Key"
HEADER_TIMESTAMP = "X-Channelcast-Timestamp"
HEADER_SIGNATURE = "X-Channelcast-Signature"
DEFAULT_REPLAY_WINDOW_S = 300
"""Seconds a publish request's timestamp may be off the server's clock, either way."""
MAX_TIMESTAMP_DIGITS = 12
"""Unix seconds have 10 digits until the year 2286; more is not a timestamp."""
_TIMESTAMP = re.compile(rf"[0-9]{{1,{MAX_TIMESTAMP_DIGITS}}}").fullmatch


def parse_timestamp(text: str) -> int:
    """``X-Channelcast-Timestamp`` -> Unix seconds: 1 to :data:`MAX_TIMESTAMP_DIGITS` ASCII
    digits, nothing else (no sign, space, underscore or other script's digits, which
    ``int()`` would take); raises AuthError."""
    if not _TIMESTAMP(text):
        raise AuthError(f"{HEADER_TIMESTAMP} must be Unix seconds: 1 to "
                        f"{MAX_TIMESTAMP_DIGITS} ASCII digits")
    return int(text)


def _hmac(secret: str, text: bytes) -> str:
    return hmac.new(secret.encode(), text, hashlib.sha256).hexdigest()


def channel_string_to_sign(connection_id: str, channel: str,
                           channel_data: str | None = None) -> str:
    base = f"{connection_id}:{channel}"
    return base if channel_data is None else f"{base}:{channel_data}"


def sign_channel(app_key: str, app_secret: str, connection_id: str, channel: str,
                 channel_data: str | None = None) -> str:
    """The ``auth`` value a client sends to subscribe to a private or presence channel."""
    text = channel_string_to_sign(connection_id, channel, channel_data)
    return f"{app_key}:{_hmac(app_secret, text.encode())}"


def channel_auth(app_key: str, app_secret: str, connection_id: str, channel: str, *,
                 user_id: str | int | None = None,
                 user_info: JSONValue = None) -> dict[str, str]:
    """What an auth endpoint returns: ``{"auth": ...}`` plus ``channel_data`` for presence.

    Raises AuthError naming the problem for what the gateway would refuse: a channel name
    it refuses (``channels.validate_client_channel``), a presence channel without
    ``user_id`` or with one that is not a string of 1 to 128 characters (an integer is
    sent as a JSON number, which the gateway takes as its digits), a ``user_info`` that is
    not strict JSON (NaN, Infinity), nests too deep or is over
    :data:`~.presence.MAX_USER_INFO_BYTES` as JSON, or text with a lone surrogate (which
    UTF-8 cannot encode) in any argument."""
    try:
        for text in (connection_id, channel):
            check_text(text)
        validate_client_channel(channel)
        if not channel.startswith("presence-"):
            return {"auth": sign_channel(app_key, app_secret, connection_id, channel)}
        if user_id is None or user_id == "":
            raise AuthError("a presence channel signature needs a user_id")
        member = {"user_id": user_id, "user_info": user_info}
        Member.parse(member)  # what the gateway will check
        channel_data = json.dumps(member, separators=(",", ":"), allow_nan=False)
        strict_loads(channel_data)  # and as the text it will read
    except (ValueError, RecursionError) as exc:  # InvalidChannel is a ValueError too
        why = "nesting too deep" if isinstance(exc, RecursionError) else exc
        raise AuthError(f"cannot sign {channel!a} for {connection_id!a}: {why}") from None
    return {"auth": sign_channel(app_key, app_secret, connection_id, channel, channel_data),
            "channel_data": channel_data}


def verify_channel(app_key: str, app_secret: str, connection_id: str, channel: str,
                   auth: object, channel_data: str | None = None) -> None:
    """Raise AuthError unless ``auth`` is this app's signature for exactly these values."""
    if auth is None or auth == "":
        raise AuthError(f"channel {channel!r} needs an auth signature")
    if not isinstance(auth, str):
        raise AuthError("auth must be a string 'key:signature'")
    key, sep, signature = auth.partition(":")
    if not sep or not signature:
        raise AuthError("auth must look like 'key:signature'")
    if not hmac.compare_digest(key.encode(), app_key.encode()):
        raise AuthError("auth names an unknown app key")
    expected = _hmac(app_secret, channel_string_to_sign(
        connection_id, channel, channel_data).encode())
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise AuthError(f"invalid signature for channel {channel!r}")


def sign_request(app_key: str, app_secret: str, body: bytes,
                 timestamp: int | None = None) -> dict[str, str]:
    """Headers that authenticate one publish API request with this body."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {HEADER_KEY: app_key, HEADER_TIMESTAMP: ts,
            HEADER_SIGNATURE: _hmac(app_secret, ts.encode() + b"." + body)}


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A publish API request whose signature checked out."""

    timestamp: int
    """Unix seconds, from ``X-Channelcast-Timestamp``."""
    signature: str
    """The hex HMAC-SHA256 (64 lowercase hex digits)."""

    def message_id(self, index: int) -> str:
        """The default id of message ``index`` (0-based) of this request: a ULID whose
        time part is the request's timestamp (in ms) and whose 80-bit random part is the
        signature's first 64 bits followed by ``index`` in 16 bits. Every node derives the
        same ids for the same signed request, and one request's ids sort in message order.
        """
        if not 0 <= index < 1 << 16:
            raise ValueError(f"message index {index} is outside 0..65535")
        return ulid_from(self.timestamp * 1000, (int(self.signature[:16], 16) << 16) | index)


class RequestVerifier:
    """Checks publish API signatures inside a replay window, and makes a repeated signed
    request idempotent with a bounded memory of the answers given inside the window
    (per node; :class:`~channelcast.gateway.idempotency.AnswerMemory`)."""

    def __init__(self, app_key: str, app_secret: str, *,
                 window_s: int = DEFAULT_REPLAY_WINDOW_S, remember: int = DEFAULT_MAX_REQUESTS,
                 remember_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.app_key = app_key
        self.app_secret = app_secret
        self.window_s = window_s
        self.answers = AnswerMemory(window_s, max_requests=remember, max_bytes=remember_bytes)

    async def once(self, request: SignedRequest, run: Callable[[], Awaitable[bytes]],
                   now: float | None = None) -> bytes:
        """``run()``'s answer for this request, or the answer already given (or being
        computed) for an identical one inside the window; see
        :meth:`~channelcast.gateway.idempotency.AnswerMemory.once`."""
        return await self.answers.once(request.signature, request.timestamp, run,
                                       time.time() if now is None else now)

    def verify(self, headers: Mapping[str, Any], body: bytes,
               now: float | None = None) -> SignedRequest:
        """The request's timestamp and signature; raises AuthError (missing headers,
        unknown key, a timestamp outside the window, a wrong signature). A repeated
        request is not refused here: :meth:`once` answers it."""
        now = time.time() if now is None else now
        key = headers.get(HEADER_KEY) or headers.get(HEADER_KEY.lower())
        ts_text = headers.get(HEADER_TIMESTAMP) or headers.get(HEADER_TIMESTAMP.lower())
        signature = headers.get(HEADER_SIGNATURE) or headers.get(HEADER_SIGNATURE.lower())
        if not key or not ts_text or not signature:
            raise AuthError(f"missing {HEADER_KEY}, {HEADER_TIMESTAMP} or {HEADER_SIGNATURE}")
        if not hmac.compare_digest(str(key).encode(), self.app_key.encode()):
            raise AuthError("unknown app key: this API takes the key of gateway.app_key; "
                            "the keys of [[apps]] are for the Pusher HTTP API "
                            "(/apps/{app_id}/events)")
        ts_text = str(ts_text)
        ts = parse_timestamp(ts_text)
        if abs(math.floor(now) - ts) > self.window_s:  # whole seconds: as wide both ways
            raise AuthError(f"request timestamp is outside the {self.window_s}s replay window")
        # Signed as sent (docs/protocol.md): "0170..." and "170..." are different texts.
        expected = _hmac(self.app_secret, ts_text.encode() + b"." + body)
        # Hex digits in either case (RFC 4648 section 8 allows both); compared in
        # constant time.
        if not hmac.compare_digest(str(signature).lower().encode("utf-8", "replace"),
                                   expected.encode()):
            raise AuthError("invalid request signature")
        return SignedRequest(ts, expected)
