"""Running out of file descriptors, over real sockets.

A pyws server runs in a child process whose RLIMIT_NOFILE is lowered (128); the test process
keeps its own limit and opens more connections than the child can hold. Checked:

- at ``max_sockets`` (by default derived from the limit) new connections get a 503 and are
  closed at once, the server stays near idle, logs a line a second at most, and serves again
  once connections close (Manager and App);
- with ``max_sockets`` above the limit, accept() itself fails with EMFILE: the listeners are
  paused instead of spinning, the log says so once a second at most, and the connections
  waiting in the backlog are served once descriptors come free.

Every test is bounded by a few seconds, binds 127.0.0.1 only on port 0, and stops its child.
"""
from __future__ import annotations

import json
import os
import re
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

import pyws
from pyws._lib import lib
from _rawws import OP_TEXT, RawWS, handshake_request
from conftest import PKG_PARENT

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads the child's CPU time from /proc")

LIMIT = 128          # the child's RLIMIT_NOFILE
MAX_CPU = 10.0       # per cent of one CPU the child may use while at the limit

# The child: lowers its descriptor limit, serves WebSocket echo (callback Manager or App) and
# answers "stats" on stdin with a JSON line. Logs go to stderr with a timestamp.
CHILD = r'''
import json, logging, resource, select, sys
limit, mode, cap = int(sys.argv[1]), sys.argv[2], sys.argv[3]
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
logging.basicConfig(level=logging.WARNING, format="%(created).3f %(message)s", stream=sys.stderr)
import pyws
from pyws import EV_HTTP_MSG, EV_WS_MSG
opts = {} if cap == "auto" else {"max_sockets": int(cap)}
if mode == "manager":
    def handler(conn, ev, data):
        if conn is None:
            return  # EV_ERROR about a listener: the manager logs it
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
    mgr = pyws.Manager(handler, **opts)
    lst = mgr.listen("http://127.0.0.1:0")
else:
    app = pyws.App(**opts)
    @app.websocket("/ws")
    def echo(ws):
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg)
    lst = app.listen("127.0.0.1", 0)
    mgr = app.mgr
print(json.dumps({"port": lst.port, "max_sockets": lst.max_sockets}), flush=True)
while True:
    mgr.poll(50)
    if select.select([sys.stdin], [], [], 0)[0]:
        line = sys.stdin.readline().strip()
        if line != "stats":
            break
        print(json.dumps(mgr.stats()), flush=True)
mgr.close()
'''


