"""The Pusher signatures: channel auth, user sign-in, the HTTP API's query string, webhooks.

Pure functions over strings and bytes (the clock is a parameter). All are hex
HMAC-SHA256 under the app secret:

* channel auth ``key:hmac(socket_id ":" channel [":" channel_data])``, checked on the
  exact ``channel_data`` string (the same formula as the native protocol's, see
  :mod:`channelcast.gateway.auth`);
* user sign-in ``key:hmac(socket_id "::user::" user_data)``;
* HTTP API: ``auth_signature = hmac("METHOD\\nPATH\\n" + query)``, the query being every
  parameter but ``auth_signature``, keys lower-cased, sorted, ``key=value`` joined with
  ``&``, values as sent (not URL-encoded); ``auth_timestamp`` within
  :data:`TIMESTAMP_WINDOW_S`; ``body_md5`` the hex MD5 of the body (required when there
  is a body; checked on a GET too when given, as the Python SDK sends it);
* webhooks: ``X-Pusher-Signature = hmac(body)`` with ``X-Pusher-Key``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from channelcast.errors import AuthError
from channelcast.gateway.auth import channel_string_to_sign, verify_channel
from channelcast.gateway.pusher.apps import PusherApp

TIMESTAMP_WINDOW_S = 600
"""How far ``auth_timestamp`` may be from the server's clock, in seconds."""

__all__ = ["TIMESTAMP_WINDOW_S", "query_to_sign", "sign_channel", "sign_query",
           "sign_user", "verify_channel_auth", "verify_query", "verify_user",
           "webhook_signature"]


def _hmac(secret: str, text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def sign_channel(app: PusherApp, socket_id: str, channel: str,
                 channel_data: str | None = None) -> str:
    """The ``auth`` a client sends to subscribe to a private, encrypted or presence channel."""
    text = channel_string_to_sign(socket_id, channel, channel_data)
    return f"{app.key}:{_hmac(app.secret, text)}"


def verify_channel_auth(app: PusherApp, socket_id: str, channel: str, auth: object,
                        channel_data: str | None = None) -> None:
    """Raise AuthError unless ``auth`` is the app's signature for exactly these values."""
    verify_channel(app.key, app.secret, socket_id, channel, auth, channel_data)


def sign_user(app: PusherApp, socket_id: str, user_data: str) -> str:
    """The ``auth`` of a ``pusher:signin`` with this exact ``user_data`` string."""
    return f"{app.key}:{_hmac(app.secret, f'{socket_id}::user::{user_data}')}"


def verify_user(app: PusherApp, socket_id: str, auth: object, user_data: str) -> None:
    """Raise AuthError unless ``auth`` signs this sign-in."""
    if not isinstance(auth, str) or ":" not in auth:
        raise AuthError("auth must be a string 'key:signature'")
    key, _, signature = auth.partition(":")
    if not hmac.compare_digest(key.encode(), app.key.encode()):
        raise AuthError("auth names another app key")
    expected = sign_user(app, socket_id, user_data).partition(":")[2]
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise AuthError("invalid user signature")


def query_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """``METHOD\\nPATH\\nk=v&...`` over every parameter but ``auth_signature``."""
    items = sorted((k.lower(), v) for k, v in params.items() if k != "auth_signature")
    return f"{method.upper()}\n{path}\n" + "&".join(f"{k}={v}" for k, v in items)


def sign_query(app: PusherApp, method: str, path: str, params: Mapping[str, str],
               body: bytes = b"", timestamp: int | None = None) -> dict[str, str]:
    """``params`` plus the auth parameters of one HTTP API request (what an SDK sends)."""
    out = dict(params)
    out.update(auth_key=app.key, auth_version="1.0",
               auth_timestamp=str(int(time.time()) if timestamp is None else timestamp))
    if body:
        out["body_md5"] = hashlib.md5(body).hexdigest()
    out["auth_signature"] = _hmac(app.secret, query_to_sign(method, path, out))
    return out


def verify_query(app: PusherApp, method: str, path: str, params: Mapping[str, str],
                 body: bytes, now: float | None = None) -> None:
    """Raise AuthError unless the request carries this app's valid, fresh signature."""
    now = time.time() if now is None else now
    missing = [k for k in ("auth_key", "auth_timestamp", "auth_signature") if k not in params]
    if missing:
        raise AuthError(f"missing {', '.join(missing)}")
    if not hmac.compare_digest(params["auth_key"].encode(), app.key.encode()):
        raise AuthError("auth_key is not this app's key")
    if params.get("auth_version", "1.0") != "1.0":
        raise AuthError("auth_version must be 1.0")
    stamp = params["auth_timestamp"]
    # 1-12 ASCII digits: int() of thousands of digits is slow, past 4300 it raises, and a
    # huge number overflows the float comparison below (a 500 instead of a 401).
    if not (isinstance(stamp, str) and 0 < len(stamp) <= 12 and stamp.isascii()
            and stamp.isdigit()):
        raise AuthError("auth_timestamp must be Unix seconds")
    ts = int(stamp)
    if abs(now - ts) > TIMESTAMP_WINDOW_S:
        raise AuthError(f"auth_timestamp is more than {TIMESTAMP_WINDOW_S} s away from the "
                        "server's clock")
    md5 = params.get("body_md5")
    if body or md5 is not None:
        if md5 is None:
            raise AuthError("body_md5 is missing")
        if not hmac.compare_digest(md5.encode(), hashlib.md5(body).hexdigest().encode()):
            raise AuthError("body_md5 does not match the body")
    expected = _hmac(app.secret, query_to_sign(method, path, params))
    if not hmac.compare_digest(params["auth_signature"].encode(), expected.encode()):
        raise AuthError("invalid auth_signature")


def webhook_signature(app: PusherApp, body: bytes) -> str:
    """``X-Pusher-Signature`` of a webhook body."""
    return _hmac(app.secret, body)
