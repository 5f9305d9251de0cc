"""The client examples, run as programs: examples/client.py against a pyws echo server and a
websockets one, and examples/autobahn_client.py against a small fake of the Autobahn fuzzing
server (a websockets server written here) that checks the testee's protocol: the case count,
every case visited with the agent name, each message echoed with its type, cases that end in
an error followed by the next one, and the final updateReports."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from typing import Any, Dict, List, Tuple
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection

from conftest import PKG_PARENT, ROOT, ServerThread
from test_client_interop import WebsocketsServer, echo
from test_client_blocking import payload_of

MiB = 1 << 20


def run_program(name: str, *args: str, timeout: float = 60) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


# =========================================================================== client.py

def test_client_example_against_pyws(echo_server: ServerThread) -> None:
    r = run_program("client.py", "--url", echo_server.url + "/ws", "hello", "second message",
                    "héllo 😀")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"connected to {echo_server.url}/ws")
    assert lines[1:] == ["> hello", "< hello", "> second message", "< second message",
                         "> héllo 😀", "< héllo 😀", "closed"]


def test_client_example_binary_against_websockets() -> None:
    srv = WebsocketsServer({"/": echo})
    try:
        r = run_program("client.py", "--url", srv.url("/"), "--binary", "00ff10", "")
    finally:
        srv.stop()
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1:] == ["> 00ff10", "< 00ff10", "> ", "< ", "closed"]


def test_client_example_defaults(echo_server: ServerThread) -> None:
    r = run_program("client.py", "--url", echo_server.url)
    assert r.returncode == 0, r.stderr
    assert "< pyws" in r.stdout.splitlines()


def test_client_example_reports_failures() -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_program("client.py", "--url", f"ws://127.0.0.1:{port}/", "x")
    assert r.returncode == 1
    assert "refused" in r.stderr.lower()
    assert "Traceback" not in r.stderr
    r = run_program("client.py", "--url", "wss://127.0.0.1:1/", "x")
    assert r.returncode == 1 and "refused" in r.stderr.lower() and "Traceback" not in r.stderr


# =========================================================================== autobahn_client.py

class FakeFuzzingServer:
    """Speaks the fuzzing server's client-mode protocol with 3 cases:

    1. text, binary, a fragmented text message and a ping; every echo checked; close 1000.
    2. a 5 MiB binary message (past pyws' default max_size) and an empty text; close 1011.
    3. one text message, then the TCP connection is dropped without a close frame.
    """

    CASES = 3

    def __init__(self) -> None:
        self.log: List[Tuple[str, Dict[str, List[str]]]] = []
        self.checks: Dict[int, List[Tuple[str, bool]]] = {}
        self.lock = threading.Lock()
        self.server = WebsocketsServer({"/": self.route}, max_size=16 * MiB)

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    def note(self, case: int, what: str, ok: bool) -> None:
        with self.lock:
            self.checks.setdefault(case, []).append((what, ok))

    async def expect(self, ws: ServerConnection, case: int, what: str, sent: Any) -> None:
        got = await asyncio.wait_for(ws.recv(), 10)
        self.note(case, what, type(got) is type(sent) and got == sent)

    async def route(self, ws: ServerConnection) -> None:
        parts = urlsplit(ws.request.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self.lock:
            self.log.append((parts.path, query))
        if parts.path == "/getCaseCount":
            await ws.send(str(self.CASES))
            await ws.close()
        elif parts.path == "/runCase":
            case = int(query["case"][0])
            if case == 1:
                for what, sent in [("text", "Hello, testee"), ("binary", bytes(range(256))),
                                   ("empty", "")]:
                    await ws.send(sent)
                    await self.expect(ws, 1, what, sent)
                await ws.send(["frag", "mented", " text"])
                await self.expect(ws, 1, "fragmented", "fragmented text")
                pong = await ws.ping(b"are you there")
                await asyncio.wait_for(pong, 10)
                self.note(1, "pong", True)
                await ws.close(1000)
            elif case == 2:
                big = payload_of(5 * MiB)
                await ws.send(big)
                await self.expect(ws, 2, "5 MiB", big)
                await ws.send("")
                await self.expect(ws, 2, "empty text", "")
                await ws.close(1011, "the server gives up")
            elif case == 3:
                await ws.send("then vanish")
                await self.expect(ws, 3, "before vanishing", "then vanish")
                ws.transport.abort()
            else:
                self.note(case, "case out of range", False)
                await ws.close(1002)
        elif parts.path == "/updateReports":
            await ws.close()
        else:
            await ws.close(4404, "unknown path")

    def stop(self) -> None:
        self.server.stop()


def test_autobahn_client_runs_every_case() -> None:
    fake = FakeFuzzingServer()
    try:
        r = run_program("autobahn_client.py", "--url", fake.url(), "--agent", "pyws test-agent",
                        "--timeout", "10", timeout=90)
    finally:
        fake.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    paths = [p for p, _ in fake.log]
    assert paths == ["/getCaseCount", "/runCase", "/runCase", "/runCase", "/updateReports"]
    runs = [q for p, q in fake.log if p == "/runCase"]
    assert [q["case"] for q in runs] == [["1"], ["2"], ["3"]]
    assert all(q["agent"] == ["pyws test-agent"] for q in runs)
    assert fake.log[-1][1]["agent"] == ["pyws test-agent"]
    assert fake.checks == {
        1: [("text", True), ("binary", True), ("empty", True), ("fragmented", True),
            ("pong", True)],
        2: [("5 MiB", True), ("empty text", True)],
        3: [("before vanishing", True)],
    }
    out = r.stdout.splitlines()
    assert out[0] == f"3 cases at {fake.url()}, agent 'pyws test-agent'"
    assert out[1].startswith("case 1/3: closed 1000")
    assert out[2].startswith("case 2/3: closed 1011")
    assert out[3].startswith("case 3/3: closed 1006")
    assert out[4].startswith("reports updated")


def test_autobahn_client_url_with_trailing_slash_and_no_server() -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_program("autobahn_client.py", "--url", f"ws://127.0.0.1:{port}/", "--agent", "x",
                    "--timeout", "2")
    assert r.returncode == 1
    assert "getCaseCount" in r.stderr or "case count" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("option", ["--url", "--agent"])
def test_autobahn_client_help_names_its_options(option: str) -> None:
    r = run_program("autobahn_client.py", "--help")
    assert r.returncode == 0
    assert option in r.stdout
