"""permessage-deflate (RFC 7692) on real sockets, against the `websockets` library (sync API) in
both roles and against pyws itself.

For each crafted combination of websockets' ClientPerMessageDeflateFactory /
ServerPerMessageDeflateFactory parameters (server/client_no_context_takeover,
server/client_max_window_bits) and a pyws.Deflate setting: both sides agree on the same
extension (the exact header, and websockets' own view of the windows and context takeover), a
sequence of messages goes both ways (text and binary, repetitive and random, under the 128-byte
threshold, empty, ~100 KiB, data that only decodes with the agreed window, fragmented) and every
byte comes back; what pyws sent at or over the threshold went out with RSV1 (seen in websockets'
decoder), what websockets sent arrived compressed (Message.compressed).

pyws against pyws: several Deflate combinations, compression=None on either side, compress=
False/True per send (checked with .compressed on the receiving side), send_fragments compressed,
publish to a topic whose subscribers have and lack context takeover, and connections with no
context takeover in both directions holding no zlib memory between messages.
"""
from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import pytest
from websockets.extensions.permessage_deflate import (ClientPerMessageDeflateFactory,
                                                      PerMessageDeflate,
                                                      ServerPerMessageDeflateFactory)
from websockets.frames import Opcode
from websockets.sync.client import ClientConnection as WsClient
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import ServerConnection as WsServerConn
from websockets.sync.server import serve as ws_serve

import pyws
from pyws import (EV_CLOSE, EV_HTTP_MSG, EV_WS_MSG, EV_WS_OPEN, OP_BINARY, OP_TEXT, Deflate,
                  Message)
from pyws._lib import lib

from conftest import ServerThread
from test_deflate_negotiation import Params, expected_server, header

KiB = 1024
MAX = 16 * 1024 * 1024
THRESHOLD = 128
FRAG = "FRAG:"

Payload = Union[str, bytes]


# --------------------------------------------------------------------------- the messages

def _rand_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _rand_text(n: int, seed: int) -> str:
    r = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789éü€😀\n"
    return "".join(r.choices(alphabet, k=n))


_BLOCK_3000 = _rand_bytes(3000, 11)
_BLOCK_20000 = _rand_bytes(20000, 12)

# (id, payload): str is sent as text, bytes as binary
MESSAGES: List[Tuple[str, Payload]] = [
    ("small-text", "hello"),
    ("small-binary", b"\x00\x01\x02" * 10),
    ("empty-text", ""),
    ("empty-binary", b""),
    ("text-127", "x" * 127),
    ("text-128", "y" * 128),
    ("binary-129", bytes(range(129))),
    ("repetitive-text", "the quick brown fox jumps over the lazy dog. " * 230),
    ("random-binary", _rand_bytes(3000, 1)),
    ("random-text", _rand_text(2000, 2)),
    ("repetitive-100k", bytes(range(256)) * 400),
    ("random-100k", _rand_bytes(100 * KiB, 3)),
    ("text-100k", "ab€😀 " * 8000),
    # matches 3000 bytes back: undecodable if sent with a window > what a 9..11-bit peer expects
    ("period-3000", _BLOCK_3000 * 30),
    # matches 20000 bytes back: the same for a 12..14-bit peer
    ("period-20000", _BLOCK_20000 * 5),
    ("repetitive-text-again", "the quick brown fox jumps over the lazy dog. " * 230),
    ("small-after-big", "ok"),
]

# (id, pieces): sent as one fragmented message, echoed back fragmented
FRAGMENTED: List[Tuple[str, List[Payload]]] = [
    ("frag-text", [FRAG + "frag", "mented ", "", "tëxt 😀 " * 300]),
    ("frag-binary", [FRAG.encode() + _rand_bytes(5000, 4), b"", bytes(70000), b"end"]),
]


def _encoded(p: Payload) -> bytes:
    return p.encode() if isinstance(p, str) else p


def _joined(pieces: Sequence[Payload]) -> Payload:
    return "".join(pieces) if isinstance(pieces[0], str) else b"".join(pieces)  # type: ignore


