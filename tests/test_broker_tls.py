"""The broker over rediss:// (TLS, with a password) to a real redis-server, and the callback
API's EV_BROKER: two Managers in one process, each its own loop, polled by one thread."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest
import websocket

import pyws
from _pki import make_pki
from _redis import RedisServer, free_port


class Pair:
    """Two Managers (nodes) sharing a broker; a thread polls both."""

    def __init__(self, url: str, **broker_options: Any) -> None:
        self.events: List[List[Any]] = [[], []]
        self.mgrs = [pyws.Manager(self._handler(i), broker=url,
                                  broker_options=dict(broker_options)) for i in range(2)]
        self.ports = [m.listen("http://127.0.0.1:0").port for m in self.mgrs]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _handler(self, i: int) -> Callable[..., None]:
        def handler(conn: Any, ev: int, data: Any) -> None:
            if ev == pyws.EV_BROKER:
                assert conn is None
                self.events[i].append(data)
            elif ev == pyws.EV_HTTP_MSG:
                conn.ws_upgrade(data)
                conn.subscribe("room")
            elif ev == pyws.EV_WS_MSG:
                self.mgrs[i].publish("room", data.data, binary=False)
        return handler

    def _run(self) -> None:
        while not self.stop.is_set():
            for m in self.mgrs:
                m.poll(5)
        for m in self.mgrs:
            m.shutdown(1.0)
            m.close()

    def wait(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, [m.broker.stats() for m in self.mgrs]
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def exchange(pair: Pair) -> None:
    a = websocket.create_connection(f"ws://127.0.0.1:{pair.ports[0]}/", timeout=5)
    b = websocket.create_connection(f"ws://127.0.0.1:{pair.ports[1]}/", timeout=5)
    pair.wait(lambda: all(m.broker.stats()["topics"] == 1 for m in pair.mgrs))
    time.sleep(0.1)  # the SUBSCRIBE is on its way
    a.send("across TLS")
    assert b.recv() == "across TLS"
    assert a.recv() == "across TLS"
    a.close()
    b.close()


def test_rediss_with_a_password(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls_port = free_port()
    r = RedisServer(args=["--tls-port", str(tls_port), "--tls-cert-file", pki.server_cert,
                          "--tls-key-file", pki.server_key, "--tls-ca-cert-file", pki.ca_cert,
                          "--tls-auth-clients", "no"], password="s3cret word")
    pair = Pair(f"rediss://:s3cret%20word@127.0.0.1:{tls_port}/0",
                tls=pyws.TlsOpts(ca=pki.ca_cert), probe_interval=600)
    try:
        pair.wait(lambda: all(m.broker.state == "up" for m in pair.mgrs))
        exchange(pair)
        assert r.commandstats()["publish"] == 1
        st = pair.mgrs[0].broker.stats()
        assert "s3cret" not in str(st) and st["url"] == f"rediss://127.0.0.1:{tls_port}/0"
    finally:
        pair.close()
        r.close()


def test_a_wrong_password_is_reported_and_retried(caplog: Any) -> None:
    r = RedisServer(password="right")
    pair = Pair(f"redis://:wrong@127.0.0.1:{r.port}/0", probe_interval=600)
    try:
        pair.wait(lambda: len(pair.events[0]) >= 1)
        ev = pair.events[0][0]
        assert not ev.up and ("WRONGPASS" in ev.reason or "invalid" in ev.reason), ev.reason
        st = pair.mgrs[0].broker.stats()
        assert st["state"] != "up" and "refused the set-up" in st["last_error"]
    finally:
        pair.close()
        r.close()


def test_callback_api_hears_ev_broker_down_and_up() -> None:
    r = RedisServer()
    pair = Pair(r.url, probe_interval=600)
    try:
        pair.wait(lambda: all(m.broker.state == "up" for m in pair.mgrs))
        a = websocket.create_connection(f"ws://127.0.0.1:{pair.ports[0]}/", timeout=5)
        pair.wait(lambda: pair.mgrs[0].broker.stats()["topics"] == 1)
        r.kill()
        pair.wait(lambda: len(pair.events[0]) == 1)
        down = pair.events[0][0]
        assert isinstance(down, pyws.BrokerEvent) and not down.up and down.topics == ["room"]
        r.start()
        pair.wait(lambda: len(pair.events[0]) == 2)
        back = pair.events[0][1]
        assert back.up and back.topics == ["room"] and back.down_for > 0 and back.dropped == 0
        a.close()
    finally:
        pair.close()
        r.close()


def test_bad_broker_urls_say_what_to_write() -> None:
    for url, words in (("http://x", "redis://"), ("redis://", "no host"),
                       ("redis://h:1/x", "database number")):
        with pytest.raises(ValueError, match=words):
            pyws.Manager(broker=url)
    with pytest.raises(TypeError, match="unknown broker option"):
        pyws.Manager(broker="redis://127.0.0.1:1/0", broker_options={"nope": 1})


def test_metrics_carry_the_broker() -> None:
    from prometheus_client.parser import text_string_to_metric_families
    r = RedisServer()
    pair = Pair(r.url, probe_interval=600)
    try:
        pair.wait(lambda: all(m.broker.state == "up" for m in pair.mgrs))
        exchange(pair)
        m = pair.mgrs[0]
        out: dict = {}
        m.call_soon_threadsafe(lambda: out.update(
            text=pyws.metrics.render(m.stats(), broker=m.broker.stats())))  # the loop's thread
        pair.wait(lambda: "text" in out)
        fams = {f.name: f for f in text_string_to_metric_families(out["text"])}
        assert fams["pyws_broker_up"].samples[0].value == 1
        assert fams["pyws_broker_published"].samples[0].value == 1  # the _total suffix is cut
        assert fams["pyws_broker_echoes"].samples[0].value == 1
    finally:
        pair.close()
        r.close()
