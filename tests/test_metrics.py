"""app.metrics(path): the server's counters over HTTP in the Prometheus text format 0.0.4,
scraped with urllib and parsed by prometheus_client's own parser."""
from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Tuple

import pytest
import websocket  # websocket-client

import pyws
from _rawws import handshake_request

parser = pytest.importorskip("prometheus_client.parser")

Labels = Tuple[Tuple[str, str], ...]


def scrape(port: int, path: str = "/metrics") -> Tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        assert r.status == 200
        return r.headers["Content-Type"], r.read().decode("utf-8")


def samples(text: str) -> Dict[Tuple[str, Labels], float]:
    out: Dict[Tuple[str, Labels], float] = {}
    for fam in parser.text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def families(text: str) -> Dict[str, str]:
    return {f.name: f.type for f in parser.text_string_to_metric_families(text)}


def echo_app() -> pyws.App:
    app = pyws.App()

    @app.websocket("/ws")
    def echo(ws: pyws.WebSocket) -> Any:
        while True:
            msg = yield ws.recv()
            if msg is None:
                return
            ws.send(msg.data)

    app.metrics("/metrics")
    return app


def test_metrics_are_served_in_the_prometheus_text_format(serve: Callable[..., Any]) -> None:
    app = echo_app()
    srv = serve(app)
    cl = websocket.create_connection(srv.url("/ws"), timeout=5)
    try:
        for p in (b"a" * 10, b"b" * 200, b"c" * 3000):
            cl.send_binary(p)
            assert cl.recv_data()[1] == p
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            s.sendall(handshake_request(key=None))  # a bad upgrade: 400
            assert s.recv(4096).startswith(b"HTTP/1.1 400")
        ctype, text = scrape(srv.port)
        assert ctype == "text/plain; version=0.0.4; charset=utf-8"
        got = samples(text)
        kinds = families(text)
        # every family has its HELP and TYPE; counters are exposed as NAME_total
        assert text.count("# HELP ") == text.count("# TYPE ") == len(kinds)
        for name, kind in kinds.items():
            assert kind in ("counter", "gauge"), name
            if kind == "counter":
                assert any(k[0] == name + "_total" for k in got), name
        assert got[("pyws_messages_received_total", ())] == 3
        assert got[("pyws_messages_sent_total", ())] == 3
        assert got[("pyws_payload_bytes_received_total", ())] == 3210
        assert got[("pyws_payload_bytes_sent_total", ())] == 3210
        assert got[("pyws_websockets_opened_total", ())] == 1
        assert got[("pyws_connections", (("state", "open"),))] == 1
        assert got[("pyws_connection_states", (("state", "WS_OPEN"),))] == 1
        assert got[("pyws_handshake_failures_total", (("reason", "400"),))] == 1
        assert got[("pyws_handshake_failures_total", (("reason", "tls"),))] == 0
        assert got[("pyws_closes_total", (("reason", "write_limit"),))] == 0
        assert got[("pyws_drops_total", (("reason", "refused"),))] == 0
        assert got[("pyws_listeners", ())] == 1
        assert got[("pyws_wire_bytes_received_total", ())] > 3210
        # the same numbers as app.stats()
        st = srv.call(app.stats)
        assert got[("pyws_connections_accepted_total", ())] == st["accepted"]
        assert got[("pyws_wire_bytes_sent_total", ())] <= st["wire_bytes_out"]
    finally:
        cl.close()


def test_metrics_follow_the_server_between_scrapes(serve: Callable[..., Any]) -> None:
    app = echo_app()
    srv = serve(app)
    first = samples(scrape(srv.port)[1])
    assert first[("pyws_connections", (("state", "open"),))] == 0
    clients = [websocket.create_connection(srv.url("/ws"), timeout=5) for _ in range(3)]
    try:
        for c in clients:
            c.send("hi")
            assert c.recv() == b"hi"
        second = samples(scrape(srv.port)[1])
        assert second[("pyws_connections", (("state", "open"),))] == 3
        assert second[("pyws_messages_received_total", ())] == 3
    finally:
        for c in clients:
            c.close()
    deadline = time.monotonic() + 5
    while True:
        third = samples(scrape(srv.port)[1])
        if third[("pyws_connections", (("state", "open"),))] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert third[("pyws_connections", (("state", "open"),))] == 0
    assert third[("pyws_messages_received_total", ())] == 3  # closed ones still count
    # the scrapes are plain HTTP on keep-alive connections: no handshake failure
    assert all(v == 0 for (name, _l), v in third.items()
               if name == "pyws_handshake_failures_total")


def test_metrics_route_answers_get_only(serve: Callable[..., Any]) -> None:
    srv = serve(echo_app())
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/metrics", data=b"x",
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 405


def test_render_escapes_label_values() -> None:
    m = pyws.Manager()
    try:
        st = m.stats()
        st["drops"] = {'quote " back \\ newline \n end': 7}
        text = pyws.metrics.render(st, prefix="x")
    finally:
        m.close()
    got = samples(text)
    assert got[("x_drops_total", (("reason", 'quote " back \\ newline \n end'),))] == 7
    assert all(line.startswith("x_") or line.startswith("# ") for line in text.splitlines())
