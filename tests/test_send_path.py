"""The one send path (pyws/_send.py) and the one option resolver (pyws/options.py), over real
sockets: every send family (Connection, WebSocket, ClientConnection) and every fan-out call
(publish, broadcast) takes the same inputs and gives the documented opcode; send_fragments
takes the same parameters everywhere; each entry point refuses unknown and misplaced options
with the same wording."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest
import websocket  # websocket-client

import pyws
from pyws import EV_HTTP_MSG, EV_WS_MSG, OP_BINARY, OP_PING, OP_TEXT, Message
from pyws._send import binary_arg, outgoing

from conftest import AppServer, ServerThread

T, B = OP_TEXT, OP_BINARY
TEXT = "héllo"
RAW = TEXT.encode()  # valid UTF-8, so it may be sent as text too


def inputs() -> List[Tuple[str, Any]]:
    """Every input a send takes, each carrying RAW (fresh objects each time)."""
    return [("str", TEXT), ("bytes", RAW), ("bytearray", bytearray(RAW)),
            ("memoryview", memoryview(b"--" + RAW + b"--")[2:-2]),
            ("Message.text", Message.text(TEXT)), ("Message.binary", Message.binary(RAW))]


#: The documented opcode for each input and binary=None/True/False.
EXPECTED = {
    ("str", None): T, ("str", True): B, ("str", False): T,
    ("bytes", None): B, ("bytes", True): B, ("bytes", False): T,
    ("bytearray", None): B, ("bytearray", True): B, ("bytearray", False): T,
    ("memoryview", None): B, ("memoryview", True): B, ("memoryview", False): T,
    ("Message.text", None): T, ("Message.text", True): B, ("Message.text", False): T,
    ("Message.binary", None): B, ("Message.binary", True): B, ("Message.binary", False): T,
}
CASES = [(name, binary) for name, _ in inputs() for binary in (None, True, False)]

#: send_fragments cases: (pieces, binary argument, keyword arguments, expected opcode). The
#: opcode spellings (positional OP_TEXT, op=) are the older ones, still accepted.
FRAGMENTS: List[Tuple[List[Any], Any, dict, int]] = [
    (["hé", "llo"], None, {}, T),
    ([b"h\xc3", b"\xa9llo"], None, {}, B),
    ([bytearray(b"h\xc3"), memoryview(b"\xa9llo")], None, {}, B),
    ([Message.text("hé"), "llo"], None, {}, T),
    ([Message.binary(b"h\xc3"), b"\xa9llo"], None, {}, B),
    (["hé", "llo"], True, {}, B),
    ([b"h\xc3", b"\xa9llo"], False, {}, T),  # UTF-8 split between frames: still valid
    ([b"h\xc3", b"\xa9llo"], OP_TEXT, {}, T),
    (["hé", "llo"], OP_BINARY, {}, B),
    ([b"h\xc3", b"\xa9llo"], None, {"op": OP_TEXT}, T),
    ([b"h\xc3", b"\xa9llo"], None, {"compress": False}, B),
    (["héllo"], None, {}, T),
]


def _expected_fragment_data(pieces: List[Any]) -> bytes:
    out = b""
    for p in pieces:
        out += p.data if isinstance(p, Message) else p.encode() if isinstance(p, str) \
            else bytes(p)
    return out


# =========================================================================== the helper

@pytest.mark.parametrize("name,binary", CASES)
def test_outgoing_gives_the_documented_opcode(name: str, binary: Optional[bool]) -> None:
    data = dict(inputs())[name]
    payload, op = outgoing(data, binary)
    assert (type(payload), payload, op) == (bytes, RAW, EXPECTED[name, binary])


def test_outgoing_keeps_a_received_message_type_and_refuses_other_types() -> None:
    assert outgoing(pyws.WsMessage(b"x", OP_TEXT)) == (b"x", OP_TEXT)
    assert outgoing(pyws.WsMessage(b"x", OP_PING)) == (b"x", OP_PING)  # as given

    class Sub(Message):
        pass

    class S(str):
        pass

    assert outgoing(Sub(b"x", OP_TEXT)) == (b"x", OP_TEXT)
    assert outgoing(S("x")) == (b"x", OP_TEXT)
    with pytest.raises(TypeError, match="not int"):
        outgoing(12345)  # type: ignore[arg-type]


def test_binary_arg_spellings() -> None:
    assert [binary_arg(b) for b in (None, True, False, OP_TEXT, OP_BINARY)] == \
        [None, True, False, False, True]
    assert binary_arg(None, OP_TEXT) is False
    with pytest.raises(ValueError):
        binary_arg(OP_PING)
    with pytest.raises(TypeError, match="not both"):
        binary_arg(True, OP_TEXT)


# =========================================================================== the families

def _run_sends(target: Any) -> None:
    """On the sender: every input with binary None/True/False, then send_text/bytes/json,
    then every send_fragments case. The same calls whatever the family."""
    for name, data in inputs():
        for binary in (None, True, False):
            if binary is None:
                target.send(data)  # the echo idiom's shape: no binary argument
            else:
                target.send(data, binary)
    for name, data in inputs():
        target.send(data, binary=None, compress=False)  # the keywords, in every family
    target.send_text(TEXT)
    target.send_bytes(bytearray(RAW))
    target.send_json({"k": TEXT})
    for pieces, binary, kw, _ in FRAGMENTS:
        target.send_fragments(pieces, binary, **kw)
    target.send_fragments([], binary=False)
    target.send_fragments(iter([]))
    target.send_fragments(fragments=(p for p in ["a", "b"]), binary=True, compress=None)


def _expected_stream() -> List[Tuple[int, bytes]]:
    out = [(EXPECTED[name, binary], RAW) for name, binary in CASES]
    out += [(EXPECTED[name, None], RAW) for name, _ in inputs()]
    out += [(T, RAW), (B, RAW), (T, json.dumps({"k": TEXT}).encode())]
    out += [(op, _expected_fragment_data(pieces)) for pieces, _, _, op in FRAGMENTS]
    out += [(T, b""), (B, b""), (B, b"ab")]
    return out


def _read(ws: websocket.WebSocket, n: int) -> List[Tuple[int, bytes]]:
    got = []
    for _ in range(n):
        op, data = ws.recv_data()
        got.append((op, bytes(data)))
    return got


@pytest.fixture
def conn_server(server_factory: Callable[..., ServerThread]) -> Iterator[Tuple[ServerThread,
                                                                              List[Any]]]:
    opened: List[Any] = []

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
            conn.subscribe("t")
            opened.append(conn)

    yield server_factory(handler), opened


def test_connection_sends_every_input(conn_server: Tuple[ServerThread, List[Any]]) -> None:
    srv, opened = conn_server
    ws = websocket.create_connection(srv.url + "/ws", timeout=10)
    try:
        assert srv.call(lambda: len(opened)) == 1
        srv.call(lambda: _run_sends(opened[0]))
        expected = _expected_stream()
        assert _read(ws, len(expected)) == expected
    finally:
        ws.close()


@pytest.fixture
def ws_server(serve: Callable[..., AppServer]) -> Tuple[AppServer, List[pyws.WebSocket]]:
    app = pyws.App()
    opened: List[pyws.WebSocket] = []

    @app.websocket("/ws")
    def handler(ws: pyws.WebSocket) -> Any:
        ws.subscribe("t")
        opened.append(ws)
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg)  # the echo idiom: text stays text

    return serve(app), opened


def test_websocket_sends_every_input(ws_server: Tuple[AppServer, List[pyws.WebSocket]]) -> None:
    srv, opened = ws_server
    ws = websocket.create_connection(srv.url(), timeout=10)
    try:
        ws.send("ping")  # the handler is running once its echo arrives
        assert ws.recv_data() == (T, b"ping")
        srv.call(lambda: _run_sends(opened[0]))
        expected = _expected_stream()
        assert _read(ws, len(expected)) == expected
        ws.send_binary(b"\x00\xff")
        ws.send("é")
        assert _read(ws, 2) == [(B, b"\x00\xff"), (T, "é".encode())]
    finally:
        ws.close()


def test_client_connection_sends_every_input(echo_server: ServerThread) -> None:
    with pyws.connect(echo_server.url + "/ws", timeout=10) as c:
        _run_sends(c)
        expected = _expected_stream()
        got = [c.recv() for _ in expected]
        assert [(m.opcode, m.data) for m in got] == expected
        m = got[0]
        c.send(m)  # a received Message sent back keeps its type
        c.send(got[1])
        assert [(x.opcode, x.data) for x in (c.recv(), c.recv())] == [(T, RAW), (B, RAW)]


def test_every_family_refuses_other_types(echo_server: ServerThread,
                                          ws_server: Tuple[AppServer, List[pyws.WebSocket]]
                                          ) -> None:
    srv, opened = ws_server
    ws = websocket.create_connection(srv.url(), timeout=10)
    try:
        ws.send("ping")
        ws.recv_data()

        def bad(target: Any) -> List[str]:
            out = []
            for call in (lambda: target.send(1.5), lambda: target.send(None, True),
                         lambda: target.send_fragments([1, 2]),
                         lambda: target.send_fragments(["a"], OP_PING)):
                try:
                    call()
                except (TypeError, ValueError) as exc:
                    out.append(type(exc).__name__)
            return out

        assert srv.call(lambda: bad(opened[0])) == ["TypeError"] * 3 + ["ValueError"]
        assert srv.call(lambda: bad(opened[0].conn)) == ["TypeError"] * 3 + ["ValueError"]
    finally:
        ws.close()
    with pyws.connect(echo_server.url + "/ws", timeout=10) as c:
        with pytest.raises(TypeError):
            c.send(1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            c.send_fragments(["a"], OP_PING)
        c.send("still fine")
        assert c.recv().text == "still fine"


# =========================================================================== fan-out

def _run_fanout(publish: Callable[..., int]) -> List[int]:
    """Every input with binary None/True/False through one publish-like call."""
    counts = []
    for name, data in inputs():
        for binary in (None, True, False):
            counts.append(publish(data) if binary is None else publish(data, binary))
    return counts


def _fanout_expected() -> List[Tuple[int, bytes]]:
    return [(EXPECTED[name, binary], RAW) for name, binary in CASES]


def test_manager_and_connection_publish_take_every_input(
        conn_server: Tuple[ServerThread, List[Any]]) -> None:
    srv, opened = conn_server
    ws = websocket.create_connection(srv.url + "/ws", timeout=10)
    try:
        assert srv.call(lambda: len(opened)) == 1
        mgr = srv.mgr
        assert mgr is not None
        conn = opened[0]
        calls: List[Callable[..., int]] = [
            lambda d, b=None: mgr.publish("t", d, None, b),
            lambda d, b=None: mgr.publish("t", d, binary=b, compress=False),
            lambda d, b=None: mgr.broadcast(d, None, b),
            lambda d, b=None: conn.publish("t", d, binary=b),
        ]
        for call in calls:
            assert srv.call(lambda: _run_fanout(call)) == [1] * len(CASES)
            assert _read(ws, len(CASES)) == _fanout_expected()
        # exclude_self leaves the publisher out
        assert srv.call(lambda: conn.publish("t", "x", exclude_self=True)) == 0
    finally:
        ws.close()


def test_app_and_websocket_publish_take_every_input(
        ws_server: Tuple[AppServer, List[pyws.WebSocket]]) -> None:
    srv, opened = ws_server
    ws = websocket.create_connection(srv.url(), timeout=10)
    try:
        ws.send("ping")
        ws.recv_data()
        app, sock = srv.app, opened[0]
        calls: List[Callable[..., int]] = [
            lambda d, b=None: app.publish("t", d, binary=b),
            lambda d, b=None: app.publish("t", d, None, None, b),
            lambda d, b=None: app.broadcast(d, binary=b),
            lambda d, b=None: sock.publish("t", d, binary=b),
        ]
        for call in calls:
            assert srv.call(lambda: _run_fanout(call)) == [1] * len(CASES)
            assert _read(ws, len(CASES)) == _fanout_expected()
        assert srv.call(lambda: sock.publish("t", "x", exclude_self=True)) == 0
        assert srv.call(lambda: app.broadcast("x", exclude=sock)) == 0
    finally:
        ws.close()


# =========================================================================== options

def test_options_unknown_names_in_every_entry_point(echo_server: ServerThread) -> None:
    def message(fn: Callable[[], Any]) -> str:
        with pytest.raises(TypeError) as info:
            fn()
        return str(info.value)

    msg = message(lambda: pyws.Manager(max_mesage_size=1))
    assert msg.startswith("Manager(): unknown option(s): max_mesage_size "
                          "(did you mean max_message_size?)")
    assert "pyws.LOOP_OPTIONS" in msg
    msg = message(lambda: pyws.App(max_conections=5))
    assert msg.startswith("App(): unknown option(s): max_conections "
                          "(did you mean max_connections?)")
    with pyws.Manager() as mgr:
        msg = message(lambda: mgr.listen("http://127.0.0.1:0", nope=1))
        assert msg.startswith("listen(): unknown option(s): nope;")
        assert "LOOP_OPTIONS" not in msg
        msg = message(lambda: mgr.ws_connect(echo_server.url + "/ws", wrte_limit=1))
        assert msg.startswith("ws_connect(): unknown option(s): wrte_limit "
                              "(did you mean write_limit?)")
        assert mgr.connections == []  # refused before anything was opened
    app = pyws.App()
    try:
        assert message(lambda: app.listen("127.0.0.1", 0, nope=1)).startswith(
            "listen(): unknown option(s): nope")
        assert message(lambda: app.connect(echo_server.url + "/ws", lambda ws: None,
                                           nope=1)).startswith(
            "ws_connect(): unknown option(s): nope")
    finally:
        app.close()
    assert message(lambda: pyws.connect(echo_server.url + "/ws", nope=1)).startswith(
        "pyws.connect(): unknown option(s): nope")


def test_options_loop_wide_only_for_manager_and_app(echo_server: ServerThread) -> None:
    def message(fn: Callable[[], Any]) -> str:
        with pytest.raises(TypeError) as info:
            fn()
        return str(info.value)

    loopwide = ("wakeup_batch: loop-wide option(s), given to Manager(...) (or App(...)), not "
                "per listener or connection")
    with pyws.Manager(wakeup_batch=5, wakeup_queue_items=10) as mgr:
        assert message(lambda: mgr.listen("http://127.0.0.1:0", wakeup_batch=5)) == \
            "listen(): " + loopwide
        assert message(lambda: mgr.ws_connect(echo_server.url, wakeup_batch=5)) == \
            "ws_connect(): " + loopwide
    app = pyws.App(wakeup_batch=5)
    try:
        assert message(lambda: app.listen("127.0.0.1", 0, wakeup_batch=5)) == \
            "listen(): " + loopwide
    finally:
        app.close()
    assert message(lambda: pyws.connect(echo_server.url + "/ws", wakeup_batch=5)) == \
        "pyws.connect(): " + loopwide


@pytest.mark.parametrize("options", [
    {"compression": "zip"}, {"max_sockets": 0}, {"wakeup_batch": 0},
    {"wakeup_queue_items": True}, {"wakeup_batch": 1 << 40},
])
def test_options_bad_values_are_value_errors(options: dict) -> None:
    with pytest.raises(ValueError):
        pyws.Manager(**options)
    with pytest.raises(ValueError):
        pyws.App(**options)
    per_connection = {k: v for k, v in options.items() if k in pyws.DEFAULT_OPTIONS}
    if per_connection:
        with pyws.Manager() as mgr:
            with pytest.raises(ValueError):
                mgr.listen("http://127.0.0.1:0", **per_connection)
            with pytest.raises(ValueError):
                mgr.ws_connect("ws://127.0.0.1:1/", **per_connection)
        with pytest.raises(ValueError):
            pyws.connect("ws://127.0.0.1:1/", **per_connection)


def test_options_given_apply(server_factory: Callable[..., ServerThread]) -> None:
    """What the resolver returns is what reaches C: a per-listener option overrides the
    manager's, which overrides the default; the loop-wide ones go to the loop."""
    srv = server_factory(lambda c, ev, d: c.ws_upgrade(d) if ev == EV_HTTP_MSG else None,
                         max_message_size=100, listen_options={"max_message_size": 10})
    with pyws.connect(srv.url + "/ws", timeout=10) as c:
        c.send("x" * 11)
        with pytest.raises(pyws.ConnectionClosed) as info:
            c.recv()
        assert info.value.code == 1009
    with pyws.Manager(max_message_size=5, wakeup_batch=7) as mgr:
        assert mgr._options == dict(pyws.DEFAULT_OPTIONS, max_message_size=5)
        assert mgr._limits == dict(pyws.LOOP_OPTIONS, wakeup_batch=7)
