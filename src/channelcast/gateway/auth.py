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
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from channelcast.errors import AuthError
from channelcast.gateway.idempotency import DEFAULT_MAX_BYTES, DEFAULT_MAX_REQUESTS, AnswerMemory
from channelcast.message import ulid_from
from channelcast.types import JSONValue

HEADER_KEY = "X-Channelcast-Key"
HEADER_TIMESTAMP = "X-Channelcast-Timestamp"
HEADER_SIGNATURE = "X-Channelcast-Signature"
DEFAULT_REPLAY_WINDOW_S = 300


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
                 user_id: str | None = None, user_info: JSONValue = None) -> dict[str, str]:
    """What an auth endpoint returns: ``{"auth": ...}`` plus ``channel_data`` for presence."""
    if channel.startswith("presence-"):
        if not user_id:
            raise AuthError("a presence channel signature needs a user_id")
        channel_data = json.dumps({"user_id": user_id, "user_info": user_info},
                                  separators=(",", ":"))
        return {"auth": sign_channel(app_key, app_secret, connection_id, channel, channel_data),
                "channel_data": channel_data}
    return {"auth": sign_channel(app_key, app_secret, connection_id, channel)}


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
            raise AuthError("unknown app key")
        try:
            ts = int(str(ts_text))
        except ValueError:
            raise AuthError(f"{HEADER_TIMESTAMP} must be Unix seconds") from None
        if abs(now - ts) > self.window_s:
            raise AuthError(f"request timestamp is outside the {self.window_s}s replay window")
        expected = _hmac(self.app_secret, str(ts).encode() + b"." + body)
        if not hmac.compare_digest(str(signature).encode(), expected.encode()):
            raise AuthError("invalid request signature")
        return SignedRequest(ts, expected)
