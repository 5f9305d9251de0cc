"""The seed examples (the cymongoose WebSocket guide) run on pyws with only their import line
changed, driven by websocket-client; and examples/chat_server.py, the guide's chat room as a
program with its own page.

Each seed is kept as text, exactly as in the guide except ``from cymongoose import`` ->
``from pyws import``, and executed in a fresh namespace (its own ``clients`` list). ``print``
in that namespace is captured, so what the seeds print is checked too."""
from __future__ import annotations

import json
import queue
import signal
import struct
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List

import pytest
import websocket
from websocket import ABNF

import pyws

from conftest import ServerThread

# --------------------------------------------------------------------------- the seeds

SEED_BASIC_ECHO = '''
from pyws import (
Manager,
MG_EV_HTTP_MSG,
MG_EV_WS_MSG,
MG_EV_CLOSE,
WEBSOCKET_OP_TEXT,
)
clients = []
def handler(conn, ev, data):
    if ev == MG_EV_HTTP_MSG:
        if data.uri == "/ws":
            # Upgrade HTTP to WebSocket
            conn.ws_upgrade(data)
            clients.append(conn)
            print(f"Client connected: {len(clients)} total")
    elif ev == MG_EV_WS_MSG:
        # Echo message back
        print(f"Received: {data.text}")
        conn.ws_send(f"Echo: {data.text}", WEBSOCKET_OP_TEXT)
    elif ev == MG_EV_CLOSE:
        if conn in clients:
            clients.remove(conn)
            print(f"Client disconnected: {len(clients)} remaining")
'''

# The guide shows this handler without an import line; it needs the one above.
SEED_MIXED = '''
from pyws import MG_EV_HTTP_MSG
def handler(conn, ev, data):
    if ev == MG_EV_HTTP_MSG:
        if data.uri == "/ws":
            conn.ws_upgrade(data)
        elif data.uri == "/":
            # Serve WebSocket client page
            html = b"""
            <html><body>
            <script>
            const ws = new WebSocket('ws://' + location.host + '/ws');
            ws.onmessage = e => console.log(e.data);
            ws.onopen = () => ws.send('Hello!');
            </script>
            </body></html>
            """
            conn.reply(200, html, headers={"Content-Type": "text/html"})
            conn.drain()
        else:
            conn.reply(404, b"Not Found")
            conn.drain()
'''

SEED_SENDING = '''
from pyws import WEBSOCKET_OP_TEXT
from pyws import WEBSOCKET_OP_BINARY
def send_all(conn):
    # Send UTF-8 text
    conn.ws_send("Hello, WebSocket!", WEBSOCKET_OP_TEXT)
    # Send JSON
    import json
    data = {"type": "update", "value": 42}
    conn.ws_send(json.dumps(data), WEBSOCKET_OP_TEXT)
    # Send binary data
    binary_data = bytes([0x00, 0x01, 0x02, 0xFF])
    conn.ws_send(binary_data, WEBSOCKET_OP_BINARY)
'''

SEED_BROADCAST = '''
from pyws import MG_EV_WS_MSG, WEBSOCKET_OP_TEXT
clients = []
def broadcast(message, exclude=None):
    """Broadcast to all clients except excluded one."""
    for client in clients[:]: # Copy to avoid modification during iteration
        if client != exclude:
            try:
                client.ws_send(message, WEBSOCKET_OP_TEXT)
            except RuntimeError:
                # Connection closed
                clients.remove(client)
# Use in handler
def handler(conn, ev, data):
    if ev == MG_EV_WS_MSG:
        # Broadcast to all except sender
        broadcast(f"User says: {data.text}", exclude=conn)
'''

SEED_TEXT_VS_BINARY = '''
from pyws import (
MG_EV_WS_MSG,
WEBSOCKET_OP_TEXT,
WEBSOCKET_OP_BINARY,
)
def handler(conn, ev, data):
    if ev == MG_EV_WS_MSG:
        if data.flags == WEBSOCKET_OP_TEXT:
            # Text message
            text = data.text
            print(f"Text: {text}")
        elif data.flags == WEBSOCKET_OP_BINARY:
            # Binary message
            binary = data.data
            print(f"Binary: {len(binary)} bytes")
'''

