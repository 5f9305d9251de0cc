"""The blocking client: ``pyws.connect(url)`` for scripts and tests, the shape websocket-client
users know. It runs on the same C engine as everything else, on a private loop that its calls
drive; a ClientConnection belongs to the thread that uses it."""
from __future__ import annotations

import collections
import json
import time
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Union

from ._send import Payload, Sendable
from .connection import Connection
from .constants import EV_CLOSE, EV_WS_MSG, OP_BINARY, OP_TEXT
from .errors import ConnectionClosed, closed_error
from .manager import Manager
from .message import Headers, HttpMessage, Message, check_close_code, close_reason_bytes
from .options import resolve_options
from .tls import TlsOpts

_DEFAULT: Any = object()
_SLICE_MS = 1000  # a blocking wait wakes at least this often (Ctrl-C stays responsive)


class ClientConnection:
    """An open client WebSocket (from :func:`pyws.connect`).

    ``send`` / ``send_text`` / ``send_bytes`` / ``send_json`` write at once; ``recv`` waits for
    the next :class:`Message` and raises :class:`pyws.ConnectionClosed` (with ``code`` and
    ``reason``) once the connection has closed and every message received before that has been
    read. Iterating yields messages until a normal close (1000/1001). Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(self, url: str, *, timeout: Optional[float], headers: Optional[Dict[str, str]],
                 origin: Optional[str], subprotocols: Optional[List[str]], max_size: int,
                 open_timeout: Optional[float], close_timeout: float, max_redirects: int,
                 tls: Optional[TlsOpts] = None, **options: Any) -> None:
        self.timeout = timeout
        self.close_timeout = close_timeout
        self._queue: Deque[Message] = collections.deque()
        self._closed = False
        resolve_options(options, "pyws.connect()")
        # echoing what we may receive must fit the write queue: size it from max_size
        options.setdefault("write_limit", max(16 * 1024 * 1024, 2 * max_size))
        self._mgr = Manager(None, max_message_size=max_size, close_timeout=close_timeout,
                            handshake_timeout=open_timeout or 0, **options)
        try:
            self._conn: Connection = self._mgr.ws_connect(
                url, self._on_event, headers=headers, protocols=subprotocols, origin=origin,
                max_redirects=max_redirects, tls=tls)
            self._wait_open(open_timeout)
        except BaseException:
            self._mgr.close()
            raise

    # ------------------------------------------------------------------ plumbing
    def _on_event(self, conn: Connection, ev: int, data: Any) -> None:
        if ev == EV_WS_MSG:
            self._queue.append(data.detach())  # read after poll() returns: own the payload
        elif ev == EV_CLOSE:
            self._closed = True

    def _wait_open(self, open_timeout: Optional[float]) -> None:
        deadline = None if not open_timeout else time.monotonic() + open_timeout + 1.0
        while not self._conn.is_websocket and not self._closed:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the WebSocket handshake did not complete in "
                                   f"{open_timeout} s")
            self._mgr.poll(_SLICE_MS)
        if not self._conn.is_websocket:
            err = self._conn.error
            if err is not None:
                raise err
            raise ConnectionError("the connection closed during the handshake")

    def _flush(self) -> None:
        self._mgr.poll(0)
        # a blocking send blocks while the peer is slow, rather than queueing up to write_limit
        while self._conn.above_high_water and not self._closed:
            self._mgr.poll(_SLICE_MS)

    # ------------------------------------------------------------------ sending
    def send(self, data: Sendable, binary: Optional[bool] = None,
             compress: Optional[bool] = None) -> None:
        """Send a whole message: a str as text, bytes-like as binary, a :class:`Message` with
        its own opcode. ``binary=True`` sends it as binary, ``binary=False`` as text. With
        permessage-deflate agreed, ``compress=False`` sends this message uncompressed and
        ``compress=True`` compresses it even under the threshold. The same as
        :meth:`pyws.Connection.send`."""
        self._conn.send(data, binary, compress)
        self._flush()

    def send_text(self, text: str, compress: Optional[bool] = None) -> None:
        """Send a text message."""
        self._conn.ws_send(text, OP_TEXT, True, compress)
        self._flush()

    def send_bytes(self, data: Union[bytes, bytearray, memoryview],
                   compress: Optional[bool] = None) -> None:
        """Send a binary message."""
        self._conn.ws_send(data, OP_BINARY, True, compress)
        self._flush()

    #: Cello's name for :meth:`send_bytes`.
    send_binary = send_bytes

    def send_json(self, obj: Any, dumps: Callable[[Any], str] = json.dumps,
                  compress: Optional[bool] = None) -> None:
        """Send ``dumps(obj)`` as a text message."""
        self.send_text(dumps(obj), compress)

    def send_fragments(self, fragments: Iterable[Sendable], binary: Optional[int] = None,
                       compress: Optional[bool] = None, *, op: Optional[int] = None) -> None:
        """Send one message made of the pieces in ``fragments``, one frame each; ``binary``
        None makes it what its first piece is. See :meth:`pyws.Connection.send_fragments`."""
        self._conn.send_fragments(fragments, binary, compress, op=op)
        self._flush()

    @property
    def extensions(self) -> str:
        """The extensions agreed in the handshake (``"permessage-deflate; ..."``) or ``""``."""
        return self._conn.extensions

    def ping(self, data: Payload = b"") -> None:
        """Send a ping (at most 125 bytes); the server's pong is absorbed by the C core."""
        self._conn.ping(data)
        self._flush()

    # ------------------------------------------------------------------ receiving
    def recv(self, timeout: Optional[float] = _DEFAULT) -> Message:
        """The next message. Waits up to ``timeout`` seconds (default: the ``timeout`` given
        to connect; None waits forever) and raises ``TimeoutError`` then. Raises
        :class:`pyws.ConnectionClosed` once closed and drained."""
        t = self.timeout if timeout is _DEFAULT else timeout
        deadline = None if t is None else time.monotonic() + t
        expired_once = False
        while not self._queue:
            if self._closed:
                raise closed_error(self.close_code, self.close_reason)
            if deadline is None:
                wait = _SLICE_MS
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    if expired_once:
                        raise TimeoutError(f"no message within {t} s")
                    expired_once = True  # recv(0) still reads what has already arrived
                    wait = 0
                else:
                    wait = min(_SLICE_MS, max(1, int(left * 1000)))
            self._mgr.poll(wait)
        return self._queue.popleft()

    def recv_json(self, timeout: Optional[float] = _DEFAULT) -> Any:
        """The next message parsed as JSON."""
        return self.recv(timeout).json()

    def __iter__(self) -> Iterator[Message]:
        """Messages until the connection closes normally (1000 or 1001); any other close
        raises ConnectionClosed."""
        while True:
            try:
                yield self.recv(None)
            except ConnectionClosed as exc:
                if exc.code in (1000, 1001):
                    return
                raise

    # ------------------------------------------------------------------ closing
    def close(self, code: int = 1000, reason: Union[str, bytes] = "") -> None:
        """Close with ``code`` and ``reason`` (str, or UTF-8 bytes; at most 123 bytes:
        ``ValueError`` past that, before anything is closed): send the close frame, wait (up
        to ``close_timeout``) for the server to answer and end TCP, then free the loop."""
        check_close_code(code, True)
        close_reason_bytes(reason)
        if self._mgr._loop is None:
            return
        try:
            if not self._closed:
                self._conn.close(code, reason)
                deadline = time.monotonic() + self.close_timeout + 1.0
                while not self._closed and time.monotonic() < deadline:
                    self._mgr.poll(50)
        finally:
            self._mgr.close()
            self._closed = True

    def __enter__(self) -> "ClientConnection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        mgr = getattr(self, "_mgr", None)
        if mgr is not None and mgr._loop is not None:
            try:
                mgr.close()
            except Exception:
                pass

    # ------------------------------------------------------------------ state
    @property
    def closed(self) -> bool:
        """True once the connection has closed."""
        return self._closed

    @property
    def close_code(self) -> Optional[int]:
        """The close code once closed (1006 if TCP ended without a close frame)."""
        return self._conn.close_code

    @property
    def close_reason(self) -> str:
        """The close reason once closed."""
        return self._conn.close_reason

    @property
    def subprotocol(self) -> Optional[str]:
        """The subprotocol the server selected, or None."""
        return self._conn.subprotocol

    @property
    def response(self) -> HttpMessage:
        """The server's 101 response."""
        assert self._conn.response is not None
        return self._conn.response

    @property
    def response_headers(self) -> Headers:
        """Headers of the server's 101 response."""
        return self.response.headers

    @property
    def remote_addr(self) -> str:
        """The server's address as ``"ip:port"``."""
        return self._conn.remote_addr

    @property
    def tls_info(self) -> Optional[str]:
        """TLS version and cipher for wss:// (``"TLSv1.3 TLS_AES_256_GCM_SHA384"``), else None."""
        return self._conn.tls_info


