"""The App: WebSocket routes whose handlers are generators (on the loop's thread), ``async def``
(inside asyncio, pyws.aio) or plain functions (blocking, in a bounded thread pool:
pyws.threaded), plain HTTP routes on the same port (patterns and signatures: pyws.routing),
topics, connection limits, and a run loop (or listen + poll in your own loop). The loop itself
runs on one thread, driven by the C poll loop."""
from __future__ import annotations

import inspect
import logging
import mimetypes
import os
import signal
import threading
import time
from typing import (Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple,
                    Union)
from urllib.parse import unquote

from ._send import Sendable
from .connection import Connection
from .broker import Broker, BrokerEvent
from .constants import EV_BROKER, EV_ERROR, EV_HTTP_MSG, EV_WS_OPEN
from .errors import HandshakeError, PyWSError
from .handshake import UpgradePolicy
from .manager import Listener, Manager, refuse_upgrade
from .message import HttpMessage
from .options import resolve_options
from .request import Request, Response, to_response
from .routing import Route, bind_handler
from .threaded import DEFAULT_THREADS, ThreadedWebSocket, ThreadPool
from .tls import TlsOpts
from .websocket import Driver, WebSocket
from . import aio, metrics
from .stats import ServerStats

log = logging.getLogger("pyws")

WsHandler = Callable[[WebSocket], Any]
HttpHandler = Callable[[Request], Any]

#: App(...)'s own keyword arguments, besides the Manager options.
_APP_OPTIONS = ("max_connections", "max_connections_per_ip", "unknown_websocket", "max_queue",
                "threads", "thread_queue", "thread_queue_timeout")


