"""The generator-style App examples, each run as a program (``run_example``) and driven with
websocket-client: generator_echo.py, rooms_chat.py, live_dashboard.py, broadcast_server.py.
Each prints its URL, serves, and on SIGTERM/SIGINT closes its WebSockets with 1001 and exits 0."""
from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import struct
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import websocket
from websocket import ABNF

from conftest import ExampleProcess, native_env

RunExample = Callable[..., ExampleProcess]


def ws_connect(port: int, path: str = "/", **kw: Any) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=5, **kw)


def http_get(port: int, path: str) -> Tuple[int, Dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def recv_close(ws: websocket.WebSocket, max_frames: int = 1000) -> int:
    """Skip data frames until the close frame; its code. Shuts the socket (websocket-client
    answers the close but leaves its socket open)."""
    for _ in range(max_frames):
        op, frame = ws.recv_data_frame(True)
        if op == ABNF.OPCODE_CLOSE:
            ws.shutdown()
            return struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
    raise AssertionError("no close frame")


def signal_and_wait(ep: ExampleProcess, sig: int,
                    clients: Tuple[websocket.WebSocket, ...] = ()) -> str:
    """Send ``sig``; each client must get a close frame with 1001 (and answers it); the
    program must then exit 0. Returns its output."""
    ep.proc.send_signal(sig)
    for c in clients:
        assert recv_close(c) == 1001
    ep.proc.wait(10)
    out = ep.stop()
    assert ep.proc.returncode == 0, out
    return out


# ---------------------------------------------------------------------------------- echo
def test_generator_echo(run_example: RunExample) -> None:
    ep = run_example("generator_echo.py")
    c = ws_connect(ep.port)
    d = ws_connect(ep.port, "/any/path/at/all")
    try:
        c.send("héllo")
        assert c.recv() == "héllo"
        c.send_binary(b"\x00\x01\xff")
        assert c.recv() == b"\x00\x01\xff"
        big = bytes(range(256)) * 4096  # 1 MiB
        c.send_binary(big)
        assert c.recv() == big
        c.send("")
        assert c.recv() == ""
        d.send("other path")
        assert d.recv() == "other path"
        status, h, body = http_get(ep.port, "/")
        assert status == 200 and b"echo" in body
        out = signal_and_wait(ep, signal.SIGTERM, (c, d))
    finally:
        c.close()
        d.close()
    lines = out.splitlines()
    assert lines[0].startswith(f"generator echo server on ws://127.0.0.1:{ep.port}/")
    assert lines[-1] == "stopped"


def test_generator_echo_max_size(run_example: RunExample) -> None:
    ep = run_example("generator_echo.py", "--max-size", "1000")
    c = ws_connect(ep.port)
    try:
        c.send("x" * 1000)
        assert c.recv() == "x" * 1000
        c.send("x" * 1001)
        assert recv_close(c) == 1009
    finally:
        c.close()


# ---------------------------------------------------------------------------------- rooms
def _events(ws: websocket.WebSocket, n: int) -> List[Dict[str, Any]]:
    return [json.loads(ws.recv()) for _ in range(n)]


def test_rooms_chat(run_example: RunExample) -> None:
    ep = run_example("rooms_chat.py")
    status, h, page = http_get(ep.port, "/")
    assert status == 200 and h["content-type"].startswith("text/html")
    assert b"/ws/rooms/" in page and b'id="room"' in page and b"new WebSocket" in page

    ann = ws_connect(ep.port, "/ws/rooms/lobby?name=Ann")
    bob = ws_connect(ep.port, "/ws/rooms/lobby?name=Bob")
    eve = ws_connect(ep.port, "/ws/rooms/other")
    socks = [ann, bob, eve]
    try:
        w = json.loads(ann.recv())
        assert w == {"type": "welcome", "room": "lobby", "name": "Ann", "members": 1,
                     "history": []}
        assert json.loads(bob.recv())["members"] == 2
        assert json.loads(ann.recv()) == {"type": "join", "name": "Bob", "members": 2}
        w = json.loads(eve.recv())
        assert w["room"] == "other" and w["name"].startswith("guest") and w["members"] == 1

        bob.send(json.dumps({"type": "message", "text": "hi all"}))
        for s in (ann, bob):  # the sender gets its own message too
            m = json.loads(s.recv())
            assert (m["type"], m["name"], m["text"]) == ("message", "Bob", "hi all")
            assert abs(m["ts"] - time.time()) < 60
        ann.send(json.dumps({"type": "message", "text": "second"}))
        assert json.loads(bob.recv())["text"] == "second"
        assert json.loads(ann.recv())["text"] == "second"

        bob.send("not json")  # errors go to the sender only
        assert json.loads(bob.recv())["type"] == "error"
        bob.send(json.dumps({"type": "message", "text": "   "}))
        assert json.loads(bob.recv())["type"] == "error"

        status, _, body = http_get(ep.port, "/api/rooms")
        assert json.loads(body) == {"lobby": 2, "other": 1}

        # a newcomer gets the recent history
        cid = ws_connect(ep.port, "/ws/rooms/lobby?name=Cid")
        socks.append(cid)
        w = json.loads(cid.recv())
        assert [(h["name"], h["text"]) for h in w["history"]] == [("Bob", "hi all"),
                                                                   ("Ann", "second")]
        assert json.loads(ann.recv())["name"] == "Cid"
        assert json.loads(bob.recv())["name"] == "Cid"

        bob.close()
        assert json.loads(ann.recv()) == {"type": "leave", "name": "Bob", "members": 2}
        assert json.loads(cid.recv()) == {"type": "leave", "name": "Bob", "members": 2}

        # the other room heard nothing of it
        eve.settimeout(0.3)
        with pytest.raises(websocket.WebSocketTimeoutException):
            eve.recv()
        eve.settimeout(5)

        with pytest.raises(websocket.WebSocketBadStatusException) as ei:
            ws_connect(ep.port, "/ws/rooms/bad!room")
        assert ei.value.status_code == 400
    finally:
        for s in socks:
            s.close()


def test_rooms_chat_sigint(run_example: RunExample) -> None:
    ep = run_example("rooms_chat.py")
    a = ws_connect(ep.port, "/ws/rooms/r1?name=A")
    try:
        assert json.loads(a.recv())["type"] == "welcome"
        out = signal_and_wait(ep, signal.SIGINT, (a,))
    finally:
        a.close()
    assert f"http://127.0.0.1:{ep.port}/" in out.splitlines()[0]
    assert out.splitlines()[-1] == "stopped"


# ---------------------------------------------------------------------------------- dashboard
def test_live_dashboard(run_example: RunExample) -> None:
    ep = run_example("live_dashboard.py", "--interval", "0.1")
    status, h, page = http_get(ep.port, "/")
    assert status == 200 and b"/ws/metrics" in page and b"<canvas" in page
    status, _, body = http_get(ep.port, "/api/metrics")
    snap = json.loads(body)
    assert {"cpu", "memory_mb", "requests_per_s", "latency_ms", "clients", "uptime_s"} <= set(snap)

    a = ws_connect(ep.port, "/ws/metrics")
    try:
        times, snaps = [], []
        for _ in range(4):
            snaps.append(json.loads(a.recv()))
            times.append(time.monotonic())
        assert [s["seq"] for s in snaps] == [0, 1, 2, 3]
        gaps = [b - t for t, b in zip(times, times[1:])]
        assert all(0.05 < g < 2.0 for g in gaps), gaps
        assert all(0 <= s["cpu"] <= 100 and s["clients"] == 1 for s in snaps)
        b = ws_connect(ep.port, "/ws/metrics")
        try:
            assert json.loads(b.recv())["seq"] == 0
            assert any(json.loads(a.recv())["clients"] == 2 for _ in range(5))
        finally:
            b.close()
    finally:
        a.close()
    time.sleep(0.3)
    out = signal_and_wait(ep, signal.SIGTERM)
    assert out.count("left after") == 2, out  # the finally blocks ran on disconnect
    assert out.splitlines()[-1] == "stopped"


def test_live_dashboard_sigterm_closes_1001(run_example: RunExample) -> None:
    ep = run_example("live_dashboard.py", "--interval", "0.05")
    a = ws_connect(ep.port, "/ws/metrics")
    try:
        a.recv()
        out = signal_and_wait(ep, signal.SIGTERM, (a,))
        assert "left after" in out
    finally:
        a.close()


# ---------------------------------------------------------------------------------- broadcast
def test_broadcast_server(run_example: RunExample) -> None:
    ep = run_example("broadcast_server.py")
    clients = [ws_connect(ep.port) for _ in range(4)]
    try:
        pub = clients[0]
        pub.send("B:hello")
        for c in clients:  # the sender included
            assert c.recv() == "B:hello"
        pub.send("echo me")
        assert pub.recv() == "echo me"
        pub.send_binary(b"B:binary is echoed")
        assert pub.recv() == b"B:binary is echoed"
        clients[2].send("b:lower case is echoed")
        assert clients[2].recv() == "b:lower case is echoed"
        for c in clients[1:]:  # nothing else reached the others
            c.settimeout(0.2)
            with pytest.raises(websocket.WebSocketTimeoutException):
                c.recv()
            c.settimeout(5)
        # many messages, from two publishers: every client gets every one once, in order
        for i in range(100):
            clients[0].send(f"B:a{i}")
            clients[1].send(f"B:b{i}:" + "x" * (i * 50))
        for c in clients:
            got = [c.recv() for _ in range(200)]
            assert [g for g in got if g.startswith("B:a")] == [f"B:a{i}" for i in range(100)]
            assert [g.split(":")[1] for g in got if g.startswith("B:b")] == \
                [f"b{i}" for i in range(100)]
        status, _, body = http_get(ep.port, "/")
        assert status == 200 and b"4 client(s)" in body
        out = signal_and_wait(ep, signal.SIGTERM, tuple(clients))
    finally:
        for c in clients:
            c.close()
    assert out.splitlines()[0].startswith(f"broadcast server on ws://127.0.0.1:{ep.port}/")
    assert out.splitlines()[-1] == "stopped"


# ---------------------------------------------------------------------------------- pages
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("name", ["rooms_chat.py", "live_dashboard.py"])
def test_page_scripts_parse(run_example: RunExample, tmp_path: Any, name: str) -> None:
    """The pages' inline JavaScript is at least valid syntax (node --check)."""
    ep = run_example(name)
    status, _, page = http_get(ep.port, "/")
    assert status == 200
    scripts = re.findall(rb"<script>(.*?)</script>", page, re.S)
    assert len(scripts) == 1
    js = tmp_path / "page.js"
    js.write_bytes(scripts[0])
    r = subprocess.run(["node", "--check", str(js)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


FAKE_DOM = r"""
"use strict";
const HOST = process.argv[2], MODE = process.argv[3];
const els = {};
function node(tag) {
  return { tag, id: "", value: "", textContent: "", className: "", disabled: false, kids: [],
           scrollTop: 0, scrollHeight: 0, width: 600, height: 140,
           append(...n) { this.kids.push(...n); }, focus() {},
           getContext() { return { clearRect() {}, beginPath() {}, moveTo() {}, lineTo() {},
                                   stroke() {} }; } };
}
function text(n) {
  if (n.text !== undefined) return n.text;
  return n.kids.length ? n.kids.map(text).join("") : n.textContent;
}
globalThis.document = {
  getElementById: id => (els[id] = els[id] || Object.assign(node("div"), {id})),
  createElement: tag => node(tag),
  createTextNode: t => ({ text: t }),
};
globalThis.location = { protocol: "http:", host: HOST, hash: "" };
globalThis.history = { replaceState() {} };
const $ = id => document.getElementById(id);
const ev = { preventDefault() {} };
function until(pred, what) {
  return new Promise((ok, fail) => {
    const t0 = Date.now();
    const tick = () => pred() ? ok() : Date.now() - t0 > 5000 ? fail(new Error(what)) :
      setTimeout(tick, 20);
    tick();
  });
}
async function main() {
  if (MODE === "rooms") {
    $("room").value = "nodes"; $("name").value = "Page";
    $("join").onsubmit(ev);
    await until(() => $("status").textContent === "in #nodes", "never joined");
    $("text").value = "hello from the page";
    $("send").onsubmit(ev);
    await until(() => $("log").kids.some(li => text(li).endsWith("Page: hello from the page")),
                "own message not shown");
    console.log(JSON.stringify({members: $("members").textContent,
                                log: $("log").kids.map(text)}));
  } else {
    // the fake DOM starts every element empty (the page's markup says "-"): wait for a value
    await until(() => $("status").textContent === "live" &&
                      !["", "-"].includes($("cpu").textContent), "no metrics shown");
    console.log(JSON.stringify({cpu: $("cpu").textContent, clients: $("clients").textContent}));
  }
  process.exit(0);
}
setTimeout(main, 0);
"""


def _node_with_websocket() -> Optional[List[str]]:
    node = shutil.which("node")
    if node is None:
        return None
    for flags in (["--experimental-websocket"], []):
        try:
            r = subprocess.run([node, *flags, "-e",
                                "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                               capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if r.returncode == 0:
            return [node, *flags]
    return None


NODE = _node_with_websocket()


@pytest.mark.skipif(NODE is None, reason="needs node with a WebSocket global")
@pytest.mark.parametrize("name,mode", [("rooms_chat.py", "rooms"),
                                       ("live_dashboard.py", "dashboard")])
def test_pages_work_in_node(run_example: RunExample, tmp_path: Any, name: str,
                            mode: str) -> None:
    """Each page's script, run in node against a tiny fake DOM with node's real WebSocket,
    connects to its server and shows what the server sends."""
    assert NODE is not None
    ep = run_example(name, *(["--interval", "0.1"] if mode == "dashboard" else []))
    status, _, page = http_get(ep.port, "/")
    script = re.findall(rb"<script>(.*?)</script>", page, re.S)[0].decode()
    js = tmp_path / "run.js"
    # the page's script goes in a block of its own (its const $ shadows the harness's)
    js.write_text(FAKE_DOM + "\n{\n" + script + "\n}\n")
    r = subprocess.run([*NODE, str(js), f"127.0.0.1:{ep.port}", mode], capture_output=True,
                       text=True, timeout=30, env=native_env())
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if mode == "rooms":
        assert out["members"] == "1 here"
        assert any(line.endswith("Page: hello from the page") for line in out["log"])
    else:
        assert 0 <= float(out["cpu"]) <= 100 and str(out["clients"]) == "1"
