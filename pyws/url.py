"""WebSocket URLs: ``ws://host[:port]/path?query`` and ``wss://`` (IPv6 literals in brackets)."""
from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urljoin, urlsplit



class WsTarget(NamedTuple):
    """Where a client connects: ``secure`` (wss), ``host`` (no brackets), ``port``,
    ``resource`` (path and query, at least ``/``) and ``host_header`` (what Host carries)."""

    secure: bool
    host: str
    port: int
    resource: str
    host_header: str
    url: str


def parse_ws_url(url: str) -> WsTarget:
    """Split a ws:// or wss:// URL (http:// and https:// are accepted as their ws twins).
    Raises ValueError for anything else; a fragment is not allowed (RFC 6455 §3)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "ws"):
        secure = False
    elif scheme in ("https", "wss"):
        secure = True
    else:
        raise ValueError(f"{url!r} is not a WebSocket URL: use ws:// or wss://")
    if parts.fragment:
        raise ValueError(f"{url!r}: WebSocket URLs cannot have a fragment")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r}: bad port") from exc
    default = 443 if secure else 80
    port = port if port is not None else default
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default else f"{shown}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(ch in resource for ch in " \r\n"):
        raise ValueError(f"{url!r}: the path cannot contain spaces or line breaks")
    return WsTarget(secure, host, port, resource, host_header, url)


def redirect_target(current: str, location: str) -> str:
    """The ws(s):// URL a Location header points to, relative to the current URL."""
    nxt = urljoin(current.replace("ws://", "http://", 1).replace("wss://", "https://", 1),
                  location)
    if nxt.startswith("http://"):
        return "ws://" + nxt[len("http://"):]
    if nxt.startswith("https://"):
        return "wss://" + nxt[len("https://"):]
    return nxt