def _split3(p: Payload) -> List[Payload]:
    """Three pieces (for echoing a message fragmented); text is cut between characters."""
    n = len(p)
    return [p[:5], p[5:n // 2], p[n // 2:]]


def _pyws_compresses(payload_len: int, fragmented: bool, d: Optional[Deflate],
                     agreed_window: int) -> bool:
    """Whether a pyws sender with settings d puts RSV1 on this message: the extension agreed,
    a window zlib can produce (not 8), and at or over the threshold or fragmented."""
    if d is None or agreed_window == 8:
        return False
    return fragmented or payload_len >= d.threshold


def until(pred: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


# --------------------------------------------------------------------------- a pyws server

class Recorder:
    """A pyws server handler: upgrades every request (subscribing to "room" if asked), records
    every message as (opcode, bytes, compressed), and answers it:

    - a message starting with FRAG is echoed in three fragments,
    - a JSON command {"cmd": "send", "how": ..., "n": ..., "compress": ...} makes it send n
      bytes with that send method and compress= argument,
    - anything else is echoed as it came.
    """

    def __init__(self, subscribe: bool = False) -> None:
        self.subscribe = subscribe
        self.conns: List[pyws.Connection] = []
        self.received: List[Tuple[int, bytes, bool]] = []
        self.closed: List[pyws.Connection] = []

    def handler(self, conn: pyws.Connection, ev: int, data: Any) -> None:
        if ev == EV_HTTP_MSG:
            conn.ws_upgrade(data)
        elif ev == EV_WS_OPEN:
            if self.subscribe:
                conn.subscribe("room")
            self.conns.append(conn)
        elif ev == EV_WS_MSG:
            data = data.detach()  # kept past the handler (a large message is a MessageView)
            self.received.append((data.opcode, data.data, data.compressed))
            self._answer(conn, data)
        elif ev == EV_CLOSE:
            self.closed.append(conn)

    def _answer(self, conn: pyws.Connection, m: Message) -> None:
        payload = m.data
        if payload.startswith(FRAG.encode()):
            conn.send_fragments(_split3(payload), m.opcode)
        elif payload.startswith(b'{"cmd"'):
            cmd = json.loads(payload)
            body = ("z" * cmd["n"]) if cmd["text"] else bytes(cmd["n"])
            how, compress = cmd["how"], cmd["compress"]
            if how == "ws_send":
                conn.ws_send(body, OP_TEXT if cmd["text"] else OP_BINARY, True, compress)
            elif how == "send_fragments":
                conn.send_fragments(_split3(body), OP_TEXT if cmd["text"] else OP_BINARY,
                                    compress)
            elif how == "send_json":
                conn.send_json({"z": body}, compress=compress)
            else:
                getattr(conn, how)(body, compress=compress)
        else:
            conn.ws_send(payload, m.opcode)

    def conn(self, i: int = 0) -> pyws.Connection:
        until(lambda: len(self.conns) > i)
        return self.conns[i]


def pyws_server(server_factory: Callable[..., ServerThread], compression: Any,
                subscribe: bool = False) -> Tuple[ServerThread, Recorder]:
    rec = Recorder(subscribe)
    srv = server_factory(rec.handler, compression=compression, max_message_size=MAX,
                         write_limit=4 * MAX)
    return srv, rec


# --------------------------------------------------------------------------- websockets helpers

def spy_rsv1(ext: PerMessageDeflate) -> List[bool]:
    """RSV1 of the first frame of every data message websockets decodes with ext, in order."""
    seen: List[bool] = []
    decode = ext.decode

    def spy(frame: Any, *, max_size: Optional[int] = None) -> Any:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            seen.append(bool(frame.rsv1))
        return decode(frame, max_size=max_size)

    ext.decode = spy  # type: ignore[method-assign]
    return seen


def ws_extension_header(ws: Union[WsClient, WsServerConn]) -> Optional[str]:
    """The Sec-WebSocket-Extensions of the handshake response, as websockets sent or got it."""
    assert ws.response is not None
    return ws.response.headers.get("Sec-WebSocket-Extensions")


def ws_deflate(ws: Union[WsClient, WsServerConn]) -> PerMessageDeflate:
    """websockets' agreed permessage-deflate (exactly one extension)."""
    (ext,) = ws.protocol.extensions
    assert isinstance(ext, PerMessageDeflate)
    return ext


class WsServer:
    """A websockets sync server on 127.0.0.1 with one extension factory (or none), served from
    a thread. Its handler first reports what it agreed (and starts watching RSV1), then echoes
    every message, fragmented if it starts with FRAG."""

    def __init__(self, factory: Optional[ServerPerMessageDeflateFactory]) -> None:
        self.rsv1: List[bool] = []
        self.errors: List[str] = []
        self.server = ws_serve(self._handle, "127.0.0.1", 0,
                               extensions=[factory] if factory else None, compression=None,
                               max_size=MAX, ping_interval=None, close_timeout=2)
        self.port = self.server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, ws: WsServerConn) -> None:
        try:
            report: Dict[str, Any] = {"header": ws_extension_header(ws)}
            if ws.protocol.extensions:
                ext = ws_deflate(ws)
                self.rsv1 = spy_rsv1(ext)
                report.update(remote_nct=ext.remote_no_context_takeover,
                              local_nct=ext.local_no_context_takeover,
                              remote_bits=ext.remote_max_window_bits,
                              local_bits=ext.local_max_window_bits)
            ws.send(json.dumps(report))
            for msg in ws:
                if _encoded(msg[:len(FRAG)]) == FRAG.encode():
                    ws.send(_split3(msg))
                else:
                    ws.send(msg)
        except Exception as exc:  # reported to the test
            if type(exc).__name__ not in ("ConnectionClosedOK", "ConnectionClosedError"):
                self.errors.append(repr(exc))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join(10)
        assert not self._thread.is_alive()


@pytest.fixture
def ws_server() -> Iterator[Callable[[Optional[ServerPerMessageDeflateFactory]], WsServer]]:
    started: List[WsServer] = []

    def make(factory: Optional[ServerPerMessageDeflateFactory]) -> WsServer:
        s = WsServer(factory)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def connect_ws(url: str, factory: Optional[ClientPerMessageDeflateFactory],
               compression: Optional[str] = None) -> WsClient:
    return ws_connect(url, extensions=[factory] if factory else None, compression=compression,
                      open_timeout=5, close_timeout=2, max_size=MAX, ping_interval=None)


def connect_pyws(url: str, compression: Any) -> pyws.ClientConnection:
    return pyws.connect(url, compression=compression, timeout=10, open_timeout=5,
                        close_timeout=3, max_size=MAX)


# --------------------------------------------------------------------------- the combinations

PYWS_SETTINGS: List[Tuple[str, Deflate]] = [
    ("default", Deflate()),
    ("nct", Deflate(no_context_takeover=True)),
    ("peer-nct", Deflate(peer_no_context_takeover=True)),
    ("w9", Deflate(window_bits=9)),
    ("w15", Deflate(window_bits=15)),
    ("peer-none", Deflate(peer_window_bits=None)),
    ("w15-p9-both-nct", Deflate(window_bits=15, peer_window_bits=9, no_context_takeover=True,
                                peer_no_context_takeover=True)),
]

WS_WINDOWS_S = [None, 9, 12, 15]
WS_CLIENT_WINDOWS_C: List[Any] = [None, True, 9, 12, 15]
WS_SERVER_WINDOWS_C: List[Any] = [None, 9, 12, 15]


def _ws_combos(client_windows: List[Any]) -> List[Dict[str, Any]]:
    return [dict(server_no_context_takeover=s, client_no_context_takeover=c,
                 server_max_window_bits=sw, client_max_window_bits=cw)
            for s in (False, True) for c in (False, True)
            for sw in WS_WINDOWS_S for cw in client_windows]


def _ws_id(p: Dict[str, Any]) -> str:
    def w(v: Any) -> str:
        return "-" if v is None else ("nv" if v is True else str(v))
    return (f"s{int(p['server_no_context_takeover'])}c{int(p['client_no_context_takeover'])}"
            f"sw{w(p['server_max_window_bits'])}cw{w(p['client_max_window_bits'])}")


def _pair_up(combos: List[Dict[str, Any]]) -> List[Any]:
    """Every websockets combination once, the pyws settings taken in turn (7 is coprime with
    the sizes of every axis, so each setting meets every value of every parameter)."""
    return [pytest.param(c, PYWS_SETTINGS[i % len(PYWS_SETTINGS)][1],
                         id=f"{_ws_id(c)}-{PYWS_SETTINGS[i % len(PYWS_SETTINGS)][0]}")
            for i, c in enumerate(combos)]


WS_CLIENT_CASES = _pair_up(_ws_combos(WS_CLIENT_WINDOWS_C))   # 80
WS_SERVER_CASES = _pair_up(_ws_combos(WS_SERVER_WINDOWS_C))   # 64


def _offer_of_ws_client(p: Dict[str, Any]) -> Params:
    cw = p["client_max_window_bits"]
    return Params(p["server_no_context_takeover"], p["client_no_context_takeover"],
                  p["server_max_window_bits"] or 0, -1 if cw is True else (cw or 0))


def _first_offer_of_pyws(d: Deflate) -> Params:
    """The first offer pyws's client makes (api notes: server_max_window_bits only when
    peer_window_bits < 15; client_max_window_bits without a value at window 15)."""
    peer = d.peer_window_bits or 0
    return Params(d.peer_no_context_takeover, d.no_context_takeover,
                  peer if 0 < peer < 15 else 0, d.window_bits if d.window_bits < 15 else -1)


def _pyws_server_answer(offer_p: Params, d: Deflate) -> Params:
    return expected_server(offer_p, d.window_bits, d.peer_window_bits or 0,
                           int(d.no_context_takeover), int(d.peer_no_context_takeover))


def _websockets_server_answer(cfg: Dict[str, Any], o: Params) -> Params:
    """websockets' ServerPerMessageDeflateFactory answer to offer o (its documented table)."""
    smwb = o.smwb or 0
    if cfg["server_max_window_bits"] is not None:
        smwb = min(smwb, cfg["server_max_window_bits"]) if smwb else cfg["server_max_window_bits"]
    cfg_c = cfg["client_max_window_bits"]
    if cfg_c is None:
        cmwb = 0 if o.cmwb == -1 else o.cmwb
    elif o.cmwb == 0:
        cmwb = 0
    elif o.cmwb == -1:
        cmwb = cfg_c
    else:
        cmwb = min(o.cmwb, cfg_c)
    return Params(o.snct or cfg["server_no_context_takeover"],
                  o.cnct or cfg["client_no_context_takeover"], smwb, cmwb)


# =========================================================================== websockets client

def _exchange_from_websockets(ws: WsClient) -> None:
    """Send every message (and the fragmented ones) and check each echo, byte for byte."""
    for name, m in MESSAGES:
        ws.send(m)
        got = ws.recv(timeout=10)
        assert type(got) is type(m) and got == m, name
    for name, pieces in FRAGMENTED:
        ws.send(iter(pieces))
        got = ws.recv(timeout=10)
        assert got == _joined(pieces), name


@pytest.mark.parametrize("ws_params,deflate", WS_CLIENT_CASES)
def test_websockets_client_pyws_server(server_factory: Callable[..., ServerThread],
                                       ws_params: Dict[str, Any], deflate: Deflate) -> None:
    srv, rec = pyws_server(server_factory, deflate)
    factory = ClientPerMessageDeflateFactory(**ws_params)
    with connect_ws(srv.url + "/ws", factory) as ws:
        # the agreement, seen from both sides
        agreed = _pyws_server_answer(_offer_of_ws_client(ws_params), deflate)
        conn = rec.conn()
        pyws_view = srv.call(lambda: conn.extensions)
        assert ws_extension_header(ws) == pyws_view == header(agreed)
        ext = ws_deflate(ws)
        assert ext.remote_no_context_takeover == agreed.snct
        assert ext.local_no_context_takeover == agreed.cnct
        assert ext.remote_max_window_bits == (agreed.smwb or 15)
        assert ext.local_max_window_bits == (agreed.cmwb or 15)
        rsv1 = spy_rsv1(ext)
        _exchange_from_websockets(ws)
    # what websockets sent (it compresses every message) arrived compressed and whole
    sent = [m for _, m in MESSAGES] + [_joined(p) for _, p in FRAGMENTED]
    until(lambda: len(rec.received) == len(sent))
    assert [(op, data) for op, data, _ in rec.received] == \
        [(OP_TEXT if isinstance(m, str) else OP_BINARY, _encoded(m)) for m in sent]
    assert [c for _, _, c in rec.received] == [True] * len(sent)
    # what pyws sent: RSV1 exactly on the messages at or over the threshold, and fragmented ones
    window = agreed.smwb or 15
    expect = [_pyws_compresses(len(_encoded(m)), False, deflate, window) for _, m in MESSAGES]
    expect += [_pyws_compresses(0, True, deflate, window) for _ in FRAGMENTED]
    assert rsv1 == expect


def test_websockets_client_asks_for_an_8_bit_server_window(
        server_factory: Callable[..., ServerThread]) -> None:
    """server_max_window_bits=8 (which zlib cannot produce) is accepted; pyws then sends every
    message uncompressed, and still inflates what websockets sends."""
    srv, rec = pyws_server(server_factory, Deflate())
    factory = ClientPerMessageDeflateFactory(server_max_window_bits=8)
    with connect_ws(srv.url + "/ws", factory) as ws:
        assert ws_extension_header(ws) == \
            "permessage-deflate; server_max_window_bits=8; client_max_window_bits=12"
        ext = ws_deflate(ws)
        assert (ext.remote_max_window_bits, ext.local_max_window_bits) == (8, 12)
        rsv1 = spy_rsv1(ext)
        _exchange_from_websockets(ws)
    assert rsv1 == [False] * (len(MESSAGES) + len(FRAGMENTED))
    until(lambda: len(rec.received) == len(MESSAGES) + len(FRAGMENTED))
    assert all(c for _, _, c in rec.received)


@pytest.mark.parametrize("ws_compression,pyws_compression", [
    ("deflate", None), (None, "deflate"), (None, None)], ids=["pyws-off", "ws-off", "both-off"])
def test_websockets_client_without_the_extension(server_factory: Callable[..., ServerThread],
                                                 ws_compression: Optional[str],
                                                 pyws_compression: Optional[str]) -> None:
    srv, rec = pyws_server(server_factory, pyws_compression)
    with connect_ws(srv.url + "/ws", None, compression=ws_compression) as ws:
        assert ws_extension_header(ws) is None
        assert ws.protocol.extensions == []
        conn = rec.conn()
        assert srv.call(lambda: conn.extensions) == ""
        _exchange_from_websockets(ws)
    until(lambda: len(rec.received) == len(MESSAGES) + len(FRAGMENTED))
    assert not any(c for _, _, c in rec.received)


# =========================================================================== websockets server

def _exchange_from_pyws(ws: pyws.ClientConnection) -> List[Message]:
    """Send every message (and the fragmented ones) and check each echo byte for byte; return
    the echoes."""
    echoes = []
    for name, m in MESSAGES:
        ws.send(m)
        got = ws.recv()
        assert got.opcode == (OP_TEXT if isinstance(m, str) else OP_BINARY), name
        assert got.data == _encoded(m), name
        echoes.append(got)
    for name, pieces in FRAGMENTED:
        text = isinstance(pieces[0], str)
        ws.send_fragments(pieces, binary=not text)
        got = ws.recv()
        assert got.opcode == (OP_TEXT if text else OP_BINARY), name
        assert got.data == _encoded(_joined(pieces)), name
        echoes.append(got)
    return echoes


@pytest.mark.parametrize("ws_params,deflate", WS_SERVER_CASES)
def test_pyws_client_websockets_server(ws_server: Callable[..., WsServer],
                                       ws_params: Dict[str, Any], deflate: Deflate) -> None:
    srv = ws_server(ServerPerMessageDeflateFactory(**ws_params))
    with connect_pyws(srv.url, deflate) as ws:
        report = json.loads(ws.recv().text)
        agreed = _websockets_server_answer(ws_params, _first_offer_of_pyws(deflate))
        assert report["header"] == ws.extensions == header(agreed)
        assert ws.response_headers["sec-websocket-extensions"] == header(agreed)
        assert report["remote_nct"] == agreed.cnct
        assert report["local_nct"] == agreed.snct
        assert report["remote_bits"] == (agreed.cmwb or 15)
        assert report["local_bits"] == (agreed.smwb or 15)
        echoes = _exchange_from_pyws(ws)
    assert srv.errors == []
    # websockets compresses every message: all arrived compressed
    assert [m.compressed for m in echoes] == [True] * len(echoes)
    # pyws compressed exactly those at or over the threshold, and the fragmented ones
    window = agreed.cmwb or 15
    expect = [_pyws_compresses(len(_encoded(m)), False, deflate, window) for _, m in MESSAGES]
    expect += [_pyws_compresses(0, True, deflate, window) for _ in FRAGMENTED]
    assert srv.rsv1 == expect


@pytest.mark.parametrize("factory,deflate", [
    (None, Deflate()),
    (ServerPerMessageDeflateFactory(), None),
    (None, None),
], ids=["ws-off", "pyws-off", "both-off"])
def test_pyws_client_websockets_server_without_the_extension(
        ws_server: Callable[..., WsServer], factory: Optional[ServerPerMessageDeflateFactory],
        deflate: Optional[Deflate]) -> None:
    srv = ws_server(factory)
    with connect_pyws(srv.url, deflate) as ws:
        report = json.loads(ws.recv().text)
        assert report == {"header": None}
        assert ws.extensions == ""
        echoes = _exchange_from_pyws(ws)
    assert srv.errors == []
    assert not any(m.compressed for m in echoes)


# =========================================================================== pyws and pyws

PYWS_PAIRS: List[Tuple[str, Deflate, Deflate]] = [
    ("defaults", Deflate(), Deflate()),
    ("server-nct", Deflate(no_context_takeover=True), Deflate()),
    ("client-nct", Deflate(), Deflate(no_context_takeover=True)),
    ("both-ask-nct", Deflate(peer_no_context_takeover=True),
     Deflate(peer_no_context_takeover=True)),
    ("all-nct", Deflate(no_context_takeover=True, peer_no_context_takeover=True),
     Deflate(no_context_takeover=True, peer_no_context_takeover=True)),
    ("w9-vs-w15", Deflate(window_bits=9, peer_window_bits=9),
     Deflate(window_bits=15, peer_window_bits=15)),
    ("w15-vs-w9", Deflate(window_bits=15, peer_window_bits=None),
     Deflate(window_bits=9, peer_window_bits=None)),
    ("peer-none-both", Deflate(peer_window_bits=None), Deflate(peer_window_bits=None)),
    ("w13-p10-vs-w11-p14", Deflate(window_bits=13, peer_window_bits=10),
     Deflate(window_bits=11, peer_window_bits=14)),
    ("threshold-0-vs-1000", Deflate(threshold=0), Deflate(threshold=1000)),
    ("levels", Deflate(level=0, mem_level=1), Deflate(level=9, mem_level=9)),
]


@pytest.mark.parametrize("server_d,client_d",
                         [pytest.param(s, c, id=i) for i, s, c in PYWS_PAIRS])
def test_pyws_client_pyws_server(server_factory: Callable[..., ServerThread],
                                 server_d: Deflate, client_d: Deflate) -> None:
    srv, rec = pyws_server(server_factory, server_d)
    agreed = _pyws_server_answer(_first_offer_of_pyws(client_d), server_d)
    with connect_pyws(srv.url + "/ws", client_d) as ws:
        conn = rec.conn()
        assert ws.extensions == srv.call(lambda: conn.extensions) == header(agreed)
        echoes = _exchange_from_pyws(ws)
    sent = [_encoded(m) for _, m in MESSAGES] + [_encoded(_joined(p)) for _, p in FRAGMENTED]
    frag = [False] * len(MESSAGES) + [True] * len(FRAGMENTED)
    until(lambda: len(rec.received) == len(sent))
    assert [d for _, d, _ in rec.received] == sent
    # client -> server: compressed as the client's settings and the agreed client window say
    assert [c for _, _, c in rec.received] == \
        [_pyws_compresses(len(s), f, client_d, agreed.cmwb or 15) for s, f in zip(sent, frag)]
    # server -> client: likewise with the server's
    assert [m.compressed for m in echoes] == \
        [_pyws_compresses(len(s), f, server_d, agreed.smwb or 15) for s, f in zip(sent, frag)]


@pytest.mark.parametrize("server_c,client_c", [("deflate", None), (None, "deflate"),
                                               (None, None)],
                         ids=["client-off", "server-off", "both-off"])
def test_pyws_without_the_extension(server_factory: Callable[..., ServerThread],
                                    server_c: Optional[str], client_c: Optional[str]) -> None:
    srv, rec = pyws_server(server_factory, server_c)
    with connect_pyws(srv.url + "/ws", client_c) as ws:
        conn = rec.conn()
        assert ws.extensions == "" == srv.call(lambda: conn.extensions)
        assert "sec-websocket-extensions" not in ws.response_headers
        echoes = _exchange_from_pyws(ws)
        # compress=True asks for nothing that is not there: still sent, uncompressed
        ws.send("x" * 1000, compress=True)
        assert ws.recv().data == b"x" * 1000
    until(lambda: len(rec.received) == len(MESSAGES) + len(FRAGMENTED) + 1)
    assert not any(c for _, _, c in rec.received)
    assert not any(m.compressed for m in echoes)


# --------------------------------------------------------------------------- compress= per send

CLIENT_SENDS: List[Tuple[str, Payload, str, Optional[bool], bool]] = [
    # (id, payload, method, compress, arrives compressed)
    ("small-default", "tiny", "send", None, False),
    ("small-true", "tiny", "send", True, True),
    ("small-false", "tiny", "send", False, False),
    ("big-default", "B" * 5000, "send", None, True),
    ("big-false", "B" * 5000, "send", False, False),
    ("big-true", "B" * 5000, "send", True, True),
    ("empty-true", b"", "send", True, True),
    ("empty-default", b"", "send", None, False),
    ("threshold-false", b"t" * 128, "send_bytes", False, False),
    ("threshold-default", b"t" * 128, "send_bytes", None, True),
    ("under-true", b"u" * 127, "send_bytes", True, True),
    ("text-true", "short text", "send_text", True, True),
    ("text-false", "long text " * 100, "send_text", False, False),
    ("bytes-true", b"\x01\x02", "send_bytes", True, True),
    ("bytes-false", bytes(1000), "send_bytes", False, False),
]


@pytest.mark.parametrize("client_d", [Deflate(), Deflate(no_context_takeover=True)],
                         ids=["takeover", "no-takeover"])
def test_compress_argument_client_to_server(server_factory: Callable[..., ServerThread],
                                            client_d: Deflate) -> None:
    srv, rec = pyws_server(server_factory, Deflate())
    with connect_pyws(srv.url + "/ws", client_d) as ws:
        for name, payload, how, compress, _ in CLIENT_SENDS:
            getattr(ws, how)(payload, compress=compress)
            assert ws.recv().data == _encoded(payload), name
        ws.send_json({"k": "v" * 10}, compress=True)
        assert ws.recv().json() == {"k": "v" * 10}
        ws.send_json({"k": "v" * 1000}, compress=False)
        assert ws.recv().json() == {"k": "v" * 1000}
        ws.send(Message.text("m" * 500), compress=False)
        assert ws.recv().text == "m" * 500
        ws.send(Message.binary(b"mm"), compress=True)
        assert ws.recv().data == b"mm"
    until(lambda: len(rec.received) == len(CLIENT_SENDS) + 4)
    got = [(d, c) for _, d, c in rec.received]
    assert got[:len(CLIENT_SENDS)] == [(_encoded(p), want) for _, p, _, _, want in CLIENT_SENDS]
    assert [c for _, c in got[len(CLIENT_SENDS):]] == [True, False, False, True]


SERVER_SENDS: List[Tuple[str, str, int, bool, Optional[bool], bool]] = [
    # (id, method, n, text, compress, arrives compressed)
    ("ws_send-small-true", "ws_send", 10, True, True, True),
    ("ws_send-small-default", "ws_send", 10, True, None, False),
    ("ws_send-big-false", "ws_send", 4000, False, False, False),
    ("ws_send-big-default", "ws_send", 4000, False, None, True),
    ("send-empty-true", "send", 0, False, True, True),
    ("send-big-false", "send", 300, True, False, False),
    ("send_text-true", "send_text", 3, True, True, True),
    ("send_text-false", "send_text", 3000, True, False, False),
    ("send_bytes-true", "send_bytes", 1, False, True, True),
    ("send_bytes-false", "send_bytes", 200, False, False, False),
    ("send_bytes-default", "send_bytes", 200, False, None, True),
    ("send_json-true", "send_json", 5, True, True, True),
    ("send_json-false", "send_json", 500, True, False, False),
    ("fragments-default", "send_fragments", 6000, False, None, True),
    ("fragments-small-default", "send_fragments", 20, True, None, True),
    ("fragments-false", "send_fragments", 6000, False, False, False),
    ("fragments-true", "send_fragments", 6000, True, True, True),
]


@pytest.mark.parametrize("server_d", [Deflate(), Deflate(no_context_takeover=True)],
                         ids=["takeover", "no-takeover"])
def test_compress_argument_server_to_client(server_factory: Callable[..., ServerThread],
                                            server_d: Deflate) -> None:
    srv, rec = pyws_server(server_factory, server_d)
    with connect_pyws(srv.url + "/ws", Deflate()) as ws:
        for name, how, n, text, compress, want in SERVER_SENDS:
            ws.send_json({"cmd": "send", "how": how, "n": n, "text": text,
                          "compress": compress}, compress=False)
            got = ws.recv()
            body = ("z" * n) if text else bytes(n)
            if how == "send_json":
                assert got.json() == {"z": body}, name
            else:
                assert got.data == _encoded(body), name
                assert got.opcode == (OP_TEXT if text else OP_BINARY), name
            assert got.compressed is want, name


@pytest.mark.parametrize("client_d", [Deflate(), Deflate(no_context_takeover=True),
                                      Deflate(window_bits=9)],
                         ids=["takeover", "no-takeover", "w9"])
def test_send_fragments_compressed(server_factory: Callable[..., ServerThread],
                                   client_d: Deflate) -> None:
    """A fragmented message is one compressed stream: RSV1 on the first frame (the receiver
    marks it compressed), whatever each piece's size; compress=False sends it plain."""
    srv, rec = pyws_server(server_factory, Deflate())
    cases: List[Tuple[List[Payload], bool, Optional[bool], bool]] = [
        # (pieces, binary, compress, arrives compressed)
        ([b"a", b"b", b"c"], True, None, True),
        ([b"", b"", b""], True, None, True),
        ([_rand_bytes(40000, 5), _BLOCK_3000 * 10, b"x" * 50000], True, None, True),
        (["héllo ", "wörld " * 1000, "😀"], False, None, True),
        (["😀".encode()[:1], "😀".encode()[1:] + b" split", b" text"], False, None, True),
        ([b"q" * 1000, b"r" * 1000], True, False, False),
        ([b"s", b"t"], True, True, True),
        ([b"only one piece" * 20], True, None, True),
        ([b"one small"], True, None, False),
    ]
    with connect_pyws(srv.url + "/ws", client_d) as ws:
        for pieces, binary, compress, _ in cases:
            ws.send_fragments(pieces, binary=binary, compress=compress)
            assert ws.recv().data == _encoded(_joined(pieces))
        # after all that, a plain message still decodes (the stream state stayed in step)
        ws.send("after the fragments " * 20)
        assert ws.recv().text == "after the fragments " * 20
    until(lambda: len(rec.received) == len(cases) + 1)
    assert [(d, c) for _, d, c in rec.received[:len(cases)]] == \
        [(_encoded(_joined(p)), want) for p, _, _, want in cases]
    assert rec.received[-1][2] is True


# --------------------------------------------------------------------------- publish

PUBLISHED: List[Tuple[Payload, Optional[bool]]] = [
    ("hello room", None),
    ("the same sentence over and over. " * 150, None),
    (_rand_bytes(3000, 6), None),
    (bytes(range(256)) * 400, None),
    ("the same sentence over and over. " * 150, None),
    (_BLOCK_3000 * 20, None),
    ("not compressed " * 100, False),
    (b"forced", True),
    ("", None),
    ("last " * 60, None),
]


@pytest.mark.parametrize("server_d", [Deflate(), Deflate(no_context_takeover=True)],
                         ids=["server-takeover", "server-no-takeover"])
def test_publish_to_mixed_subscribers(server_factory: Callable[..., ServerThread],
                                      server_d: Deflate) -> None:
    """One topic; subscribers whose server side keeps context and ones that reset it (those
    share one compressed frame per parameter set), with different windows, without the
    extension, pyws and websockets clients: every one gets every message, byte for byte, and
    compressed as its own agreement says."""
    srv, rec = pyws_server(server_factory, server_d, subscribe=True)
    pyws_clients: List[Tuple[str, Optional[Deflate]]] = [
        ("takeover", Deflate()),
        ("no-takeover-1", Deflate(peer_no_context_takeover=True)),
        ("no-takeover-2", Deflate(peer_no_context_takeover=True)),
        ("no-takeover-w9", Deflate(peer_no_context_takeover=True, peer_window_bits=9)),
        ("no-takeover-w10", Deflate(peer_no_context_takeover=True, peer_window_bits=10)),
        ("takeover-w9", Deflate(peer_window_bits=9)),
        ("plain", None),
    ]
    ws_clients: List[Tuple[str, Optional[ClientPerMessageDeflateFactory]]] = [
        ("ws-takeover", ClientPerMessageDeflateFactory()),
        ("ws-no-takeover", ClientPerMessageDeflateFactory(server_no_context_takeover=True)),
        ("ws-no-takeover-w11", ClientPerMessageDeflateFactory(server_no_context_takeover=True,
                                                              server_max_window_bits=11)),
        ("ws-plain", None),
    ]
    with contextlib.ExitStack() as stack:
        pc = [(n, d, stack.enter_context(connect_pyws(srv.url + "/ws", d)))
              for n, d in pyws_clients]
        wc = [(n, f, stack.enter_context(connect_ws(srv.url + "/ws", f)))
              for n, f in ws_clients]
        spies = {n: spy_rsv1(ws_deflate(w)) for n, f, w in wc if f is not None}
        total = len(pc) + len(wc)
        mgr = srv.mgr
        assert mgr is not None
        until(lambda: srv.call(lambda: mgr.subscribers("room")) == total)
        for data, compress in PUBLISHED:
            n = srv.call(lambda: mgr.publish("room", data, compress=compress))
            assert n == total
        for name, d, c in pc:
            got = [c.recv() for _ in PUBLISHED]
            assert [m.data for m in got] == [_encoded(p) for p, _ in PUBLISHED], name
            assert [m.opcode for m in got] == \
                [OP_TEXT if isinstance(p, str) else OP_BINARY for p, _ in PUBLISHED], name
            want = [False if d is None or cp is False else
                    (cp is True or len(_encoded(p)) >= server_d.threshold)
                    for p, cp in PUBLISHED]
            assert [m.compressed for m in got] == want, name
        for name, f, w in wc:
            got_ws = [w.recv(timeout=10) for _ in PUBLISHED]
            assert got_ws == [p for p, _ in PUBLISHED], name
            if f is not None:
                assert spies[name] == [cp is True or (cp is None and
                                                      len(_encoded(p)) >= server_d.threshold)
                                       for p, cp in PUBLISHED], name


# --------------------------------------------------------------------------- memory

def _traffic(ws: pyws.ClientConnection, rounds: int = 20) -> None:
    """Compressible messages both ways (each is echoed), small enough to fit the read buffer
    uncompressed too."""
    for i in range(rounds):
        m = f"message {i}: " + "lorem ipsum dolor sit amet " * 60
        ws.send(m)
        assert ws.recv().text == m


def _server_memory(srv: ServerThread, conn: pyws.Connection) -> int:
    mgr = srv.mgr
    assert mgr is not None
    return int(srv.call(lambda: lib.pyws_conn_memory(mgr._loop, conn.id)))


def test_no_context_takeover_holds_no_zlib_memory(
        server_factory: Callable[..., ServerThread]) -> None:
    """After the same traffic, a connection with no context takeover both ways costs what an
    uncompressed one costs plus the small per-connection deflate record; one that keeps both
    contexts holds a compressor and an inflater; with no takeover for what the server sends
    only, the server keeps just its inflater and the client just its compressor. Measured on
    both ends, and unchanged by more traffic (nothing accumulates between messages)."""
    nct_both = Deflate(no_context_takeover=True, peer_no_context_takeover=True)
    settings: Dict[str, Tuple[Optional[Deflate], Optional[Deflate]]] = {
        # name: (server, client)
        "none": (None, None),
        "nct-both": (nct_both, nct_both),
        "nct-server-sends": (Deflate(no_context_takeover=True), Deflate()),
        "takeover": (Deflate(), Deflate()),
    }
    server_mem: Dict[str, int] = {}
    client_mem: Dict[str, int] = {}
    for name, (server_d, client_d) in settings.items():
        srv, rec = pyws_server(server_factory, server_d)
        with connect_pyws(srv.url + "/ws", client_d) as ws:
            _traffic(ws)
            conn = rec.conn()
            if server_d is None:
                assert ws.extensions == ""
            else:
                assert ws.extensions.startswith("permessage-deflate")
            server_mem[name] = _server_memory(srv, conn)
            client_mem[name] = ws._conn.memory
            _traffic(ws, 5)
            assert _server_memory(srv, conn) == server_mem[name], name
            assert ws._conn.memory == client_mem[name], name
        assert [c for _, _, c in rec.received] == [server_d is not None] * 25
    for side, mem in (("server", server_mem), ("client", client_mem)):
        # only the per-connection record (struct pyws_pmd), no zlib stream
        assert 0 < mem["nct-both"] - mem["none"] <= 256, (side, mem)
    # a compressor (window 12, memLevel 5) is well over 16 KiB, an inflater over 4 KiB
    assert server_mem["nct-server-sends"] - server_mem["nct-both"] >= 4 * KiB, server_mem
    assert server_mem["takeover"] - server_mem["nct-server-sends"] >= 16 * KiB, server_mem
    assert client_mem["nct-server-sends"] - client_mem["nct-both"] >= 16 * KiB, client_mem
    assert client_mem["takeover"] - client_mem["nct-server-sends"] >= 4 * KiB, client_mem
