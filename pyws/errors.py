"""Exceptions raised by pyws. Every one derives from :class:`PyWSError`."""
from __future__ import annotations

from typing import Any, Mapping, Optional


class PyWSError(Exception):
    """Base class of every pyws exception."""


class ConnectionClosed(PyWSError, ConnectionError, RuntimeError):
    """The connection is closed (or closing): nothing more can be sent or received on it.

    ``code`` is the WebSocket close code (1000 normal, 1001 going away, 1006 when TCP ended
    without a close frame, ...) and ``reason`` the close reason text. It subclasses
    :class:`ConnectionError` (so ``except ConnectionError``, as Gobstopper's and Starlette's
    guides write it, catches a send on a closed socket) and :class:`RuntimeError` (so code
    written for mongoose-style libraries, ``except RuntimeError`` around a send, keeps
    working). As a ConnectionError it is an :class:`OSError` too, whose ``errno`` is None.
    """

    def __init__(self, code: Optional[int] = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        text = "connection closed"
        if code is not None:
            text += f" with code {code}"
        if reason:
            text += f" ({reason})"
        super().__init__(text)

    def __reduce__(self) -> Any:
        return (type(self), (self.code, self.reason))


class ProtocolError(ConnectionClosed):
    """The connection was closed because a side broke RFC 6455 or a message limit: ``code`` is
    1002 (protocol error), 1003 (unsupported data), 1007 (invalid UTF-8) or 1009 (message too
    big), whoever detected it, and ``reason`` says what was wrong. A
    :class:`ConnectionClosed`, so ``except ConnectionClosed`` catches it too."""


#: The close codes that mean "the protocol or a message limit was broken" (ProtocolError).
PROTOCOL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1009})


def closed_error(code: Optional[int], reason: str = "") -> ConnectionClosed:
    """The exception for a connection closed with ``code``: :class:`ProtocolError` for the
    protocol's failure codes, :class:`ConnectionClosed` otherwise."""
    if code in PROTOCOL_CLOSE_CODES:
        return ProtocolError(code, reason)
    return ConnectionClosed(code, reason)


class HandshakeError(PyWSError):
    """The opening handshake failed.

    On the server side, ``status`` is the HTTP status the client was answered with (400, or 426
    for an unsupported Sec-WebSocket-Version). On the client side, ``status`` and ``headers``
    are the server's response.
    """

    def __init__(self, message: str, status: int = 0,
                 headers: Optional[Mapping[str, str]] = None) -> None:
        self.status = status
        #: the response headers (case-insensitive when they came from a response)
        self.headers: Mapping[str, str] = headers if headers is not None else {}
        super().__init__(message)


class WrongThreadError(PyWSError, RuntimeError):
    """A loop-bound method was called from a thread other than the loop's.

    Only ``Manager.wakeup()`` and ``Manager.call_soon_threadsafe()`` may be called from other
    threads; use them to hand work to the loop thread.
    """


class LimitExceeded(ConnectionClosed):
    """A send pushed the write buffer past its hard limit (``write_limit``); the connection was
    closed with 1008. Raised so the caller knows that message was not delivered."""


class QueueFull(PyWSError):
    """The loop's cross-thread queue stayed full: :meth:`Manager.wakeup` or
    :meth:`Manager.call_soon_threadsafe` could not hand its item over in time.

    Items wait there until the loop thread's next ``poll()`` runs them. The queue is bounded
    (the ``wakeup_queue_items`` and ``wakeup_queue_bytes`` options of the Manager), so a thread
    that produces faster than the loop consumes waits for room, up to its ``timeout=``, instead
    of growing memory without limit. It is raised when that wait ran out (the loop thread is not
    polling, or polls too rarely for this rate), or at once when the loop's own thread finds the
    queue full (it cannot wait for room only it could make). The item was not queued.
    """


class TlsError(PyWSError):
    """TLS could not be set up (bad certificate or key) or its handshake failed; the message
    carries OpenSSL's reason (for example ``certificate verify failed: certificate has
    expired``)."""
