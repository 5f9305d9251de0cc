"""What a server decides about an upgrade request before it answers 101: the subprotocol it
selects and the origins it accepts (``subprotocols=``, ``subprotocol_required=``,
``allowed_origins=``, ``allow_no_origin=`` of ``Manager.listen``, ``App.listen`` and
``@app.websocket``).

Subprotocols (RFC 6455 §4.2.2, item 5.4 of the server's answer): the server lists the ones
it speaks, in its order of preference; the first of that list the client offered (in any of
its ``Sec-WebSocket-Protocol`` headers) is selected, returned in the 101's
``Sec-WebSocket-Protocol`` and readable as ``conn.subprotocol`` / ``ws.subprotocol``. Names
are compared exactly (RFC 6455 §1.9: case-sensitive). With none in common the 101 carries no
``Sec-WebSocket-Protocol`` (a strict client may then give up, as RFC 6455 lets it), or, with
``subprotocol_required=True``, the request is answered ``400 Bad Request`` saying what the
server speaks. A handler that passes ``protocol=`` to ``ws_upgrade``/``accept`` decides itself.

Origins (RFC 6455 §10.2; browsers send ``Origin`` on every WebSocket request and cannot be
made to lie about it, which is what makes the check worth having against cross-site
WebSocket hijacking): each entry of ``allowed_origins`` is one of

- ``"https://app.example.com"``: that scheme, host and port exactly (``:443``/``:80`` may be
  left out for https/wss and http/ws; scheme and host are compared in lower case);
- ``"https://*.example.com"``: that scheme and any host under example.com, at any depth, on
  the default port (or the port written: ``"http://*.example.com:8080"``); not example.com
  itself (list it too);
- ``"app.example.com"`` or ``"*.example.com"`` without a scheme: that host (or any host under
  it) with any scheme and any port;
- ``"null"``: the literal ``Origin: null`` of sandboxed frames and ``file://`` pages;
- ``"*"``: any Origin at all (only a missing one is then judged by ``allow_no_origin``);
- ``None``: a request without ``Origin`` (websockets' spelling; the same as
  ``allow_no_origin=True``).

A request without ``Origin`` comes from a program, not a browser (browsers always send one),
and the check cannot protect against programs, which can send any Origin they like: so it is
allowed by default (``allow_no_origin=True``); ``allow_no_origin=False`` refuses it unless the
list holds ``None``. A request whose Origin is not allowed, that carries ``Origin`` more than
once, or (with ``allow_no_origin=False``) none, is answered ``403 Forbidden`` before any
upgrade, and the handler never sees it: the callback API reports ``EV_ERROR`` with the text
sent (``conn.error`` is a :class:`pyws.HandshakeError` with ``status`` 403), the App logs it.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from .message import HttpMessage

__all__ = ["UpgradePolicy", "offered_subprotocols"]

_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _is_token(s: str) -> bool:
    return bool(s) and all(c in _TCHARS for c in s)


def offered_subprotocols(hm: HttpMessage) -> List[str]:
    """The subprotocols a request offers, in its order: every ``Sec-WebSocket-Protocol``
    header, split at commas, blanks dropped."""
    out: List[str] = []
    for value in hm.headers.get_all("sec-websocket-protocol"):
        out.extend(p.strip() for p in value.split(",") if p.strip())
    return out


class _Origin:
    """One parsed entry of ``allowed_origins``: scheme ("" = any), host, whether hosts under
    it match (``*.``) instead of it, port (None = any, else the port required)."""

    __slots__ = ("scheme", "host", "wildcard", "port")

    def __init__(self, scheme: str, host: str, wildcard: bool, port: Optional[int]) -> None:
        self.scheme = scheme
        self.host = host
        self.wildcard = wildcard
        self.port = port

    def matches(self, scheme: str, host: str, port: Optional[int]) -> bool:
        if self.scheme and scheme != self.scheme:
            return False
        if self.port is not None and port != self.port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


def _split_origin(text: str) -> Optional[Tuple[str, str, Optional[int]]]:
    """(scheme, host, port) of an Origin value ``scheme://host[:port]``, scheme and host in
    lower case, the scheme's default port when none is written (None for other schemes), or
    None if it is not of that shape (a path, query, user info, bad port)."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc or parts.path or parts.query or parts.fragment \
            or "@" in parts.netloc or text.endswith(":"):
        return None
    host = (parts.hostname or "").lower()
    if not host:
        return None
    scheme = parts.scheme.lower()
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    return scheme, host, port