# handle_chat and the MG_EV_WS_MSG/WEBSOCKET_OP_TEXT names come from the namespace the test
# provides, as the guide leaves them to the reader.
SEED_JSON = '''
import json
def handler(conn, ev, data):
    if ev == MG_EV_WS_MSG:
        try:
            msg = json.loads(data.text)
            msg_type = msg.get("type")
            if msg_type == "chat":
                handle_chat(conn, msg)
            elif msg_type == "ping":
                conn.ws_send('{"type": "pong"}', WEBSOCKET_OP_TEXT)
        except json.JSONDecodeError:
            print("Invalid JSON")
'''

SEED_USERDATA = '''
def handler(conn, ev, data):
    if ev == MG_EV_HTTP_MSG and data.uri == "/ws":
        conn.ws_upgrade(data)
        # Initialize client state
        conn.userdata = {
            "username": None,
            "joined_at": time.time(),
            "room": "lobby",
        }
    elif ev == MG_EV_WS_MSG:
        # Access client state
        username = conn.userdata.get("username", "Anonymous")
        broadcast(f"{username}: {data.text}")
'''

SEED_CHAT = '''
from pyws import (
Manager,
MG_EV_HTTP_MSG,
MG_EV_WS_MSG,
MG_EV_CLOSE,
WEBSOCKET_OP_TEXT,
)
import json
import time
clients = []
def broadcast(message_data, exclude=None):
    msg = json.dumps(message_data)
    for client in clients[:]:
        if client != exclude:
            try:
                client.ws_send(msg, WEBSOCKET_OP_TEXT)
            except RuntimeError:
                clients.remove(client)
def handler(conn, ev, data):
    if ev == MG_EV_HTTP_MSG:
        if data.uri == "/ws":
            conn.ws_upgrade(data)
            clients.append(conn)
            # Initialize user
            conn.userdata = {
                "username": f"User{len(clients)}",
                "joined_at": time.time(),
            }
            # Notify others
            broadcast({
                "type": "join",
                "username": conn.userdata["username"],
                "count": len(clients),
            })
    elif ev == MG_EV_WS_MSG:
        try:
            msg = json.loads(data.text)
            if msg["type"] == "message":
                # Broadcast chat message
                broadcast({
                    "type": "message",
                    "username": conn.userdata["username"],
                    "text": msg["text"],
                    "timestamp": time.time(),
                })
            elif msg["type"] == "setname":
                # Change username
                old_name = conn.userdata["username"]
                new_name = msg["username"]
                conn.userdata["username"] = new_name
                broadcast({
                    "type": "rename",
                    "old": old_name,
                    "new": new_name,
                })
        except (json.JSONDecodeError, KeyError):
            conn.ws_send('{"error": "Invalid message"}', WEBSOCKET_OP_TEXT)
    elif ev == MG_EV_CLOSE:
        if conn in clients:
            clients.remove(conn)
            broadcast({
                "type": "leave",
                "username": conn.userdata.get("username", "Unknown"),
                "count": len(clients),
            })
'''


