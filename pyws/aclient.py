"""The async client: ``async with pyws.aconnect(url) as ws:``. Every client of one asyncio loop
shares one pyws loop (a Manager driven by :mod:`pyws.aio`), made with the first client and
closed after the last one."""
from __future__ import annotations

import asyncio
from typing import Any, Dict, Generator, List, Optional

from .aio import Bridge, attach
from .asyncws import AsyncWebSocket, _expire
from .manager import Manager
from .options import resolve_options
from .tls import TlsOpts

__all__ = ["aconnect", "Connect"]


class _Hub:
    """The Manager and Bridge the clients of one asyncio loop share."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.mgr = Manager(None)
        self.bridge: Bridge = attach(self.mgr, loop)
        self.bridge.on_loop_close = self._close_now  # the asyncio loop closing ends the hub
        self.users = 0
        self._closing: Optional[asyncio.Handle] = None

    def acquire(self) -> None:
        self.users += 1
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and self._closing is None:
            # not from inside the dispatch that delivered the close: on the next iteration
            self._closing = self.loop.call_soon(self._close)

    def _close(self) -> None:
        self._closing = None
        if self.users > 0:
            return
        self._close_now()

    def _close_now(self) -> None:
        """Close the shared Manager (detaching it from asyncio), whoever still uses it."""
        if self._closing is not None:
            self._closing.cancel()
            self._closing = None
        if _HUBS.get(id(self.loop)) is self:
            del _HUBS[id(self.loop)]
        self.mgr.close()


_HUBS: Dict[int, _Hub] = {}


def _hub(loop: asyncio.AbstractEventLoop) -> _Hub:
    h = _HUBS.get(id(loop))
    if h is None or h.loop is not loop or h.mgr._loop is None:
        h = _Hub(loop)
        _HUBS[id(loop)] = h
    return h


class Connect:
    """What :func:`aconnect` returns: ``await`` it for the open :class:`AsyncWebSocket`, or
    use it as ``async with`` (the connection is closed on exit)."""

    def __init__(self, url: str, kwargs: Dict[str, Any]) -> None:
        self.url = url
        self.kwargs = kwargs
        self.ws: Optional[AsyncWebSocket] = None

    def __await__(self) -> Generator[Any, None, AsyncWebSocket]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncWebSocket:
        self.ws = await self._open()
        return self.ws

    async def __aexit__(self, *exc: Any) -> None:
        if self.ws is not None and not self.ws.closed:
            try:
                await self.ws.close(timeout=self.kwargs["close_timeout"] + 1.0)
            except (asyncio.TimeoutError, TimeoutError):
                self.ws.abort()

    async def _open(self) -> AsyncWebSocket:
        k = dict(self.kwargs)
        loop = asyncio.get_running_loop()
        hub = _hub(loop)
        max_size = k.pop("max_size")
        open_timeout = k.pop("open_timeout")
        options = k.pop("options")
        options.setdefault("write_limit", max(16 * 1024 * 1024, 2 * max_size))
        hub.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                hub.release()

        try:
            conn = hub.mgr.ws_connect(
                self.url, None, headers=k["headers"], protocols=k["subprotocols"],
                origin=k["origin"], max_redirects=k["max_redirects"], tls=k["tls"],
                max_message_size=max_size, close_timeout=k["close_timeout"],
                handshake_timeout=open_timeout or 0, **options)
        except BaseException:
            release()
            raise
        ws = AsyncWebSocket(conn, loop, max_queue=k["max_queue"], on_close=release,
                            timeout=k["timeout"])
        ws._opened = opened = loop.create_future()
        # The C core bounds connect + answer by handshake_timeout; a timer is the backstop.
        # The future is awaited directly (no wait_for, no shield: each adds a loop iteration
        # before this task resumes), so that a caller who answers the first messages at once
        # (they may come in the same packet as the 101) does so before the next poll, which
        # sends any close the C core queued after them (Autobahn case 5.15).
        h = loop.call_later(open_timeout + 1.0, _expire, opened,
                            f"no handshake within {open_timeout} s") if open_timeout else None
        try:
            await opened
        except BaseException:
            if not conn.closed:
                conn.abort()
            raise
        finally:
            if h is not None:
                h.cancel()
        return ws


def aconnect(url: str, *, timeout: Optional[float] = None,
             headers: Optional[Dict[str, str]] = None, origin: Optional[str] = None,
             subprotocols: Optional[List[str]] = None, max_size: int = 4 * 1024 * 1024,
             open_timeout: Optional[float] = 10.0, close_timeout: float = 10.0,
             max_redirects: int = 5, tls: Optional[TlsOpts] = None, max_queue: int = 1024,
             **options: Any) -> Connect:
    """Open a WebSocket to ``url`` from the running asyncio loop::

        async with pyws.aconnect("ws://127.0.0.1:8000/ws") as ws:
            await ws.send("hi")
            async for msg in ws:
                ...

    (or ``ws = await pyws.aconnect(url)`` and ``await ws.close()``). The ``ws`` is an
    :class:`pyws.AsyncWebSocket`: the same API as in ``async def`` server handlers. Options as
    for the blocking :func:`pyws.connect`: ``headers``, ``origin``, ``subprotocols`` (the
    server's choice is ``ws.subprotocol``), ``max_size`` (bytes; default 4 MiB, more closes
    with 1009), ``open_timeout`` (seconds for connect + TLS + handshake, default 10),
    ``close_timeout`` (seconds, default 10), ``max_redirects`` (default 5), ``tls`` (a
    :class:`pyws.TlsOpts` for wss://: custom CA, client certificate, or
    ``insecure_skip_verify``), ``compression`` and the other Manager options; plus
    ``max_queue`` (messages held unread before reading pauses, default 1024); ``timeout``:
    the default ``timeout`` of ``recv``/``receive`` in seconds (None: wait forever).

    All clients of one asyncio loop share one pyws loop. Raises as ``connect`` does:
    :class:`pyws.HandshakeError`, ``ConnectionRefusedError``, ``TimeoutError``,
    :class:`pyws.TlsError`, ``ValueError`` for a bad URL."""
    resolve_options(dict(options), "pyws.aconnect()")
    return Connect(url, dict(timeout=timeout, headers=headers, origin=origin,
                             subprotocols=subprotocols, max_size=max_size,
                             open_timeout=open_timeout, close_timeout=close_timeout,
                             max_redirects=max_redirects, tls=tls, max_queue=max_queue,
                             options=dict(options)))
