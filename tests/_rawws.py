"""A tiny raw WebSocket client over a plain socket, for tests that must send what no real client
would: unmasked frames, reserved opcodes, bad UTF-8, truncated frames, garbage before HTTP.
Frames are built by _frames.frame (opcode first), the test suite's one frame builder.

Every socket has a timeout; every read loop is bounded by a deadline."""
from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from typing import List, Optional, Tuple

from _frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, close_payload, frame

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3's example for KEY
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

__all__ = ["KEY", "ACCEPT", "GUID", "OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_PONG",
           "OP_TEXT", "RawWS", "accept_for", "close_payload", "handshake_request"]


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def handshake_request(path: str = "/ws", key: Optional[str] = KEY, version: str = "13",
                      extra: str = "") -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade"]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version:
        lines.append(f"Sec-WebSocket-Version: {version}")
    head = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return head.encode("latin-1")


class RawWS:
    """A socket speaking raw WebSocket (client role) to 127.0.0.1:port."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.timeout = timeout

    # ------------------------------------------------------------------ bytes
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more into buf; False on EOF."""
        if time.monotonic() > deadline:
            raise TimeoutError("no data in time")
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def recv_exact(self, n: int, timeout: Optional[float] = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise EOFError(f"EOF after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_until_eof(self, timeout: Optional[float] = None, limit: int = 1 << 20) -> bytes:
        """Everything until the server closes TCP (bounded by time and size)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < limit:
            try:
                if not self._fill(deadline):
                    break
            except ConnectionResetError:
                break
        out, self.buf = self.buf, b""
        return out

    def is_eof(self, timeout: float = 3.0) -> bool:
        """True if the server closes TCP within timeout (discarding any bytes read)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            except socket.timeout:
                return False
            if not chunk:
                return True
        return False

    # ------------------------------------------------------------------ HTTP
    def read_http_head(self, timeout: Optional[float] = None) -> Tuple[int, dict, bytes]:
        """(status, headers lower-cased, raw head) of the response."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise EOFError(f"EOF inside the HTTP head: {self.buf!r}")
            if len(self.buf) > 65536:
                raise ValueError("HTTP head too long")
        end = self.buf.index(b"\r\n\r\n") + 4
        head, self.buf = self.buf[:end], self.buf[end:]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        return status, headers, head

    def handshake(self, path: str = "/ws", extra: str = "") -> dict:
        self.send(handshake_request(path, extra=extra))
        status, headers, head = self.read_http_head()
        assert status == 101, head
        assert headers["sec-websocket-accept"] == ACCEPT
        return headers

    # ------------------------------------------------------------------ frames
    def send_frame(self, payload: bytes = b"", opcode: int = OP_TEXT, fin: bool = True, *,
                   rsv: int = 0, mask: bool = True, key: Optional[bytes] = None,
                   length: Optional[int] = None) -> None:
        """Send one frame, as a client does: masked with a fresh random key (or ``key``) unless
        ``mask=False``. ``rsv`` is the RSV bits of the first byte (_frames.RSV1 = 0x40);
        ``length`` overrides the length field. Payload first, like every send in pyws; the
        builder underneath, _frames.frame, takes the opcode first."""
        k = (key if key is not None else os.urandom(4)) if mask else None
        self.send(frame(opcode, payload, fin=fin, rsv=rsv, mask=k, length=length))

    def recv_frame(self, timeout: Optional[float] = None) -> Tuple[int, bool, bytes]:
        """(opcode, fin, payload) of the next frame from the server (which must be unmasked)."""
        t = timeout or self.timeout
        b0, b1 = self.recv_exact(2, t)
        assert not (b1 & 0x80), "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.recv_exact(2, t))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.recv_exact(8, t))[0]
        payload = self.recv_exact(n, t) if n else b""
        return b0 & 0x0F, bool(b0 & 0x80), payload

    def recv_close(self, timeout: Optional[float] = None,
                   max_frames: int = 10000) -> Tuple[int, bytes, List[Tuple[int, bytes]]]:
        """Read frames until a close frame: (code, reason, frames before it)."""
        before: List[Tuple[int, bytes]] = []
        for _ in range(max_frames):
            op, _fin, payload = self.recv_frame(timeout)
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, payload[2:], before
            before.append((op, payload))
        raise AssertionError("no close frame")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawWS":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
