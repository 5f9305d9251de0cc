"""Chat room: the cymongoose guide's chat example on pyws, with its web page on the same port.

    python examples/chat_server.py --host 127.0.0.1 --port 8000

Open http://127.0.0.1:8000/ in a few browser tabs. The page talks JSON over a WebSocket at /ws:

    client -> server   {"type": "message", "text": "..."}
                       {"type": "setname", "username": "..."}
    server -> client   {"type": "welcome", "username": "...", "count": N}   (to the newcomer)
                       {"type": "join", "username": "...", "count": N}
                       {"type": "message", "username": "...", "text": "...", "timestamp": T}
                       {"type": "rename", "old": "...", "new": "..."}
                       {"type": "leave", "username": "...", "count": N}
                       {"type": "error", "error": "..."}                     (to the sender)

SIGINT (Ctrl-C) or SIGTERM closes every WebSocket with 1001 (going away) and exits.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import time
from typing import Any, Dict, List, Optional

from pyws import (EV_CLOSE, EV_HTTP_MSG, EV_WS_MSG, WEBSOCKET_OP_TEXT, Connection,
                  HandshakeError, Manager)

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_NAME = 32
MAX_TEXT = 2000

clients: List[Connection] = []
_numbers = itertools.count(1)


def load_page() -> bytes:
    with open(os.path.join(HERE, "chat.html"), "rb") as f:
        return f.read()


PAGE = load_page()


def send(conn: Connection, message: Dict[str, Any]) -> None:
    try:
        conn.ws_send(json.dumps(message), WEBSOCKET_OP_TEXT)
    except RuntimeError:
        # Connection closed: EV_CLOSE removes it from the room
        pass


def broadcast(message_data: Dict[str, Any], exclude: Optional[Connection] = None) -> None:
    msg = json.dumps(message_data)
    for client in clients[:]:  # copy: a failed send removes the client
        if client != exclude:
            try:
                client.ws_send(msg, WEBSOCKET_OP_TEXT)
            except RuntimeError:
                # Connection closed
                clients.remove(client)


def clean_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("username must be a string")
    name = " ".join(value.split())[:MAX_NAME]
    if not name:
        raise ValueError("username must not be empty")
    return name


def handler(conn: Connection, ev: int, data: Any) -> None:
    if ev == EV_HTTP_MSG:
        if data.uri == "/ws":
            try:
                conn.ws_upgrade(data)
            except HandshakeError:
                return  # not an upgrade request: the client was answered 400, closing
            clients.append(conn)
            conn.userdata = {
                "username": f"User{next(_numbers)}",
                "joined_at": time.time(),
            }
            send(conn, {"type": "welcome", "username": conn.userdata["username"],
                        "count": len(clients)})
            broadcast({
                "type": "join",
                "username": conn.userdata["username"],
                "count": len(clients),
            })
        elif data.uri in ("/", "/index.html"):
            conn.reply(200, PAGE, headers={"Content-Type": "text/html; charset=utf-8",
                                           "Cache-Control": "no-cache"})
        else:
            conn.reply(404, b"Not Found", headers={"Content-Type": "text/plain"})
    elif ev == EV_WS_MSG:
        try:
            msg = json.loads(data.text)
            if not isinstance(msg, dict):
                raise ValueError("expected a JSON object")
            if msg["type"] == "message":
                text = msg["text"]
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("text must be a non-empty string")
                broadcast({
                    "type": "message",
                    "username": conn.userdata["username"],
                    "text": text[:MAX_TEXT],
                    "timestamp": time.time(),
                })
            elif msg["type"] == "setname":
                old_name = conn.userdata["username"]
                new_name = clean_name(msg["username"])
                if new_name != old_name:
                    conn.userdata["username"] = new_name
                    broadcast({"type": "rename", "old": old_name, "new": new_name})
            else:
                raise ValueError(f"unknown message type {msg['type']!r}")
        except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
            send(conn, {"type": "error", "error": f"Invalid message: {exc}"})
    elif ev == EV_CLOSE:
        if conn in clients:
            clients.remove(conn)
            broadcast({
                "type": "leave",
                "username": conn.userdata.get("username", "Unknown"),
                "count": len(clients),
            })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()

    stop: List[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # Only note it here: the loop below calls mgr.shutdown() between two polls (a signal
        # handler may run in the middle of a pyws handler, where the loop cannot be re-entered).
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    mgr = Manager(handler, max_message_size=64 * 1024, heartbeat=30.0, heartbeat_timeout=30.0)
    host = f"[{args.host}]" if ":" in args.host else args.host
    lst = mgr.listen(f"http://{host}:{args.port}")
    print(f"chat server on http://{host}:{lst.port}/ (WebSocket at ws://{host}:{lst.port}/ws, "
          f"{mgr.backend})", flush=True)
    try:
        while not stop:
            mgr.poll(200)
    finally:
        print(f"shutting down ({len(clients)} client(s) connected)", flush=True)
        mgr.shutdown(2.0)
        mgr.close()


if __name__ == "__main__":
    main()