class Printed:
    """A ``print`` for a seed's namespace that records lines (thread-safe)."""

    def __init__(self) -> None:
        self.q: "queue.Queue[str]" = queue.Queue()
        self.lines: List[str] = []

    def __call__(self, *args: Any, **_kw: Any) -> None:
        self.q.put(" ".join(str(a) for a in args))

    def expect(self, line: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{line!r} was not printed; printed: {self.lines}")
            try:
                self.lines.append(self.q.get(timeout=left))
            except queue.Empty:
                pass


def load(source: str, **extra: Any) -> Dict[str, Any]:
    assert "cymongoose" not in source
    ns: Dict[str, Any] = {"__name__": "seed", "print": Printed()}
    ns.update(extra)
    exec(compile(source, "<seed>", "exec"), ns)
    return ns


def connect(srv: ServerThread, path: str = "/ws") -> websocket.WebSocket:
    return websocket.create_connection(srv.url + path, timeout=5)


def recv_json(ws: websocket.WebSocket) -> Any:
    return json.loads(ws.recv())


def assert_silent(ws: websocket.WebSocket, wait: float = 0.2) -> None:
    """Nothing arrives on ws within ``wait`` seconds."""
    ws.settimeout(wait)
    try:
        got = ws.recv()
    except websocket.WebSocketTimeoutException:
        return
    finally:
        ws.settimeout(5)
    raise AssertionError(f"unexpected message {got!r}")


# --------------------------------------------------------------------------- seed tests

def test_seed_basic_echo(server_factory: Callable[..., ServerThread]) -> None:
    ns = load(SEED_BASIC_ECHO)
    srv = server_factory(ns["handler"])
    out = ns["print"]
    a = connect(srv)
    out.expect("Client connected: 1 total")
    b = connect(srv)
    out.expect("Client connected: 2 total")
    a.send("hello")
    assert a.recv() == "Echo: hello"
    out.expect("Received: hello")
    b.send("wörld ✓")
    assert b.recv() == "Echo: wörld ✓"
    a.close()
    out.expect("Client disconnected: 1 remaining")
    b.close()
    out.expect("Client disconnected: 0 remaining")
    assert ns["clients"] == []


def test_seed_mixed_http_and_websocket(server_factory: Callable[..., ServerThread]) -> None:
    ns = load(SEED_MIXED)
    srv = server_factory(ns["handler"])
    base = f"http://127.0.0.1:{srv.port}"
    with urllib.request.urlopen(base + "/", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/html"
        page = resp.read()
    assert b"new WebSocket('ws://' + location.host + '/ws')" in page
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(base + "/missing", timeout=5)
    assert ei.value.code == 404 and ei.value.read() == b"Not Found"
    ei.value.close()
    # /ws upgrades on the same port (this seed does not answer messages)
    ws = connect(srv)
    ws.ping(b"are you there")
    op, frame = ws.recv_data_frame(control_frame=True)
    assert op == ABNF.OPCODE_PONG and frame.data == b"are you there"
    ws.close()


def test_seed_sending_messages(server_factory: Callable[..., ServerThread]) -> None:
    ns = load(SEED_SENDING)

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.MG_EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == pyws.MG_EV_WS_MSG:
            ns["send_all"](conn)

    srv = server_factory(handler)
    ws = connect(srv)
    ws.send("go")
    assert ws.recv_data() == (ABNF.OPCODE_TEXT, b"Hello, WebSocket!")
    assert recv_json(ws) == {"type": "update", "value": 42}
    assert ws.recv_data() == (ABNF.OPCODE_BINARY, b"\x00\x01\x02\xff")
    ws.close()


def test_seed_broadcast_reaches_others_not_sender(
        server_factory: Callable[..., ServerThread]) -> None:
    ns = load(SEED_BROADCAST)
    clients = ns["clients"]

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        # the guide's "always track clients in a list" around its broadcast handler
        if ev == pyws.MG_EV_HTTP_MSG and data.uri == "/ws":
            conn.ws_upgrade(data)
            clients.append(conn)
        elif ev == pyws.MG_EV_CLOSE and conn in clients:
            clients.remove(conn)
        ns["handler"](conn, ev, data)

    srv = server_factory(handler)
    socks = [connect(srv) for _ in range(4)]
    try:
        socks[0].send("hi all")
        for other in socks[1:]:
            assert other.recv() == "User says: hi all"
        assert_silent(socks[0])
        socks[2].send("second")
        for i, other in enumerate(socks):
            if i != 2:
                assert other.recv() == "User says: second"
        assert_silent(socks[2])
        # a client that went away is skipped (its send raises RuntimeError, or it was removed)
        socks[3].shutdown()
        time.sleep(0.1)
        socks[1].send("after leave")
        assert socks[0].recv() == "User says: after leave"
        assert socks[2].recv() == "User says: after leave"
        assert srv.call(lambda: len(clients)) == 3
    finally:
        for s in socks[:3]:
            s.close()


def test_seed_broadcast_except_runtime_error_removes_closed_clients(
        server_factory: Callable[..., ServerThread]) -> None:
    """The seed's ``except RuntimeError`` path: a client still in the list whose connection is
    closing makes ws_send raise (pyws.ConnectionClosed is a RuntimeError) and is dropped."""
    ns = load(SEED_BROADCAST)
    clients = ns["clients"]
    closing: List[pyws.Connection] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.MG_EV_HTTP_MSG:
            conn.ws_upgrade(data)
            clients.append(conn)
            if data.query == "closing":
                closing.append(conn)
        elif ev == pyws.MG_EV_WS_MSG and data.text == "close the other one":
            closing[0].close(1000)  # still in `clients`: the next broadcast must cope
        ns["handler"](conn, ev, data)

    srv = server_factory(handler)
    a = connect(srv, "/ws?closing")
    b = connect(srv)
    c = connect(srv)
    try:
        b.send("close the other one")
        assert c.recv() == "User says: close the other one"
        assert srv.call(lambda: closing[0] not in clients)
        assert srv.call(lambda: len(clients)) == 2
        op, frame = a.recv_data_frame(control_frame=True)
        assert op == ABNF.OPCODE_CLOSE
    finally:
        a.shutdown()
        b.close()
        c.close()


def test_seed_text_vs_binary(server_factory: Callable[..., ServerThread]) -> None:
    ns = load(SEED_TEXT_VS_BINARY)

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.MG_EV_HTTP_MSG:
            conn.ws_upgrade(data)
        ns["handler"](conn, ev, data)

    srv = server_factory(handler)
    ws = connect(srv)
    ws.send("plain text")
    ns["print"].expect("Text: plain text")
    ws.send_binary(bytes(1234))
    ns["print"].expect("Binary: 1234 bytes")
    ws.close()


def test_seed_json_messages(server_factory: Callable[..., ServerThread]) -> None:
    chats: "queue.Queue[Any]" = queue.Queue()
    ns = load(SEED_JSON, MG_EV_WS_MSG=pyws.MG_EV_WS_MSG,
              WEBSOCKET_OP_TEXT=pyws.WEBSOCKET_OP_TEXT,
              handle_chat=lambda conn, msg: chats.put(msg))

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.MG_EV_HTTP_MSG:
            conn.ws_upgrade(data)
        ns["handler"](conn, ev, data)

    srv = server_factory(handler)
    ws = connect(srv)
    ws.send(json.dumps({"type": "ping"}))
    assert recv_json(ws) == {"type": "pong"}
    ws.send(json.dumps({"type": "chat", "text": "yo"}))
    assert chats.get(timeout=5) == {"type": "chat", "text": "yo"}
    ws.send("{not json")
    ns["print"].expect("Invalid JSON")
    ws.send(json.dumps({"type": "ping"}))  # still served
    assert recv_json(ws) == {"type": "pong"}
    ws.close()


def test_seed_userdata(server_factory: Callable[..., ServerThread]) -> None:
    sent: "queue.Queue[str]" = queue.Queue()
    ns = load(SEED_USERDATA, MG_EV_HTTP_MSG=pyws.MG_EV_HTTP_MSG,
              MG_EV_WS_MSG=pyws.MG_EV_WS_MSG, time=time, broadcast=sent.put)
    seen: List[Any] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        ns["handler"](conn, ev, data)
        if ev == pyws.MG_EV_WS_MSG:
            seen.append(dict(conn.userdata))
            conn.userdata["username"] = "alice"

    srv = server_factory(handler)
    ws = connect(srv)
    ws.send("first")
    # the guide's .get("username", "Anonymous") finds the key set to None
    assert sent.get(timeout=5) == "None: first"
    ws.send("second")
    assert sent.get(timeout=5) == "alice: second"
    ws.close()
    assert seen[0]["room"] == "lobby" and abs(seen[0]["joined_at"] - time.time()) < 10


def test_seed_chat_room(server_factory: Callable[..., ServerThread]) -> None:
    ns = load(SEED_CHAT)
    srv = server_factory(ns["handler"])
    a = connect(srv)
    assert recv_json(a) == {"type": "join", "username": "User1", "count": 1}
    b = connect(srv)
    assert recv_json(b) == {"type": "join", "username": "User2", "count": 2}
    assert recv_json(a) == {"type": "join", "username": "User2", "count": 2}
    a.send(json.dumps({"type": "message", "text": "hello b"}))
    for ws in (a, b):
        m = recv_json(ws)
        assert m["type"] == "message" and m["username"] == "User1" and m["text"] == "hello b"
        assert abs(m["timestamp"] - time.time()) < 10
    b.send(json.dumps({"type": "setname", "username": "bob"}))
    for ws in (a, b):
        assert recv_json(ws) == {"type": "rename", "old": "User2", "new": "bob"}
    b.send("not json")
    assert recv_json(b) == {"error": "Invalid message"}
    b.send(json.dumps({"type": "message"}))  # KeyError
    assert recv_json(b) == {"error": "Invalid message"}
    assert_silent(a)
    b.close()
    assert recv_json(a) == {"type": "leave", "username": "bob", "count": 1}
    a.close()
    deadline = time.monotonic() + 5
    while srv.call(lambda: len(ns["clients"])) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.call(lambda: len(ns["clients"])) == 0


def test_seed_wss_section_runs(tmp_path: Any) -> None:
    """The guide's WSS section: tls_init on MG_EV_ACCEPT, listen on https://, then a wss://
    client (verifying against the test CA) is echoed."""
    from _pki import make_pki
    pki = make_pki(tmp_path)
    cert = open(pki.server_cert, "rb").read()
    key = open(pki.server_key, "rb").read()

    def handler(conn: Any, ev: int, data: Any) -> None:
        if ev == pyws.MG_EV_ACCEPT:
            opts = pyws.TlsOpts(cert=cert, key=key)
            conn.tls_init(opts)
        elif ev == pyws.MG_EV_HTTP_MSG and data.uri == "/ws":
            conn.ws_upgrade(data)
        elif ev == pyws.MG_EV_WS_MSG:
            conn.ws_send(data.data, data.flags)

    srv = ServerThread(handler, listen_url="https://127.0.0.1:0").start()
    try:
        with pyws.connect(f"wss://localhost:{srv.port}/ws", timeout=5,
                          tls=pyws.TlsOpts(ca=pki.ca_cert)) as ws:
            ws.send("over wss")
            assert ws.recv().text == "over wss"
            assert ws.tls_info is not None and ws.tls_info.startswith("TLSv1.")
    finally:
        srv.stop()


# --------------------------------------------------------------------------- chat_server.py

def test_chat_server_example(run_example: Callable[..., Any]) -> None:
    ex = run_example("chat_server.py")
    base = f"http://127.0.0.1:{ex.port}"
    with urllib.request.urlopen(base + "/", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        page = resp.read().decode()
    assert "<html" in page and "new WebSocket(" in page and "/ws" in page
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(base + "/nope", timeout=5)
    assert ei.value.code == 404
    ei.value.close()  # else its keep-alive socket lingers until the server's shutdown timeout

    url = f"ws://127.0.0.1:{ex.port}/ws"
    a = websocket.create_connection(url, timeout=5)
    wa = recv_json(a)
    assert wa["type"] == "welcome" and wa["count"] == 1
    name_a = wa["username"]
    assert recv_json(a) == {"type": "join", "username": name_a, "count": 1}
    b = websocket.create_connection(url, timeout=5)
    wb = recv_json(b)
    assert wb["type"] == "welcome" and wb["count"] == 2
    name_b = wb["username"]
    assert name_b != name_a
    assert recv_json(b) == {"type": "join", "username": name_b, "count": 2}
    assert recv_json(a) == {"type": "join", "username": name_b, "count": 2}

    a.send(json.dumps({"type": "message", "text": "hi from a"}))
    for ws in (a, b):
        m = recv_json(ws)
        assert (m["type"], m["username"], m["text"]) == ("message", name_a, "hi from a")
    b.send(json.dumps({"type": "setname", "username": "  Bob  the\tbuilder "}))
    for ws in (a, b):
        assert recv_json(ws) == {"type": "rename", "old": name_b, "new": "Bob the builder"}
    b.send(json.dumps({"type": "message", "text": "ünïcode ✓"}))
    for ws in (a, b):
        m = recv_json(ws)
        assert (m["username"], m["text"]) == ("Bob the builder", "ünïcode ✓")
    for bad in ("not json", "[1, 2]", json.dumps({"type": "message"}),
                json.dumps({"type": "setname", "username": ""}), json.dumps({"type": "x"})):
        b.send(bad)
        m = recv_json(b)
        assert m["type"] == "error" and m["error"].startswith("Invalid message")
    assert_silent(a)
    b.close()
    assert recv_json(a) == {"type": "leave", "username": "Bob the builder", "count": 1}

    # SIGTERM: the remaining client gets a 1001 close, the process exits cleanly
    ex.proc.send_signal(signal.SIGTERM)
    op, frame = a.recv_data_frame(control_frame=True)
    assert op == ABNF.OPCODE_CLOSE
    assert struct.unpack("!H", frame.data[:2])[0] == 1001
    a.shutdown()
    assert ex.proc.wait(10) == 0
    out = ex.stop()
    assert f"http://127.0.0.1:{ex.port}/" in out
    assert "shutting down" in out


def test_chat_server_example_sigint(run_example: Callable[..., Any]) -> None:
    ex = run_example("chat_server.py")
    ws = websocket.create_connection(f"ws://127.0.0.1:{ex.port}/ws", timeout=5)
    assert recv_json(ws)["type"] == "welcome"
    ex.proc.send_signal(signal.SIGINT)
    for _ in range(10):
        op, frame = ws.recv_data_frame(control_frame=True)
        if op == ABNF.OPCODE_CLOSE:
            break
    assert op == ABNF.OPCODE_CLOSE and struct.unpack("!H", frame.data[:2])[0] == 1001
    ws.shutdown()
    assert ex.proc.wait(10) == 0
