"""Shared fixtures: a pyws server polled in a background thread, and example programs run as
subprocesses against the same pyws build the tests import (so the sanitizer and poll(2) runs
exercise their own builds)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import socket
import subprocess
import sys
import threading
import time
from typing import (Any, AsyncIterator, Awaitable, Callable, Dict, Iterator, List, Optional,
                    TypeVar)

import pytest
import uvloop

import pyws

T = TypeVar("T")


def native_env() -> Dict[str, str]:
    """The environment for a foreign program (node, Chromium) started by a test: without the
    sanitizer runtime the ASan suite preloads into Python, which breaks such programs (node's
    inflating of compressed messages, for one)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pyws.__file__)))
SANITIZED = os.environ.get("PYWS_SANITIZED") == "1"


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "slow: long-running test, skipped in the sanitizer run")


def pytest_report_header(config: Any) -> str:
    return f"pyws backend: {pyws.backend()}, from {os.path.dirname(pyws.__file__)}"


class ServerThread:
    """A Manager created and polled on its own thread. ``call(fn)`` runs fn on that thread and
    returns its result, which is how tests touch connections safely."""

    def __init__(self, handler: Optional[pyws.manager.Handler], **options: Any) -> None:
        self.handler = handler
        self.options = options
        self.mgr: Optional[pyws.Manager] = None
        self.port = 0
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            listen_opts = self.options.pop("listen_options", {})
            listen_url = self.options.pop("listen_url", "http://127.0.0.1:0")
            self.mgr = pyws.Manager(self.handler, **self.options)
            lst = self.mgr.listen(listen_url, **listen_opts)
            self.port = lst.port
            self._ready.set()
            while not self._stop.is_set():
                self.mgr.poll(20)
            self.mgr.shutdown(1.0)
            self.mgr.close()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc
            self._ready.set()

    def start(self) -> "ServerThread":
        self._thread.start()
        self._ready.wait(10)
        if self.error:
            raise self.error
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        assert self.mgr is not None
        done = threading.Event()
        box: List[Any] = []

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:
                box.append((False, exc))
            done.set()

        self.mgr.call_soon_threadsafe(run)
        if not done.wait(timeout):
            raise TimeoutError("the loop thread did not run the call in time")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error:
            raise self.error


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ServerThread]]:
    """``server_factory(handler, **options)`` starts a ServerThread; all are stopped at the end."""
    started: List[ServerThread] = []

    def make(handler: Optional[pyws.manager.Handler], **options: Any) -> ServerThread:
        s = ServerThread(handler, **options).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def echo_handler(conn: pyws.Connection, ev: int, data: Any) -> None:
    """Upgrade every WebSocket request, echo every message."""
    if ev == pyws.EV_HTTP_MSG:
        if data.is_websocket_upgrade:
            conn.ws_upgrade(data)
        else:
            conn.reply(200, "ok")
    elif ev == pyws.EV_WS_MSG:
        conn.ws_send(data.data, data.opcode)


@pytest.fixture
def echo_server(server_factory: Callable[..., ServerThread]) -> ServerThread:
    """An echo server (64 MiB max message) on a free port."""
    return server_factory(echo_handler, max_message_size=64 * 1024 * 1024,
                          write_limit=256 * 1024 * 1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


class ExampleProcess:
    def __init__(self, proc: "subprocess.Popen[str]", port: int) -> None:
        self.proc = proc
        self.port = port

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        out = self.proc.stdout.read() if self.proc.stdout else ""
        return out


@pytest.fixture
def run_example() -> Iterator[Callable[..., ExampleProcess]]:
    """``run_example("echo_server.py", "--max-size", "100")`` starts examples/<name> with
    --host 127.0.0.1 --port <free>, waits for the port, and stops it at the end."""
    procs: List[ExampleProcess] = []

    def run(name: str, *args: str) -> ExampleProcess:
        port = free_port()
        env = dict(os.environ)
        env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "examples", name), "--host", "127.0.0.1",
             "--port", str(port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        ep = ExampleProcess(proc, port)
        procs.append(ep)
        wait_port(port)
        return ep

    yield run
    for p in procs:
        p.stop()


class AppServer:
    """An App listening on a free port, polled by a background thread. The App is built (and
    its routes registered) on the test's thread; the poll thread takes the loop over.
    ``call(fn)`` runs fn on the loop thread and returns its result."""

    def __init__(self, app: pyws.App, **listen_options: Any) -> None:
        self.app = app
        self.port = app.listen("127.0.0.1", 0, **listen_options).port
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.app.poll(20)
            self.app.shutdown(1.0)
            self.app.close()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> "AppServer":
        self._thread.start()
        return self

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def call(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        done = threading.Event()
        box: List[Tuple[bool, Any]] = []

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:
                box.append((False, exc))
            done.set()

        self.app.mgr.call_soon_threadsafe(run)
        if not done.wait(timeout):
            raise TimeoutError("the loop thread did not run the call in time")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(10)
        assert not self._thread.is_alive(), "the poll thread did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def serve() -> Iterator[Callable[..., AppServer]]:
    """``serve(app, **listen_options)`` starts the app on a free port; stopped at the end."""
    started: List[AppServer] = []

    def start(app: pyws.App, **listen_options: Any) -> AppServer:
        s = AppServer(app, **listen_options).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: Any) -> Callable[[Awaitable[T]], T]:
    """``run(coro)``: run a coroutine to completion on the parametrized loop (asyncio's default
    loop, then uvloop), bounded to 60 s. Every async test runs on both."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro: Awaitable[T]) -> T:
        with asyncio.Runner(loop_factory=factory) as r:
            return r.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]
    return runner


@contextlib.asynccontextmanager
async def aiohttp_server(handler: Callable[..., Any], path: str = "/ws",
                         ssl_context: Optional[ssl.SSLContext] = None) -> AsyncIterator[int]:
    """A real aiohttp server (the peer no one here wrote) on 127.0.0.1:<free port> serving
    ``handler`` at ``path`` (over TLS with ``ssl_context``); yields the port, cleans up after."""
    from aiohttp import web
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serving(app: pyws.App, **kw: Any) -> AsyncIterator[int]:
    """``await app.serve("127.0.0.1", 0, **kw)`` in a task on the running loop; yields the port,
    cancels it (1001 to every client, flush) on exit."""
    ports: List[int] = []
    task = asyncio.create_task(app.serve("127.0.0.1", 0, on_start=lambda l: ports.append(l.port),
                                         **kw))
    while not ports:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    try:
        yield ports[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