def connect(url: str, *, timeout: Optional[float] = None,
            headers: Optional[Dict[str, str]] = None, origin: Optional[str] = None,
            subprotocols: Optional[List[str]] = None, max_size: int = 4 * 1024 * 1024,
            open_timeout: Optional[float] = 10.0, close_timeout: float = 10.0,
            max_redirects: int = 5, tls: Optional[TlsOpts] = None,
            **options: Any) -> ClientConnection:
    """Open a WebSocket to ``url`` and return a blocking :class:`ClientConnection`.

    - ``timeout``: default for ``recv()`` in seconds (None: wait forever).
    - ``headers``: extra request headers; ``origin``: the Origin header.
    - ``subprotocols``: offered in Sec-WebSocket-Protocol; the server's choice is
      ``.subprotocol`` (a choice we did not offer fails the handshake).
    - ``max_size``: largest message accepted, bytes (default 4 MiB; more closes with 1009).
    - ``open_timeout``: seconds for connect + handshake (default 10); ``close_timeout``:
      seconds for the close handshake (default 10).
    - ``max_redirects``: 301/302/303/307/308 answers followed (default 5).
    - ``tls``: for ``wss://``, a :class:`pyws.TlsOpts` with a custom ``ca``, a client ``cert``
      and ``key`` (mutual TLS), or ``insecure_skip_verify=True``. By default the server's chain
      is verified against the system's trust store and its host name is checked (SNI sent).
    - further keyword options: the Manager options (``write_limit``, ``heartbeat`` ...).

    Raises :class:`pyws.HandshakeError` (``.status`` and ``.headers`` of a non-101 answer),
    ``ConnectionRefusedError`` / ``ConnectionError`` / ``TimeoutError`` for the TCP connect,
    :class:`pyws.TlsError` for TLS (with OpenSSL's reason), ``ValueError`` for a bad URL.
    """
    return ClientConnection(url, timeout=timeout, headers=headers, origin=origin,
                            subprotocols=subprotocols, max_size=max_size,
                            open_timeout=open_timeout, close_timeout=close_timeout,
                            max_redirects=max_redirects, tls=tls, **options)