class App:
    """A WebSocket and HTTP application on one port.

    ``App(**options)`` takes the Manager options (``max_message_size``, ``write_limit``,
    ``heartbeat``, ``compression`` (permessage-deflate, on by default; None or
    ``pyws.Deflate(...)``) ...; see ``pyws.DEFAULT_OPTIONS``; the loop-wide bounds of the
    cross-thread queue in ``pyws.LOOP_OPTIONS``) plus:

    - ``max_connections`` (None = no limit): open WebSockets; past it new upgrades get 503.
    - ``max_connections_per_ip`` (None): open WebSockets per client IP; past it, 503.
    - ``unknown_websocket`` (``"close"``): an upgrade to a path with no WebSocket route is
      accepted and closed with 1001; ``"404"`` answers it with a plain 404 instead.
    - ``max_queue`` (1024): messages held for a handler that is not receiving; past it reading
      from that connection pauses (TCP backpressure) until the handler catches up.
    - ``threads`` (128): blocking handlers (plain ``def``, no ``yield``) running at once, one
      thread each for the connection's whole life; threads start on demand.
    - ``thread_queue`` (= ``threads``): connections waiting for a free thread (not yet
      accepted); past it a new one gets 503 and a log line.
    - ``thread_queue_timeout`` (10.0 s): how long one may wait there; then 503 and a log line.

    The Manager option ``max_sockets`` (None = derived from RLIMIT_NOFILE) caps every open
    TCP connection of the loop, HTTP or WebSocket, below the descriptor limit: past it a new
    connection gets 503 at once. ``app.mgr.stats()`` counts those refusals.
    """

    def __init__(self, *, max_connections: Optional[int] = None,
                 max_connections_per_ip: Optional[int] = None,
                 unknown_websocket: str = "close", max_queue: int = 1024,
                 threads: int = DEFAULT_THREADS, thread_queue: Optional[int] = None,
                 thread_queue_timeout: float = 10.0, **options: Any) -> None:
        if unknown_websocket not in ("close", "404"):
            raise ValueError('unknown_websocket is "close" (accept, then close 1001) or "404"')
        broker = options.pop("broker", None)
        broker_options = options.pop("broker_options", None)
        resolve_options(options, "App()", loop_wide=True, also=_APP_OPTIONS)
        self._broker_hooks: List[Callable[[BrokerEvent], Any]] = []
        self._mgr_args: Tuple[Optional[str], Optional[Dict[str, Any]], Dict[str, Any]] = (
            broker, broker_options, dict(options))
        self._threads = ThreadPool(self, threads, threads if thread_queue is None
                                   else thread_queue, thread_queue_timeout, max_queue)
        self.mgr = Manager(self._on_event, broker=broker, broker_options=broker_options,
                           **options)
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.unknown_websocket = unknown_websocket
        self._ws_routes: List[Route] = []
        self._ws_policies: Dict[Route, UpgradePolicy] = {}  # subprotocols/origins per route
        self._http_routes: List[Route] = []
        self._sockets: Dict[int, WebSocket] = {}     # conn id -> open or pending WebSocket
        self._per_ip: Dict[str, int] = {}
        self._accepted = 0                            # server-side WebSockets (capacity)
        self._driver = Driver(self, max_queue)
        self.mgr._close_hooks.append(self._threads.close)
        self._threads.high_water = int(self.mgr._options["write_high_water"])
        self._stop = threading.Event()

    # ------------------------------------------------------------------ registration
    def websocket(self, path: str, *, subprotocols: Optional[Sequence[str]] = None,
                  subprotocol_required: bool = False,
                  allowed_origins: Optional[Iterable[Optional[str]]] = None,
                  allow_no_origin: bool = True) -> Callable[[WsHandler], WsHandler]:
        """Decorator: ``@app.websocket("/ws/rooms/{room}")`` (or ``"/ws/rooms/<room>"``)
        registers a handler, run by the driver its kind asks for:

        - a generator (``msg = yield ws.recv()``): on the loop's thread, thousands at once;
        - ``async def`` (``msg = await ws.recv()``, a :class:`pyws.AsyncWebSocket`): run by
          ``await app.serve(...)`` inside asyncio;
        - a plain function (``msg = ws.recv()`` blocks): in the App's thread pool (``threads``)
          with a :class:`pyws.ThreadedWebSocket`.

        The first parameter is the ws. Path parameters are in ``ws.params`` and are passed by
        keyword to parameters of the same name (``def upload(ws, upload_id)``); a parameter
        named ``request`` (or ``req``, or annotated :class:`pyws.Request`) gets the upgrade
        request. The pattern and the signature are checked here: a malformed pattern raises
        ValueError, a parameter that nothing would fill TypeError, each saying what to write
        instead (see :mod:`pyws.routing`).

        ``subprotocols=["chat.v2", "chat.v1"]``: the first of this list the client offered is
        selected at accept (``ws.subprotocol``; none in common: no subprotocol, or ``400``
        with ``subprotocol_required=True``). ``allowed_origins=["https://app.example.com",
        "https://*.example.com"]``: other Origins get ``403`` before the handler runs; a
        request without Origin passes unless ``allow_no_origin=False``. The same options of
        ``app.listen``/``app.run``/``app.serve`` apply to every route of that listener (a
        route's subprotocols replace the listener's; both origin lists must pass). See
        :mod:`pyws.handshake`."""
        Route(path, _no_handler)  # a bad pattern fails here, before the decorator runs
        policy = UpgradePolicy.make(f"@app.websocket({path!r})", subprotocols,
                                    subprotocol_required, allowed_origins, allow_no_origin)

        def register(fn: WsHandler) -> WsHandler:
            target = inspect.unwrap(fn)
            name = getattr(fn, "__name__", repr(fn))
            if inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(target):
                raise TypeError(f"{name} is an async generator: a handler is a plain function "
                                "(blocking, `msg = ws.recv()`), a generator (`msg = yield "
                                "ws.recv()`) or `async def` (`msg = await ws.recv()`)")
            if not callable(fn):
                raise TypeError(f"@app.websocket({path!r}) decorates a function, not "
                                f"{type(fn).__name__}")
            route = Route(path, fn)
            route.kwargs = bind_handler(path, fn, route.names, "ws")
            # what decides the driver: the function, what it wraps (functools.wraps), or the
            # __call__ of a callable object
            looks = [fn, target]
            if not inspect.isroutine(target) and not isinstance(target, type):
                looks.append(getattr(type(target), "__call__", None))
            if aio.is_async(fn) or any(inspect.iscoroutinefunction(f) for f in looks):
                route.driver = "async"
            elif any(inspect.isgeneratorfunction(f) for f in looks):
                route.driver = "generator"
            else:
                route.driver = "thread"
            for r in self._ws_routes:
                if r.same_as(route):
                    raise ValueError(
                        f"@app.websocket({path!r}): {r.pattern!r} already has the handler "
                        f"{getattr(r.handler, '__name__', r.handler)!r} and matches the same "
                        "paths, so this one would never run; remove one of them or change "
                        "its path")
            self._ws_routes.append(route)
            if policy is not None:
                self._ws_policies[route] = policy
            return fn
        return register

    def route(self, path: str, methods: Optional[Sequence[str]] = None
              ) -> Callable[[HttpHandler], HttpHandler]:
        """Decorator: ``@app.route("/items/{id:int}", methods=["GET", "POST"])`` (or
        ``"/items/<int:id>"``) registers ``def view(request)`` returning bytes, str (HTML),
        dict/list (JSON), None (204), a ``(body, status)`` tuple or a :class:`pyws.Response`.
        ``methods`` defaults to GET (HEAD is answered for GET routes). Path parameters are in
        ``request.params`` and passed by keyword to parameters of the same name
        (``def item(request, id)``); the pattern and signature are checked here, as for
        :meth:`websocket`."""
        Route(path, _no_handler)  # a bad pattern fails here, before the decorator runs

        def register(fn: HttpHandler) -> HttpHandler:
            self._add_http(Route(path, fn, methods or ["GET"]), check=True)
            return fn
        return register

    def _add_http(self, route: Route, check: bool = False) -> None:
        if check:
            route.kwargs = bind_handler(route.pattern, route.handler, route.names, "request")
        for r in self._http_routes:
            both = (r.methods or {"GET"}) & (route.methods or {"GET"})
            if both and r.same_as(route):
                raise ValueError(
                    f"route {route.pattern!r} ({', '.join(sorted(both))}) already has the "
                    f"handler {getattr(r.handler, '__name__', r.handler)!r} for the same "
                    "paths, so this one would never run; remove one of them, change its path "
                    "or its methods")
        self._http_routes.append(route)

    def get(self, path: str) -> Callable[[HttpHandler], HttpHandler]:
        """``@app.get(path)`` = ``@app.route(path, methods=["GET"])``."""
        return self.route(path, ["GET"])

    def post(self, path: str) -> Callable[[HttpHandler], HttpHandler]:
        """``@app.post(path)`` = ``@app.route(path, methods=["POST"])``."""
        return self.route(path, ["POST"])

    def static(self, prefix: str, directory: str, index: str = "index.html") -> None:
        """Serve the files under ``directory`` at ``prefix`` (``app.static("/static", "web")``).
        Paths that would leave the directory get 404; a directory serves its ``index``."""
        root = os.path.realpath(directory)
        prefix = "/" + prefix.strip("/")

        def serve(request: Request) -> Response:
            rel = unquote(request.params.get("path", ""))  # route params are not decoded
            if "\0" in rel:
                return Response(b"Not Found", 404, content_type="text/plain")
            target = os.path.realpath(os.path.join(root, rel))
            if target != root and not target.startswith(root + os.sep):
                return Response(b"Not Found", 404, content_type="text/plain")
            if os.path.isdir(target):
                target = os.path.join(target, index)
            try:
                with open(target, "rb") as f:
                    body = f.read()
            except OSError:
                return Response(b"Not Found", 404, content_type="text/plain")
            ctype = mimetypes.guess_type(target)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype in ("application/javascript",
                                                      "application/json"):
                ctype += "; charset=utf-8"
            return Response(body, 200, content_type=ctype)

        self._add_http(Route(prefix.rstrip("/") + "/{path:path}", serve, ["GET"]))
        self._add_http(Route(prefix if prefix != "/" else "/", serve, ["GET"]))
        if prefix != "/":  # "/static/" serves the index too
            self._add_http(Route(prefix + "/", serve, ["GET"]))

    # ------------------------------------------------------------------ topics
    def publish(self, topic: Union[str, bytes], data: Sendable,
                exclude: Optional[Union[WebSocket, Connection]] = None,
                compress: Optional[bool] = None, binary: Optional[bool] = None) -> int:
        """Send ``data`` to every WebSocket subscribed to ``topic``, except ``exclude``:
        a str as text, bytes-like as binary, a :class:`pyws.Message` with its own opcode
        (``binary=True``/``False`` overrides; see :meth:`WebSocket.send`). Framed once in C; a
        subscriber past its ``write_limit`` is closed with 1008 instead of stalling the
        others. Returns how many connections it was queued on. ``compress``: see
        :meth:`Manager.publish`. From a blocking handler's thread it is handed to the loop's
        thread and returns once queued; from other threads it raises WrongThreadError."""
        if self._threads.is_handler_thread():
            return int(self._threads.call(self.publish, (topic, data, exclude, compress,
                                                         binary)))
        conn = exclude.conn if isinstance(exclude, WebSocket) else exclude
        return self.mgr.publish(topic, data, conn, binary, compress)

    def broadcast(self, data: Sendable, exclude: Optional[Union[WebSocket, Connection]] = None,
                  compress: Optional[bool] = None, binary: Optional[bool] = None) -> int:
        """Send ``data`` to every open WebSocket (framed once, see :meth:`publish`); from a
        blocking handler's thread too, as :meth:`publish`."""
        if self._threads.is_handler_thread():
            return int(self._threads.call(self.broadcast, (data, exclude, compress, binary)))
        conn = exclude.conn if isinstance(exclude, WebSocket) else exclude
        return self.mgr.broadcast(data, conn, binary, compress)

    def subscribers(self, topic: Union[str, bytes]) -> int:
        """How many connections are subscribed to ``topic`` (from a blocking handler's
        thread too)."""
        if self._threads.is_handler_thread():
            return int(self._threads.call(self.subscribers, (topic,)))
        return self.mgr.subscribers(topic)

    @property
    def topic_count(self) -> int:
        """How many topics have at least one subscriber."""
        return self.mgr.topic_count

    @property
    def connections(self) -> Set[WebSocket]:
        """The open WebSockets."""
        return {ws for ws in self._sockets.values() if ws.connected}

    # ------------------------------------------------------------------ broker
    @property
    def broker(self) -> Optional[Broker]:
        """The Redis broker (``App(broker="redis://...")``), or None: ``app.broker.stats()``,
        ``app.broker.state``."""
        return self.mgr.broker

    def use_broker(self, url: Optional[str], **options: Any) -> None:
        """Share topics through the broker at ``url`` (None: none) from now on, instead of
        what the App was made with. Before the App serves: its loop is made anew."""
        if self.mgr._conns or self.mgr._listeners:
            raise PyWSError("use_broker() must be called before the App listens or connects")
        _, _, mgr_options = self._mgr_args
        self._mgr_args = (url, options or None, mgr_options)
        self._fresh_loop()

    def on_broker(self, fn: Callable[[BrokerEvent], Any]) -> Callable[[BrokerEvent], Any]:
        """Decorator: ``fn(event)`` runs on the loop's thread when the broker goes away or
        comes back (a :class:`pyws.BrokerEvent`: ``up``, ``topics`` that may have missed
        messages, ``dropped`` publishes of this node, ``down_for``, ``reason``)."""
        self._broker_hooks.append(fn)
        return fn
    # ------------------------------------------------------------------ observability
    def topics(self) -> Dict[Union[str, bytes], int]:
        """Every topic with a subscriber and how many it has (see :meth:`Manager.topics`)."""
        return self.mgr.topics()

    def topic_members(self, topic: Union[str, bytes]) -> List[WebSocket]:
        """The WebSockets subscribed to ``topic`` (empty if none)."""
        socks = self._sockets
        return [socks[c.id] for c in self.mgr.topic_members(topic) if c.id in socks]

    def stats(self) -> ServerStats:
        """The server's counters: connections by state, messages and bytes, closes and
        handshake failures by reason, drops (a dict; see :class:`pyws.ServerStats`)."""
        return self.mgr.stats()

    def metrics(self, path: str = "/metrics") -> None:
        """Serve :meth:`stats` at ``path`` (a GET route) in the Prometheus text format 0.0.4
        (see :mod:`pyws.metrics`)."""
        def scrape(request: Request) -> Response:
            broker = self.mgr.broker
            return Response(metrics.render(self.mgr.stats(), broker=broker.stats()
                                           if broker is not None else None), 200,
                            content_type=metrics.CONTENT_TYPE)
        self.route(path, ["GET"])(scrape)

    # ------------------------------------------------------------------ clients
    def connect(self, url: str, handler: WsHandler, *, headers: Optional[Dict[str, str]] = None,
                protocols: Optional[List[str]] = None, origin: Optional[str] = None,
                tls: Optional[TlsOpts] = None, **options: Any) -> Connection:
        """Open a client WebSocket to ``url`` from this App's loop and run ``handler(ws)`` (a
        generator, as for server routes; a plain function runs once, on the loop's thread:
        the blocking thread-pool driver is for server routes) once it is open;
        ``ws.request`` is then the server's 101 response. If the connect or handshake fails, the handler is called with a ``ws``
        whose ``connected`` is False and ``ws.error`` tells why, so it can log or retry
        (``yield ws.sleep(1)`` is not possible then: schedule a new ``app.connect``).
        Returns the underlying :class:`Connection`."""
        if inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler):
            raise TypeError(f"{handler.__name__} is an async function: pyws handlers are plain "
                            "generators")

        def on_event(conn: Connection, ev: int, data: Any) -> None:
            if ev == EV_WS_OPEN:
                request = Request(data if data is not None else HttpMessage(b"HTTP/1.1 101"),
                                  {}, conn.remote_addr)
                ws = WebSocket(self, conn, request, opened=True)
                self._sockets[conn.id] = ws
                self._driver.bind(ws)  # from now on events go to the socket
                self._driver.start(ws, handler)
            elif ev == EV_ERROR and not conn.is_websocket:
                failed = WebSocket(self, conn, Request(HttpMessage(b"HTTP/1.1 0"), {}, ""),
                                   opened=False)
                failed.error = conn.error
                self._driver.start(failed, handler)  # runs until it returns or waits

        return self.mgr.ws_connect(url, on_event, headers=headers, protocols=protocols,
                                   origin=origin, tls=tls, **options)

    # ------------------------------------------------------------------ running
    def listen(self, host: str = "127.0.0.1", port: int = 8000, *,
               tls: Optional[TlsOpts] = None, **options: Any) -> Listener:
        """Listen on host:port (port 0 picks one: see the returned ``Listener.port``); then
        call :meth:`poll` from your own loop, or use :meth:`run`. With ``tls=TlsOpts(cert=...,
        key=...)`` every connection speaks TLS (https:// and wss://)."""
        h = f"[{host}]" if ":" in host and not host.startswith("[") else host
        scheme = "https" if tls is not None else "http"
        return self.mgr.listen(f"{scheme}://{h}:{port}", tls=tls, **options)

    def poll(self, timeout_ms: int = 0) -> int:
        """One loop iteration (see ``Manager.poll``)."""
        return self.mgr.poll(timeout_ms)

    def run(self, host: str = "127.0.0.1", port: int = 8000, *, workers: int = 1,
            shutdown_timeout: float = 5.0, on_start: Optional[Callable[[Listener], Any]] = None,
            **options: Any) -> None:
        """Serve until SIGINT or SIGTERM (or :meth:`stop`), then stop accepting, close every
        WebSocket with 1001, flush, and return. Signals are only hooked when called from the
        main thread. An App with ``async def`` handlers or routes runs with ``await
        app.serve(...)`` instead (TypeError here).

        ``workers=N`` (N > 1) forks N worker processes that share the port (SO_REUSEPORT on
        Linux, an inherited listening socket elsewhere), each with a loop of its own made
        afresh in the worker (set up timers and clients in ``on_start``, which runs in each),
        under a supervisor that restarts a worker that dies and, on SIGTERM/SIGINT, stops them
        all gracefully; see :mod:`pyws.workers`. Topics span workers only with ``broker=``."""
        for r in self._ws_routes + self._http_routes:
            if r.driver == "async" or aio.is_async(r.handler):
                raise TypeError(f"{r.pattern}: {r.handler.__name__} is async def; run the App "
                                "inside asyncio with `await app.serve(host, port)`")
        if workers != 1:
            from .workers import Worker, run_workers

            def main(w: Worker) -> None:
                self._fresh_loop()
                fd_opts: Dict[str, Any] = {"fd": os.dup(w.fd)} if w.fd is not None else \
                    {"reuse_port": True}
                self._serve(w.host, w.port, shutdown_timeout, on_start, {**options, **fd_opts})

            if self.mgr.broker is None:
                log.warning("pyws: %d workers without a broker: a publish reaches the "
                            "subscribers of its own worker only (App(broker=...))", workers)
            run_workers(main, workers, host=host, port=port, shutdown_timeout=shutdown_timeout)
            return
        self._serve(host, port, shutdown_timeout, on_start, options)

    def _serve(self, host: str, port: int, shutdown_timeout: float,
               on_start: Optional[Callable[[Listener], Any]], options: Dict[str, Any]) -> None:
        if not self.mgr._in_poll:
            self.mgr._owner = threading.get_ident()  # run() owns the loop, whichever thread
        self._stop.clear()
        lst = self.listen(host, port, **options)
        if on_start is not None:
            on_start(lst)
        previous: Dict[Any, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: self._stop.set())
        try:
            while not self._stop.is_set():
                self.mgr.poll(100)
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
            self.shutdown(shutdown_timeout)

    def _fresh_loop(self) -> None:
        """In a forked worker: a loop of its own (the parent's epoll set and wakeup fd are
        shared with the other workers after fork, so they must not be used here)."""
        old = self.mgr
        broker, broker_options, options = self._mgr_args
        self.mgr = Manager(self._on_event, broker=broker, broker_options=broker_options,
                           **options)
        self._sockets.clear()
        self._per_ip.clear()
        self._accepted = 0
        old._owner = threading.get_ident()
        old.close()

    async def serve(self, host: str = "127.0.0.1", port: int = 8000, *,
                    tls: Optional[TlsOpts] = None, shutdown_timeout: float = 5.0,
                    on_start: Optional[Callable[[Listener], Any]] = None,
                    **options: Any) -> None:
        """Serve inside the running asyncio loop (default loop or uvloop) until cancelled,
        then stop accepting, close every WebSocket with 1001, flush (up to
        ``shutdown_timeout`` seconds) and re-raise the cancellation. Generator, callback and
        ``async def`` handlers all run. See :mod:`pyws.aio`."""
        await aio.serve(self, host, port, tls=tls, shutdown_timeout=shutdown_timeout,
                        on_start=on_start, **options)

    def stop(self) -> None:
        """THREAD-SAFE. Make :meth:`run` return (after its graceful shutdown)."""
        self._stop.set()
        if self.mgr._loop is not None:
            try:
                self.mgr.call_soon_threadsafe(lambda: None, timeout=0)
            except PyWSError:
                pass  # closed meanwhile, or a full queue: the loop is awake either way

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every WebSocket with 1001, flush (see Manager.shutdown), and
        wait for the blocking handlers to return (their ``ws.recv()`` gives None, then raises
        ConnectionClosed), polling meanwhile: all within ``timeout`` seconds. Handlers still
        running then are logged; :meth:`close` stops what is left."""
        deadline = time.monotonic() + timeout
        self._threads.going_away()
        self.mgr.shutdown(timeout)
        if not self._threads.wait_idle(deadline, lambda: self.mgr.poll(20)):
            log.warning("pyws: %d blocking handler(s) still running %g s after shutdown began; "
                        "close() tells them (their ws calls raise ConnectionClosed) and joins "
                        "them for at most 1 s", self._threads.busy, timeout)

    def close(self) -> None:
        """Free the loop at once (after :meth:`shutdown` for a graceful stop). Blocking
        handlers are told (their waits and ws calls raise ConnectionClosed(1001)) and their
        threads joined for at most 1 s."""
        self.mgr.close()

    def __enter__(self) -> "App":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mgr.__exit__(*exc)

    # ------------------------------------------------------------------ events
    def _on_event(self, conn: Connection, ev: int, data: Any) -> None:
        # events of WebSocket connections go straight to their socket (Driver.bind)
        if ev == EV_BROKER:
            for fn in self._broker_hooks:
                try:
                    fn(data)
                except Exception:
                    log.exception("pyws: on_broker hook %r raised", fn)
        elif ev == EV_HTTP_MSG:
            self._on_request(conn, data)
        elif ev == EV_ERROR and conn is not None:
            log.info("pyws: %s: %s", conn.remote_addr, data)

    def _on_request(self, conn: Connection, hm: HttpMessage) -> None:
        path = hm.uri
        if hm.is_websocket_upgrade:
            for r in self._ws_routes:
                params = r.match(path)
                if params is not None:
                    self._open(conn, hm, r, params)
                    return
            if self.unknown_websocket == "404":
                conn.reply(404, "no WebSocket route for this path\n")
                conn.drain()
            else:
                try:
                    conn.ws_upgrade(hm)
                except HandshakeError:
                    return  # not a valid upgrade: C already answered 400/426
                conn.close(1001, "no WebSocket route for this path")
            return
        self._serve_http(conn, hm)

    def _open(self, conn: Connection, hm: HttpMessage, route: Route,
              params: Dict[str, Any]) -> None:
        policy = self._ws_policies.get(route)
        if policy is not None:  # the route's origin and subprotocol rules
            proto, status, why = policy.check(hm)
            if status:
                log.info("pyws: %s: %s", conn.remote_addr, refuse_upgrade(conn, status, why))
                return
            if policy.subprotocols:
                conn._auto_protocol = proto
        request = Request(hm, params, conn.remote_addr)
        if self.max_connections is not None and \
                self._accepted >= self.max_connections:
            conn.reply(503, "server at capacity: too many WebSocket connections\n",
                       {"Retry-After": "5"})
            conn.drain()
            return
        ip = request.remote_ip
        if self.max_connections_per_ip is not None and \
                self._per_ip.get(ip, 0) >= self.max_connections_per_ip:
            conn.reply(503, "too many WebSocket connections from this address\n",
                       {"Retry-After": "5"})
            conn.drain()
            return
        fn: Callable[[Any], Any] = route.handler
        if route.kwargs is not None:
            fn = _with_kwargs(route.handler, route.kwargs(None, params, request))
        driver = route.driver or ("async" if aio.is_async(route.handler) else "generator")
        if driver == "thread":
            if not self._threads.has_room():
                self._threads.refuse(conn, request.path, request.remote_addr)
                return
            tws = ThreadedWebSocket(self, conn, request, self._threads)
            self._admit(tws, ip)
            self._threads.start(tws, fn)
            return
        ws = WebSocket(self, conn, request)
        self._admit(ws, ip)
        self._driver.bind(ws)
        if driver == "async":
            aio.start_handler(self, ws, fn)
        else:
            self._driver.start(ws, fn)
        if ws.rejected:
            self._forget(ws)

    def _admit(self, ws: WebSocket, ip: str) -> None:
        self._sockets[ws.conn.id] = ws
        self._accepted += 1
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1

    def _closed(self, ws: WebSocket) -> None:
        self._forget(ws)

    def _forget(self, ws: WebSocket) -> None:
        if self._sockets.pop(ws.conn.id, None) is not None and not ws.conn.is_client:
            # (App.connect sockets take no server capacity: neither count nor per-IP slot)
            self._accepted -= 1
            ip = ws.request.remote_ip
            left = self._per_ip.get(ip, 1) - 1
            if left > 0:
                self._per_ip[ip] = left
            else:
                self._per_ip.pop(ip, None)

    def _serve_http(self, conn: Connection, hm: HttpMessage) -> None:
        path = hm.uri
        method = hm.method.upper()
        allowed: List[str] = []
        for r in self._http_routes:
            params = r.match(path)
            if params is None:
                continue
            methods = r.methods or {"GET"}
            if method in methods or (method == "HEAD" and "GET" in methods):
                self._call_route(conn, hm, r, params, head=method == "HEAD")
                return
            allowed.extend(sorted(methods | ({"HEAD"} if "GET" in methods else set())))
        extra: Dict[str, str] = {}
        if allowed:
            status, text = 405, "method not allowed\n"
            extra = {"Allow": ", ".join(sorted(set(allowed)))}
        elif any(r.match(path) is not None for r in self._ws_routes):
            status, text = 426, "this path is a WebSocket endpoint\n"
            extra = {"Upgrade": "websocket", "Connection": "Upgrade"}
        else:
            status, text = 404, "not found\n"
        # HEAD: the same head, no body (a body would desync keep-alive)
        conn.reply(status, text, extra, head_only=method == "HEAD")
        self._finish_http(conn, hm)

    def _call_route(self, conn: Connection, hm: HttpMessage, route: Route,
                    params: Dict[str, Any], head: bool) -> None:
        request = Request(hm, params, conn.remote_addr)
        try:
            if route.kwargs is not None:
                result = route.handler(request, **route.kwargs(request, params, request))
            else:
                result = route.handler(request)
            if inspect.iscoroutine(result):  # an async def route: answered by its task
                aio.finish_route(self, conn, hm, result, head, route.pattern)
                return
            resp = to_response(result)
        except Exception:
            log.exception("pyws: route %s raised", route.pattern)
            resp = Response(b"internal server error\n", 500, content_type="text/plain")
        conn.reply(resp.status, resp.body, resp.headers, head_only=head)
        self._finish_http(conn, hm)

    @staticmethod
    def _finish_http(conn: Connection, hm: HttpMessage) -> None:
        connection = (hm.header("connection") or "").lower()
        if hm.version == "HTTP/1.0" and "keep-alive" not in connection or "close" in connection:
            conn.drain()


def _with_kwargs(handler: Callable[..., Any], kw: Dict[str, Any]) -> Callable[[Any], Any]:
    """``handler`` called as ``handler(ws, **kw)`` (the path parameters and request it asks
    for), under its own name (for logs)."""
    def call(ws: Any) -> Any:
        return handler(ws, **kw)
    call.__name__ = getattr(handler, "__name__", "handler")
    call.__qualname__ = getattr(handler, "__qualname__", call.__name__)
    return call


def _no_handler(*_: Any) -> None:
    """The handler of the routes App builds only to check a pattern."""


__all__ = ["App", "Route", "WebSocket", "Request", "Response"]