def _parse_entry(entry: str, where: str) -> _Origin:
    text = entry.strip()
    scheme = ""
    rest = text
    if "://" in text:
        scheme, rest = text.split("://", 1)
        scheme = scheme.lower()
        if not _is_token(scheme):
            raise ValueError(f"{where}: allowed_origins entry {entry!r}: bad scheme")
    if not rest or any(c in rest for c in "/?#@ "):
        raise ValueError(f"{where}: allowed_origins entry {entry!r} is not an origin: write "
                         "'https://app.example.com' (no path, not even a trailing '/'), "
                         "'https://*.example.com', '*.example.com', 'null', '*' or None")
    wildcard = rest.startswith("*.")
    if wildcard:
        rest = rest[2:]
    if "*" in rest:
        raise ValueError(f"{where}: allowed_origins entry {entry!r}: '*' may only start the "
                         "host, as in 'https://*.example.com'")
    probe = _split_origin(f"{scheme or 'x'}://{'w.' if wildcard else ''}{rest}")
    if probe is None:
        raise ValueError(f"{where}: allowed_origins entry {entry!r} is not an origin (bad "
                         "host or port)")
    _, host, port = probe
    if wildcard:
        host = host[2:]
    written = ":" in rest.rsplit("]", 1)[-1]
    if not scheme:
        port = port if written else None  # no scheme: any port unless one is written
    return _Origin(scheme, host, wildcard, port)


