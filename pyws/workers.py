"""Several worker processes on one port, under a small supervisor.

``app.run(host, port, workers=N)`` uses this; a program built on :class:`pyws.Manager` uses
:func:`run_workers` directly::

    def main(worker):                       # runs in each worker process
        mgr = pyws.Manager(handler, broker="redis://127.0.0.1:6379/0")
        worker.listen(mgr)                  # this worker's listener on the shared port
        worker.serve(mgr)                   # poll until SIGTERM, then close with 1001

    pyws.run_workers(main, workers=4, host="0.0.0.0", port=8000)

Each worker is a forked process with its own loop; nothing is shared in memory between them,
so topics span workers only through a broker (``broker=``). On Linux every worker listens on
the port itself with SO_REUSEPORT and the kernel spreads new connections over them; elsewhere
the supervisor listens once and the workers accept from the socket they inherit.

The supervisor restarts a worker that dies, after a delay that doubles (0.1 s up to 10 s)
while workers keep dying within 5 s of their start, and logs why (exit status or signal). On
SIGTERM or SIGINT it tells every worker to stop (SIGTERM: stop accepting, close every
WebSocket with 1001, flush), waits ``shutdown_timeout`` + 2 s, kills what is left, and
returns.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

if TYPE_CHECKING:
    from .manager import Listener, Manager

__all__ = ["Worker", "run_workers"]

log = logging.getLogger("pyws.workers")

_RESTART_MIN = 0.1       # s: first restart delay
_RESTART_MAX = 10.0      # s: the delay doubles up to this while workers die young
_STABLE = 5.0            # s: a worker that lived this long resets the delay


def _has_reuseport_balancing() -> bool:
    # SO_REUSEPORT spreads connections over the listeners on Linux (3.9+) and FreeBSD 12+
    # (SO_REUSEPORT_LB); on macOS it only lets them bind, and the last one gets everything
    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


class Worker:
    """What a worker's ``main`` gets: ``index`` (0..N-1), ``count`` (N), ``host``, ``port``
    (the shared port, resolved when port 0 was asked), ``fd`` (the inherited listening socket,
    or None with SO_REUSEPORT), and ``stopping`` (a threading.Event set by SIGTERM/SIGINT)."""

    def __init__(self, index: int, count: int, host: str, port: int, fd: Optional[int],
                 shutdown_timeout: float) -> None:
        self.index = index
        self.count = count
        self.host = host
        self.port = port
        self.fd = fd
        self.shutdown_timeout = shutdown_timeout
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}"

    def listen(self, mgr: "Manager", handler: Any = None, **options: Any) -> "Listener":
        """Listen on the shared port with ``mgr`` (``options`` as for ``Manager.listen``)."""
        if self.fd is not None:
            return mgr.listen(self.url, handler, fd=os.dup(self.fd), **options)
        return mgr.listen(self.url, handler, reuse_port=self.count > 1, **options)

    def serve(self, mgr: "Manager", poll_ms: int = 100) -> None:
        """Poll ``mgr`` until :attr:`stopping` is set (SIGTERM/SIGINT), then shut it down:
        stop accepting, close every WebSocket with 1001, flush (``shutdown_timeout``)."""
        self.hook_signals()
        while not self.stopping.is_set():
            mgr.poll(poll_ms)
        mgr.shutdown(self.shutdown_timeout)
        mgr.close()

    def hook_signals(self) -> None:
        """Make SIGTERM and SIGINT set :attr:`stopping` (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.stopping.set())


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by signal {sig} ({name})"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"ended (wait status {status})"


def run_workers(main: Callable[[Worker], Any], workers: int, *, host: str = "127.0.0.1",
                port: int = 8000, reuse_port: Optional[bool] = None,
                shutdown_timeout: float = 5.0,
                on_ready: Optional[Callable[[int], Any]] = None) -> int:
    """Run ``main(worker)`` in ``workers`` forked processes sharing ``host:port`` (see the
    module's text) and supervise them until SIGTERM/SIGINT. ``workers=1`` runs ``main`` in
    this process. ``reuse_port``: None picks SO_REUSEPORT where it balances (Linux), False
    makes the supervisor listen and the workers inherit the socket. ``on_ready(port)`` runs in
    the supervisor once the port is known (useful with port 0). Returns 0 after a clean stop.
    Call it from the main thread of a process with no other threads (it forks)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    if workers == 1:
        w = Worker(0, 1, host, port, None, shutdown_timeout)
        if on_ready is not None and port:
            on_ready(port)
        main(w)
        return 0
    if not hasattr(os, "fork"):
        raise RuntimeError("workers > 1 needs fork(): run one process per core instead, each "
                           "with reuse_port=True")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("run_workers(workers > 1) must be called from the main thread")
    use_reuse = _has_reuseport_balancing() if reuse_port is None else bool(reuse_port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    fd: Optional[int] = None
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if use_reuse:
            # bound, never listening: it keeps the port (port 0 resolved once for all workers)
            # while workers come and go; the kernel gives connections only to listening ones
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
        port = holder.getsockname()[1]
        if not use_reuse:
            holder.listen(1024)
            holder.set_inheritable(True)
            fd = holder.fileno()
    except BaseException:
        holder.close()
        raise
    sup = _Supervisor(main, workers, host, port, fd, shutdown_timeout)
    try:
        if on_ready is not None:
            on_ready(port)
        return sup.run()
    finally:
        holder.close()


class _Supervisor:
    def __init__(self, main: Callable[[Worker], Any], n: int, host: str, port: int,
                 fd: Optional[int], shutdown_timeout: float) -> None:
        self.main = main
        self.n = n
        self.host = host
        self.port = port
        self.fd = fd
        self.shutdown_timeout = shutdown_timeout
        self.pids: Dict[int, int] = {}            # pid -> worker index
        self.started: Dict[int, float] = {}       # index -> when its current process started
        self.delay: List[float] = [_RESTART_MIN] * n
        self.restart_at: Dict[int, float] = {}    # index -> when to start it again
        self.stop = False

    def spawn(self, index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                os.environ["PYWS_WORKER"] = str(index)
                self.main(Worker(index, self.n, self.host, self.port, self.fd,
                                 self.shutdown_timeout))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        self.pids[pid] = index
        self.started[index] = time.monotonic()

    def reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            if self.stop:
                continue
            lived = time.monotonic() - self.started.get(index, 0.0)
            if lived >= _STABLE:
                self.delay[index] = _RESTART_MIN
            wait = self.delay[index]
            self.delay[index] = min(_RESTART_MAX, wait * 2)
            log.warning("pyws: worker %d (pid %d) %s after %.1f s; restarting it in %.1f s",
                        index, pid, _describe(status), lived, wait)
            self.restart_at[index] = time.monotonic() + wait

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for i in range(self.n):
                self.spawn(i)
            log.info("pyws: %d workers serving on %s:%d (supervisor pid %d)", self.n,
                     self.host, self.port, os.getpid())
            while not self.stop:
                time.sleep(0.05)
                self.reap()
                now = time.monotonic()
                for index, at in list(self.restart_at.items()):
                    if now >= at and not self.stop:
                        del self.restart_at[index]
                        self.spawn(index)
            return self.shutdown()
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop = True

    def shutdown(self) -> int:
        log.info("pyws: stopping %d workers", len(self.pids))
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.shutdown_timeout + 2.0
        while self.pids and time.monotonic() < deadline:
            time.sleep(0.02)
            self.reap()
        for pid in list(self.pids):
            log.warning("pyws: worker pid %d did not stop in time; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.pids:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.pids.pop(pid, None)
        return 0