class LimitedServer:
    """The child process above, with its stderr in a temporary file."""

    def __init__(self, mode: str = "manager", max_sockets: Optional[int] = None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(LIMIT), mode,
             "auto" if max_sockets is None else str(max_sockets)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True, env=env)
        self.started = time.monotonic()
        try:
            hello = self._line(10.0)
        except BaseException:
            self.stop()
            raise
        self.port: int = hello["port"]
        self.max_sockets: int = hello["max_sockets"]

    def _line(self, timeout: float) -> Dict[str, Any]:
        assert self.proc.stdout is not None
        ready = select.select([self.proc.stdout], [], [], timeout)[0]
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"the server said nothing; stderr: {self.stderr()[-2000:]}")
        return dict(json.loads(line))

    def stats(self) -> Dict[str, int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return {k: int(v) for k, v in self._line(5.0).items()
                if isinstance(v, int)}  # the limit counters (stats() has more: test_stats.py)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the child so far (/proc/<pid>/stat fields 14 and 15)."""
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read().decode("utf-8", "replace")

    def log_lines(self, word: str) -> List[str]:
        return [ln for ln in self.stderr().splitlines() if word in ln]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        self.err.close()


class CpuMeter:
    """Share of one CPU the child used between start and stop."""

    def __init__(self, srv: LimitedServer) -> None:
        self.srv = srv
        self.cpu0 = srv.cpu_seconds()
        self.t0 = time.monotonic()

    def percent(self) -> Tuple[float, float]:
        """(per cent of a CPU, seconds measured)."""
        wall = time.monotonic() - self.t0
        return 100.0 * (self.srv.cpu_seconds() - self.cpu0) / wall, wall


def open_ws(port: int, timeout: float = 5.0, path: str = "/ws") -> RawWS:
    ws = RawWS(port, timeout)
    try:
        ws.handshake(path)
    except BaseException:
        ws.close()
        raise
    return ws


def echo_ok(ws: RawWS, text: bytes = b"hello") -> None:
    ws.send_frame(text, OP_TEXT)
    op, fin, payload = ws.recv_frame(5.0)
    assert (op, fin, payload) == (OP_TEXT, True, text)


def refused_answer(port: int, send_first: bool) -> str:
    """Connect past the cap: "503", "eof" (closed without an answer) or what came instead."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    try:
        if send_first:
            s.sendall(handshake_request("/ws"))
        data = b""
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                return "reset" if not data else data.decode("latin-1")
            if not chunk:
                break
            data += chunk
        if not data:
            return "eof"
        head = data.decode("latin-1")
        if head.startswith("HTTP/1.1 503 ") and "\r\nConnection: close\r\n" in head and \
                "\r\nRetry-After: 1\r\n" in head:
            return "503"
        return head
    finally:
        s.close()


def ws_after_retries(port: int, deadline: float, path: str = "/ws") -> RawWS:
    """A WebSocket once the server has room again (503s until then), within deadline."""
    last: Any = None
    while time.monotonic() < deadline:
        try:
            return open_ws(port, 2.0, path)
        except (AssertionError, EOFError, OSError) as exc:
            last = exc
            time.sleep(0.05)
    raise AssertionError(f"no WebSocket before the deadline: {last!r}")


def rate_ok(lines: List[str], seconds: float) -> bool:
    """At most one line a second (the first one comes at once)."""
    return len(lines) <= int(seconds) + 2


# --------------------------------------------------------------------------- tests

def test_default_max_sockets_formula() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft > 0x7FFFFFFF:
        expected = 0x7FFFFFFF
    else:
        expected = max(1, soft - max(32, soft // 16))
    assert int(lib.pyws_auto_max_sockets()) == expected
    assert pyws.DEFAULT_OPTIONS["max_sockets"] is None
    with pyws.Manager() as mgr:
        assert mgr.listen("http://127.0.0.1:0").max_sockets == expected
        assert mgr.listen("http://127.0.0.1:0", max_sockets=7).max_sockets == 7
        st = mgr.stats()
        limits = {"open_sockets": 0, "refused": 0, "accept_failures": 0,
                  "accept_pauses": 0, "accepts_paused": 0, "pause_ms": 0}
        assert {k: st[k] for k in limits} == limits  # (stats() has more: test_stats.py)
    with pyws.Manager(max_sockets=12) as mgr:
        assert mgr.listen("http://127.0.0.1:0").max_sockets == 12
    for bad in (0, -1):
        with pytest.raises(ValueError):
            pyws.Manager(max_sockets=bad)
    # in the child, at RLIMIT_NOFILE 128: 128 - max(32, 8) = 96
    srv = LimitedServer()
    try:
        assert srv.max_sockets == LIMIT - 32
    finally:
        srv.stop()


def test_cap_refuses_with_503_stays_idle_and_recovers() -> None:
    srv = LimitedServer("manager")
    held: List[RawWS] = []
    try:
        cap = srv.max_sockets
        assert cap == 96
        for _ in range(cap):
            held.append(open_ws(srv.port))
        echo_ok(held[0])
        assert srv.stats()["open_sockets"] == cap

        # keep knocking for a while: every new connection is answered and closed at once
        meter = CpuMeter(srv)
        answers: Dict[str, int] = {}
        n = 0
        while time.monotonic() - meter.t0 < 2.5:
            for _ in range(5):
                a = refused_answer(srv.port, send_first=n % 2 == 0)
                answers[a] = answers.get(a, 0) + 1
                n += 1
            time.sleep(0.02)
        cpu, wall = meter.percent()
        st = srv.stats()
        print(f"\ncap {cap}: {n} refused connections in {wall:.1f} s, answers {answers}, "
              f"server CPU {cpu:.1f} %, stats {st}")
        assert set(answers) <= {"503", "eof"}, answers
        assert answers.get("503", 0) >= n * 9 // 10, answers
        assert st["refused"] == n and st["open_sockets"] == cap
        assert cpu < MAX_CPU, f"server used {cpu:.1f} % of a CPU while refusing"
        time.sleep(1.5)  # the last count is reported within a second
        lines = srv.log_lines("refused a connection")
        elapsed = time.monotonic() - srv.started
        print(f"log lines about refusals: {len(lines)} in {elapsed:.1f} s; last: {lines[-1]!r}")
        assert lines and rate_ok(lines, elapsed), lines
        assert re.search(r"refused a connection with 503: the loop has max_sockets \(96\) open "
                         r"sockets \(\d+ times in [\d.]+ s\)", "\n".join(lines)), lines
        reported = sum(int(m) for m in re.findall(r"\((\d+) times in", "\n".join(lines)))
        reported += sum(1 for ln in lines if "times in" not in ln)
        assert reported == n, (reported, n)

        # room again: the held ones still echo, a new one gets in
        for ws in held[:10]:
            ws.close()
        del held[:10]
        fresh = ws_after_retries(srv.port, time.monotonic() + 3.0)
        held.append(fresh)
        echo_ok(fresh)
        echo_ok(held[0])
    finally:
        for ws in held:
            ws.close()
        srv.stop()


def test_app_cap_refuses_and_recovers() -> None:
    srv = LimitedServer("app", max_sockets=20)
    held: List[RawWS] = []
    try:
        assert srv.max_sockets == 20
        for _ in range(20):
            held.append(open_ws(srv.port))
        echo_ok(held[-1])
        assert refused_answer(srv.port, send_first=True) == "503"
        assert refused_answer(srv.port, send_first=False) == "503"
        st = srv.stats()
        assert st["refused"] == 2 and st["open_sockets"] == 20
        held.pop().close()
        fresh = ws_after_retries(srv.port, time.monotonic() + 3.0)
        held.append(fresh)
        echo_ok(fresh)
    finally:
        for ws in held:
            ws.close()
        srv.stop()


def test_emfile_pauses_accepts_and_recovers() -> None:
    # max_sockets above the descriptor limit: accept() itself runs out of descriptors
    srv = LimitedServer("manager", max_sockets=100000)
    socks: List[socket.socket] = []
    try:
        assert srv.max_sockets == 100000
        # more connections than the child can hold, each with its upgrade request sent
        for _ in range(LIMIT + 40):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5.0)
            s.sendall(handshake_request("/ws"))
            socks.append(s)
        # those the server could accept answer 101; the rest wait in the backlog
        deadline = time.monotonic() + 5.0
        answered: List[socket.socket] = []
        while time.monotonic() < deadline:
            answered = [s for s in socks if s in select.select(socks, [], [], 0)[0]]
            if len(answered) == srv.stats()["open_sockets"] and answered:
                break
            time.sleep(0.1)
        waiting = [s for s in socks if s not in answered]
        assert answered and len(waiting) >= 20, (len(answered), len(waiting))

        meter = CpuMeter(srv)
        time.sleep(3.0)
        cpu, wall = meter.percent()
        st = srv.stats()
        elapsed = time.monotonic() - srv.started
        lines = srv.log_lines("accept failed")
        print(f"\nEMFILE: {len(answered)} accepted, {len(waiting)} waiting; server CPU "
              f"{cpu:.1f} % over {wall:.1f} s; {len(lines)} log lines in {elapsed:.1f} s; "
              f"stats {st}; last line {lines[-1] if lines else None!r}")
        assert cpu < MAX_CPU, f"server used {cpu:.1f} % of a CPU at EMFILE"
        assert st["accept_failures"] >= 1 and st["accept_pauses"] >= 1
        assert st["pause_ms"] >= 10
        assert st["accept_failures"] < 40  # a few a second, not a spin
        assert lines and rate_ok(lines, elapsed), lines
        assert all(re.search(r"pyws: accept failed: Too many open files( \(\d+ times in "
                             r"[\d.]+ s\))?; (pausing accepts for \d+ ms|accepting again)$", ln)
                   for ln in lines), lines
        assert st["open_sockets"] == len(answered)

        # free descriptors: the connections waiting in the backlog are served
        for s in answered[:len(waiting) + 10]:
            s.close()
        t0 = time.monotonic()
        for s in waiting:
            s.settimeout(max(0.1, t0 + 4.0 - time.monotonic()))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                assert chunk, "closed instead of upgraded"
                data += chunk
            assert data.startswith(b"HTTP/1.1 101 "), data[:200]
        served_in = time.monotonic() - t0
        print(f"waiting connections served {served_in:.2f} s after descriptors came free")
        ws = ws_after_retries(srv.port, time.monotonic() + 3.0)
        try:
            echo_ok(ws)
        finally:
            ws.close()
        assert srv.stats()["accepts_paused"] == 0
    finally:
        for s in socks:
            s.close()
        srv.stop()
