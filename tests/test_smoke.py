"""The shortest path through everything: a real client talks to the echo fixture."""
from __future__ import annotations

import os

import websocket

import pyws

from conftest import ServerThread


def test_echo_roundtrip(echo_server: ServerThread) -> None:
    ws = websocket.create_connection(echo_server.url + "/ws", timeout=5)
    ws.send("hello")
    assert ws.recv() == "hello"
    ws.send_binary(b"\x00\xff")
    assert ws.recv() == b"\x00\xff"
    ws.close()


def test_backend_is_the_one_built() -> None:
    expected = os.environ.get("PYWS_EXPECT_BACKEND", "epoll")
    assert pyws.backend() == expected
