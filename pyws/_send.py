"""The one send path: what a send's arguments become before they reach C.

Every way pyws sends a message (``Connection``, ``WebSocket`` and ``ClientConnection``, and the
fan-out calls ``publish`` and ``broadcast``) takes the same inputs and turns them into what the C
core takes, a payload (bytes) and an opcode, here and only here:

=====================================  ==========  ===============  ================
``data``                               binary=None  binary=True      binary=False
=====================================  ==========  ===============  ================
``str`` (sent as UTF-8)                text         binary           text
``bytes``, ``bytearray``, memoryview   binary       binary           text
:class:`pyws.Message` / ``WsMessage``  its own      binary           text
=====================================  ==========  ===============  ================

So a received message sent back (``ws.send(msg)``) keeps its type: text stays text. A payload
sent as text must be valid UTF-8: the peer closes with 1007 otherwise.

The signatures are the same in each family: ``send(data, binary=None, compress=None)``,
``send_text(text, compress=None)``, ``send_bytes(data, compress=None)``, ``send_json(obj,
dumps=json.dumps, compress=None)`` and ``send_fragments(fragments, binary=None,
compress=None)``. ``compress`` is not keyword-only on purpose: CPython 3.11 does not
specialize calls to functions with keyword-only parameters, which cost ``ws.send(msg)`` about
35 ns (7 %) per message when measured.

``WebSocket.send`` and ``ClientConnection.send`` send through ``Connection.send``; it and
``WebSocket.send`` take their most common inputs (bytes, str, a received Message, with
``binary=None``) straight to ``ws_send`` without calling :func:`outgoing`, giving what it gives.
The mongoose-style ``conn.ws_send(data, op)`` is the layer below: it takes the opcode as given.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

from .constants import OP_BINARY, OP_TEXT
from .message import Message

#: What a payload may be: str is sent as UTF-8, bytes-likes as they are.
Payload = Union[str, bytes, bytearray, memoryview]

#: What a send accepts: a payload, or a whole :class:`pyws.Message` (its opcode is kept).
Sendable = Union[str, bytes, bytearray, memoryview, Message]


def outgoing(data: Sendable, binary: Optional[bool] = None) -> Tuple[bytes, int]:
    """``(payload, opcode)`` for one message, by the table in this module's docstring.

    Raises ``TypeError`` for anything that is not str, bytes-like or a Message."""
    # the common cases first, by exact type: this runs once per message sent
    if type(data) is Message:
        if binary is None:
            return data.data, data.opcode
        return data.data, OP_BINARY if binary else OP_TEXT
    if type(data) is str:
        return data.encode(), OP_BINARY if binary else OP_TEXT
    if type(data) is bytes:
        return data, OP_TEXT if binary is False else OP_BINARY
    if isinstance(data, str):  # a subclass of str
        return data.encode(), OP_BINARY if binary else OP_TEXT
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), OP_TEXT if binary is False else OP_BINARY
    if isinstance(data, Message):  # a subclass of Message
        return data.data, (data.opcode if binary is None
                           else OP_BINARY if binary else OP_TEXT)
    payload = getattr(data, "__pyws_payload__", None)  # the async API's WSMessage
    if payload is not None:
        body, opcode = payload()
        return body, (opcode if binary is None else OP_BINARY if binary else OP_TEXT)
    raise TypeError("a message is str, bytes, bytearray, memoryview or pyws.Message, not "
                    f"{type(data).__name__}")


def binary_arg(binary: Optional[int], op: Optional[int] = None) -> Optional[bool]:
    """The ``binary=`` of ``send_fragments``: True, False or None, or (the older spelling,
    still accepted) an opcode, ``OP_BINARY`` or ``OP_TEXT``, given positionally or as
    ``op=``. Raises ``ValueError`` for any other opcode."""
    if op is not None:
        if binary is not None:
            raise TypeError("send_fragments(): give binary= or its older spelling op=, not both")
        binary = op
    if binary is None or type(binary) is bool:
        return binary
    if binary == OP_BINARY:
        return True
    if binary == OP_TEXT:
        return False
    raise ValueError(f"a message is text or binary: binary=True/False/None (or OP_TEXT / "
                     f"OP_BINARY), not {binary!r}")
