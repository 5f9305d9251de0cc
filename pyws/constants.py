"""Event, opcode and close-code constants, with the mongoose names as aliases.

Every event reaches the handler as ``handler(conn, ev, data)``; what ``data`` is depends on
the event:

=================  ====================================================================
event              ``data``
=================  ====================================================================
``EV_ERROR``       ``str``: what went wrong (client connections: ``conn.error`` holds the
                   exception, a HandshakeError or an OSError). On a server connection:
                   the request could not be served and pyws answered it itself, e.g.
                   ``"400 Bad Request: Sec-WebSocket-Key must be 16 bytes in base64"``
                   for a broken upgrade (then ``conn.error`` is a HandshakeError with
                   ``status`` 400 or 426); the connection closes after the answer
``EV_ACCEPT``      ``None``; a listener accepted ``conn``
``EV_CONNECT``     ``None``; an outgoing connection finished its TCP connect
``EV_HTTP_MSG``    :class:`pyws.HttpMessage`
``EV_WS_OPEN``     ``None`` (server: after ``ws_upgrade``) or the 101 :class:`HttpMessage` (client)
``EV_WS_MSG``      :class:`pyws.WsMessage` (whole message, UTF-8 checked for text)
``EV_WS_CTL``      :class:`pyws.WsMessage` with opcode PING, PONG or CLOSE (opt-in:
                   ``control_events=True``)
``EV_DRAIN``       ``None``; the write buffer fell back under ``write_high_water``
``EV_WAKEUP``      ``bytes`` passed to ``Manager.wakeup()``
``EV_TIMER``       ``None`` (timers call their own function; handlers never see this)
``EV_CLOSE``       ``None``; ``conn.close_code`` / ``conn.close_reason`` say why
``EV_DATA``        ``bytes``: what one read of a stream (``Manager.connect_stream``) gave
``EV_BROKER``      :class:`pyws.BrokerEvent` (``conn`` is None): the topic broker went
                   down or came back (``Manager(broker=...)``)
=================  ====================================================================
"""
from __future__ import annotations

import enum

EV_ERROR = 0
EV_ACCEPT = 1
EV_CONNECT = 2
EV_HTTP_MSG = 3
EV_WS_OPEN = 4
EV_WS_MSG = 5
EV_WS_CTL = 6
EV_DRAIN = 7
EV_WAKEUP = 8
EV_TIMER = 9
EV_CLOSE = 10
EV_HTTP_RESP = 11  # internal: a client's upgrade got another answer than 101
EV_DATA = 12
EV_BROKER = 13  # raised by pyws.broker (Python), never by the C loop
EV_CLOSE_HELD = 14  # internal: a held close is due (pyws_hold_closes; the blocking driver)

OP_CONTINUATION = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

# mongoose / cymongoose names
MG_EV_ERROR = EV_ERROR
MG_EV_ACCEPT = EV_ACCEPT
MG_EV_CONNECT = EV_CONNECT
MG_EV_HTTP_MSG = EV_HTTP_MSG
MG_EV_WS_OPEN = EV_WS_OPEN
MG_EV_WS_MSG = EV_WS_MSG
MG_EV_WS_CTL = EV_WS_CTL
MG_EV_DRAIN = EV_DRAIN
MG_EV_WAKEUP = EV_WAKEUP
MG_EV_TIMER = EV_TIMER
MG_EV_CLOSE = EV_CLOSE
WEBSOCKET_OP_CONTINUE = OP_CONTINUATION
WEBSOCKET_OP_TEXT = OP_TEXT
WEBSOCKET_OP_BINARY = OP_BINARY
WEBSOCKET_OP_CLOSE = OP_CLOSE
WEBSOCKET_OP_PING = OP_PING
WEBSOCKET_OP_PONG = OP_PONG


class Opcode(enum.IntEnum):
    """WebSocket frame opcodes (RFC 6455 §5.2)."""

    CONTINUATION = 0
    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10


class CloseCode(enum.IntEnum):
    """WebSocket close codes (RFC 6455 §7.4 and the IANA registry)."""

    NORMAL = 1000
    OK = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005
    ABNORMAL = 1006
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    INVALID_TEXT = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


class State(enum.IntEnum):
    """A connection's state as the C core reports it (``Connection.state``); the values are
    pyws.h's PYWS_STATE_*. Inside, C goes through finer states (docs/architecture.md,
    "Connection states"); this is what they mean from outside."""

    #: the WebSocket is not open yet: a client connecting or waiting for the 101, or a server
    #: connection still speaking HTTP
    CONNECTING = 0
    #: the WebSocket is open
    OPEN = 1
    #: a close frame went one way or the other, or the last bytes are being flushed
    CLOSING = 2
    #: ended: EV_CLOSE was (or is about to be) delivered
    CLOSED = 3


class WSMsgType(enum.IntEnum):
    """aiohttp's message types: the data opcodes (equal to :class:`Opcode`'s, so
    ``msg.type == WSMsgType.TEXT`` holds for every pyws message) plus the states aiohttp's
    ``receive()`` reports: CLOSING, CLOSED and ERROR (not opcodes: never on the wire).

    A member also compares equal to its name as Gobstopper's and Starlette's guides write it,
    so ``message.type == "text"`` works as well as ``message.type == WSMsgType.TEXT`` and
    ``== 1``: TEXT is ``"text"``, BINARY ``"bytes"`` or ``"binary"``, CLOSE ``"close"``, PING
    ``"ping"``, PONG ``"pong"``, CLOSING ``"closing"``, CLOSED ``"closed"``, ERROR
    ``"error"``, CONTINUATION ``"continuation"`` (exactly, in lower case). The hash stays the
    int's: as a dict key a member finds its int, not its name; ``t.label`` is the first
    name above (``"bytes"`` for BINARY). The string comparison costs one Python-level call
    (about 0.1 µs) per ``==`` with a member, which aiohttp-style ``msg.type ==
    WSMsgType.TEXT`` pays too."""

    CONTINUATION = 0
    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10
    CLOSING = 256
    CLOSED = 257
    ERROR = 258

    def __eq__(self, other: object) -> bool:
        if type(other) is str:
            return other in _MSG_TYPE_NAMES[self]
        return int.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        if type(other) is str:
            return other not in _MSG_TYPE_NAMES[self]
        return int.__ne__(self, other)

    __hash__ = int.__hash__

    @property
    def label(self) -> str:
        """The lower-case name Gobstopper's guide compares with: ``"text"``, ``"bytes"``,
        ``"close"``, ``"ping"``, ``"pong"``, ``"error"`` ..."""
        return _MSG_TYPE_NAMES[self][0]


#: The strings each WSMsgType member compares equal to (the first is its ``label``).
_MSG_TYPE_NAMES = {
    WSMsgType.CONTINUATION: ("continuation",),
    WSMsgType.TEXT: ("text",),
    WSMsgType.BINARY: ("bytes", "binary"),
    WSMsgType.CLOSE: ("close",),
    WSMsgType.PING: ("ping",),
    WSMsgType.PONG: ("pong",),
    WSMsgType.CLOSING: ("closing",),
    WSMsgType.CLOSED: ("closed",),
    WSMsgType.ERROR: ("error",),
}


# aiohttp's name; CloseCode carries its member names (ABNORMAL_CLOSURE, INVALID_TEXT, ...) too
WSCloseCode = CloseCode
