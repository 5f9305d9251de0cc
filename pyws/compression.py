"""permessage-deflate settings (RFC 7692): the ``compression=`` option of ``Manager``,
``listen``, ``App``, ``ws_connect`` and ``pyws.connect``.

``compression="deflate"`` (the default) means ``Deflate()``; ``compression=None`` turns the
extension off: a client does not offer it, a server declines every offer. Negotiation,
compression and inflation all happen in the C core (zlib).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union


@dataclass(frozen=True)
class Deflate:
    """How pyws compresses and what it asks of the peer.

    - ``window_bits`` (9..15, default 12): the LZ77 window pyws compresses with, 2**bits
      bytes. A server announces it as ``server_max_window_bits``; a client offers it as
      ``client_max_window_bits``. A peer may ask for less; asked for 8 (which zlib cannot
      produce), pyws sends its messages uncompressed.
    - ``peer_window_bits`` (9..15 or None, default 12): the window pyws asks the peer to
      compress with, which is what pyws's inflater allocates. A server can only ask a client
      that offered ``client_max_window_bits`` (browsers and websockets do); a client sends a
      second offer without the request, for servers that cannot honour it. None asks nothing.
    - ``mem_level`` (1..9, default 5) and ``level`` (0..9, default 6): zlib's memLevel and
      compression level.
    - ``threshold`` (bytes, default 128): shorter messages are sent uncompressed
      (``send(..., compress=True)`` overrides it for one message).
    - ``no_context_takeover`` (default False): reset pyws's compressor after every message.
      Costs ratio, saves the compressor's memory between messages, and lets a publish to a
      topic compress once for every such subscriber.
    - ``peer_no_context_takeover`` (default False): ask the peer to reset its compressor after
      every message, so pyws keeps no inflater between messages either.

    With the defaults a connection spends about 50 KiB on zlib (a compressor at window 12 and
    memLevel 5, an inflater at window 12): no more than websockets' 64 KiB.
    """

    window_bits: int = 12
    peer_window_bits: Optional[int] = 12
    mem_level: int = 5
    level: int = 6
    threshold: int = 128
    no_context_takeover: bool = False
    peer_no_context_takeover: bool = False

    def __post_init__(self) -> None:
        _check_range("window_bits", self.window_bits, 9, 15)
        if self.peer_window_bits is not None:
            _check_range("peer_window_bits", self.peer_window_bits, 9, 15)
        _check_range("mem_level", self.mem_level, 1, 9)
        _check_range("level", self.level, 0, 9)
        _check_range("threshold", self.threshold, 0, 2**32 - 1)


def _check_range(name: str, value: Any, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"Deflate({name}={value!r}): use an int from {lo} to {hi}")


Compression = Union[None, str, Deflate]


def resolve(value: Any) -> Optional[Deflate]:
    """The Deflate settings an option value stands for (None: compression off)."""
    if value is None or value is False:
        return None
    if value is True or value == "deflate" or value == "permessage-deflate":
        return Deflate()
    if isinstance(value, Deflate):
        return value
    raise ValueError(f"compression={value!r}: use None, \"deflate\" or pyws.Deflate(...)")


def fill(o: Any, value: Any) -> None:
    """Copy the compression option into a ``pyws_opts`` (cffi) struct."""
    d = resolve(value)
    if d is None:
        o.compression = 0
        return
    o.compression = 1
    o.deflate_window_bits = d.window_bits
    o.deflate_peer_window_bits = d.peer_window_bits or 0
    o.deflate_mem_level = d.mem_level
    o.deflate_level = d.level
    o.deflate_threshold = d.threshold
    o.deflate_no_context_takeover = 1 if d.no_context_takeover else 0
    o.deflate_peer_no_context_takeover = 1 if d.peer_no_context_takeover else 0


def send_flags(compress: Optional[bool]) -> int:
    """The pyws_send flags for a ``compress=`` argument: None follows the settings (compress
    if permessage-deflate was agreed and the message reaches the threshold), False never,
    True even under the threshold."""
    if compress is None:
        return 0
    return 4 if compress else 2  # PYWS_SEND_COMPRESS, PYWS_SEND_NO_COMPRESS
