"""Interop with `websocket-client` (a peer nobody here wrote) against pyws servers: payload
sizes around every length-encoding boundary, fragmentation both ways, ping/pong both ways, close
codes and reasons both ways, many clients at once."""
from __future__ import annotations

import os
import queue
import struct
import threading
import time
from typing import Any, Callable, List, Tuple

import pytest
import websocket
from websocket import ABNF

import pyws
from pyws import (EV_CLOSE, EV_HTTP_MSG, EV_WS_CTL, EV_WS_MSG, OP_BINARY, OP_CONTINUATION,
                  OP_PING, OP_PONG, OP_TEXT)

from conftest import ServerThread

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537]


def connect(url: str, **kw: Any) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=10, **kw)


def payload_of(n: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(min(n, 4096))) * (n // 4096) + \
        bytes((i * 7 + 3) & 0xFF for i in range(n % 4096))


# --------------------------------------------------------------------------- echo sizes

@pytest.mark.parametrize("n", SIZES)
def test_echo_sizes_binary(echo_server: ServerThread, n: int) -> None:
    ws = connect(echo_server.url + "/ws")
    try:
        data = payload_of(n)
        assert len(data) == n
        ws.send_binary(data)
        op, got = ws.recv_data()
        assert op == ABNF.OPCODE_BINARY
        assert got == data
    finally:
        ws.close()


@pytest.mark.parametrize("n", SIZES)
def test_echo_sizes_text(echo_server: ServerThread, n: int) -> None:
    ws = connect(echo_server.url + "/ws")
    try:
        # multi-byte characters so the UTF-8 validator crosses frame/read boundaries
        text = ("aé€😀" * (n // 10 + 1))
        text = text.encode()[:n].decode("utf-8", "ignore")
        ws.send(text)
        op, got = ws.recv_data()
        assert op == ABNF.OPCODE_TEXT
        assert got.decode("utf-8") == text
    finally:
        ws.close()


@pytest.mark.slow
def test_echo_8mib_text_and_binary(echo_server: ServerThread) -> None:
    ws = connect(echo_server.url + "/ws")
    try:
        big = os.urandom(8 * 1024 * 1024)
        ws.send_binary(big)
        op, got = ws.recv_data()
        assert op == ABNF.OPCODE_BINARY and got == big
        text = ("x€" * (8 * 1024 * 1024 // 4))
        ws.send(text)
        op, got = ws.recv_data()
        assert op == ABNF.OPCODE_TEXT and got.decode() == text
    finally:
        ws.close()


def test_echo_example_process_sizes(run_example: Callable[..., Any]) -> None:
    ex = run_example("echo_server.py")
    ws = connect(f"ws://127.0.0.1:{ex.port}/")
    try:
        for n in (0, 125, 126, 65535, 65536, 1 << 20):
            data = payload_of(n)
            ws.send_binary(data)
            assert ws.recv() == data
        ws.send("héllo")
        assert ws.recv() == "héllo"
    finally:
        ws.close()


def test_example_process_fragments_and_ping(run_example: Callable[..., Any]) -> None:
    ex = run_example("echo_server.py")
    ws = connect(f"ws://127.0.0.1:{ex.port}/ws")
    try:
        ws.send_frame(ABNF.create_frame(b"ab", ABNF.OPCODE_BINARY, fin=0))
        ws.ping(b"mid")  # a control frame between fragments
        ws.send_frame(ABNF.create_frame(b"cd", ABNF.OPCODE_CONT, fin=1))
        op, frame = ws.recv_data_frame(control_frame=True)
        assert op == ABNF.OPCODE_PONG and frame.data == b"mid"
        op, data = ws.recv_data()
        assert op == ABNF.OPCODE_BINARY and data == b"abcd"
        ws.close(status=1000)
        assert ws.connected is False
    finally:
        ws.shutdown()


# --------------------------------------------------------------------------- fragments in

def test_client_fragmented_text(echo_server: ServerThread) -> None:
    ws = connect(echo_server.url + "/ws")
    try:
        pieces = ["héllo ", "wörld ", "€", "😀"]
        raw = "".join(pieces).encode()
        # split the UTF-8 bytes inside code points on purpose
        chunks = [raw[i:i + 3] for i in range(0, len(raw), 3)]
        ws.send_frame(ABNF.create_frame(chunks[0], ABNF.OPCODE_TEXT, fin=0))
        for c in chunks[1:-1]:
            ws.send_frame(ABNF.create_frame(c, ABNF.OPCODE_CONT, fin=0))
        ws.send_frame(ABNF.create_frame(chunks[-1], ABNF.OPCODE_CONT, fin=1))
        assert ws.recv() == "".join(pieces)
    finally:
        ws.close()


def test_client_1500_fragments(echo_server: ServerThread) -> None:
    ws = connect(echo_server.url + "/ws")
    try:
        n = 1500
        chunks = [bytes([i & 0xFF]) * (i % 17) for i in range(n)]
        ws.send_frame(ABNF.create_frame(chunks[0], ABNF.OPCODE_BINARY, fin=0))
        for c in chunks[1:-1]:
            ws.send_frame(ABNF.create_frame(c, ABNF.OPCODE_CONT, fin=0))
        ws.send_frame(ABNF.create_frame(chunks[-1], ABNF.OPCODE_CONT, fin=1))
        op, got = ws.recv_data()
        assert op == ABNF.OPCODE_BINARY
        assert got == b"".join(chunks)
        # and the connection still works for an ordinary message afterwards
        ws.send("after")
        assert ws.recv() == "after"
    finally:
        ws.close()


def test_client_fragments_with_empty_pieces(echo_server: ServerThread) -> None:
    ws = connect(echo_server.url + "/ws")
    try:
        ws.send_frame(ABNF.create_frame(b"", ABNF.OPCODE_TEXT, fin=0))
        ws.send_frame(ABNF.create_frame(b"", ABNF.OPCODE_CONT, fin=0))
        ws.send_frame(ABNF.create_frame(b"x", ABNF.OPCODE_CONT, fin=0))
        ws.send_frame(ABNF.create_frame(b"", ABNF.OPCODE_CONT, fin=1))
        assert ws.recv() == "x"
        ws.send_frame(ABNF.create_frame(b"", ABNF.OPCODE_BINARY, fin=0))
        ws.send_frame(ABNF.create_frame(b"", ABNF.OPCODE_CONT, fin=1))
        op, got = ws.recv_data()
        assert op == ABNF.OPCODE_BINARY and got == b""
    finally:
        ws.close()


# --------------------------------------------------------------------------- ping / pong

def test_client_ping_gets_pong_with_same_payload(echo_server: ServerThread) -> None:
    ws = connect(echo_server.url + "/ws")
    try:
        for payload in (b"", b"p", b"\x00\xff" * 62 + b"!"):  # 0, 1, 125 bytes
            ws.ping(payload)
            op, frame = ws.recv_data_frame(control_frame=True)
            assert op == ABNF.OPCODE_PONG
            assert frame.data == payload
    finally:
        ws.close()


def _recording_server(server_factory: Callable[..., ServerThread], **opts: Any
                      ) -> Tuple[ServerThread, "queue.Queue[Tuple[str, Any]]"]:
    """A server whose handler echoes, obeys a few commands, and records control/close events."""
    events: "queue.Queue[Tuple[str, Any]]" = queue.Queue()

    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            cmd = data.data
            if cmd == b"ping-me":
                conn.ping(b"srv-ping")
            elif cmd == b"close-me":
                conn.close(4000, "bye")
            elif cmd == b"frag-text":
                conn.ws_send("héllo ", OP_TEXT, fin=False)
                conn.ws_send("wö", OP_CONTINUATION, fin=False)
                conn.ws_send("", OP_CONTINUATION, fin=False)
                conn.ws_send("rld", OP_CONTINUATION, fin=True)
            elif cmd == b"frag-many":
                conn.send_fragments((bytes([i]) * 100 for i in range(200)), OP_BINARY)
            elif cmd == b"frag-ping":
                conn.ws_send(b"12", OP_BINARY, fin=False)
                conn.ping(b"between")
                conn.ws_send(b"34", OP_CONTINUATION, fin=True)
            else:
                conn.ws_send(data.data, data.opcode)
        elif ev == EV_WS_CTL:
            events.put(("ctl", (data.opcode, data.data)))
        elif ev == EV_CLOSE:
            events.put(("close", (conn.close_code, conn.close_reason)))

    return server_factory(handler, control_events=True, **opts), events


def next_event(events: "queue.Queue[Tuple[str, Any]]", kind: str, timeout: float = 5.0) -> Any:
    """The first recorded event of ``kind``; events of other kinds are put back in order."""
    deadline = time.monotonic() + timeout
    skipped: List[Tuple[str, Any]] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} event in time (saw {skipped})")
            try:
                k, v = events.get(timeout=left)
            except queue.Empty:
                raise AssertionError(f"no {kind} event in time (saw {skipped})") from None
            if k == kind:
                return v
            skipped.append((k, v))
    finally:
        rest = []
        while True:
            try:
                rest.append(events.get_nowait())
            except queue.Empty:
                break
        for item in skipped + rest:
            events.put(item)


def test_server_ping_reaches_client_and_pong_comes_back(
        server_factory: Callable[..., ServerThread]) -> None:
    srv, events = _recording_server(server_factory)
    ws = connect(srv.url + "/ws")
    try:
        ws.send("ping-me")
        op, frame = ws.recv_data_frame(control_frame=True)  # answers the ping itself
        assert op == ABNF.OPCODE_PING
        assert frame.data == b"srv-ping"
        assert next_event(events, "ctl") == (OP_PONG, b"srv-ping")
        # a client ping is reported as a control event too
        ws.ping(b"cli")
        op, frame = ws.recv_data_frame(control_frame=True)
        assert op == ABNF.OPCODE_PONG and frame.data == b"cli"
        assert next_event(events, "ctl") == (OP_PING, b"cli")
    finally:
        ws.close()


# --------------------------------------------------------------------------- close codes

@pytest.mark.parametrize("code,reason", [(1000, "normal"), (3001, "app says bye"),
                                         (4999, "ünïcode reason")])
def test_client_close_code_and_reason_reach_server(
        server_factory: Callable[..., ServerThread], code: int, reason: str) -> None:
    srv, events = _recording_server(server_factory)
    ws = connect(srv.url + "/ws")
    ws.send("x")
    assert ws.recv() == "x"
    ws.close(status=code, reason=reason.encode())
    got_code, got_reason = next_event(events, "close")
    assert got_code == code
    assert got_reason == reason
    # and the server sees the client's close as a control event
    op, data = next_event(events, "ctl")
    assert op == pyws.OP_CLOSE and data == struct.pack("!H", code) + reason.encode()


def test_server_close_code_and_reason_reach_client(
        server_factory: Callable[..., ServerThread]) -> None:
    srv, events = _recording_server(server_factory)
    ws = connect(srv.url + "/ws")
    try:
        ws.send("close-me")
        op, frame = ws.recv_data_frame(control_frame=True)  # also answers the close
        assert op == ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", frame.data[:2])[0] == 4000
        assert frame.data[2:] == b"bye"
        # the server closes TCP first after the exchange (RFC 6455 §7.1.1)
        ws.sock.settimeout(3)
        assert ws.sock.recv(10) == b""
    finally:
        ws.shutdown()
    # once the client's side is gone too, the server's EV_CLOSE reports the peer's answer
    # (websocket-client answers a close with 1000 and no reason)
    code, reason = next_event(events, "close")
    assert code == 1000 and reason == ""


# --------------------------------------------------------------------------- fragments out

def test_server_fragmented_text_arrives_whole(
        server_factory: Callable[..., ServerThread]) -> None:
    srv, _ = _recording_server(server_factory)
    ws = connect(srv.url + "/ws")
    try:
        ws.send("frag-text")
        frames = []
        for _ in range(4):
            f = ws.recv_frame()
            frames.append((f.opcode, f.fin, f.data))
        assert frames == [(OP_TEXT, 0, "héllo ".encode()), (OP_CONTINUATION, 0, "wö".encode()),
                          (OP_CONTINUATION, 0, b""), (OP_CONTINUATION, 1, b"rld")]
        ws.send("frag-text")
        assert ws.recv() == "héllo wörld"
    finally:
        ws.close()


def test_server_send_fragments_arrives_whole(
        server_factory: Callable[..., ServerThread]) -> None:
    srv, _ = _recording_server(server_factory)
    ws = connect(srv.url + "/ws")
    try:
        ws.send("frag-many")
        op, data = ws.recv_data()
        assert op == ABNF.OPCODE_BINARY
        assert data == b"".join(bytes([i]) * 100 for i in range(200))
        ws.send("frag-ping")
        op, frame = ws.recv_data_frame(control_frame=True)
        assert op == ABNF.OPCODE_PING and frame.data == b"between"
        op, data = ws.recv_data()
        assert op == ABNF.OPCODE_BINARY and data == b"1234"
    finally:
        ws.close()


def test_send_fragments_empty_and_single(server_factory: Callable[..., ServerThread]) -> None:
    def handler(conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_MSG:
            if data.data == b"empty":
                conn.send_fragments([], OP_TEXT)
            else:
                conn.send_fragments(["only"], OP_TEXT)

    srv = server_factory(handler)
    ws = connect(srv.url + "/ws")
    try:
        ws.send("empty")
        op, data = ws.recv_data()
        assert op == ABNF.OPCODE_TEXT and data == b""
        ws.send("single")
        assert ws.recv() == "only"
    finally:
        ws.close()


# --------------------------------------------------------------------------- many clients

def test_fifty_concurrent_clients(echo_server: ServerThread) -> None:
    errors: List[BaseException] = []
    results: List[int] = []
    lock = threading.Lock()
    start = threading.Barrier(50, timeout=10)

    def client(i: int) -> None:
        try:
            ws = connect(echo_server.url + f"/ws?i={i}")
            try:
                start.wait()
                for j in range(20):
                    msg = f"client {i} message {j}"
                    ws.send(msg)
                    assert ws.recv() == msg
                ws.send_binary(bytes([i]) * 70000)
                assert ws.recv() == bytes([i]) * 70000
            finally:
                ws.close()
            with lock:
                results.append(i)
        except BaseException as exc:  # reported below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert sorted(results) == list(range(50))


def test_many_sequential_clients(echo_server: ServerThread) -> None:
    for i in range(200):
        ws = connect(echo_server.url + "/ws")
        ws.send(str(i))
        assert ws.recv() == str(i)
        if i % 2:
            ws.close()
        else:
            ws.shutdown()  # drop TCP without a close frame
    # the server has nothing left over
    deadline = time.monotonic() + 5
    while echo_server.call(lambda: len(echo_server.mgr.connections)) and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    assert echo_server.call(lambda: len(echo_server.mgr.connections)) == 0
