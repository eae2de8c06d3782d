"""A WebSocket client on a bare socket, for tests that must send what a library would refuse
to (text frames that are not UTF-8, oversized frame headers) or leave without a close frame,
and read the server's close code exactly."""

from __future__ import annotations

import base64
import os
import socket
import struct


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True,
                 length: int | None = None) -> bytes:
    """A client frame (masked, RFC 6455 5.2); ``length`` claims another payload length
    (a header for a frame that is never sent in full)."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawWebSocket:
    """A blocking client: :meth:`connect` does the handshake; :meth:`frames` reads the
    server's frames as (opcode, payload) until the server closes the TCP connection."""

    def __init__(self, port: int, path: str, timeout_s: float = 10.0, *,
                 rcvbuf: int | None = None) -> None:
        """``rcvbuf``: the socket's receive buffer, set before connecting (so the TCP
        window stays that small: a client that stops reading fills it at once)."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout_s)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            assert chunk, f"closed during the handshake: {head!r}"
            head += chunk
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, n: int) -> bytes | None:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next server frame (opcode, payload), or None at the end of the stream."""
        head = self._read(2)
        if head is None:
            return None
        n = head[1] & 0x7F
        if n == 126:
            more = self._read(2)
            assert more is not None
            n = int.from_bytes(more, "big")
        elif n == 127:
            more = self._read(8)
            assert more is not None
            n = int.from_bytes(more, "big")
        payload = self._read(n)
        assert payload is not None
        return head[0] & 0x0F, payload

    def text_frame(self) -> bytes:
        """The next text frame's payload (skipping pings)."""
        while True:
            frame = self.next_frame()
            assert frame is not None, "closed before a text frame"
            if frame[0] == 0x1:
                return frame[1]
            assert frame[0] == 0x9, frame

    def close_code(self) -> tuple[int, str]:
        """Read up to the server's close frame: its (code, reason)."""
        while True:
            frame = self.next_frame()
            assert frame is not None, "the connection ended without a close frame"
            opcode, payload = frame
            if opcode == 0x8:
                (code,) = struct.unpack("!H", payload[:2])
                return code, payload[2:].decode()

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Cut the TCP connection (RST), no close frame."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
