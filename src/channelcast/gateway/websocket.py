"""The WebSocket transport and the ``/ws`` endpoint: frames in to the session, frames out.

Outgoing frames take Starlette's ``send_text`` or, when the server offers the
:data:`DIRECT_EXTENSION` (channelcast's uvicorn protocol, :mod:`.server`), a synchronous
write straight into the connection. The protocol itself is in :mod:`.protocol` and the send
buffer in :mod:`.session`; this module never parses a frame. The endpoint hands its session
back to the node (``end_session``) however it ends, cancellation included, after noting the
client's close code for the node's log line (and, through :data:`CLOSE_EXTENSION`, the
close frames as they went on the wire: who closed, with what code). It reads the next
frame only once ``session.handle`` returned, which waits while too many replies are unread
(backpressure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from channelcast.gateway.node import Gateway, gateway_of, peer_of
from channelcast.gateway.protocol import CLOSE_SLOW_CLIENT, CLOSE_TRY_AGAIN_LATER
from channelcast.gateway.session import Outgoing, Session, WireClose

CLOSE_GRACE_S = 5.0
"""How long a close frame may wait behind unread data before the connection is aborted."""
ABORT_EXTENSION = "channelcast.abort"
"""ASGI scope extension our uvicorn protocol adds: ``{"abort": callable, "closing": () ->
bool}`` (cut the connection; whether it is closing or lost)."""
CLOSE_EXTENSION = "channelcast.close"
"""ASGI scope extension our uvicorn protocol adds: ``{"how": () -> WireClose | None}``, the
close frames as they went on the wire (who sent the first, its code and reason; 1006 when
the connection ended without one), for the node's log line: the ASGI disconnect event
does not say who closed (uvicorn reports its own 1009 or 1007 like a client's close) nor
tell a close frame without a code (1005) from a cut connection (1006)."""
CLOSE_ABNORMAL = 1006
"""RFC 6455 7.1.5: the connection closed without a close frame (never sent in one)."""
CLOSE_INVALID_DATA = 1007
"""RFC 6455 7.4.1: a text message that is not UTF-8."""
DIRECT_EXTENSION = "channelcast.direct"
"""ASGI scope extension our uvicorn protocol adds: ``{"room": () -> int, "write":
(list[str]) -> None}``, a synchronous way to write text frames past the ASGI send stack
(which cost more per frame than the socket write in the fan-out profile)."""


def _no_room() -> int:
    return 0


def _not_known() -> bool:
    return False


class WebSocketTransport:
    """Frames go through Starlette's ``send_text``, or, when the server offers the
    :data:`DIRECT_EXTENSION`, straight into the connection (see ``room``/``send_now``).
    Both raise ConnectionError (an OSError) once the client is gone."""

    def __init__(self, websocket: WebSocket, grace_s: float = CLOSE_GRACE_S) -> None:
        self.websocket = websocket
        self.grace_s = grace_s
        extensions = websocket.scope.get("extensions", {})
        direct = extensions.get(DIRECT_EXTENSION)
        self._room: Callable[[], int] = direct["room"] if direct else _no_room
        self._write: Callable[[list[str]], None] | None = direct["write"] if direct else None
        self._closing: Callable[[], bool] = extensions.get(ABORT_EXTENSION, {}).get(
            "closing", _not_known)
        self._how: Callable[[], WireClose | None] | None = extensions.get(
            CLOSE_EXTENSION, {}).get("how")
        self._sent: WireClose | None = None
        self._cut = False

    def how_closed(self) -> WireClose | None:
        """The close frames as they went on the wire (:data:`CLOSE_EXTENSION`); under a
        server without it, the close this transport sent, if any; else None. A connection
        this transport cut is 1006 with nobody's close frame: one the server had queued
        never reached the client."""
        if self._cut:
            return WireClose(CLOSE_ABNORMAL, "", None)
        if self._how is not None:
            found = self._how()
            if found is not None:
                return found
        return self._sent

    async def send(self, item: Outgoing) -> None:
        # The server learns of a lost connection a turn of the event loop later, and a
        # send that need not wait never yields: ask the connection itself first.
        if self._closing():
            raise ConnectionResetError("the connection is closing")
        try:
            await self.websocket.send_text(item.text)
        except WebSocketDisconnect as exc:
            raise ConnectionResetError(f"client went away ({exc.code})") from exc

    def room(self) -> int:
        return self._room()

    def send_now(self, items: list[Outgoing]) -> None:
        assert self._write is not None, "send_now without room"
        self._write([item.text for item in items])

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame; if a client that does not read keeps it stuck behind
        unread data for ``grace_s``, abort the TCP connection instead."""
        if self._sent is None:
            self._sent = WireClose(code, reason, "server")
        try:
            await asyncio.wait_for(self.websocket.close(code, reason), self.grace_s)
        except Exception:
            if self._abort_now():
                self._cut = True

    async def abort(self) -> None:
        """Cut the TCP connection now (the server's :data:`ABORT_EXTENSION`); under a server
        without it, :meth:`close` with 4008, which gives up after ``grace_s``."""
        if self._abort_now():
            self._cut = True
        else:
            await self.close(CLOSE_SLOW_CLIENT, "write timeout")

    def _abort_now(self) -> bool:
        abort = self.websocket.scope.get("extensions", {}).get(ABORT_EXTENSION, {})
        if "abort" not in abort:
            return False
        abort["abort"]()
        return True


async def websocket_endpoint(websocket: WebSocket) -> None:
    """``WS /ws``: one session per connection, until either side closes."""
    gw = gateway_of(websocket)
    await websocket.accept()
    if not gw.accepting:
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "server shutting down")
        return
    session = gw.open_session(WebSocketTransport(websocket), "ws", peer=peer_of(websocket))
    await run_session(websocket, gw, session)


async def run_session(websocket: WebSocket, gw: Gateway, session: Session) -> None:
    """Start ``session`` (registered with ``gw``) and hand it the client's messages until
    either side closes; then note the client's close code and end it with the node, also
    when this task is cancelled. Both WebSocket endpoints (native, Pusher) run this."""
    try:
        session.start()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                session.client_closed(int(message.get("code", 1005)),
                                      str(message.get("reason") or ""))
                break
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is not None and not session.outbox_closed:
                await session.handle(data)  # returns once the client reads its replies
    except WebSocketDisconnect as exc:
        session.client_closed(exc.code, exc.reason or "")
    finally:
        await gw.end_session(session)  # runs to the end even if this task is cancelled

