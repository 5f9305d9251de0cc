"""Counters: conn.stats() / ws.stats() per connection and mgr.stats() / app.stats() for the
loop, checked against exchanges whose every byte the test knows, over real sockets (raw
sockets, websocket-client, websockets)."""
from __future__ import annotations

import os
import socket
import struct
import threading
import time
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import websocket  # websocket-client
from websockets.sync.client import connect as ws_connect

import pyws
from _frames import OP_BINARY, OP_PING, OP_PONG, OP_TEXT, frame, header
from _rawws import RawWS, handshake_request
from conftest import ServerThread

WS_SIZES = [0, 5, 125, 126, 1000, 65535, 65536, 100000]


def wait_for(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def frame_len(n: int, masked: bool) -> int:
    return len(header(OP_BINARY, n, mask=b"\0\0\0\0" if masked else None)) + n


def only_ws(srv: ServerThread) -> pyws.Connection:
    def pick() -> Optional[pyws.Connection]:
        assert srv.mgr is not None
        ws = [c for c in srv.mgr.connections if c.is_websocket and not c.closed]
        return ws[0] if len(ws) == 1 else None
    return wait_for(lambda: srv.call(pick), what="one server WebSocket")  # type: ignore[no-any-return]


def recording_echo(heads: List[bytes]) -> pyws.manager.Handler:
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            heads.append(data.head)
            if data.is_websocket_upgrade:
                if data.uri == "/forbidden":
                    conn.reply(403, "no\n")
                    conn.drain()
                else:
                    conn.ws_upgrade(data)
            else:
                conn.reply(200, "ok")
        elif ev == pyws.EV_WS_MSG:
            conn.ws_send(data.data, data.opcode)
    return handler


# ---------------------------------------------------------------------------------- exact counts
def test_counts_are_exact_for_a_known_exchange_websocket_client(
        server_factory: Callable[..., ServerThread]) -> None:
    heads: List[bytes] = []
    srv = server_factory(recording_echo(heads), max_message_size=1 << 20)
    cl = websocket.create_connection(srv.url + "/ws", timeout=5)
    try:
        conn = only_ws(srv)
        s0 = srv.call(conn.stats)
        assert isinstance(s0, pyws.ConnStats)
        assert (s0.messages_in, s0.messages_out, s0.bytes_in, s0.bytes_out) == (0, 0, 0, 0)
        assert s0.wire_bytes_in == len(heads[0])          # the upgrade request, nothing more
        assert s0.wire_bytes_out > len("HTTP/1.1 101 Switching Protocols\r\n\r\n")  # the 101
        assert s0.state == "WS_OPEN" and s0.ping_rtt is None and s0.write_buffer == 0
        assert abs(s0.connected_since - time.time()) < 30
        assert s0.connected_since <= s0.last_activity + 0.001
        payloads = [os.urandom(n) for n in WS_SIZES]
        for p in payloads:
            cl.send_binary(p)
        for p in payloads:
            op, got = cl.recv_data()
            assert op == websocket.ABNF.OPCODE_BINARY and got == p
        s1 = srv.call(conn.stats)
        total = sum(WS_SIZES)
        assert s1.messages_in == s1.messages_out == len(WS_SIZES)
        assert s1.bytes_in == s1.bytes_out == total
        assert s1.wire_bytes_in - s0.wire_bytes_in == sum(frame_len(n, True) for n in WS_SIZES)
        assert s1.wire_bytes_out - s0.wire_bytes_out == sum(frame_len(n, False) for n in WS_SIZES)
        assert s1.deflate_in_wire == s1.deflate_out_wire == 0      # no compression agreed
        st = srv.call(srv.mgr.stats)  # type: ignore[union-attr]
        assert st["messages_in"] == st["messages_out"] == len(WS_SIZES)
        assert st["bytes_in"] == st["bytes_out"] == total
        assert st["wire_bytes_in"] == s1.wire_bytes_in
        assert st["wire_bytes_out"] == s1.wire_bytes_out
        assert st["websockets_opened"] == 1 and st["accepted"] == 1
    finally:
        cl.close()
    # closed: the connection's counts stay in the loop's totals
    wait_for(lambda: srv.call(lambda: not srv.mgr.connections), what="the close")  # type: ignore[union-attr]
    st = srv.call(srv.mgr.stats)  # type: ignore[union-attr]
    assert st["messages_in"] == st["messages_out"] == len(WS_SIZES)
    assert st["bytes_in"] == st["bytes_out"] == sum(WS_SIZES)
    assert st["wire_bytes_in"] >= s1.wire_bytes_in + 6       # plus the client's close frame
    assert st["connections"] == {"connecting": 0, "open": 0, "closing": 0}
    assert conn.stats() is None


def _read_frame(raw: RawWS) -> Tuple[int, int, bytes, int]:
    """(opcode, rsv bits, payload, bytes on the wire) of the server's next frame."""
    b0, b1 = raw.recv_exact(2)
    n, hl = b1 & 0x7F, 2
    if n == 126:
        n, hl = struct.unpack("!H", raw.recv_exact(2))[0], 4
    elif n == 127:
        n, hl = struct.unpack("!Q", raw.recv_exact(8))[0], 10
    payload = raw.recv_exact(n) if n else b""
    return b0 & 0x0F, b0 & 0x70, payload, hl + n


def test_counts_are_exact_with_permessage_deflate(
        server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(recording_echo([]), max_message_size=1 << 20)
    with RawWS(srv.port) as raw:
        hs = raw.handshake(extra="Sec-WebSocket-Extensions: permessage-deflate; "
                                 "client_max_window_bits\r\n")
        ext = hs["sec-websocket-extensions"]
        assert ext.startswith("permessage-deflate")
        conn = only_ws(srv)
        s0 = srv.call(conn.stats)
        tx = zlib.compressobj(6, zlib.DEFLATED, -12)  # client_max_window_bits=12 at most
        rx = zlib.decompressobj(-15)
        texts = [(b"the quick brown fox " * (n // 20 + 1))[:n] for n in (200, 5000, 70000)]
        sent_wire = 0
        zin_wire = 0
        for t in texts:  # compressed by us, RSV1
            z = tx.compress(t) + tx.flush(zlib.Z_SYNC_FLUSH)
            assert z.endswith(b"\x00\x00\xff\xff")
            z = z[:-4]
            f = frame(OP_TEXT, z, rsv=0x40, mask=os.urandom(4))
            raw.send(f)
            sent_wire += len(f)
            zin_wire += len(z)
        plain = b"short and plain"  # uncompressed (RSV1 clear) is allowed too
        f = frame(OP_TEXT, plain, mask=os.urandom(4))
        raw.send(f)
        sent_wire += len(f)
        got_wire = 0
        zout_wire = 0
        zout_data = 0
        for want in texts + [plain]:
            op, rsv, payload, nbytes = _read_frame(raw)
            got_wire += nbytes
            assert op == OP_TEXT
            if rsv & 0x40:
                data = rx.decompress(payload + b"\x00\x00\xff\xff")
                zout_wire += len(payload)
                zout_data += len(data)
            else:
                data = payload
            assert data == want
        assert zout_data >= 5000 + 70000  # the server compressed the long ones
        s1 = srv.call(conn.stats)
        total = sum(map(len, texts)) + len(plain)
        assert s1.messages_in - s0.messages_in == 4 and s1.messages_out - s0.messages_out == 4
        assert s1.bytes_in - s0.bytes_in == total and s1.bytes_out - s0.bytes_out == total
        assert s1.deflate_in_wire == zin_wire
        assert s1.deflate_in_data == sum(map(len, texts))
        assert s1.deflate_out_wire == zout_wire
        assert s1.deflate_out_data == zout_data
        assert s1.wire_bytes_in - s0.wire_bytes_in == sent_wire
        assert s1.wire_bytes_out - s0.wire_bytes_out == got_wire
        st = srv.call(srv.mgr.stats)  # type: ignore[union-attr]
        assert (st["deflate_in_wire"], st["deflate_in_data"]) == (zin_wire, sum(map(len, texts)))
        assert (st["deflate_out_wire"], st["deflate_out_data"]) == (zout_wire, zout_data)


def test_counts_with_the_websockets_client_and_compression(
        server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(recording_echo([]), max_message_size=1 << 20)
    sizes = [10, 300, 4000]
    with ws_connect(srv.url + "/ws", compression="deflate", open_timeout=5) as cl:
        assert "permessage-deflate" in (cl.response.headers.get("Sec-WebSocket-Extensions") or "")
        conn = only_ws(srv)
        for n in sizes:
            text = ("abcdefgh" * (n // 8 + 1))[:n]
            cl.send(text)
            assert cl.recv(timeout=5) == text
        s = srv.call(conn.stats)
    assert s.messages_in == s.messages_out == 3
    assert s.bytes_in == s.bytes_out == sum(sizes)
    # the server compresses messages from deflate_threshold (128 bytes) up, not the short one
    assert s.deflate_out_data == 300 + 4000
    assert 0 < s.deflate_out_wire < s.deflate_out_data
    assert 0 < s.deflate_in_data <= sum(sizes) and 0 < s.deflate_in_wire < s.deflate_in_data


# ---------------------------------------------------------------------------------- heartbeat
def test_ping_round_trip_appears_after_a_heartbeat(
        server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(recording_echo([]), heartbeat=0.1, heartbeat_timeout=5.0)
    with ws_connect(srv.url + "/ws", open_timeout=5) as cl:  # answers pings in its own thread
        conn = only_ws(srv)
        s = wait_for(lambda: (lambda x: x if x and x.ping_rtt is not None else None)(
            srv.call(conn.stats)), what="a timed heartbeat")
        assert s.pings_sent >= 1
        assert 0 < s.ping_rtt < 2.0
        cl.send("still here")
        assert cl.recv(timeout=5) == "still here"


def test_pings_from_the_peer_are_not_timed(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(recording_echo([]), heartbeat=None)
    with RawWS(srv.port) as raw:
        raw.handshake()
        conn = only_ws(srv)
        payload = struct.pack("!Q", 12345)  # 8 bytes, like the engine's own pings
        raw.send_frame(payload, OP_PING)
        op, _fin, got = raw.recv_frame()
        assert (op, got) == (OP_PONG, payload)
        raw.send_frame(payload, OP_PONG)  # an unsolicited pong: nothing to time either
        raw.send_frame(b"x", OP_TEXT)
        assert raw.recv_frame()[2] == b"x"
        s = srv.call(conn.stats)
        assert s.ping_rtt is None and s.pings_sent == 0


# ---------------------------------------------------------------------------------- states
def test_connections_by_state(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(recording_echo([]))
    quiet = socket.create_connection(("127.0.0.1", srv.port), timeout=5)      # HTTP
    keep = socket.create_connection(("127.0.0.1", srv.port), timeout=5)       # HTTP_REQUEST
    keep.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert keep.recv(4096).startswith(b"HTTP/1.1 200")
    cl = websocket.create_connection(srv.url + "/ws", timeout=5)              # WS_OPEN
    try:
        want_states = {"HTTP": 1, "HTTP_REQUEST": 1, "WS_OPEN": 1}

        def settled() -> Optional[pyws.ServerStats]:
            st: pyws.ServerStats = srv.call(srv.mgr.stats)  # type: ignore[union-attr]
            live = {k: v for k, v in st["connection_states"].items() if v}
            return st if live == want_states else None
        st = wait_for(settled, what="three connections in three states")
        assert st["connections"] == {"connecting": 2, "open": 1, "closing": 0}
        assert st["open_sockets"] == 3 and st["listeners"] == 1 and st["accepted"] == 3
    finally:
        cl.close()
        quiet.close()
        keep.close()


# ---------------------------------------------------------------------------------- failures
def _hs_failures(srv: ServerThread) -> Dict[str, int]:
    st = srv.call(srv.mgr.stats)  # type: ignore[union-attr]
    return {k: v for k, v in st["handshake_failures"].items() if v}


def _answer(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        return out


def test_handshake_failures_by_reason(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(recording_echo([]), handshake_timeout=0.3)
    assert _answer(srv.port, handshake_request(key=None)).startswith(b"HTTP/1.1 400")
    assert _answer(srv.port, handshake_request(version="12")).startswith(b"HTTP/1.1 426")
    assert _answer(srv.port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
    # the application's own refusal of a valid upgrade request
    assert _answer(srv.port, handshake_request("/forbidden")).startswith(b"HTTP/1.1 403")
    # a request that never completes: 408 at handshake_timeout
    assert _answer(srv.port, b"GET /ws HTTP/1.1\r\nHost: x\r\n").startswith(b"HTTP/1.1 408")
    # plain HTTP answered 200, then a keep-alive connection that goes quiet: not a failure
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(0.6)
    want = {"400": 2, "426": 1, "403": 1, "408": 1}
    wait_for(lambda: _hs_failures(srv) == want, what=f"failures {want}")


def test_app_refusals_count_as_handshake_failures(serve: Callable[..., Any]) -> None:
    app = pyws.App(max_connections=1)

    @app.websocket("/ws")
    def echo(ws: pyws.WebSocket) -> Any:
        if "deny" in ws.request.args:
            ws.reject(403, "denied")
            return
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg.data)

    srv = serve(app)
    url = srv.url("/ws")
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(url + "?deny=1", timeout=5)
    assert err.value.status_code == 403
    cl = websocket.create_connection(url, timeout=5)
    try:
        with pytest.raises(websocket.WebSocketBadStatusException) as err:
            websocket.create_connection(url, timeout=5)  # past max_connections
        assert err.value.status_code == 503
        st = srv.call(app.stats)
        assert {k: v for k, v in st["handshake_failures"].items() if v} == {"403": 1, "503": 1}
        (ws,) = srv.call(lambda: list(app.connections))
        assert srv.call(ws.stats).state == "WS_OPEN"
    finally:
        cl.close()


def test_tls_handshake_failure_is_counted(server_factory: Callable[..., ServerThread],
                                          tmp_path: Any) -> None:
    from _pki import make_pki
    pki = make_pki(tmp_path)
    srv = server_factory(recording_echo([]), handshake_timeout=0.3,
                         listen_url="https://127.0.0.1:0",
                         listen_options={"tls": pyws.TlsOpts(cert=pki.server_cert,
                                                             key=pki.server_key)})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain text to a TLS port
        try:
            s.recv(4096)
        except OSError:
            pass
    wait_for(lambda: _hs_failures(srv) == {"tls": 1}, what="a TLS failure")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5):  # says nothing at all
        wait_for(lambda: _hs_failures(srv) == {"tls": 1, "tls_timeout": 1},
                 what="a TLS handshake timeout")


# ---------------------------------------------------------------------------------- closes
def test_slow_consumer_closes_are_counted(server_factory: Callable[..., ServerThread]) -> None:
    chunk = b"x" * 65536

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == pyws.EV_WS_MSG:
            if data.data == b"flood":  # more than write_limit in one go: 1008
                for _ in range(64):
                    try:
                        conn.ws_send(chunk, pyws.OP_BINARY)
                    except pyws.PyWSError:
                        break
            elif data.data == b"join":
                conn.subscribe("news")

    srv = server_factory(handler, write_limit=1 << 20, heartbeat=None)
    with RawWS(srv.port) as a, RawWS(srv.port) as b:
        a.handshake()
        a.send_frame(b"flood", OP_BINARY)
        b.handshake()
        b.send_frame(b"join", OP_BINARY)
        wait_for(lambda: srv.call(lambda: srv.mgr.subscribers("news")) == 1,  # type: ignore[union-attr]
                 what="the subscription")

        def publish() -> int:
            mgr = srv.mgr
            assert mgr is not None
            for _ in range(64):
                if not mgr.publish("news", chunk):
                    break
            return 0
        srv.call(publish)  # b never reads: dropped from the fan-out with 1008
        wait_for(lambda: srv.call(lambda: srv.mgr.stats()["closes"]["write_limit"]) == 2,  # type: ignore[union-attr]
                 what="two write_limit closes")


def test_heartbeat_timeout_close_is_counted(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(recording_echo([]), heartbeat=0.1, heartbeat_timeout=0.2)
    with RawWS(srv.port) as raw:  # never answers a ping
        raw.handshake()
        code, _reason, _before = raw.recv_close(timeout=5)
        assert code == 1011
    wait_for(lambda: srv.call(lambda: srv.mgr.stats()["closes"]) ==  # type: ignore[union-attr]
             {"write_limit": 0, "heartbeat_timeout": 1, "idle_timeout": 0, "close_timeout": 0},
             what="a heartbeat_timeout close")


# ---------------------------------------------------------------------------------- drops
def test_drops_publish_skipped_and_unrouted_wakeups(
        server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(recording_echo([]), heartbeat=None)
    with RawWS(srv.port) as raw:
        raw.handshake()
        conn = only_ws(srv)
        mgr = srv.mgr
        assert mgr is not None

        def mid_fragment() -> Tuple[int, int]:
            conn.subscribe("t")
            conn.ws_send(b"part", pyws.OP_TEXT, fin=False)  # a fragmented message in progress
            reached = mgr.publish("t", "hello")
            conn.ws_send(b"", pyws.OP_CONTINUATION, fin=True)
            mgr.wakeup(conn.id ^ (1 << 40), b"nobody")  # a generation that never was
            return reached, mgr.stats()["drops"]["publish_skipped"]
        assert srv.call(mid_fragment) == (0, 1)
        wait_for(lambda: srv.call(lambda: mgr.stats()["drops"]["wakeups_unrouted"]) == 1,
                 what="the unrouted wakeup")


def test_drops_wakeups_refused_by_a_full_queue() -> None:
    mgr = pyws.Manager(wakeup_queue_items=1)
    try:
        mgr.wakeup(0, b"first")
        with pytest.raises(pyws.QueueFull):
            mgr.wakeup(0, b"second")  # the loop's own thread: no waiting for room
        assert mgr.stats()["drops"]["wakeups_refused"] == 1
        mgr.poll(0)
    finally:
        mgr.close()


def test_a_client_connection_counts_too(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(recording_echo([]), heartbeat=None)
    with pyws.connect(srv.url + "/ws", timeout=5, compression=None) as cl:
        conn = cl._conn
        s0 = conn.stats()
        assert s0 is not None and s0.state == "WS_OPEN"
        sizes = [3, 300, 70000]
        for n in sizes:
            cl.send(b"z" * n)
            assert cl.recv().data == b"z" * n
        s1 = conn.stats()
        assert s1 is not None
        assert s1.messages_out == s1.messages_in == 3
        assert s1.bytes_out == s1.bytes_in == sum(sizes)
        # a client masks what it sends
        assert s1.wire_bytes_out - s0.wire_bytes_out == sum(frame_len(n, True) for n in sizes)
        assert s1.wire_bytes_in - s0.wire_bytes_in == sum(frame_len(n, False) for n in sizes)


# ---------------------------------------------------------------------------------- topics
def test_topic_members_and_topic_list(serve: Callable[..., Any]) -> None:
    app = pyws.App()
    joined: List[pyws.WebSocket] = []

    @app.websocket("/rooms/{room}")
    def room(ws: pyws.WebSocket) -> Any:
        ws.subscribe(ws.params["room"])
        if ws.params["room"] == "b":
            ws.subscribe(b"\xff\xfe")  # not UTF-8: listed as bytes
        joined.append(ws)
        while True:
            msg = yield ws.recv()
            if msg is None:
                return

    srv = serve(app)
    clients = [websocket.create_connection(srv.url(f"/rooms/{r}"), timeout=5)
               for r in ("a", "a", "b")]
    try:
        wait_for(lambda: srv.call(lambda: len(joined)) == 3, what="three members")
        assert srv.call(app.topics) == {"a": 2, "b": 1, b"\xff\xfe": 1}
        members = srv.call(lambda: app.topic_members("a"))
        assert len(members) == 2
        assert {id(w) for w in members} == {id(w) for w in joined if w.params["room"] == "a"}
        assert [w.params["room"] for w in srv.call(lambda: app.topic_members("b"))] == ["b"]
        assert srv.call(lambda: app.topic_members("nobody")) == []
        conns = srv.call(lambda: app.mgr.topic_members("a"))
        assert sorted(c.id for c in conns) == sorted(w.conn.id for w in members)
        st = srv.call(app.stats)
        assert st["topics"] == 3 and st["subscriptions"] == 4
        s = srv.call(joined[2].stats)
        assert s.subscriptions == 2
    finally:
        for c in clients:
            c.close()


def test_rates_are_per_second_over_the_samples(server_factory: Callable[..., ServerThread]) -> None:
    srv = server_factory(recording_echo([]))
    cl = websocket.create_connection(srv.url + "/ws", timeout=5)
    try:
        first = srv.call(srv.mgr.stats)  # type: ignore[union-attr]
        assert first["rate_window"] > 0
        for _ in range(10):
            cl.send_binary(b"0123456789")
            cl.recv_data()
        st = srv.call(srv.mgr.stats)  # type: ignore[union-attr]
        w = st["rate_window"]
        # no sample is a second old yet: both calls measure from the Manager's start
        assert w >= first["rate_window"]
        assert st["rates"]["messages_in"] == pytest.approx(10 / w, rel=0.05)
        assert st["rates"]["bytes_out"] == pytest.approx(100 / w, rel=0.05)
    finally:
        cl.close()


def test_block_caches_are_counted_and_empty_when_traffic_stops(
        server_factory: Callable[..., ServerThread]) -> None:
    # the loop's idle-block caches are memory the server holds: stats() shows them, within
    # their bounds, and they are given back once the traffic stops
    srv = server_factory(recording_echo([]))

    def caches() -> Dict[str, Dict[str, int]]:
        st = srv.call(srv.mgr.stats)  # type: ignore[union-attr]
        return st["caches"]  # type: ignore[no-any-return]

    assert set(caches()) == {"write_blocks", "large_buffers"}
    cl = websocket.create_connection(srv.url + "/ws", timeout=5)
    try:
        big = os.urandom(1 << 20)
        cl.send_binary(big)
        assert cl.recv_data()[1] == big  # the echo hands its buffer over and gets it back
        for i in range(20):
            cl.send_binary(b"%d" % i)
            assert cl.recv_data()[1] == b"%d" % i
        held = wait_for(lambda: (lambda c: c if c["large_buffers"]["blocks"] else None)(
            caches()), what="a message buffer in the cache")
        assert held["large_buffers"]["bytes"] >= 1 << 20
        assert held["large_buffers"]["blocks"] <= 64 and held["large_buffers"]["bytes"] <= 64 << 20
        assert held["write_blocks"]["blocks"] <= 1024
        assert held["write_blocks"]["bytes"] == held["write_blocks"]["blocks"] * 16384
        wait_for(lambda: all(c["blocks"] == 0 for c in caches().values()), timeout=10,
                 what="the caches emptied after the traffic stopped")
    finally:
        cl.close()
