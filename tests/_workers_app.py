"""An App module for ``python -m pyws tests._workers_app:app`` style runs (test_workers.py):
each WebSocket gets its worker's pid, joins topic "all", and what it sends is published."""
from __future__ import annotations

import os
from typing import Any

import pyws

app = pyws.App()


@app.websocket("/")
def chat(ws: pyws.WebSocket) -> Any:
    ws.subscribe("all")
    ws.send(f"ready {os.getpid()}")
    while True:
        msg = yield ws.recv()
        if msg is None:
            return
        app.publish("all", msg)


def make() -> pyws.App:
    """A factory, as ``python -m pyws tests._workers_app:make`` accepts too."""
    return app