class UpgradePolicy:
    """The subprotocol and origin rules of a listener or a WebSocket route (see this module's
    docstring). Built by :meth:`make`, which checks the arguments; immutable."""

    __slots__ = ("subprotocols", "subprotocol_required", "allowed_origins", "allow_no_origin",
                 "_any", "_null", "_entries")

    def __init__(self, subprotocols: Tuple[str, ...], subprotocol_required: bool,
                 allowed_origins: Optional[Tuple[Optional[str], ...]],
                 allow_no_origin: bool, where: str) -> None:
        #: the subprotocols spoken, in the order of preference
        self.subprotocols = subprotocols
        #: True: a request offering none of them is answered 400
        self.subprotocol_required = subprotocol_required
        #: the origins allowed as given (None: Origin is not checked)
        self.allowed_origins = allowed_origins
        #: whether a request without Origin is allowed (None in the list allows it too)
        self.allow_no_origin = allow_no_origin or (
            allowed_origins is not None and None in allowed_origins)
        self._any = False
        self._null = False
        self._entries: List[_Origin] = []
        for entry in allowed_origins or ():
            if entry is None:
                continue
            if entry.strip() == "*":
                self._any = True
            elif entry.strip().lower() == "null":
                self._null = True
            else:
                self._entries.append(_parse_entry(entry, where))

    @classmethod
    def make(cls, where: str, subprotocols: Optional[Sequence[str]] = None,
             subprotocol_required: bool = False,
             allowed_origins: Optional[Iterable[Optional[str]]] = None,
             allow_no_origin: bool = True) -> Optional["UpgradePolicy"]:
        """The policy for these arguments of ``where`` (``"listen()"``, ``"@app.websocket"``),
        or None when they ask for nothing. Raises ``TypeError``/``ValueError`` saying what to
        write instead for a bad name or entry."""
        if isinstance(subprotocols, (str, bytes)):
            raise TypeError(f"{where}: subprotocols is a list of names in order of "
                            f"preference, e.g. subprotocols=[{subprotocols!r}], not a string")
        protos = tuple(subprotocols or ())
        for p in protos:
            if not isinstance(p, str) or not _is_token(p):
                raise ValueError(f"{where}: subprotocol {p!r} is not a valid name (an HTTP "
                                 "token: letters, digits and !#$%&'*+-.^_`|~, no spaces or "
                                 "commas)")
        if len(set(protos)) != len(protos):
            raise ValueError(f"{where}: subprotocols lists a name twice: {list(protos)}")
        if subprotocol_required and not protos:
            raise ValueError(f"{where}: subprotocol_required=True needs subprotocols=[...] "
                             "naming the ones the server speaks")
        if isinstance(allowed_origins, (str, bytes)):
            raise TypeError(f"{where}: allowed_origins is a list, e.g. "
                            f"allowed_origins=[{allowed_origins!r}], not a string")
        origins: Optional[Tuple[Optional[str], ...]] = None
        if allowed_origins is not None:
            origins = tuple(allowed_origins)
            for o in origins:
                if o is not None and not isinstance(o, str):
                    raise TypeError(f"{where}: allowed_origins entries are str (or None for "
                                    f"'no Origin header'), not {type(o).__name__}")
            if not origins:
                raise ValueError(f"{where}: allowed_origins=[] would refuse every browser; "
                                 "list the origins to allow, or leave it out (None: no check)")
        if not allow_no_origin and origins is None:
            raise ValueError(f"{where}: allow_no_origin=False goes with allowed_origins=[...]")
        if not protos and origins is None:
            return None
        return cls(protos, bool(subprotocol_required), origins, bool(allow_no_origin), where)

    # ------------------------------------------------------------------ deciding
    def origin_refusal(self, hm: HttpMessage) -> Optional[str]:
        """Why the request's Origin is refused (the text of the 403), or None if allowed."""
        if self.allowed_origins is None:
            return None
        values = hm.headers.get_all("origin")
        if not values:
            if self.allow_no_origin:
                return None
            return ("an Origin header is required here (the server was configured with "
                    "allow_no_origin=False)")
        if len(values) > 1:
            return "more than one Origin header"
        value = values[0].strip()
        if self._any:
            return None
        if value.lower() == "null":
            return None if self._null else "origin 'null' is not allowed"
        parsed = _split_origin(value)
        if parsed is not None and any(e.matches(*parsed) for e in self._entries):
            return None
        return f"origin {value[:100]!r} is not allowed"

    def select(self, hm: HttpMessage) -> Tuple[Optional[str], Optional[str]]:
        """``(subprotocol, refusal)``: the first of the server's subprotocols the request
        offers (None if none is in common or the server lists none), and, when none is in
        common and one is required, the text of the 400."""
        if not self.subprotocols:
            return None, None
        offered = offered_subprotocols(hm)
        for p in self.subprotocols:
            if p in offered:
                return p, None
        if not self.subprotocol_required:
            return None, None
        return None, (f"no common subprotocol: the server speaks {', '.join(self.subprotocols)}"
                      f"; the client offered {', '.join(offered)[:200] if offered else 'none'}"
                      " (Sec-WebSocket-Protocol)")

    def check(self, hm: HttpMessage) -> Tuple[Optional[str], int, str]:
        """``(subprotocol, status, why)``: status 0 when the request may be upgraded (with
        ``subprotocol`` selected, or None), else 403 or 400 and the reason to send."""
        why = self.origin_refusal(hm)
        if why is not None:
            return None, 403, why
        proto, why = self.select(hm)
        if why is not None:
            return None, 400, why
        return proto, 0, ""

    def __repr__(self) -> str:
        return (f"UpgradePolicy(subprotocols={list(self.subprotocols)}, "
                f"subprotocol_required={self.subprotocol_required}, "
                f"allowed_origins={self.allowed_origins}, "
                f"allow_no_origin={self.allow_no_origin})")
