"""Client connections of a loop: open one (``Manager.ws_connect``, the public entry, calls
:func:`dial`), and follow the server's redirects with the same :class:`Connection` until a 101
answers or the connect fails."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ._lib import failure, ffi, last_error, lib
from .connection import Connection
from .constants import EV_ERROR
from .errors import HandshakeError
from .message import HttpMessage, header_lines
from .options import fill_opts, resolve_options
from .tls import TlsError, TlsOpts
from .url import parse_ws_url, redirect_target

if TYPE_CHECKING:  # pragma: no cover
    from .manager import Handler, Manager

__all__ = ["Dial", "dial"]

#: The statuses that are redirects a client follows (with a Location header).
REDIRECTS = (301, 302, 303, 307, 308)


class Dial:
    """One client connection's connect job: what it was asked for (kept to follow redirects)
    and the steps, :meth:`open` (TCP connect, TLS, upgrade request) and :meth:`answered` (an
    answer other than 101). Lives in ``conn._client``."""

    __slots__ = ("mgr", "conn", "url", "headers", "protocols", "origin", "redirects_left",
                 "options", "tls")

    def __init__(self, mgr: "Manager", conn: Connection, url: str, headers: Dict[str, str],
                 protocols: List[str], origin: Optional[str], redirects: int,
                 options: Dict[str, Any], tls: Optional[TlsOpts]) -> None:
        self.mgr = mgr
        self.conn = conn
        self.url = url
        self.headers = headers
        self.protocols = protocols
        self.origin = origin
        self.redirects_left = redirects
        self.options = options
        self.tls = tls

    def open(self, url: str) -> None:
        """Start the TCP connect (and TLS for wss://) to ``url`` with the upgrade request
        queued; the connection gets its new id. Raises an OSError (see
        :func:`pyws._lib.failure`), :class:`pyws.TlsError` or ``ValueError`` (a bad URL)."""
        mgr, c = self.mgr, self.conn
        loop = mgr._loop
        target = parse_ws_url(url)
        # the C core formats the request (pyws_handshake_format_request); the buffers stay
        # alive in locals until the call returns
        path = ffi.new("char[]", target.resource.encode("latin-1"))
        extra = header_lines(self.headers)
        extra_c = ffi.new("char[]", extra.encode("latin-1")) if extra else ffi.NULL
        origin_c = ffi.NULL
        if self.origin is not None:
            header_lines({"Origin": self.origin})  # ValueError on CR/LF injection
            origin_c = ffi.new("char[]", self.origin.encode("latin-1"))
        protos = ffi.new("char[]", ", ".join(self.protocols).encode()) \
            if self.protocols else ffi.NULL
        req = ffi.new("pyws_handshake_request *")
        req.path = path
        req.host = ffi.NULL  # Host: the host connected to
        req.port = 0 if target.port == (443 if target.secure else 80) else target.port
        req.protocols = protos
        req.origin = origin_c
        req.extra_headers = extra_c
        opts = ffi.new("pyws_opts *")
        fill_opts(opts, self.options)
        idp = ffi.new("uint64_t *")
        rc = lib.pyws_ws_connect(loop, target.host.encode("idna"), target.port, req, opts, idp)
        if rc < 0:
            raise failure(rc, f"{url}: {last_error(loop)}")
        if target.secure:
            tls = self.tls if self.tls is not None else TlsOpts()
            self.tls = tls
            rc = lib.pyws_tls_init(loop, int(idp[0]), tls.context(False, loop),
                                   target.host.encode("idna"))
            if rc < 0:
                lib.pyws_abort(loop, int(idp[0]))
                raise TlsError(f"{url}: {last_error(loop)}")
        if c.id:
            mgr._conns.pop(c.id, None)
        c.id = int(idp[0])
        c._remote = None
        self.url = url
        mgr._conns[c.id] = c

    def answered(self, hm: HttpMessage) -> None:
        """The upgrade got another answer than 101: follow a redirect, or fail the connection
        (``conn.error`` = HandshakeError with the answer's status and headers, then
        ``EV_ERROR``)."""
        mgr, c = self.mgr, self.conn
        location = hm.header("location")
        if hm.status in REDIRECTS and location and self.redirects_left > 0:
            self.redirects_left -= 1
            try:
                self.open(redirect_target(self.url, location))
                return
            except Exception as exc:  # the EV_CLOSE of the old connection follows
                c.error = exc
                mgr._deliver(c, EV_ERROR, f"redirect to {location} failed: {exc}")
                return
        why = f"the server answered {hm.status} {hm.reason} instead of 101 Switching Protocols"
        if hm.status in REDIRECTS:
            why += " (too many redirects)" if location else " (a redirect without Location)"
        c.error = HandshakeError(why, hm.status, hm.headers)
        mgr._deliver(c, EV_ERROR, why)


def dial(mgr: "Manager", url: str, handler: Optional["Handler"], *,
         headers: Optional[Dict[str, str]], protocols: Optional[List[str]],
         origin: Optional[str], max_redirects: int, tls: Optional[TlsOpts],
         options: Dict[str, Any]) -> Connection:
    """What ``Manager.ws_connect`` does (see there): check the arguments, make the
    :class:`Connection` and start its connect. Call it on the loop's thread."""
    opts, _ = resolve_options(options, "ws_connect()", base=mgr._options)
    for p in protocols or []:
        if not p or any(ch in p for ch in ' ,;\r\n"'):
            raise ValueError(f"invalid subprotocol name {p!r}")
    c = Connection(mgr, 0, handler, is_client=True)
    job = Dial(mgr, c, url, dict(headers or {}), list(protocols or []), origin, max_redirects,
               opts, tls)
    c._client = job
    job.open(url)
    return c
