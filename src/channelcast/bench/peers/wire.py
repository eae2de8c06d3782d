"""The client side of each server's subscribe protocol, sans-I/O: frames to send, frames
received and what they mean, and the stamps the benchmark reads out of deliveries.

Owns four small protocols, each as pure functions over ``str`` frames (no socket, no
``await``; :mod:`channelcast.bench.fanout_client` moves the bytes):

* ``channelcast``: the gateway's JSON protocol (docs/protocol.md): wait for ``connected``,
  send ``subscribe``, wait for ``subscribed``.
* ``centrifugo``: Centrifugo's JSON protocol (v6): a ``connect`` command then a
  ``subscribe`` command, each answered by a reply with the same ``id``; publications
  arrive as ``{"push": {"channel": ..., "pub": {"data": ...}}}``. Several messages may
  share one WebSocket frame, one JSON object per line. The server's application-level
  ping is an empty object ``{}``, answered with ``{}``.
* ``pusher``: the Pusher Channels protocol 7 (sockudo): ``pusher:connection_established``,
  ``pusher:subscribe``, ``pusher_internal:subscription_succeeded``; an event's ``data`` is
  a JSON *string*, so its stamp arrives with escaped quotes. ``pusher:ping`` is answered
  with ``pusher:pong``.
* ``plain``: no protocol: every frame is a delivery.

Plus the Pusher HTTP API's query-string signature and Chromium's WebSocket offer. It
never decides what to measure; it must never import an I/O library.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

Mode = Literal["channelcast", "centrifugo", "pusher", "plain"]
MODES: tuple[Mode, ...] = ("channelcast", "centrifugo", "pusher", "plain")

CHROMIUM_EXTENSIONS = "permessage-deflate; client_max_window_bits"
"""What Chromium offers in ``Sec-WebSocket-Extensions`` (every version since 2014)."""

CHROMIUM_USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
                       "Gecko) Chrome/131.0.0.0 Safari/537.36")
"""The User-Agent of the browser-like handshake (a current Chromium on Linux)."""

BROWSER_HEADERS: tuple[tuple[str, str], ...] = (
    ("Pragma", "no-cache"),
    ("Cache-Control", "no-cache"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "en-US,en;q=0.9"),
)
"""The other request headers Chromium sends with a WebSocket handshake (besides Origin,
User-Agent and the WebSocket ones the client library writes)."""

STAMP = re.compile(r'\\?"t\\?":(\d+),\\?"r\\?":(\d+)')
"""A delivery's stamp: ``"t":<intended send time, ns>,"r":<phase tag>``, with the quotes
escaped or not (a Pusher event's data is a JSON string inside the JSON frame)."""


def stamps(frame: str) -> list[tuple[int, int]]:
    """(intended send ns, phase tag) of every delivery in one frame (a Centrifugo frame
    can carry several), in order; [] for a frame that is no delivery."""
    return [(int(m.group(1)), int(m.group(2))) for m in STAMP.finditer(frame)]


class ProtocolError(Exception):
    """The server refused the subscription or spoke something unexpected."""


@dataclass
class Handshake:
    """The subscribe exchange of one connection, as a state machine: feed it each frame
    received (:meth:`receive`, which returns the frames to send) until :attr:`done`."""

    mode: Mode
    channel: str
    done: bool = False
    _step: int = 0

    def start(self) -> list[str]:
        """Frames to send as soon as the WebSocket is open."""
        if self.mode == "plain":
            self.done = True
            return []
        if self.mode == "centrifugo":
            self._step = 1
            return [_json({"id": 1, "connect": {}})]
        return []  # channelcast and pusher: the server speaks first

    def receive(self, frame: str) -> list[str]:
        """The frames to send in answer to ``frame``; raises ProtocolError on a refusal."""
        if self.done:
            return []
        if self.mode == "channelcast":
            return self._channelcast(json.loads(frame))
        if self.mode == "centrifugo":
            out: list[str] = []
            for item in centrifugo_messages(frame):
                out += self._centrifugo(item)
            return out
        if self.mode == "pusher":
            return self._pusher(json.loads(frame))
        return []

    def _channelcast(self, msg: dict[str, Any]) -> list[str]:
        kind = msg.get("type")
        if kind == "error":
            raise ProtocolError(f"channelcast: {msg}")
        if self._step == 0 and kind == "connected":
            self._step = 1
            return [_json({"type": "subscribe", "channel": self.channel})]
        if self._step == 1 and kind == "subscribed" and msg.get("channel") == self.channel:
            self.done = True
        return []

    def _centrifugo(self, msg: dict[str, Any]) -> list[str]:
        if not msg:
            return [_json({})]  # the server's ping
        if "error" in msg:
            raise ProtocolError(f"centrifugo: {msg}")
        if self._step == 1 and msg.get("id") == 1 and "connect" in msg:
            self._step = 2
            return [_json({"id": 2, "subscribe": {"channel": self.channel}})]
        if self._step == 2 and msg.get("id") == 2 and "subscribe" in msg:
            self.done = True
        return []

    def _pusher(self, msg: dict[str, Any]) -> list[str]:
        event = msg.get("event")
        if event in ("pusher:error", "pusher:subscription_error"):
            raise ProtocolError(f"pusher: {msg}")
        if event == "pusher:ping":
            return [pusher_pong()]
        if self._step == 0 and event == "pusher:connection_established":
            self._step = 1
            return [_json({"event": "pusher:subscribe", "data": {"channel": self.channel}})]
        if (self._step == 1 and event == "pusher_internal:subscription_succeeded"
                and msg.get("channel") == self.channel):
            self.done = True
        return []


def keepalive_reply(mode: Mode, frame: str) -> str | None:
    """The answer a subscribed client owes an application-level ping, else None.

    Cheap on deliveries: only a frame that can be a ping is parsed."""
    if mode == "centrifugo" and frame.strip() == "{}":
        return _json({})
    if mode == "pusher" and frame.startswith('{"event":"pusher:ping"'):
        return pusher_pong()
    return None


def centrifugo_messages(frame: str) -> list[dict[str, Any]]:
    """The JSON objects of one Centrifugo frame (newline-delimited)."""
    out = []
    for line in frame.split("\n"):
        line = line.strip()
        if line:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise ProtocolError(f"centrifugo: not an object: {line[:200]}")
            out.append(item)
    return out


def pusher_pong() -> str:
    return _json({"event": "pusher:pong", "data": {}})


def pusher_path(app_key: str) -> str:
    """The WebSocket path a Pusher client (pusher-js 8) connects to."""
    return f"/app/{app_key}?protocol=7&client=js&version=8.4.0&flash=false"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- publishing ---------------------------------------------------------------------------


def pusher_signed_query(method: str, path: str, body: bytes, app_key: str, app_secret: str,
                        timestamp: int | None = None) -> str:
    """The query string that authenticates a Pusher HTTP API request (``auth_key``,
    ``auth_timestamp``, ``auth_version``, ``body_md5``, ``auth_signature``): HMAC-SHA256
    of ``METHOD\\nPATH\\nsorted query`` with the app secret, hex."""
    params = {"auth_key": app_key,
              "auth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
              "auth_version": "1.0"}
    if body:
        params["body_md5"] = hashlib.md5(body).hexdigest()  # the protocol says MD5
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    signature = hmac.new(app_secret.encode(), f"{method.upper()}\n{path}\n{query}".encode(),
                         hashlib.sha256).hexdigest()
    return urlencode({**params, "auth_signature": signature})


def pusher_event(channel: str, event: str, data: Any) -> dict[str, Any]:
    """One Pusher event for the HTTP API: ``data`` goes as a JSON string, as the Pusher
    server libraries send it."""
    return {"name": event, "channel": channel, "data": _json(data)}


def centrifugo_publish(channel: str, data: Any) -> dict[str, Any]:
    return {"channel": channel, "data": data}
