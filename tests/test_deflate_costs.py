"""What compression costs, counted exactly: zlib's allocations go through a counting
allocator, and ``pyws_conn_memory`` adds them to the connection's own buffers.

- With the defaults (compress at window 12 and memLevel 5, inflate at window 12) a connection
  spends no more than websockets' 64 KiB per connection, whichever side it is on.
- A direction with no context takeover keeps no zlib state between messages: with both
  directions reset, a compressed connection costs what an uncompressed one does, plus the
  bookkeeping, and its messages still arrive compressed.
- Larger windows cost what zlib says they do, so the figure in the README is the real one.
- CPU: a publish to subscribers with no context takeover compresses once (pyws_deflate_stats
  counts deflate calls); subscribers that keep context are compressed one by one.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import pytest

import pyws
from pyws._lib import ffi, lib

MSG = json.dumps([{"id": i, "name": f"user{i}", "tags": ["a", "b"]} for i in range(50)])


def measure(server: Any, client: Any, rounds: int = 10) -> Tuple[int, int, str, List[bool]]:
    """Open one connection in one loop, echo `rounds` messages, and return the server
    connection's and the client connection's memory, the agreed extension, and whether each
    echo arrived compressed."""
    conns: List[pyws.Connection] = []
    got: List[pyws.WsMessage] = []

    def on_server(c: pyws.Connection, ev: int, d: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            c.ws_upgrade(d)
        elif ev == pyws.EV_WS_OPEN:
            conns.append(c)
        elif ev == pyws.EV_WS_MSG:
            c.ws_send(d.data, d.opcode)

    def on_client(c: pyws.Connection, ev: int, d: Any) -> None:
        if ev == pyws.EV_WS_MSG:
            got.append(d)

    with pyws.Manager() as mgr:
        lst = mgr.listen("http://127.0.0.1:0", on_server, compression=server)
        cl = mgr.ws_connect(f"ws://127.0.0.1:{lst.port}/", on_client, compression=client)
        for _ in range(500):
            mgr.poll(10)
            if conns and cl.is_websocket:
                break
        assert conns and cl.is_websocket
        for i in range(rounds):
            cl.send(MSG)
            for _ in range(500):
                mgr.poll(5)
                if len(got) > i:
                    break
        assert [m.text for m in got] == [MSG] * rounds
        s = conns[0]
        return (int(lib.pyws_conn_memory(mgr._loop, s.id)),
                int(lib.pyws_conn_memory(mgr._loop, cl.id)), s.extensions,
                [m.compressed for m in got])


def test_defaults_cost_no_more_than_websockets() -> None:
    plain_s, plain_c, ext, compressed = measure(None, None)
    assert ext == "" and not any(compressed)
    srv, cli, ext, compressed = measure("deflate", "deflate")
    assert ext == ("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")
    assert all(compressed)
    for total, plain in ((srv, plain_s), (cli, plain_c)):
        zlib_bytes = total - plain
        assert 40 * 1024 < zlib_bytes <= 64 * 1024, zlib_bytes


def test_no_context_takeover_keeps_no_zlib_state() -> None:
    plain_s, plain_c, _, _ = measure(None, None)
    both = pyws.Deflate(no_context_takeover=True, peer_no_context_takeover=True)
    srv, cli, ext, compressed = measure(both, "deflate")
    assert "server_no_context_takeover" in ext and "client_no_context_takeover" in ext
    assert all(compressed)
    assert srv - plain_s < 256 and cli - plain_c < 256, (srv, plain_s, cli, plain_c)


@pytest.mark.parametrize("bits,mem_level", [(9, 1), (12, 5), (15, 8)])
def test_memory_follows_the_window(bits: int, mem_level: int) -> None:
    d = pyws.Deflate(window_bits=bits, peer_window_bits=bits, mem_level=mem_level)
    srv, _, ext, _ = measure(d, d)
    plain, _, _, _ = measure(None, None)
    # zlib: deflate 2^(bits+2) + 2^(mem_level+9) bytes plus its state; inflate 2^bits plus state
    expect = (1 << (bits + 2)) + (1 << (mem_level + 9)) + (1 << bits)
    zlib_bytes = srv - plain
    assert expect < zlib_bytes < expect + 16 * 1024, (bits, mem_level, zlib_bytes, expect)


@pytest.mark.parametrize("value", ["gzip", 1, pyws.Deflate])
def test_bad_compression_option_fails_at_once(value: Any) -> None:
    """A mistaken compression= is refused where it is given, naming what to use."""
    with pytest.raises(ValueError, match="pyws.Deflate"):
        pyws.Manager(compression=value)
    with pyws.Manager() as mgr:
        with pytest.raises(ValueError, match="pyws.Deflate"):
            mgr.listen("http://127.0.0.1:0", compression=value)
        with pytest.raises(ValueError, match="pyws.Deflate"):
            mgr.ws_connect("ws://127.0.0.1:9/", compression=value)


@pytest.mark.parametrize("field,value", [("window_bits", 8), ("window_bits", 16),
                                         ("peer_window_bits", 8), ("mem_level", 0),
                                         ("level", 10), ("threshold", -1),
                                         ("window_bits", True)])
def test_deflate_settings_are_checked(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        pyws.Deflate(**{field: value})


def deflate_stats(mgr: pyws.Manager) -> Tuple[int, int]:
    d = ffi.new("uint64_t *")
    i = ffi.new("uint64_t *")
    lib.pyws_deflate_stats(mgr._loop, d, i, ffi.NULL)
    return int(d[0]), int(i[0])


@pytest.mark.parametrize("server_nct,expect_once", [(True, True), (False, False)])
def test_publish_compresses_once_without_context_takeover(server_nct: bool,
                                                          expect_once: bool) -> None:
    """Ten subscribers: with no context takeover on the server's side they share one
    compressed frame (one deflate for the publish); keeping context, each is compressed on its
    own. Every subscriber gets the message, compressed, either way."""
    subs: List[pyws.Connection] = []
    got: Dict[int, List[pyws.WsMessage]] = {}

    def on_server(c: pyws.Connection, ev: int, d: Any) -> None:
        if ev == pyws.EV_HTTP_MSG:
            c.ws_upgrade(d)
        elif ev == pyws.EV_WS_OPEN:
            c.subscribe("news")
            subs.append(c)

    def on_client(c: pyws.Connection, ev: int, d: Any) -> None:
        if ev == pyws.EV_WS_MSG:
            got.setdefault(c.id, []).append(d)

    with pyws.Manager() as mgr:
        lst = mgr.listen("http://127.0.0.1:0", on_server,
                         compression=pyws.Deflate(no_context_takeover=server_nct))
        clients = [mgr.ws_connect(f"ws://127.0.0.1:{lst.port}/", on_client) for _ in range(10)]
        for _ in range(500):
            mgr.poll(10)
            if len(subs) == 10 and all(c.is_websocket for c in clients):
                break
        assert len(subs) == 10
        before, _ = deflate_stats(mgr)
        assert mgr.publish("news", MSG) == 10
        after, _ = deflate_stats(mgr)
        assert after - before == (1 if expect_once else 10)
        for _ in range(500):
            mgr.poll(5)
            if sum(len(v) for v in got.values()) == 10:
                break
        assert sorted(len(v) for v in got.values()) == [1] * 10
        assert all(v[0].text == MSG and v[0].compressed for v in got.values())
        # compress=False reaches everyone uncompressed, and compresses nothing
        assert mgr.publish("news", MSG, compress=False) == 10
        assert deflate_stats(mgr)[0] == after
        for _ in range(500):
            mgr.poll(5)
            if sum(len(v) for v in got.values()) == 20:
                break
        assert all(v[1].text == MSG and not v[1].compressed for v in got.values())
